"""Benchmarks of tlkeras.tune on flowers5: a time-boxed search against the default recipe, and (``--device``) a search under device limits.

1. Trains the default configuration (``python -m tlkeras.train`` defaults, MobileNet-0.25 with
   the ImageNet weights file, 224 px) and evaluates it on the test split.
2. Runs ``tlkeras.tune.search.run_search`` with Hyperband under a wall-clock budget (default 10
   minutes). The backbone is pinned (the weights file fits only MobileNet alpha 0.25); the other
   hyperparameters use the default search space. A full trial has the default recipe's epochs.
3. Retrains the search's ``best.yaml`` with ``tlkeras.train.run.train_model`` and evaluates it on
   the test split (the test split is never seen by the search, which scores on val).

Usage::

    python tools/bench_tune.py [--budget 600] [--out /tmp/bench_tune] [--objective val_accuracy]
    python tools/bench_tune.py --device [--max-size 400KB] [--budget 1200] [--sizes 96,128,160,192,224]

``--device`` is the device-limit benchmark of issue 18: hand-picked MobileNet-0.25 models at a few
resolutions (trained with the default recipe, int8 size measured), then a search over MobileNet-0.25
and MobileNetV2-1.0 (each with its weights file) and the resolutions under ``--max-size``, int8,
whose winner is retrained from ``best.yaml`` and tested; prints how much of the search went to
converting and timing.

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
    parser.add_argument("--device", action="store_true", help="the device-limit benchmark (issue 18)")
    parser.add_argument("--weights-v2", default=str(SHARED / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5"))
    parser.add_argument("--max-size", default="400KB")
    parser.add_argument("--sizes", default="96,128,160,192,224", help="resolutions the device search tries")
    parser.add_argument("--hand", default="224,160,128", help="resolutions of the hand-picked MobileNet-0.25 models")
    parser.add_argument("--tuner", default="hyperband")
    args = parser.parse_args(argv)
    if args.device:
        return device_benchmark(args)

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


def device_benchmark(args) -> int:
    """Issue 18: the most accurate model under --max-size, found by search vs picked by hand."""
    from tlkeras.cli import quiet_tensorflow

    quiet_tensorflow()
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig, load_config
    from tlkeras.core.data import load_data
    from tlkeras.train.run import train_model
    from tlkeras.tune.device import DeviceMeter
    from tlkeras.tune.limits import format_bytes, parse_size
    from tlkeras.tune.search import SearchOptions, run_search

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    limit = parse_size(args.max_size)
    results: dict = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M"),
                     "max_size": limit, "budget": args.budget, "load_before": os.getloadavg()}

    def base(name: str, size: int) -> RunConfig:
        return RunConfig(
            data=DataConfig(source=args.data, image_size=size),
            model=ModelConfig(backbone="mobilenet", alpha=0.25, weights=args.weights),
            train=TrainConfig(verbose=0), output_dir=str(out), name=name,
        )

    # 1. Hand-picked: MobileNet-0.25 (the only one of the two weights files under 400 KB as int8) at a few sizes.
    meter = DeviceMeter("int8", SearchOptions(max_size=limit).validate().limits)
    hand = []
    for size in [int(v) for v in args.hand.split(",") if v.strip()]:
        config = base(f"hand-{size}", size)
        shutil.rmtree(out / config.name, ignore_errors=True)
        t0 = time.monotonic()
        m = train_model(config).metrics
        data = load_data(config.data, size, "softmax", config.seed)
        measured = meter.measure(config, data.num_outputs, data.train.x)
        row = {"model": f"MobileNet-0.25 @ {size}", "val": m["val"]["accuracy"], "test": m["final"]["accuracy"],
               "seconds": time.monotonic() - t0, "int8_bytes": measured.size, "latency_ms": measured.latency_ms,
               "fits": measured.size <= limit}
        hand.append(row)
        print(f"hand {row['model']}: val {row['val']:.3f} test {row['test']:.3f} int8 {format_bytes(measured.size)} p50 {measured.latency_ms:.2f} ms", flush=True)
    results["hand"] = hand

    # 2. The search: both backbones with their weights files, the resolutions, int8 under the limit.
    shutil.rmtree(out / "search", ignore_errors=True)
    sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    space = {"backbone": ["mobilenet", "mobilenet_v2"], "alpha": [0.25, 1.0], "image_size": sizes}
    options = SearchOptions(
        tuner=args.tuner, time_budget=args.budget, max_size=limit, variant="int8", objective="pareto",
        weights_for={"mobilenet@0.25": args.weights, "mobilenet_v2@1.0": args.weights_v2}, verbose=1,
    )
    t0 = time.monotonic()
    search = run_search(base("search", sizes[-1]), space, options)
    wall = time.monotonic() - t0
    info = search.info
    results["search"] = {k: info.get(k) for k in ("trials", "status_counts", "stopped_by", "best_trial", "best_score", "best_values", "front", "device", "winner", "seconds")}
    results["search"]["wall_seconds"] = wall
    dev = info["device"]["seconds"]
    print(f"search: {info['trials']} trials {info['status_counts']} in {wall:.0f}s; converting {dev['convert']}s, timing {dev['latency']}s, winner export {dev.get('export')}s", flush=True)
    if search.best_values is None:
        print("no trial completed", file=sys.stderr)
        (out / "bench_tune_device.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        return 1

    # 3. Retrain the winner from best.yaml (full epochs) and test it.
    best = load_config(search.directory / "best.yaml")
    best.output_dir, best.name = str(out), "best"
    shutil.rmtree(out / "best", ignore_errors=True)
    mb = train_model(best).metrics
    results["best"] = {"val": mb["val"]["accuracy"], "test": mb["final"]["accuracy"], "seconds": mb["timings"]["total"],
                       "values": search.best_values}
    results["load_after"] = os.getloadavg()
    (out / "bench_tune_device.json").write_text(json.dumps(results, indent=2, default=str) + "\n")

    print()
    print("| model | val acc | test acc | int8 size | p50 (1 thread) | fits |")
    print("|---|---|---|---|---|---|")
    for row in hand:
        print(f"| {row['model']} (hand-picked, default recipe) | {row['val']:.3f} | {row['test']:.3f} | {format_bytes(row['int8_bytes'])} | {row['latency_ms']:.2f} ms | {row['fits']} |")
    w = info.get("winner") or {}
    bv = search.best_values
    print(f"| search winner {bv['backbone']}@{bv['alpha']} @ {bv['image_size']}, retrained from best.yaml | {results['best']['val']:.3f} | {results['best']['test']:.3f} | "
          f"{format_bytes(w.get('size'))} | {w.get('latency_ms')} ms | {w.get('meets_limits')} |")
    best_hand = max((r["test"] for r in hand if r["fits"]), default=None)
    if best_hand is not None:
        print(f"target (winner's test >= best hand-picked under the limit, {best_hand:.3f}): {results['best']['test'] >= best_hand}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
