"""Benchmark: tlkeras' default detector on BCCD (Pascal VOC, its own 205 / 87 / 72 split).

Per seed: trains with the defaults (``python -m tlkeras.train --data <bccd> --weights <MobileNetV2
file>``, through the library), exports float32 / float16 / int8 and reads from the bundle what
MediaPipe's Python ObjectDetector scored on the test split (AP50, AP), the LiteRT numbers and the
int8 p50 latency (LiteRT, one thread, 320 px). Writes ``benchmarks/detection.json`` and prints a
Markdown table.

Run it alone (it is heavy): ``flock /tmp/tlkeras-bench.lock python tools/bench_detection.py --seeds 0``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


class _Stored:
    """A finished run folder read back (``--run-dir``: export and measure a run trained before)."""

    def __init__(self, run_dir: Path):
        from tlkeras.config import load_config

        self.run_dir = run_dir
        self.config = load_config(run_dir / "config.yaml")
        self.metrics = json.loads((run_dir / "metrics.json").read_text())
        self.timings = self.metrics["timings"]
        self.info = json.loads((run_dir / "run.json").read_text())


def run_seed(seed: int, data: Path, weights: Path, out: Path, variants, run_dir: Path | None = None) -> dict:
    from types import SimpleNamespace

    from tlkeras.config import RunConfig
    from tlkeras.core.tasks import get_task

    task = get_task("detection")
    if run_dir is not None:
        result = _Stored(run_dir)
        config, train_s = result.config, result.timings["total"]
    else:
        config = RunConfig()
        config.data.source, config.model.weights, config.seed = str(data), str(weights), seed
        config.output_dir, config.name = str(out / "runs"), f"bccd-seed{seed}"
        t0 = time.perf_counter()
        result = task.train(config)
        train_s = time.perf_counter() - t0
    options = SimpleNamespace(variants=tuple(variants), overwrite=True, representative_size=200, verify_mediapipe=True, seed=seed)
    t1 = time.perf_counter()
    bundle = task.export_run(result.run_dir, out / "bundles" / config.name, options=options, progress=lambda line: print(line, flush=True))
    meta = bundle.metadata
    row = {"seed": seed, "train_seconds": train_s, "phase1_s": result.timings["phase1"], "phase2_s": result.timings["phase2"],
           "export_seconds": time.perf_counter() - t1, "selection": result.info["selection"],
           "keras": {k: result.metrics["final"][k] for k in ("AP", "AP50", "AP75", "AR100")},
           "keras_per_class": result.metrics["final"]["per_class"], "val_AP50": result.metrics["val"]["AP50"], "variants": {}}
    for name, v in meta["variants"].items():
        mp = v.get("mediapipe") or {}
        row["variants"][name] = {"bytes": v["bytes"], "verified_on": v["verified_on"], "litert_AP50": v["metrics"]["AP50"],
                                 "litert_AP": v["metrics"]["AP"], "mediapipe_AP50": mp.get("AP50"), "mediapipe_AP": mp.get("AP"),
                                 "p50_ms_1_thread": v["latency"]["litert_p50_ms_1_thread"]}
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", default=str(SHARED / "data" / "bccd"))
    parser.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5"))
    parser.add_argument("--variants", nargs="+", default=["float32", "float16", "int8"])
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "detection.json"))
    parser.add_argument("--run-dir", nargs="+", default=None, help="export and measure these finished runs instead of training")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-detection-") as tmp:
        jobs = [(None, seed) for seed in args.seeds] if not args.run_dir else [(Path(r), None) for r in args.run_dir]
        for run_dir, seed in jobs:
            seed = seed if run_dir is None else _Stored(run_dir).config.seed
            rows.append(run_seed(seed, Path(args.data), Path(args.weights), Path(tmp), args.variants, run_dir))
            print(json.dumps(rows[-1], indent=1, default=str), flush=True)
    from tlkeras.core.versions import versions
    from tlkeras.runs import write_json

    write_json(args.output, {"benchmark": "detection on BCCD (VOC split 205/87/72), tlkeras defaults, MobileNetV2-1.0 ImageNet weights",
                             "machine": "2 CPU cores (shared)", "versions": versions(), "rows": rows})
    print("| seed | train s | Keras AP50 / AP | MediaPipe float32 AP50 / AP | MediaPipe int8 AP50 / AP | int8 p50 ms (1 thread) | int8 KB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        f, q = r["variants"].get("float32", {}), r["variants"].get("int8", {})
        fmt = lambda a, b: f"{a:.3f} / {b:.3f}" if a is not None and b is not None else "n/a"  # noqa: E731
        print(f"| {r['seed']} | {r['train_seconds']:.0f} | {fmt(r['keras']['AP50'], r['keras']['AP'])} | "
              f"{fmt(f.get('mediapipe_AP50'), f.get('mediapipe_AP'))} | {fmt(q.get('mediapipe_AP50'), q.get('mediapipe_AP'))} | "
              f"{q.get('p50_ms_1_thread', float('nan')):.1f} | {q.get('bytes', 0) / 1024:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
