"""The data audit for text: exact duplicates (after normalization), train/val/test leakage and
conflicting labels, written as ``audit.json`` and a small ``audit.html``.

Texts are compared after Unicode case folding and whitespace collapsing, so "Great food!" and
"great  food!" are one text. A text in val or test with a copy in train is leakage (its accuracy
measures memory, not generalization); one text under two labels is a label conflict. Near
duplicates and label-error ranking need an embedding and stay image-only for now.
"""

from __future__ import annotations

import html
import time
from collections import defaultdict
from pathlib import Path

from tlkeras.core.bundle import DataBundle

__all__ = ["normalize_text", "text_findings", "write_text_report"]

SPLITS = ("train", "val", "test")
_SHOWN = 50  # groups listed per kind in the report


def normalize_text(text: str) -> str:
    """The key two texts are compared by: case folded, whitespace runs collapsed."""
    return " ".join(str(text).casefold().split())


def text_findings(bundle: DataBundle, source: str) -> dict:
    """Duplicates, leakage and conflicts of a text bundle (the content of ``audit.json``)."""
    start = time.perf_counter()
    groups: dict[str, list[tuple[str, int]]] = defaultdict(list)
    splits = {name: getattr(bundle, name) for name in SPLITS if getattr(bundle, name) is not None}
    for name, split in splits.items():
        for i, text in enumerate(split.x):
            groups[normalize_text(text)].append((name, i))
    repeated = [members for members in groups.values() if len(members) > 1]

    def describe(members):
        first_split, first = members[0]
        return {"text": str(splits[first_split].x[first])[:300],
                "members": [{"split": s, "index": i, "label": bundle.class_names[int(splits[s].y[i])], "where": _where(splits[s], i)}
                            for s, i in members]}

    leakage = {}
    for held in ("val", "test"):
        leaked = [m for m in repeated if any(s == "train" for s, _ in m) and any(s == held for s, _ in m)]
        leakage[f"train-{held}"] = {"texts": sum(sum(1 for s, _ in m if s == held) for m in leaked), "groups": len(leaked)}
    conflicts = [m for m in repeated if len({int(splits[s].y[i]) for s, i in m}) > 1]
    within = [m for m in repeated if len({s for s, _ in m}) == 1]
    counts = {name: [int((split.y == c).sum()) for c in range(len(bundle.class_names))] for name, split in splits.items()}
    return {
        "modality": "text",
        "source": source,
        "class_names": list(bundle.class_names),
        "counts": {"texts": sum(len(s) for s in splits.values()), "per_split": {k: len(v) for k, v in splits.items()}, "per_class": counts},
        "duplicates": {"groups": len(repeated), "within_one_split": len(within),
                       "extra_copies": sum(len(m) - 1 for m in repeated), "shown": [describe(m) for m in repeated[:_SHOWN]]},
        "leakage": leakage,
        "conflicts": {"groups": len(conflicts), "shown": [describe(m) for m in conflicts[:_SHOWN]]},
        "skipped": list(bundle.skipped),
        "timings": {"total": round(time.perf_counter() - start, 2)},
    }


def _where(split, i: int) -> str:
    return split.paths[i] if i < len(split.paths) else f"#{i}"


def summary_text(findings: dict, report_dir: Path) -> str:
    """One paragraph of the text audit's counts and the report's path."""
    leak = findings["leakage"]
    return (f"text audit of {findings['counts']['texts']} texts: {findings['duplicates']['groups']} duplicate groups "
            f"({findings['duplicates']['extra_copies']} extra copies), {leak['train-test']['texts']} test and "
            f"{leak['train-val']['texts']} val texts with a copy in train, {findings['conflicts']['groups']} texts under "
            f"two labels; report: {report_dir / 'audit.html'}")


def write_text_report(folder: Path, findings: dict, report_dir: Path) -> None:
    """Writes ``audit.json`` and ``audit.html`` (every text escaped) into ``folder``."""
    from tlkeras.runs import atomic_write_text, write_json

    write_json(folder / "audit.json", findings)

    def table(groups):
        rows = []
        for g in groups:
            members = "<br>".join(html.escape(f"{m['split']}: {m['label']} ({m['where']})") for m in g["members"])
            rows.append(f"<tr><td>{html.escape(g['text'])}</td><td>{members}</td></tr>")
        return "<table><tr><th>text</th><th>copies</th></tr>" + "".join(rows) + "</table>" if rows else "<p>None.</p>"

    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Text audit</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}td,th{border-bottom:1px solid #ddd;padding:4px;text-align:left;vertical-align:top}</style>"
        f"</head><body><h1>Text audit</h1><p>{html.escape(summary_text(findings, report_dir))}</p>"
        f"<h2>Texts under two labels</h2>{table(findings['conflicts']['shown'])}"
        f"<h2>Duplicates (first {_SHOWN} groups)</h2>{table(findings['duplicates']['shown'])}</body></html>"
    )
    atomic_write_text(folder / "audit.html", page)
