"""Benchmark of tlkeras.optimize on flowers5 with the MobileNet-0.25 ImageNet weights.

Trains (or reuses) a base run, then compresses it with each recipe through the public API and
prints a Markdown table (also written as JSON) against the issue's targets:

- 50% sparsity with <= 1 point test-accuracy loss, and a gzipped int8 TFLite >= 1.8x smaller than
  the unpruned gzipped int8;
- QAT int8 accuracy >= post-training int8 accuracy;
- PQAT keeps >= 45% sparsity in the int8 TFLite.

Usage::

    python tools/bench_optimize.py --work /tmp/bench_opt [--base runs/base] [--recipes prune50,qat,pqat]

Not a test: it takes tens of minutes on a 2-core CPU. Numbers go to benchmarks/optimize.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FLOWERS5 = SHARED / "data" / "flowers5"
WEIGHTS = SHARED / "weights" / "mobilenet_0.25_224_imagenet_no_top.h5"

RECIPES = {
    # name: (pruning kwargs, clustering kwargs, qat?)
    "prune50": ({"target_sparsity": 0.5, "epochs": 16}, None, False),
    "prune50-8ep": ({"target_sparsity": 0.5}, None, False),
    "prune75": ({"target_sparsity": 0.75, "epochs": 16}, None, False),
    "prune80": ({"target_sparsity": 0.8, "epochs": 16}, None, False),
    "prune50-cluster16": ({"target_sparsity": 0.5, "epochs": 16}, {"clusters": 16}, False),
    "prune50-32ep": ({"target_sparsity": 0.5, "epochs": 32}, None, False),
    "prune50-min2k": ({"target_sparsity": 0.5, "epochs": 16, "min_weights": 2048}, None, False),
    "pqat-min2k": ({"target_sparsity": 0.5, "epochs": 16, "min_weights": 2048}, None, True),
    "prune50-min2k-cluster16": ({"target_sparsity": 0.5, "epochs": 16, "min_weights": 2048}, {"clusters": 16}, False),
    "prune24": ({"structure": "2:4", "target_sparsity": 0.5, "epochs": 16}, None, False),
    "cluster16": (None, {"clusters": 16}, False),
    "qat": (None, None, True),
    "pqat": ({"target_sparsity": 0.5, "epochs": 16}, None, True),
    "pcqat": ({"target_sparsity": 0.5, "epochs": 16}, {"clusters": 16}, True),
    "cqat": (None, {"clusters": 16}, True),
}


def train_base(work: Path) -> Path:
    run = work / "runs" / "base"
    if run.is_dir():
        return run
    cmd = [sys.executable, "-m", "tlkeras.train", "--data", str(FLOWERS5), "--backbone", "mobilenet", "--alpha", "0.25",
           "--weights", str(WEIGHTS), "--image-size", "224", "--output-dir", str(work / "runs"), "--name", "base", "--verbose", "0"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return run


def run_recipe(base: Path, work: Path, name: str, epochs: int | None, lr: float | None = None, self_distill: float | None = None) -> dict:
    from tlkeras.optimize.options import ClusteringOptions, FineTuneOptions, PruningOptions, QATOptions
    from tlkeras.optimize.pipeline import optimize_run

    target = work / "runs" / f"base-{name}"
    if (target / "optimization.json").is_file():
        return json.loads((target / "optimization.json").read_text())
    pruning, clustering, qat = RECIPES[name]
    result = optimize_run(
        base,
        pruning=PruningOptions(**pruning) if pruning else None,
        clustering=ClusteringOptions(**clustering) if clustering else None,
        qat=QATOptions() if qat else None,
        finetune=FineTuneOptions(epochs=epochs, learning_rate=lr, verbose=0, **({} if self_distill is None else {"self_distill": self_distill})),
        output_dir=work / "runs",
        name=f"base-{name}",
    )
    return result.report


def row(name: str, r: dict) -> str:
    acc, size = r["accuracy"], r["size"]
    sp = r.get("sparsity", {})
    cl = r.get("clustering", {})
    ptq_same = acc["after"].get("int8_ptq_same_model")
    cells = [
        name,
        f"{acc['before']['float']:.3f} -> {acc['after']['float']:.3f}",
        f"{acc['before']['int8_ptq']:.3f}",
        f"{acc['after']['int8']:.3f} ({acc['after']['int8_method']})",
        f"{ptq_same:.3f}" if ptq_same is not None else "—",
        f"{sp['pruned_layers_overall']:.1%} / {sp['int8_tflite_overall']:.1%}" if sp else "—",
        str(cl.get("max_unique", "—")),
        f"{size['before']['keras_gzip_bytes'] / 1024:.0f} -> {size['after']['keras_gzip_bytes'] / 1024:.0f}",
        f"{size['before']['int8_tflite_gzip_bytes'] / 1024:.0f} -> {size['after']['int8_tflite_gzip_bytes'] / 1024:.0f} ({size['int8_gzip_ratio']:.2f}x)",
        f"{r['seconds']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| recipe | float test acc (base -> after) | base PTQ int8 | int8 after | PTQ int8 of the model QAT started from | "
    "sparsity Keras / int8 TFLite | max unique weights | gzipped Keras KiB | gzipped int8 TFLite KiB | seconds |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def targets(reports: dict[str, dict]) -> list[str]:
    lines = []
    p = reports.get("prune50")
    if p:
        loss = (p["accuracy"]["before"]["float"] - p["accuracy"]["after"]["float"]) * 100
        lines.append(f"- 50% sparsity, test-accuracy loss {loss:+.1f} points (target <= 1): {'met' if loss <= 1.0 + 1e-9 else 'NOT met'}")
        ratio = p["size"]["int8_gzip_ratio"]
        lines.append(f"- gzipped int8 TFLite {ratio:.2f}x smaller than the unpruned gzipped int8 (target >= 1.8x): {'met' if ratio >= 1.8 else 'NOT met'}")
    q = reports.get("qat")
    if q:
        a = q["accuracy"]["after"]
        lines.append(f"- QAT int8 {a['int8']:.3f} vs post-training int8 {a['int8_ptq_same_model']:.3f} (target >=): "
                     f"{'met' if a['int8'] >= a['int8_ptq_same_model'] else 'NOT met'}")
    pq = reports.get("pqat")
    if pq:
        s = pq["sparsity"]["int8_tflite_overall"]
        lines.append(f"- PQAT sparsity in the int8 TFLite {s:.1%} (target >= 45%): {'met' if s >= 0.45 else 'NOT met'}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/tlkeras-bench-optimize", help="folder for runs and results")
    parser.add_argument("--base", help="an existing base run (default: train one under --work)")
    parser.add_argument("--recipes", default="prune50,qat,pqat", help=f"comma-separated, from {', '.join(RECIPES)}")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs per stage (default: the run's phase2_epochs)")
    parser.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the run's phase-2 rate)")
    parser.add_argument("--self-distill", type=float, default=None, help="FineTuneOptions.self_distill (default: the library's)")
    args = parser.parse_args(argv)
    if not FLOWERS5.is_dir() or not WEIGHTS.is_file():
        print("bench_optimize: ../shared/data/flowers5 or the MobileNet-0.25 weights are missing", file=sys.stderr)
        return 2
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = Path(args.base) if args.base else train_base(work)
    reports = {}
    for name in [r for r in args.recipes.split(",") if r]:
        t = time.perf_counter()
        reports[name] = run_recipe(base, work, name, args.epochs, args.lr, args.self_distill)
        print(f"{name}: done in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    lines = [f"Machine: {platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}", "", HEADER]
    lines += [row(n, r) for n, r in reports.items()]
    lines += [""] + targets(reports)
    text = "\n".join(lines)
    print(text)
    (work / "bench_optimize.json").write_text(json.dumps(reports, indent=2))
    (work / "bench_optimize.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
