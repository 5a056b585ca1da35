"""Assembles BENCHMARKS.md from the per-topic sources under benchmarks/*.md.

Each benchmark writes (or its author pastes) its own section into ``benchmarks/<topic>.md``; this
script only concatenates them, so re-running one benchmark never clobbers another's numbers, and
BENCHMARKS.md is never edited by hand: ``tests/test_benchmarks_md.py`` checks that running this
script reproduces it byte for byte.

    python tools/merge_benchmarks.py            # rewrites BENCHMARKS.md
    python tools/merge_benchmarks.py --check    # exit 1 if BENCHMARKS.md is not what the sources give

What comes out, in order: the intro below; the headline table (one row per ``<!-- headline: task |
data | default recipe | reaches | reference -->`` line found in the sources, in section order); a
table of contents; then the sections grouped by capability (:data:`CAPABILITIES`). A source's
headings move one level down under its capability's ``##`` heading (its ``## Title`` becomes
``### Title``).

Adding a benchmark: write ``benchmarks/<topic>.md`` starting with ``## Title (issue N)``. Without
anything else it becomes a section under "More capabilities", listed in the contents; a
``<!-- capability: Name -->`` line files it under that capability (a new one is created after the
known ones), and ``<!-- headline: ... -->`` lines add rows to the headline table. These comment
lines are metadata: they do not appear in BENCHMARKS.md.

Side effects: rewrites ``BENCHMARKS.md`` at the repository root (without ``--check``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Capability -> its sources in order. A source named nowhere here, and without a capability line,
# lands under MORE (sorted by file name).
CAPABILITIES: list[tuple[str, list[str]]] = [
    ("Training a classifier", ["core", "core_seeds", "core_matrix", "quickstart", "tune"]),
    ("Data at scale and data quality", ["data", "audit"]),
    ("Text", ["text", "bert"]),
    ("Detection and segmentation", ["detection", "segmentation"]),
    ("Beyond plain supervised training", ["unlabeled", "issue9", "unknown"]),
    ("Export and deployment", ["export", "export_mobile", "optimize", "trainable", "web"]),
]
MORE = "More capabilities"

HEADER = """# Benchmarks

What tlkeras reaches on real data, against which reference, on which machine. Unless a section
says otherwise: the project's 2-core x86_64 CPU box (Python 3.11, TensorFlow 2.21 CPU build); most
numbers were measured while other jobs shared the two cores, so wall times are upper bounds
(accuracies do not depend on the load). No GPU was lent to these sessions, so GPU throughput
(mixed precision, XLA) is not measured.

Fixtures: `../shared/data/flowers5` (5 classes; 500 train / 150 val / 150 test photos),
`../shared/data/beans`, `../shared/data/sentences`, and the ImageNet weights
`../shared/weights/mobilenet_v2_1.0_224_imagenet_no_top.h5` (the default backbone) and
`../shared/weights/mobilenet_0.25_224_imagenet_no_top.h5` (Keras' MobileNet alpha=0.25). Each
section names the script that reproduces it; `tools/README.md` lists them all.

This file is generated: edit `benchmarks/<topic>.md`, then run `python tools/merge_benchmarks.py`.
"""

HEADLINE_COLUMNS = ("task", "data", "default recipe", "what it reaches", "reference")
_META = re.compile(r"^<!--\s*(headline|capability):\s*(.*?)\s*-->\s*$")


def _slug(title: str, seen: dict[str, int]) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens, -N on repeats."""
    base = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
    count = seen.get(base, 0)
    seen[base] = count + 1
    return base if count == 0 else f"{base}-{count}"


def _heading_text(line: str) -> str:
    return line.lstrip("#").strip()


def read_source(path: Path) -> tuple[str, list[str], str | None]:
    """``(body without metadata lines, headline rows, capability or None)`` of one source file."""
    body, rows, capability, fenced = [], [], None, False
    for line in path.read_text(encoding="utf-8").strip().split("\n"):
        fenced ^= line.startswith("```")
        meta = None if fenced else _META.match(line)
        if meta is None:
            body.append(line)
        elif meta.group(1) == "headline":
            cells = [c.strip() for c in meta.group(2).split("|")]
            if len(cells) != len(HEADLINE_COLUMNS):
                raise SystemExit(f"{path}: a headline row needs {len(HEADLINE_COLUMNS)} cells "
                                 f"({' | '.join(HEADLINE_COLUMNS)}), got {len(cells)}: {line}")
            rows.append("| " + " | ".join(cells) + " |")
        else:
            capability = meta.group(2)
    return "\n".join(body).strip(), rows, capability


def _demote(body: str) -> str:
    """Moves every Markdown heading of a section one level down (not inside ``` fences)."""
    out, fenced = [], False
    for line in body.split("\n"):
        fenced ^= line.startswith("```")
        out.append("#" + line if not fenced and re.match(r"#{1,5} ", line) else line)
    return "\n".join(out)


def render(root: Path = ROOT) -> str:
    """The text of BENCHMARKS.md from ``root/benchmarks/*.md``."""
    sources = {p.stem: read_source(p) for p in sorted((root / "benchmarks").glob("*.md"))}
    known = {stem for _, stems in CAPABILITIES for stem in stems}
    groups: dict[str, list[str]] = {title: [s for s in stems if s in sources] for title, stems in CAPABILITIES}
    for stem in sorted(set(sources) - known):
        groups.setdefault(sources[stem][2] or MORE, []).append(stem)
    if MORE in groups:  # the catch-all goes last
        groups[MORE] = groups.pop(MORE)
    groups = {title: stems for title, stems in groups.items() if stems}

    seen: dict[str, int] = {}
    for title in ("Headline", "Contents"):
        _slug(title, seen)
    contents, sections, rows = [], [], []
    for title, stems in groups.items():
        contents.append(f"- [{title}](#{_slug(title, seen)})")
        parts = [f"## {title}"]
        for stem in stems:
            body, stem_rows, _ = sources[stem]
            rows += stem_rows
            body = _demote(body)
            for line in body.split("\n"):
                if re.match(r"#{3,6} ", line):
                    anchor = _slug(_heading_text(line), seen)
                    if line.startswith("### "):
                        contents.append(f"  - [{_heading_text(line)}](#{anchor})")
            parts.append(body)
        sections.append("\n\n".join(parts))

    headline = ["## Headline", "",
                "| " + " | ".join(HEADLINE_COLUMNS) + " |", "|" + "---|" * len(HEADLINE_COLUMNS), *rows]
    return "\n".join([HEADER, *headline, "", "## Contents", "", *contents, ""]) + "\n" + "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Assemble BENCHMARKS.md from benchmarks/*.md.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if BENCHMARKS.md differs")
    args = parser.parse_args(argv)
    text, target = render(), ROOT / "BENCHMARKS.md"
    if args.check:
        same = target.is_file() and target.read_text(encoding="utf-8") == text
        print("BENCHMARKS.md is up to date" if same else "BENCHMARKS.md differs from benchmarks/: run python tools/merge_benchmarks.py")
        return 0 if same else 1
    tmp = target.with_name(".BENCHMARKS.md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)  # a reader never sees half a file
    print(f"BENCHMARKS.md: {len(text.splitlines())} lines from {len(list((ROOT / 'benchmarks').glob('*.md')))} sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
