"""Edge-export benchmark on ../shared/data/flowers5 with the MobileNet-0.25 ImageNet weights (issue 3).

Trains (or reuses) a flowers5 run with tlkeras' default recipe, exports every variant with
``tlkeras.exporting.export_run`` (LiteRT-verified on the test split), times them with
``tlkeras.benchmarking.benchmark_bundle`` and checks the issue's targets:

  - int8 file <= 0.36x the float32 file
  - int8 test accuracy within 1.0 point of the Keras float model
  - int8 top-1 agreement with the Keras model >= 97%
  - int8 p50 latency <= 0.6x float32 with one thread

With ``--compare`` it also exports the quantized variants without bias correction, to show
what the correction buys. Prints a Markdown section (for benchmarks/export.md) and writes
``<work>/bench_export.json``. Latency on a shared machine is noisy: raise ``--iterations``.

    python tools/bench_export.py [--run runs/<name>] [--shared ../shared] [--work /tmp/tlkeras-bench-export]
                                 [--iterations 500] [--seed 42] [--compare]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {
    "size_ratio": ("int8 file / float32 file", "<=", 0.36),
    "accuracy_drop": ("int8 accuracy drop vs Keras (points)", "<=", 1.0),
    "agreement": ("int8 top-1 agreement with Keras", ">=", 0.97),
    "latency_ratio": ("int8 p50 / float32 p50, 1 thread", "<=", 0.6),
}


def train_run(shared: Path, work: Path, seed: int) -> Path:
    """Trains flowers5 with the default recipe into ``work/runs/flowers5-seed<seed>`` (reused if there)."""
    from tlkeras import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tlkeras.train.run import train_model

    run = work / "runs" / f"flowers5-seed{seed}"
    if (run / "model.keras").is_file():
        print(f"reusing {run}", flush=True)
        return run
    config = RunConfig(
        data=DataConfig(source=str(shared / "data" / "flowers5"), image_size=224),
        model=ModelConfig(backbone="mobilenet", alpha=0.25, weights=str(shared / "weights" / "mobilenet_0.25_224_imagenet_no_top.h5")),
        train=TrainConfig(verbose=0),
        output_dir=str(work / "runs"),
        name=run.name,
        seed=seed,
    )
    start = time.perf_counter()
    result = train_model(config)
    print(f"trained {run} in {time.perf_counter() - start:.0f}s: test accuracy {result.metrics['final']['accuracy']:.3f}", flush=True)
    return run


def check_targets(bench: dict, meta: dict) -> dict:
    rows = {r["variant"]: r for r in bench["rows"]}
    int8 = rows["int8"]
    values = {
        "size_ratio": int8["size_ratio"],
        "accuracy_drop": meta["variants"]["int8"]["metrics"]["drop_points"],
        "agreement": int8["agreement"],
        "latency_ratio": int8["latency_ratio"],
    }
    out = {}
    for key, (label, op, limit) in TARGETS.items():
        value = values[key]
        met = value <= limit if op == "<=" else value >= limit
        out[key] = {"label": label, "value": value, "target": f"{op} {limit}", "met": bool(met)}
    return out


def markdown(bench: dict, meta: dict, targets: dict, compare: dict | None, run: Path, export_seconds: float) -> str:
    from tlkeras.benchmark.bundle import format_markdown

    lines = [
        "## Edge export (issue 3)",
        "",
        f"Run `{run.name}`: flowers5, MobileNet-0.25 ImageNet weights, 224 px, tlkeras default recipe; "
        f"export of all 7 variants (conversion, bias correction, LiteRT evaluation on {meta['evaluation']['count']} test images, "
        f"quantization report, micro C array) took {export_seconds:.0f} s.",
        "",
        format_markdown(bench),
        "| target | measured | target | met |",
        "|---|---|---|---|",
    ]
    for t in targets.values():
        value = t["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"| {t['label']} | {shown} | {t['target']} | {'yes' if t['met'] else 'NO'} |")
    micro = meta.get("micro") or {}
    if micro:
        arena = micro["arena"]
        lines += ["", f"Micro: builtin int8 only: {'yes' if micro['ok'] else 'no'}; ops {', '.join(micro['ops'])}; "
                      f"tensor arena estimate {arena['estimate']} B, TFLite Micro measured {arena['measured_tflm']} B "
                      f"(header uses {micro['arena_bytes']} B)."]
    if compare:
        lines += ["", "Bias correction (agreement with Keras / accuracy on the test split):", "",
                  "| variant | without correction | with correction |", "|---|---|---|"]
        for name, (without, with_) in compare.items():
            lines.append(f"| {name} | {without['agreement']:.3f} / {without['accuracy']:.3f} | {with_['agreement']:.3f} / {with_['accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="an existing flowers5 run directory (default: train one)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tlkeras-bench-export"))
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--compare", action="store_true", help="also export without bias correction")
    args = parser.parse_args()

    from tlkeras.benchmark.bundle import BenchmarkOptions, benchmark_bundle
    from tlkeras.export.bundle import ExportOptions, export_run

    if not (args.shared / "data" / "flowers5").is_dir():
        print(f"no flowers5 under {args.shared}; pass --shared", file=sys.stderr)
        return 2
    run = args.run or train_run(args.shared, args.work, args.seed)
    bundle_dir = args.work / "export" / run.name
    start = time.perf_counter()
    result = export_run(run, bundle_dir, ExportOptions(allow_drop=True, overwrite=True, debug_quantization=True),
                        progress=lambda line: print(line, flush=True))
    export_seconds = time.perf_counter() - start
    compare = None
    if args.compare:
        plain = export_run(run, args.work / "export" / f"{run.name}-no-bias-correction",
                           ExportOptions(variants=("dynamic_range", "int8_float_io", "int8", "int16x8"), allow_drop=True,
                                         overwrite=True, bias_correction=False, micro=False))
        compare = {name: (plain.metadata["variants"][name]["metrics"], result.metadata["variants"][name]["metrics"])
                   for name in plain.metadata["variants"]}
    threads = tuple(sorted({1, os.cpu_count() or 1}))
    bench = benchmark_bundle(bundle_dir, BenchmarkOptions(threads=threads, iterations=args.iterations, warmup=50, rounds=10))
    targets = check_targets(bench, result.metadata)
    text = markdown(bench, result.metadata, targets, compare, run, export_seconds)
    print(text)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "bench_export.json").write_text(json.dumps(
        {"benchmark": bench, "targets": targets, "metadata": result.metadata, "export_seconds": export_seconds,
         "compare": compare}, indent=2, default=float))
    print(f"wrote {args.work / 'bench_export.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
