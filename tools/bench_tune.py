"""Benchmark: does a time-boxed Hyperband search beat tlkeras' default recipe on flowers5?

1. Trains the default configuration (``python -m tlkeras.train`` defaults, MobileNet-0.25 with
   the ImageNet weights file, 224 px) and evaluates it on the test split.
2. Runs ``tlkeras.tuning.run_search`` with Hyperband under a wall-clock budget (default 10
   minutes). The backbone is pinned (the weights file fits only MobileNet alpha 0.25); the other
   hyperparameters use the default search space. A full trial has the default recipe's epochs.
3. Retrains the search's ``best.yaml`` with ``tlkeras.training.train_model`` and evaluates it on
   the test split (the test split is never seen by the search, which scores on val).

Usage::

    python tools/bench_tune.py [--budget 600] [--out /tmp/bench_tune] [--objective val_accuracy]

Prints a Markdown table and writes ``<out>/bench_tune.json``. Timings are wall-clock and noisy on
a machine shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(SHARED / "data" / "flowers5"))
    parser.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_0.25_224_imagenet_no_top.h5"))
    parser.add_argument("--budget", default="600", help="search wall-clock budget (seconds or 10m)")
    parser.add_argument("--objective", default="val_accuracy")
    parser.add_argument("--out", default="/tmp/bench_tune")
    parser.add_argument("--skip-default", action="store_true", help="reuse <out>/default's metrics")
    args = parser.parse_args(argv)

    from tlkeras.cli import quiet_tensorflow

    quiet_tensorflow()
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig, load_config
    from tlkeras.runs import read_json
    from tlkeras.train.run import train_model
    from tlkeras.tune.search import SearchOptions, run_search

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def base(name: str) -> RunConfig:
        return RunConfig(
            data=DataConfig(source=args.data, image_size=224),
            model=ModelConfig(backbone="mobilenet", alpha=0.25, weights=args.weights),
            train=TrainConfig(verbose=0),
            output_dir=str(out), name=name,
        )

    results: dict = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}

    # 1. The default configuration.
    if args.skip_default and (out / "default" / "metrics.json").is_file():
        m = read_json(out / "default" / "metrics.json")
    else:
        shutil.rmtree(out / "default", ignore_errors=True)
        m = train_model(base("default")).metrics
    results["default"] = {"val_accuracy": m["val"]["accuracy"], "test_accuracy": m["final"]["accuracy"], "seconds": m["timings"]["total"]}
    print(f"default: val {m['val']['accuracy']:.3f} test {m['final']['accuracy']:.3f} ({m['timings']['total']:.0f}s)", flush=True)

    # 2. The search (backbone and size pinned, everything else from the default space).
    shutil.rmtree(out / "search", ignore_errors=True)
    t0 = time.monotonic()
    search = run_search(
        base("search"), {"backbone": "mobilenet", "image_size": 224},
        SearchOptions(tuner="hyperband", objective=args.objective, time_budget=args.budget, verbose=1),
    )
    wall = time.monotonic() - t0
    info = search.info
    results["search"] = {
        "wall_seconds": wall, "trials": info["trials"], "status_counts": info["status_counts"],
        "stopped_by": info["stopped_by"], "best_trial": info["best_trial"], "best_score": info["best_score"],
        "best_values": info["best_values"], "feature_cache": info["feature_cache"], "objective": args.objective,
    }
    print(f"search: {info['trials']} trials {info['status_counts']} in {wall:.0f}s; best {args.objective} {info['best_score']}", flush=True)
    if search.best_values is None:
        print("no trial completed", file=sys.stderr)
        return 1

    # 3. Retrain the winner from best.yaml, exactly as `python -m tlkeras.train --config` would.
    best = load_config(search.directory / "best.yaml")
    best.output_dir, best.name = str(out), "best"
    shutil.rmtree(out / "best", ignore_errors=True)
    mb = train_model(best).metrics
    results["best"] = {"val_accuracy": mb["val"]["accuracy"], "test_accuracy": mb["final"]["accuracy"], "seconds": mb["timings"]["total"]}
    print(f"best retrained: val {mb['val']['accuracy']:.3f} test {mb['final']['accuracy']:.3f} ({mb['timings']['total']:.0f}s)", flush=True)

    (out / "bench_tune.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    d, b = results["default"], results["best"]
    print()
    print("| configuration | val acc | test acc | train time |")
    print("|---|---|---|---|")
    print(f"| default (`python -m tlkeras.train` defaults) | {d['val_accuracy']:.3f} | {d['test_accuracy']:.3f} | {d['seconds']:.0f} s |")
    print(f"| Hyperband best, retrained from best.yaml | {b['val_accuracy']:.3f} | {b['test_accuracy']:.3f} | {b['seconds']:.0f} s |")
    print()
    print(f"search: {info['trials']} trials ({info['status_counts']}), stopped by {info['stopped_by']} after {wall:.0f} s; best values {info['best_values']}")
    print(f"target met: {b['test_accuracy'] >= d['test_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
