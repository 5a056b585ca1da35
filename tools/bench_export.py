"""Edge-export benchmark on ../shared/data/flowers5 with the MobileNet-0.25 ImageNet weights (issue 3).

Trains (or reuses) a flowers5 run with tlkeras' default recipe, exports every variant with
``tlkeras.export_run`` (LiteRT-verified on the test split), times them with
``tlkeras.benchmark_bundle`` and checks the issue's targets:

  - int8 file <= 0.36x the float32 file
  - int8 test accuracy within 1.0 point of the Keras float model
  - int8 top-1 agreement with the Keras model >= 97%
  - int8 p50 latency <= 0.6x float32 with one thread

With ``--mobile`` (issue 14) it exports with ONNX too and reports, per variant, the runtimes it
was verified on (MediaPipe Tasks' top-1 agreement with LiteRT), the int8 guardrail's outcome on
``int8_float_io`` against its targets (agreement >= 0.97, drop <= 1 point, file <= 0.40x float32,
p50 <= 0.75x float32 with one thread) and the ONNX agreement; ``--backbone mobilenet_v2`` uses the
MobileNetV2-1.0 weights.

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


WEIGHTS = {"mobilenet": ("mobilenet_0.25_224_imagenet_no_top.h5", 0.25), "mobilenet_v2": ("mobilenet_v2_1.0_224_imagenet_no_top.h5", 1.0)}
MOBILE_TARGETS = {"agreement": (">=", 0.97), "drop_points": ("<=", 1.0), "size_ratio": ("<=", 0.40), "latency_ratio": ("<=", 0.75)}


def train_run(shared: Path, work: Path, seed: int, backbone: str = "mobilenet") -> Path:
    """Trains flowers5 with the default recipe into ``work/runs/flowers5-seed<seed>`` (reused if there)."""
    from tlkeras import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tlkeras.train.run import train_model

    weights, alpha = WEIGHTS[backbone]
    run = work / "runs" / (f"flowers5-seed{seed}" if backbone == "mobilenet" else f"flowers5-{backbone}-seed{seed}")
    if (run / "model.keras").is_file():
        print(f"reusing {run}", flush=True)
        return run
    config = RunConfig(
        data=DataConfig(source=str(shared / "data" / "flowers5"), image_size=224),
        model=ModelConfig(backbone=backbone, alpha=alpha, weights=str(shared / "weights" / weights)),
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


def mobile_markdown(bench: dict, meta: dict, run: Path, export_seconds: float) -> str:
    """The issue-14 table: runtimes per variant, the guarded int8 variant against its targets, ONNX."""
    rows = {r["variant"]: r for r in bench["rows"]}
    lines = [f"### `{run.name}` ({meta['source_run'].get('backbone')}, alpha {meta['source_run'].get('alpha')}): "
             f"Keras test accuracy {meta['evaluation']['keras']['accuracy']:.3f} on {meta['evaluation']['count']} images; export {export_seconds:.0f} s",
             "", "| variant | KB | x float32 | p50 ms (1T) | x float32 | accuracy | agreement (Keras) | verified on | MediaPipe top-1 = LiteRT |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, v in meta["variants"].items():
        r, m, mp = rows.get(name, {}), v.get("metrics") or {}, v.get("mediapipe") or {}
        p50 = (r.get("latency") or {}).get(1, (r.get("latency") or {}).get("1", {})).get("p50_ms")
        mp_text = f"{mp['agreement']:.3f}" if mp.get("loaded") else ("does not load" if mp else "—")
        lines.append(f"| {name} | {v.get('bytes', 0) / 1024:.0f} | {r.get('size_ratio') or 0:.3f} | {p50 or float('nan'):.2f} | "
                     f"{r.get('latency_ratio') or float('nan'):.2f} | {m.get('accuracy', float('nan')):.3f} | {m.get('agreement', float('nan')):.3f} | "
                     f"{', '.join(v.get('verified_on') or [])} | {mp_text} |")
    guarded = meta["variants"].get("int8_float_io", {})
    r = rows.get("int8_float_io", {})
    values = {"agreement": guarded.get("metrics", {}).get("agreement"), "drop_points": guarded.get("metrics", {}).get("drop_points"),
              "size_ratio": r.get("size_ratio"), "latency_ratio": r.get("latency_ratio")}
    lines += ["", "Guarded int8 (`int8_float_io`): " + "; ".join(
        f"{k} {v:.3f} (target {op} {lim}: {'met' if (v <= lim if op == '<=' else v >= lim) else 'NOT met'})"
        for k, (op, lim) in MOBILE_TARGETS.items() for v in [values[k]] if v is not None) + "."]
    guard = guarded.get("guardrail")
    if guard:
        lines.append(f"Guardrail: {'rescued' if guard['passed'] else 'could not rescue'} it; attempts {guard['attempts']}; "
                     + (f"float layers {guard.get('float_layers')}, +{guard.get('size_cost_bytes', 0) / 1024:.1f} KB, latency {guard.get('latency')}."
                        if guard["passed"] else f"reason: {guard.get('reason')}."))
    else:
        lines.append("Guardrail: not needed (the plain int8 model passed the gate).")
    onnx = meta.get("onnx")
    if onnx:
        lines.append(f"ONNX (tf2onnx {onnx['tf2onnx']}, onnxruntime {onnx['onnxruntime']}): agreement with Keras "
                     f"{onnx['metrics']['agreement']:.4f} (target >= 0.999: {'met' if onnx['passed'] else 'NOT met'}), {onnx['bytes'] / 1024:.0f} KB.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="an existing flowers5 run directory (default: train one)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tlkeras-bench-export"))
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--compare", action="store_true", help="also export without bias correction")
    parser.add_argument("--backbone", choices=sorted(WEIGHTS), default="mobilenet", help="mobilenet (alpha 0.25) or mobilenet_v2 (alpha 1.0)")
    parser.add_argument("--mobile", action="store_true", help="issue 14: MediaPipe, guardrail and ONNX table (exports with --onnx)")
    parser.add_argument("--out", type=Path, help="append the Markdown section to this file")
    args = parser.parse_args()

    from tlkeras.benchmark.bundle import BenchmarkOptions, benchmark_bundle
    from tlkeras.export.bundle import ExportOptions, export_run

    if not (args.shared / "data" / "flowers5").is_dir():
        print(f"no flowers5 under {args.shared}; pass --shared", file=sys.stderr)
        return 2
    run = args.run or train_run(args.shared, args.work, args.seed, args.backbone)
    bundle_dir = args.work / "export" / run.name
    start = time.perf_counter()
    result = export_run(run, bundle_dir, ExportOptions(allow_drop=True, overwrite=True, debug_quantization=True, onnx=args.mobile),
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
    if args.mobile:
        text = mobile_markdown(bench, result.metadata, run, export_seconds)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "bench_export.json").write_text(json.dumps(
        {"benchmark": bench, "targets": targets, "metadata": result.metadata, "export_seconds": export_seconds,
         "compare": compare}, indent=2, default=float))
    print(f"wrote {args.work / 'bench_export.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
