"""End-to-end training at growing N: does ``python -m tlkeras.train`` finish, and in how much memory?

Generates N synthetic JPEGs (320x240, 10 classes; the generator of ``tools/bench_data.py``) once
per N, then runs the real CLI on them in a fresh process and reads that process's own peak
resident memory from ``wait4`` (``ru_maxrss``). Each run does everything a user's run does:
decoding (into memory within the automatic budget, else the disk store), phase-1 features
(streamed, memory-mapped over the budget), the linear probe, fine-tuning, calibration, the test
evaluation, the model file and the report. Small and fast on purpose (MobileNet-0.25 from the
shared fixture, 96 px, one fine-tuning epoch): the question is memory and completion, not
accuracy on synthetic images.

    nice python tools/bench_scale.py --n 10000 100000 --json benchmarks/scale_runs.json

Writes the images and run folders under --workdir; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import make_images  # noqa: E402  (the same synthetic set as the pipeline benchmark)

WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "weights" / "mobilenet_0.25_224_imagenet_no_top.h5"


def run_train(folder: Path, work: Path, args) -> dict:
    """Runs the train CLI on ``folder``; returns its peak RSS, wall time, store line and metrics."""
    out, cache = work / "runs", work / "cache"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "tlkeras.train", "--data", str(folder), "--backbone", "mobilenet", "--alpha", "0.25",
        "--weights", str(args.weights), "--image-size", str(args.size), "--batch-size", str(args.batch_size),
        "--phase2-epochs", str(args.phase2_epochs), "--output-dir", str(out), "--name", "scale",
        "--cache-dir", str(cache), "--verbose", "2", "--seed", "1",
    ]
    work.mkdir(parents=True, exist_ok=True)
    log = work / "train.log"
    started = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        _, status, usage = os.wait4(proc.pid, 0)
    result = {
        "exit": os.waitstatus_to_exitcode(status),
        "wall_s": time.perf_counter() - started,
        "peak_rss_gb": usage.ru_maxrss / 1024**2,
        "store": [line.strip() for line in log.read_text().splitlines() if line.startswith("tlkeras:")][:3],
    }
    metrics = out / "scale" / "metrics.json"
    if metrics.exists():
        data = json.loads(metrics.read_text())
        result["test_accuracy"] = data.get("final", {}).get("accuracy")
        result["timings"] = {k: round(v, 1) for k, v in data.get("timings", {}).items() if isinstance(v, float)}
    else:
        result["log_tail"] = log.read_text()[-1500:]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--phase2-epochs", type=int, default=1)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlkeras_bench_data"))
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    rows = []
    for n in args.n:
        made = time.perf_counter()
        folder = make_images(args.workdir / f"images_{n}", n)
        print(f"{n} images ready in {time.perf_counter() - made:.0f} s", flush=True)
        result = {"n": n, **run_train(folder, args.workdir / f"scale_{n}", args)}
        print(json.dumps(result), flush=True)
        rows.append(result)
    print("\n| N | exit | peak RSS (GB) | wall (s) | data / phase 1 / phase 2 (s) | test accuracy |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        t = r.get("timings", {})
        phases = " / ".join(f"{t[k]:.0f}" if k in t else "-" for k in ("data", "phase1", "phase2"))
        acc = f"{r['test_accuracy']:.3f}" if r.get("test_accuracy") is not None else "-"
        print(f"| {r['n']:,} | {r['exit']} | {r['peak_rss_gb']:.2f} | {r['wall_s']:.0f} | {phases} | {acc} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
