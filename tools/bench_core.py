"""Core benchmark: tlkeras' default recipe against the public guides' recipes (issues 2 and 13).

``--matrix`` (issue 13) runs every image set in ../shared/data (flowers5, beans) x {MobileNet-0.25,
MobileNetV2-1.0} (the ImageNet weights in ../shared/weights) x seeds, seed-major (all pairs of
seed 0 first, so an interrupted run still covers every pair), with three recipes on the same
weights, data split and seed:
  - tlkeras: the defaults (the backbone family's recipe from the registry),
  - keras_guide: the Keras transfer-learning guide (frozen base 10 epochs Adam 1e-3 with
    RandomFlip + RandomRotation(0.1), then every layer 10 epochs Adam 1e-5),
  - tf_tutorial: the TensorFlow transfer-learning tutorial (frozen base 10 epochs RMSprop 1e-4
    with RandomFlip + RandomRotation(0.2), then the layers from 100/154 of the depth on, 10
    epochs RMSprop 1e-5).
Both references use dropout 0.2, batch 32, BatchNorm in inference mode and keep their last epoch
(as the guides do). Results are appended per run to benchmarks/core_matrix.jsonl and summarized in
benchmarks/core_matrix.md after every run.

    python tools/bench_core.py --matrix [--seeds 0 1 2] [--datasets flowers5 beans]

Without ``--matrix`` it compares, on flowers5 with MobileNet-0.25 and the same input size:
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


BACKBONES = {
    "MobileNet-0.25": ("mobilenet", 0.25, "mobilenet_0.25_224_imagenet_no_top.h5"),
    "MobileNetV2-1.0": ("mobilenet_v2", 1.0, "mobilenet_v2_1.0_224_imagenet_no_top.h5"),
}


def _reference(recipe: str, bundle, model_cfg, seed: int) -> dict:
    """One of the guides' recipes, written from their text (see the module docstring)."""
    from tlkeras._backend import keras, tf
    from tlkeras.core.data import make_dataset
    from tlkeras.core.metrics import evaluate_model
    from tlkeras.core.models import backbone_layers, build_model, freeze_backbone, unfreeze_backbone

    keras.utils.set_random_seed(seed)
    n = bundle.num_outputs
    model = build_model(model_cfg, n, bundle.image_size)
    rotation, make_opt = (0.1, keras.optimizers.Adam) if recipe == "keras_guide" else (0.2, keras.optimizers.RMSprop)
    lr1 = 1e-3 if recipe == "keras_guide" else 1e-4
    aug = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=seed), keras.layers.RandomRotation(rotation, seed=seed + 1)])
    train = make_dataset(bundle.train, head="softmax", num_outputs=n, batch_size=32, shuffle=True, seed=seed).map(
        lambda x, y: (tf.clip_by_value(aug(x, training=True), 0.0, 255.0), y))
    val = make_dataset(bundle.val, head="softmax", num_outputs=n, batch_size=32)
    out = {}
    freeze_backbone(model)
    model.compile(optimizer=make_opt(lr1), loss="categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    h1 = model.fit(train, validation_data=val, epochs=10, verbose=0)
    out["phase1_s"] = time.perf_counter() - start
    out["phase1_val"] = float(h1.history["val_accuracy"][-1])
    depth = len(backbone_layers(model))
    spec = "all" if recipe == "keras_guide" else f"layers:{depth - int(round(depth * 100 / 154))}"
    unfreeze_backbone(model, model_cfg.backbone, spec, keep_batchnorm_frozen=True)
    model.compile(optimizer=make_opt(lr1 / 10 if recipe == "tf_tutorial" else 1e-5), loss="categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(train, validation_data=val, epochs=10, verbose=0)
    out["phase2_s"] = time.perf_counter() - start
    out["val"] = evaluate_model(model, bundle.val, bundle.class_names, "softmax", 32)["accuracy"]
    out["test"] = evaluate_model(model, bundle.test, bundle.class_names, "softmax", 32)["accuracy"]
    return out


def run_matrix(args) -> int:
    from tlkeras import DataConfig, ModelConfig, RunConfig, TrainConfig, load_data
    from tlkeras.train.run import train_model

    bench = ROOT / "benchmarks"
    bench.mkdir(exist_ok=True)
    rows_path = bench / "core_matrix.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.is_file() and args.resume else []
    if not args.resume:
        rows_path.write_text("")
    done = {(r["dataset"], r["backbone"], r["seed"], r["recipe"]) for r in rows}
    load_before = os.getloadavg()[0]
    for seed in args.seeds:
        for dataset in args.datasets:
            bundle = None
            for label, (backbone, alpha, weights_file) in BACKBONES.items():
                model_cfg = ModelConfig(backbone=backbone, alpha=alpha, weights=str(args.shared / "weights" / weights_file))
                for recipe in args.recipes:
                    if (dataset, label, seed, recipe) in done:
                        continue
                    if bundle is None:
                        bundle = load_data(DataConfig(source=str(args.shared / "data" / dataset), image_size=224), 224, seed=seed)
                    row = {"dataset": dataset, "backbone": label, "seed": seed, "recipe": recipe, "load": os.getloadavg()[0]}
                    if recipe == "tlkeras":
                        config = RunConfig(data=DataConfig(source=str(args.shared / "data" / dataset), image_size=224),
                                           model=ModelConfig(backbone=backbone, alpha=alpha, weights=model_cfg.weights),
                                           train=TrainConfig(verbose=0), seed=seed)
                        result = train_model(config, bundle, write=False)
                        phase1 = [v for v, p in zip(result.history["val_accuracy"], result.history["phase"]) if p == 1]
                        row.update(val=result.metrics["val"]["accuracy"], test=result.metrics["final"]["accuracy"],
                                   phase1_s=result.timings["phase1"], phase2_s=result.timings["phase2"],
                                   phase1_val=max(phase1) if phase1 else None, selection=result.info.get("selection"),
                                   recipe_used=result.info["recipe"]["defaults"], small_data=result.info["recipe"]["small_data"])
                    else:
                        row.update(_reference(recipe, bundle, model_cfg, seed))
                    rows.append(row)
                    with open(rows_path, "a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    print(json.dumps({k: v for k, v in row.items() if k not in ("selection", "recipe_used")}), flush=True)
                    _write_matrix(rows, bench / "core_matrix.md", load_before)
    return 0


def _write_matrix(rows: list, path: Path, load_before: float) -> None:
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["backbone"], r["recipe"]), []).append(r)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} now"
    lines = [
        "### Core matrix: tlkeras against the Keras guide's and the TensorFlow tutorial's recipes (issue 13)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {machine}. ImageNet weights from ../shared/weights, 224 px, "
        "`python tools/bench_core.py --matrix`. Means over the seeds listed; wall seconds per phase "
        "(phase 1 of tlkeras includes computing the cached features).",
        "",
        "| data | backbone | recipe | seeds | val acc | test acc | phase 1 s | phase 2 s | both s | phase-1 val acc | kept |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, backbone, recipe), rs in sorted(groups.items()):
        mean = lambda key: statistics.mean(r[key] for r in rs if r.get(key) is not None)  # noqa: E731
        p1 = [r["phase1_val"] for r in rs if r.get("phase1_val") is not None]
        kept = ", ".join((r.get("selection") or {}).get("kept", "-") for r in rs) if recipe == "tlkeras" else "last epoch"
        shown_p1 = f"{statistics.mean(p1):.3f}" if p1 else "—"
        lines.append(
            f"| {dataset} | {backbone} | {recipe} | {','.join(str(r['seed']) for r in rs)} | {mean('val'):.3f} | {mean('test'):.3f} | "
            f"{mean('phase1_s'):.1f} | {mean('phase2_s'):.1f} | {mean('phase1_s') + mean('phase2_s'):.1f} | {shown_p1} | {kept} |"
        )
    lines += ["", "Per run: " + "; ".join(
        f"{r['dataset']}/{r['backbone']}/{r['recipe']}/seed {r['seed']}: {r['val']:.3f}/{r['test']:.3f} "
        f"in {r['phase1_s'] + r['phase2_s']:.0f}s" for r in rows), ""]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--matrix", action="store_true", help="the issue-13 matrix (datasets x backbones x seeds x recipes)")
    parser.add_argument("--datasets", nargs="+", default=["flowers5", "beans"])
    parser.add_argument("--recipes", nargs="+", default=["tlkeras", "tf_tutorial", "keras_guide"])
    parser.add_argument("--resume", action="store_true", help="keep the rows already in benchmarks/core_matrix.jsonl")
    args = parser.parse_args()
    if args.matrix:
        return run_matrix(args)
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
