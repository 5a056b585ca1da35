"""Quickstart benchmark (issue 25): the README's first command, timed from a fresh process.

Runs ``python -m tlkeras.train`` with no data (the photos and ImageNet weights shipped in the
package) once per seed, each in a new process from a clean working folder, and records: the wall
time of the whole command (imports, both trainings, the int8 export and its LiteRT/MediaPipe
checks, the report), the step times the run reports, transfer and scratch test accuracy, and the
int8 file's size, agreement with Keras and p50 latency. Then, side by side in the same session,
the first run this one replaced: ``python -m tlkeras.train --demo shapes`` with an empty weights
cache (so it pays its pretraining, as a fresh machine does).

Targets: under 90 s on 2 CPU cores; transfer >= 0.78 test accuracy where scratch <= 0.40.

    python tools/bench_quickstart.py [--seeds 42 0 1] [--work /tmp/tlkeras-bench-quickstart] [--no-shapes]
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

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0, 1])
    parser.add_argument("--work", default="/tmp/tlkeras-bench-quickstart")
    parser.add_argument("--no-shapes", action="store_true", help="skip the generated-shapes demo")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    rows = []
    for seed in args.seeds:
        folder = work / f"seed{seed}"
        folder.mkdir(parents=True)
        wall, out = timed([sys.executable, "-m", "tlkeras.train", "--seed", str(seed), "--name", "qs", "--verbose", "0"], folder)
        result = json.loads((folder / "runs" / "qs" / "comparison.json").read_text())
        t, s, q = result["models"]["transfer (two-phase)"], result["models"]["from scratch (same time)"], result["int8"]
        rows.append((seed, wall, t, s, q))
        print(f"seed {seed}: {wall:.1f} s; transfer {t['test_accuracy']:.3f}, scratch {s['test_accuracy']:.3f}; "
              f"int8 {q['test_accuracy']:.3f} ({q['bytes'] / 1024:.0f} KB, agreement {q['agreement_with_keras']:.3f}, "
              f"{q['latency_p50_ms']:.1f} ms), verified on {', '.join(q['verified_on'])}", flush=True)
    lines = ["| seed | wall s (whole command) | transfer test acc | scratch test acc (epochs) | int8 test acc | int8 KB | "
             "int8 agreement with Keras | MediaPipe agreement with LiteRT | int8 p50 ms (1 thread) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for seed, wall, t, s, q in rows:
        mp = q.get("mediapipe") or {}
        lines.append(f"| {seed} | {wall:.1f} | {t['test_accuracy']:.3f} | {s['test_accuracy']:.3f} ({s['epochs']}) | {q['test_accuracy']:.3f} | "
                     f"{q['bytes'] / 1024:.0f} | {q['agreement_with_keras']:.3f} | {mp.get('agreement', float('nan')):.3f} | {q['latency_p50_ms']:.1f} |")
    if not args.no_shapes:
        folder = work / "shapes"
        folder.mkdir(parents=True)
        env = {**os.environ, "TLKERAS_CACHE": str(folder / "cache")}  # a fresh machine pretrains
        wall, out = timed([sys.executable, "-m", "tlkeras.train", "--demo", "shapes", "--name", "shapes"], folder, env)
        shapes = json.loads((folder / "runs" / "shapes" / "comparison.json").read_text())
        lines.append(f"| shapes demo (before), seed 42 | {wall:.1f} | {shapes['transfer (two-phase)']['test_accuracy']:.3f} | "
                     f"{shapes['from scratch']['test_accuracy']:.3f} | no export | | | | |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
