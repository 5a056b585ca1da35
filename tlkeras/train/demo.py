"""The embedded, offline demo task behind ``python -m tlkeras.train`` with no ``--data``.

Nothing is downloaded: the images are drawn procedurally (NumPy + Pillow, seeded, deterministic),
and the "pretrained" backbone is pretrained here, on a generated source task, in about a minute
of CPU time.

Task pair:

* SOURCE (pretraining): 8 filled shapes -- circle, square, triangle, star, plus, ring, crescent,
  arrow -- 600 images per class.
* TARGET (the few-shot transfer task): 5 *different* shapes -- heart, frame (hollow square), tee,
  hexagram (6-point star), half_disk -- with 5 labelled train images per class, 30 val and 50 test
  images per class.

Every image (``DEMO_IMAGE_SIZE`` = 32, RGB uint8) is one shape with a random fill colour, on a
random two-colour linear-gradient background, with random rotation (0-360 deg), scale and position,
plus Gaussian pixel noise. The fill colour is drawn to differ from the background's mean luminance
by > 60 (either polarity), so colour carries no class information: the class is the outline only.
The two tasks share everything except which outlines appear, so what transfers is exactly what a
real ImageNet backbone gives a small dataset: edge/corner/curvature detectors that are invariant to
colour, rotation and position. The target classes are related to the source ones (frame ~ square +
ring, hexagram ~ star, half_disk ~ circle/crescent, tee ~ plus) but none of them is a source class.

Measured with ``pretrain_demo_backbone`` defaults (14 epochs, batch 64) and the library's transfer
protocol (phase 1: frozen backbone, new Dense head, Adam 1e-3, 40 epochs, batch 16; phase 2: top
third of the backbone unfrozen with BatchNormalization kept frozen, Adam 1e-4, 20 epochs) against
scratch (same network, random init, Adam 1e-3, 60 epochs, batch 16). Target test accuracy (250
images, chance 0.20); backbone pretrained once on ``make_demo_task(0)``'s source split, target
splits and head init from seeds 0/1/2:

    seed   phase 1 only   transfer (1+2)   scratch
    0      0.520          0.512            0.200   (scratch train acc 0.68)
    1      0.484          0.508            0.200   (scratch train acc 0.96)
    2      0.432          0.452            0.200   (scratch train acc 1.00)
    mean   0.479          0.491            0.200

Source (8-way) val accuracy after pretraining: 0.573. Costs on 2 CPU cores that another job was
also loading (load average 5-6, so wall times are upper bounds; process CPU time is the steadier
number): data generation 4.0 s wall; pretraining 98.9 s wall / 59.6 s CPU; transfer (both phases)
25-31 s wall / ~17 s CPU per seed; scratch baseline 31-38 s wall / ~22 s CPU per seed. One full
demo run (generate + pretrain + transfer + scratch) is ~105 s of CPU time.

Why these choices (all measured with MobileNet(alpha=0.25) from random init at 32x32):

* Adam(1e-3) pretraining stayed at chance (val 0.125-0.15 after 12 epochs); Adam(1e-2) and
  SGD(momentum 0.9) at lr 0.05-0.1 were the only settings that got going inside the budget. SGD+
  Nesterov at 0.1 with cosine decay reached 0.57-0.63 source val accuracy in 14 epochs; the decay
  lets the BatchNormalization moving averages settle, which the validation score needs.
* Removing the gradient background / noise / rotation did not speed pretraining up noticeably, so
  the nuisances stay: they are what makes the target hard to learn from 25 images.
* 48x48 cost ~2x per image and learned no faster per image than 32x32.
* Scratch training on 25 target images memorises them (train accuracy 0.68-1.0) but stays at chance
  (0.20) on val/test; part of that is that ~120 optimiser steps are too few for the
  BatchNormalization moving statistics of a from-scratch network, which is itself a reason to
  transfer (the pretrained backbone's statistics are already right, and the library keeps them
  frozen).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tlkeras._backend import keras
from tlkeras.core.demo_data import DEMO_IMAGE_SIZE, SOURCE_CLASSES, TARGET_CLASSES, make_demo_task, render_shape

__all__ = ["DEMO_IMAGE_SIZE", "SOURCE_CLASSES", "TARGET_CLASSES", "render_shape", "make_demo_task", "pretrain_demo_backbone", "demo_backbone_weights", "demo_configs", "run_demo"]


def pretrain_demo_backbone(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    path: str,
    *,
    epochs: int = 14,
    batch_size: int = 64,
    seed: int = 0,
    learning_rate: float = 0.1,
    val_fraction: float = 0.1,
) -> dict:
    """Pretrains MobileNet(alpha=0.25) from random init on the source task and saves its weights.

    The model is ``uint8 pixels -> Rescaling(1/127.5, offset=-1) -> MobileNet(alpha=0.25,
    include_top=False, weights=None) -> GlobalAveragePooling2D -> Dense(softmax)``. Only the
    backbone's weights are written, in HDF5, so that ``keras.applications.MobileNet(alpha=0.25,
    include_top=False, weights=path, input_shape=(S, S, 3))`` loads them like any Keras weights
    file. Calls ``keras.utils.set_random_seed(seed)`` (global side effect) for reproducibility.

    Args:
        x: uint8 images ``[N, S, S, 3]`` (S = DEMO_IMAGE_SIZE).
        y: int class indices ``[N]``.
        num_classes: number of source classes.
        path: where to write the backbone weights; must end in ``.h5``.
        epochs: passes over the training part; 14 reached ~0.6 source val accuracy in our runs.
        batch_size: 64 was the best samples-per-second vs. progress-per-sample trade-off on CPU.
        seed: seeds weight init and shuffling.
        learning_rate: peak SGD learning rate (cosine-decayed to 2% of it over the run).
        val_fraction: the last fraction of ``x`` held out to report source val accuracy.

    Returns:
        ``{"source_val_accuracy": float, "seconds": float (wall), "cpu_seconds": float (process CPU
        time), "epochs": int, "history": {metric: [per-epoch values]}}``.

    Raises:
        ValueError: if ``path`` does not end in ``.h5`` (tf_keras picks the format from the suffix).
    """
    if not str(path).endswith(".h5"):
        raise ValueError(
            f"pretrain_demo_backbone writes HDF5 weights; path must end in .h5: {path}")
    start, cpu_start = time.perf_counter(), time.process_time()
    keras.utils.set_random_seed(seed)
    n_val = max(1, int(round(len(y) * val_fraction)))
    x_train, y_train, x_val, y_val = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
    size = x.shape[1]

    backbone = keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=None, input_shape=(size, size, 3), pooling=None)
    inputs = keras.Input((size, size, 3))
    h = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)  # the library's pixel convention
    h = backbone(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(h)
    model = keras.Model(inputs, outputs)

    # SGD+Nesterov at a high rate: a thin MobileNet from scratch sat at chance for 12 epochs with
    # Adam(1e-3). The cosine decay ends training with small steps, so the BatchNormalization moving
    # averages (used at inference, and frozen by the transfer phase) match the final weights.
    steps = epochs * int(np.ceil(len(y_train) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.02)
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True,
        validation_data=(x_val, y_val))
    backbone.save_weights(str(path))
    return {
        "source_val_accuracy": float(history.history["val_accuracy"][-1]),
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "epochs": epochs,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
    }


# ---------------------------------------------------------------------------------------------
# The demo run behind `python -m tlkeras.train` without --data


def demo_backbone_weights(seed: int = 0, cache_dir: str | None = None, verbose: bool = True) -> str:
    """Returns the path of the demo's pretrained backbone weights, pretraining them if needed.

    The weights are cached like Keras caches ImageNet weights (``$TLKERAS_CACHE`` or
    ``~/.cache/tlkeras``), so only the first demo run pays the ~1 minute of pretraining.

    Side effects: may write ``<cache>/demo/mobilenet_0.25_32_shapes_seed<seed>.h5`` (atomically).
    """
    import os
    from pathlib import Path

    from tlkeras.runs import atomic_path

    root = Path(cache_dir or os.environ.get("TLKERAS_CACHE") or Path.home() / ".cache" / "tlkeras")
    path = root / "demo" / f"mobilenet_0.25_{DEMO_IMAGE_SIZE}_shapes_seed{seed}.h5"
    if path.is_file():
        return str(path)
    task = make_demo_task(seed)
    x, y, names = task["source"]
    if verbose:
        print(f"pretraining the demo backbone on {len(y):,} generated images of {len(names)} shapes "
              f"(about a minute; cached in {path.parent})", flush=True)
    with atomic_path(path) as tmp:
        tmp_h5 = tmp.with_suffix(".h5")
        info = pretrain_demo_backbone(x, y, len(names), str(tmp_h5), seed=seed)
        tmp_h5.replace(tmp)
    if verbose:
        print(f"  source-task val accuracy {info['source_val_accuracy']:.3f} in {info['seconds']:.0f}s", flush=True)
    return str(path)


def demo_configs(weights: str, base=None, explicit: set[str] | None = None):
    """The transfer and from-scratch RunConfigs of the demo.

    Transfer: the pretrained backbone, 40 head epochs on cached features, then 20 epochs with the
    top 5 of 13 blocks unfrozen at a 10x lower rate. Scratch: the same network from random weights
    trained end to end for 60 epochs at 1e-3 (BatchNorm trains, since nothing is pretrained). Fields
    the user set explicitly on the command line (``explicit``: "section.field" names) override
    both, except the weights.
    """
    import copy

    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig, apply_explicit

    base = base or RunConfig()
    transfer = RunConfig(
        data=DataConfig(source=None, image_size=DEMO_IMAGE_SIZE, batch_size=16, augment="off"),
        model=ModelConfig(backbone="mobilenet", alpha=0.25, weights=weights, dropout=0.2),
        train=TrainConfig(phase1_epochs=40, phase1_lr=1e-3, phase2_epochs=20, phase2_lr_factor=0.1,
                          unfreeze="blocks:5", early_stopping_patience=10,
                          verbose=base.train.verbose if "train.verbose" in (explicit or ()) else 0),
        output_dir=base.output_dir, name=base.name, seed=base.seed,
    )
    apply_explicit(transfer, base, explicit, fixed=("data.source", "model.weights"))
    scratch = copy.deepcopy(transfer)
    scratch.model.weights = "none"
    scratch.train.phase1_epochs = 0
    scratch.train.phase2_epochs = transfer.train.phase1_epochs + transfer.train.phase2_epochs
    scratch.train.phase1_lr = 1e-2  # phase 2 runs at phase1_lr * factor = 1e-3
    scratch.train.unfreeze = "all"
    return transfer.validate(), scratch.validate()


def run_demo(base=None, explicit: set[str] | None = None) -> dict:
    """Runs the embedded offline demo: transfer vs. from scratch on generated shapes.

    Both models see the same 25 labelled target images (5 per class) and are scored on the same
    250 test images. The transfer run is written like any run (``runs/demo-.../``) with
    ``comparison.json`` and ``comparison.md`` beside it. Whichever wins is reported; when transfer
    loses, a warning says so (negative transfer happens).

    Returns:
        ``{"transfer": metrics, "scratch": metrics, "run_dir": str}``.
    """
    import json
    import warnings
    from pathlib import Path

    from tlkeras.core.data import from_arrays
    from tlkeras.runs import atomic_write_text, default_run_name
    from tlkeras.train.run import train_model

    seed = base.seed if base is not None else 42
    started = time.perf_counter()
    weights = demo_backbone_weights(seed=0)
    transfer_cfg, scratch_cfg = demo_configs(weights, base, explicit)
    transfer_cfg.name = transfer_cfg.name or default_run_name("demo")
    task = make_demo_task(seed)
    bundle = from_arrays(*task["train"], val=task["val"], test=task["test"], class_names=task["class_names"], source="tlkeras.demo (generated shapes)")
    print(f"demo: {len(bundle.class_names)} new shapes, {len(bundle.train)} labelled images "
          f"({len(bundle.train) // len(bundle.class_names)} per class), {len(bundle.test)} test images", flush=True)
    print("training the same network from scratch (the baseline)...", flush=True)
    scratch = train_model(scratch_cfg, bundle, write=False)
    print("training with transfer (phase 1: frozen pretrained backbone, phase 2: fine-tuning)...", flush=True)
    rows = {}

    def comparison(path: Path) -> None:
        atomic_write_text(path.with_suffix(".json"), json.dumps(rows, indent=2) + "\n")
        lines = ["| model | val accuracy | test accuracy | train seconds |", "|---|---|---|---|"]
        for name, row in rows.items():
            lines.append(f"| {name} | {row['val_accuracy']:.3f} | {row['test_accuracy']:.3f} | {row['seconds']:.1f} |")
        atomic_write_text(path, "\n".join(lines) + "\n")

    def summary(result) -> dict:
        return {
            "val_accuracy": result.metrics["val"]["accuracy"],
            "test_accuracy": result.metrics["final"]["accuracy"],
            "seconds": result.timings["phase1"] + result.timings["phase2"],
        }

    rows["from scratch"] = summary(scratch)
    transfer = train_model(transfer_cfg, bundle)
    rows["transfer (two-phase)"] = summary(transfer)
    comparison(Path(transfer.run_dir) / "comparison.md")  # each file lands atomically
    t, sc = rows["transfer (two-phase)"], rows["from scratch"]
    print()
    print(f"{'model':<22}{'val acc':>9}{'test acc':>10}{'seconds':>9}")
    for name, row in (("transfer (two-phase)", t), ("from scratch", sc)):
        print(f"{name:<22}{row['val_accuracy']:>9.3f}{row['test_accuracy']:>10.3f}{row['seconds']:>9.1f}")
    print(f"chance: {1 / len(bundle.class_names):.3f}; total {time.perf_counter() - started:.0f}s")
    if t["test_accuracy"] <= sc["test_accuracy"]:
        warnings.warn(
            f"negative transfer: the pretrained backbone did not beat training from scratch "
            f"({t['test_accuracy']:.3f} vs {sc['test_accuracy']:.3f}); check that the source task "
            f"resembles yours, or try --unfreeze all / more data",
            stacklevel=2,
        )
    else:
        print(f"transfer wins by {100 * (t['test_accuracy'] - sc['test_accuracy']):.1f} points of test accuracy")
    print(f"run directory: {transfer.run_dir}")
    if (Path(transfer.run_dir) / "report.html").is_file():
        print(f"report: {Path(transfer.run_dir) / 'report.html'}")
    return {"transfer": t, "scratch": sc, "run_dir": str(transfer.run_dir)}
