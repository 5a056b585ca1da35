"""Assembles BENCHMARKS.md from the per-topic sections under benchmarks/*.md.

Each benchmark script writes its own section (machine, date, table); this keeps BENCHMARKS.md a
pure concatenation in a fixed order, so re-running one benchmark never clobbers another's numbers.

    python tools/merge_benchmarks.py
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["core", "core_seeds", "core_matrix", "export", "export_mobile", "optimize", "tune", "unlabeled", "issue9", "data", "audit", "unknown"]

HEADER = """# Benchmarks

Targets are the ones the issues name; each section says which are met. Machine: the project's
2-core x86_64 CPU box (Python 3.11, TensorFlow 2.21 CPU build), unless a section says otherwise.
Most numbers were measured while other jobs shared the two cores, so wall times are upper bounds;
accuracies do not depend on the load. No GPU was lent to these sessions, so GPU throughput (mixed
precision, XLA) is not measured yet.

Fixtures: `../shared/data/flowers5` (5 classes; 500 train / 150 val / 150 test photos) and
`../shared/weights/mobilenet_0.25_224_imagenet_no_top.h5` (Keras' MobileNet alpha=0.25 ImageNet
weights), `../shared/weights/mobilenet_v2_1.0_224_imagenet_no_top.h5` (the default backbone) and
`../shared/data/beans`. Each section names the script that reproduces it.

"""


def main() -> None:
    sections = {p.stem: p.read_text().strip() for p in sorted((ROOT / "benchmarks").glob("*.md"))}
    names = [n for n in ORDER if n in sections] + sorted(set(sections) - set(ORDER))
    body = "\n\n".join(sections[n] for n in names)
    (ROOT / "BENCHMARKS.md").write_text(HEADER + body + "\n")
    print(f"BENCHMARKS.md: {', '.join(names)}")


if __name__ == "__main__":
    main()
