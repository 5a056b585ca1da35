"""Core benchmark on ../shared/data/flowers5 with the MobileNet-0.25 ImageNet weights (issue 2).

Compares, on the same data and input size:
  1. tlkeras' default two-phase recipe (the TrainConfig/DataConfig defaults),
  2. a linear probe: scikit-learn logistic regression on the frozen pooled features,
  3. the same network from random weights, trained end to end for the same wall-clock budget as 1.
Writes benchmarks/core.json and benchmarks/core_seeds.md (merged into BENCHMARKS.md after the
hand-written benchmarks/core.md, which records what was tried).

    python tools/bench_core.py [--seeds 0 1 2] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class WallClockBudget:
    """Keras callback factory: stops training once ``seconds`` have passed since fit began."""

    def __new__(cls, seconds: float):
        from tlkeras._backend import keras

        class _Budget(keras.callbacks.Callback):
            # tlkeras calls fit once per epoch, so the clock starts at the first fit only.
            start = None

            def on_train_begin(self, logs=None):
                if self.start is None:
                    self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                if time.perf_counter() - self.start > seconds:
                    self.model.stop_training = True

        return _Budget()


def run(seed: int, shared: Path) -> dict:
    from sklearn.linear_model import LogisticRegression

    from tlkeras import DataConfig, ModelConfig, RunConfig, TrainConfig, build_model, load_data
    from tlkeras.core.metrics import predict
    from tlkeras.core.models import feature_extractor
    from tlkeras.train.run import train_model

    weights = str(shared / "weights" / "mobilenet_0.25_224_imagenet_no_top.h5")
    data = DataConfig(source=str(shared / "data" / "flowers5"), image_size=224)
    bundle = load_data(data, 224, seed=seed)
    out = {"seed": seed}

    config = RunConfig(data=data, model=ModelConfig(backbone="mobilenet", alpha=0.25, weights=weights),
                       train=TrainConfig(verbose=0), seed=seed)
    result = train_model(config, bundle, write=False)
    out["two_phase"] = {
        "val": result.metrics["val"]["accuracy"], "test": result.metrics["final"]["accuracy"],
        "phase1_s": result.timings["phase1"], "phase2_s": result.timings["phase2"],
    }
    budget = result.timings["phase1"] + result.timings["phase2"]

    start = time.perf_counter()
    model = build_model(config.model, bundle.num_outputs, 224)
    extractor = feature_extractor(model)
    feats = {name: predict(extractor, split.x) for name, split in (("train", bundle.train), ("val", bundle.val), ("test", bundle.test))}
    probe = LogisticRegression(C=0.1, max_iter=2000).fit(feats["train"], bundle.train.y)
    out["linear_probe"] = {
        "val": float(probe.score(feats["val"], bundle.val.y)), "test": float(probe.score(feats["test"], bundle.test.y)),
        "total_s": time.perf_counter() - start,
    }

    scratch = RunConfig(
        data=data, model=ModelConfig(backbone="mobilenet", alpha=0.25, weights="none"),
        train=TrainConfig(verbose=0, phase1_epochs=0, phase2_epochs=200, unfreeze="all", phase1_lr=1e-2, phase2_lr_factor=0.1, early_stopping_patience=0),
        seed=seed,
    )
    result = train_model(scratch, bundle, write=False, callbacks=[WallClockBudget(budget)])
    out["scratch"] = {
        "val": result.metrics["val"]["accuracy"], "test": result.metrics["final"]["accuracy"],
        "phase2_s": result.timings["phase2"], "epochs": len(result.history["phase"]),
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    if not (args.shared / "data" / "flowers5").is_dir():
        print(f"no flowers5 fixture under {args.shared}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]
    rows = [run(seed, args.shared) for seed in args.seeds]
    load_after = os.getloadavg()[0]
    mean = lambda key, field: statistics.mean(r[key][field] for r in rows)  # noqa: E731
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load_before:.1f} before / {load_after:.1f} after"
    summary = {"date": time.strftime("%Y-%m-%d"), "machine": machine, "runs": rows}
    (ROOT / "benchmarks").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "core.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "### Core: the default recipe over seeds",
        "",
        f"{summary['date']}, {machine}; MobileNet-0.25 ImageNet weights, 224 px, flowers5 "
        f"(500 train / 150 val / 150 test); mean of seeds {args.seeds}. `python tools/bench_core.py`.",
        "",
        "| recipe | val acc | test acc | phase 1 s | phase 2 s |",
        "|---|---|---|---|---|",
        f"| tlkeras default two-phase | {mean('two_phase', 'val'):.3f} | {mean('two_phase', 'test'):.3f} | {mean('two_phase', 'phase1_s'):.1f} | {mean('two_phase', 'phase2_s'):.1f} |",
        f"| linear probe (logistic regression, C=0.1, frozen features) | {mean('linear_probe', 'val'):.3f} | {mean('linear_probe', 'test'):.3f} | {mean('linear_probe', 'total_s'):.1f} (total) | — |",
        f"| same network from scratch, same wall-clock budget | {mean('scratch', 'val'):.3f} | {mean('scratch', 'test'):.3f} | — | {mean('scratch', 'phase2_s'):.1f} |",
        "",
        "Per seed: " + "; ".join(
            f"seed {r['seed']}: two-phase {r['two_phase']['val']:.3f}/{r['two_phase']['test']:.3f} in "
            f"{r['two_phase']['phase1_s'] + r['two_phase']['phase2_s']:.1f}s, scratch {r['scratch']['epochs']} epochs"
            for r in rows
        ),
        "",
    ]
    (ROOT / "benchmarks" / "core_seeds.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
