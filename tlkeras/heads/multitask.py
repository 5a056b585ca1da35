"""Multi-task learning: one shared backbone, several named heads, one multi-output TFLite model.

A phone app that needs a species, a set of attributes and an age estimate from the same photo
runs one backbone instead of three. The tasks and their data are in
:mod:`tlkeras.heads.multitask_data`, the model and its loss weighting in
:mod:`tlkeras.heads.multitask_model`, the TFLite export in :mod:`tlkeras.heads.multitask_export`.

:func:`train_multitask` trains both phases through the shared training engine
(:func:`tlkeras.train.recipe.train_phase`: the same schedule with warm-up, early stopping,
restore-best and the rule that phase 2 never ends worse on validation than phase 1) and writes a
run directory with ``tasks.json`` and per-task metrics.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.config import RunConfig, save_config
from tlkeras.core.features import feature_store
from tlkeras.core.stream import image_batches
from tlkeras.errors import TLKerasError
from tlkeras.heads.multitask_data import MultiTaskData, MultiTaskSplit, TaskSpec, check_tasks, labelled_mask, task_of_spec
from tlkeras.heads.multitask_model import WEIGHTINGS, build_multitask_model, compile_multitask, loss_weights, weighting_layer

__all__ = ["fit_multitask", "predict_multitask", "evaluate_multitask", "MultiTaskResult", "train_multitask", "load_multitask_run"]


def _targets(split: MultiTaskSplit, tasks: Sequence[TaskSpec]) -> tuple[dict, dict]:
    """Keras targets and per-sample weights (0 where a task's label is missing)."""
    ys, ws = {}, {}
    for t in tasks:
        y = split.labels[t.name]
        mask = labelled_mask(y, t.kind)
        if task_of_spec(t).exclusive_classes:
            enc = np.zeros((len(y), t.num_outputs), np.float32)
            enc[mask, y[mask]] = 1.0
        else:
            enc = np.nan_to_num(np.asarray(y, np.float32), nan=0.0)
        ys[t.name] = enc
        ws[t.name] = mask.astype(np.float32)
    return ys, ws


def _dataset(split: MultiTaskSplit, tasks, batch_size: int, shuffle: bool = False, augment: str = "off", seed: int = 42):
    from tlkeras.core.augment import augmenter

    ys, ws = _targets(split, tasks)
    ds = tf.data.Dataset.from_tensor_slices((split.x, ys, ws))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x, y, w: (tf.cast(x, tf.float32), y, w), num_parallel_calls=tf.data.AUTOTUNE)
    aug = augmenter(augment, seed)
    if aug is not None:
        ds = ds.map(lambda x, y, w: (tf.clip_by_value(aug(x, training=True), 0.0, 255.0), y, w), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def fit_multitask(model, data: MultiTaskData, config: RunConfig, *, callbacks: list | None = None) -> tuple[dict, dict]:
    """Trains ``model`` in place in two phases (frozen backbone, then the top of the backbone).

    Both phases run through the shared engine (:func:`tlkeras.train.recipe.train_phase`): the
    same optimizer, schedule and phase-2 warm-up as ``tlkeras.train``, early stopping on the
    total validation loss (or ``train.select_metric``) with the best weights restored, and the
    phase-1 model kept when phase 2 does not improve on it. Phase 1 runs on cached features
    unless it is augmented. What is multi-task here: the per-task losses and sample weights
    (missing labels) and the learned loss weights, logged per epoch.

    Returns:
        ``(history, timings)``; history holds per-task losses and metrics per epoch and
        ``phase``; with uncertainty weighting also ``weight_<task>`` per epoch. ``timings`` has
        ``selection`` (which phase's model was kept) when phase 2 ran.

    Side effects: changes the model's weights, ``trainable`` flags and optimizer; it is left
    compiled with fixed weights (the learned ones, if any); fills unset recipe fields of ``config``.
    """
    from tlkeras.core.backbones import apply_recipe_defaults
    from tlkeras.core.models import feature_extractor, feature_layer_name, freeze_backbone
    from tlkeras.train.optim import epoch_seed, steps_per_epoch
    from tlkeras.train.phase import PhaseHistory
    from tlkeras.train.recipe import FitResult, fine_tune, open_and_fine_tune, phase1_augmentation, train_phase, uses_feature_cache

    apply_recipe_defaults(config)
    tc, dc = config.train, config.data
    tasks = data.tasks
    bs = dc.batch_size
    steps = steps_per_epoch(len(data.train), bs)
    val_ds = _dataset(data.val, tasks, bs)
    history = PhaseHistory()
    timings: dict[str, float] = {}
    layer = weighting_layer(model)

    class _RecordWeights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if layer is not None and logs is not None:
                for name, w in layer.effective_weights().items():
                    logs[f"weight_{name}"] = w

    def compiler(net):
        def compile(lr):
            compile_multitask(net, tasks, lr, optimizer=tc.optimizer, weight_decay=tc.weight_decay, label_smoothing=tc.label_smoothing)
        return compile

    extra = [_RecordWeights(), *(callbacks or [])]
    start = time.perf_counter()
    if tc.phase1_epochs > 0:
        freeze_backbone(model)
        if uses_feature_cache(config):
            # A frozen backbone without augmentation maps each image to the same features every
            # epoch: compute them once and train the heads on them (the layers are shared).
            extractor = feature_extractor(model)
            feats = {name: feature_store(extractor, s.x, bs, cache_memory=dc.cache_memory, cache_dir=dc.cache_dir, label=f"{name} features")
                     for name, s in (("train", data.train), ("val", data.val))}
            net = keras.Model(model.get_layer(feature_layer_name(model)).output, model.output, name=f"{model.name}_heads")
            ys, ws = _targets(data.train, tasks)
            cached = tf.data.Dataset.from_tensor_slices((feats["train"], ys, ws))

            def make_phase1_ds(epoch):
                return cached.shuffle(len(data.train), seed=epoch_seed(config.seed, 1, epoch)).batch(bs).prefetch(tf.data.AUTOTUNE)

            phase1_val = tf.data.Dataset.from_tensor_slices((feats["val"], *_targets(data.val, tasks))).batch(bs)
        else:
            net, phase1_val, augment1 = model, val_ds, phase1_augmentation(config)

            def make_phase1_ds(epoch):
                return _dataset(data.train, tasks, bs, shuffle=True, augment=augment1, seed=epoch_seed(config.seed, 1, epoch))

        result = train_phase(net, make_phase1_ds, phase1_val, config, phase=1, epochs=tc.phase1_epochs, learning_rate=tc.phase1_lr,
                             steps=steps, compile=compiler(net), monitor="val_loss", callbacks=extra)
        history.add(result.history, 1)
    timings["phase1"] = time.perf_counter() - start

    def make_phase2_ds(epoch):
        return _dataset(data.train, tasks, bs, shuffle=True, augment=dc.augment, seed=epoch_seed(config.seed, 2, epoch))

    selection, _ = open_and_fine_tune(
        model, config, timings,
        lambda: fine_tune(model, make_phase2_ds, val_ds, config, history, steps=steps, compile=compiler(model), callbacks=extra))
    compile_multitask(model, tasks, tc.phase1_lr, optimizer=tc.optimizer, training=False)
    return FitResult(history.values, timings, selection)


def predict_multitask(model, x: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Runs a multi-task model on uint8 images; returns ``{task: float32 outputs}``."""
    out = model.predict(image_batches(x, batch_size), verbose=0)  # batches stream from memory or a disk store
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def evaluate_multitask(model, split: MultiTaskSplit, tasks: Sequence[TaskSpec], batch_size: int = 64,
                       outputs: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, Any]]:
    """Per-task metrics (:func:`tlkeras.core.metrics.compute_metrics`) on the labelled rows.

    Returns:
        ``{task: metrics}``; a task without labelled images in ``split`` gets ``{"count": 0}``.
    """
    from tlkeras.core.metrics import compute_metrics

    outputs = outputs if outputs is not None else predict_multitask(model, split.x, batch_size)
    result = {}
    for t in tasks:
        y = split.labels[t.name]
        mask = labelled_mask(y, t.kind)
        if not mask.any():
            result[t.name] = {"count": 0}
            continue
        result[t.name] = compute_metrics(y[mask], outputs[t.name][mask], list(t.labels), t.kind)
    return result


@dataclass
class MultiTaskResult:
    """What :func:`train_multitask` made.

    Attributes:
        model: the trained multi-output Keras model.
        tasks: the tasks (labels filled in).
        history: per-epoch values of both phases.
        metrics: ``{"tasks": {task: {"val", "final"}}, "final_split", "weighting", "loss_weights", "timings"}``.
        run_dir: the run directory (None when not written).
        config: the run config used.
    """

    model: Any
    tasks: list[TaskSpec]
    history: dict[str, list]
    metrics: dict[str, Any]
    run_dir: Path | None
    config: RunConfig


def train_multitask(config: RunConfig, data: MultiTaskData, *, weighting: str = "fixed", write: bool = True,
                    callbacks: list | None = None) -> MultiTaskResult:
    """Builds, trains and evaluates a multi-task model; writes its run directory.

    The run directory (``<output_dir>/<name>/``) holds ``config.yaml`` (the backbone, data and
    training settings; ``model.head`` is not used, so it is no ``tlkeras.train`` replay
    config), ``tasks.json`` (tasks, their labels, weighting and
    the final loss weights), ``model.keras``, ``history.json``, ``metrics.json`` (per task, on val
    and on the test split if any, else val), one ``confusion_matrix_<task>.png`` per softmax task
    and ``training_curves.png``.

    Raises:
        TLKerasError: bad tasks, weighting or config; an existing run directory.

    Side effects: seeds Python, NumPy and TensorFlow from ``config.seed``; writes the run
    directory atomically.
    """
    from tlkeras.core.backbones import apply_recipe_defaults
    from tlkeras.core.models import check_model_config
    from tlkeras.core.plots import plot_confusion_matrix, plot_history
    from tlkeras.runs import atomic_path, default_run_name, staged_directory, write_json

    config.validate()
    apply_recipe_defaults(config, train_count=len(data.train))
    if weighting not in WEIGHTINGS:
        raise TLKerasError(f"weighting={weighting!r} is not valid; choose one of {', '.join(WEIGHTINGS)}")
    tasks = check_tasks(data.tasks)
    if write and config.name and (Path(config.output_dir) / config.name).exists():
        raise TLKerasError(f"{Path(config.output_dir) / config.name} already exists; choose another --name or remove it")
    t0 = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    size = check_model_config(config.model, data.image_size)
    config.data.image_size = size
    model = build_multitask_model(config.model, tasks, size, weighting)
    config.name = config.name or default_run_name("multitask-" + config.model.backbone.replace("hub:", "hub-").split("/")[-1])
    fitted = fit_multitask(model, data, config, callbacks=callbacks)
    history, timings = fitted
    split_name, split = data.eval_split
    val = evaluate_multitask(model, data.val, tasks, config.data.batch_size)
    final = evaluate_multitask(model, split, tasks, config.data.batch_size)
    timings["total"] = time.perf_counter() - t0
    weights = loss_weights(model, tasks)
    metrics = {
        "tasks": {t.name: {"kind": t.kind, "val": val[t.name], "final": final[t.name]} for t in tasks},
        "final_split": split_name,
        "weighting": weighting,
        "loss_weights": weights,
        "selection": fitted.selection,
        "timings": timings,
    }
    run_dir = None
    if write:
        final_dir = Path(config.output_dir) / config.name
        with staged_directory(final_dir) as stage:
            if data.source and Path(data.source).is_file():
                config.data.source = str(data.source)
            save_config(config, stage / "config.yaml")
            write_json(stage / "tasks.json", {"weighting": weighting, "loss_weights": weights,
                                              "tasks": [asdict(t) for t in tasks]})
            with atomic_path(stage / "model.keras") as tmp:
                model.save(tmp)
            write_json(stage / "history.json", history)
            write_json(stage / "metrics.json", metrics)
            for t in tasks:
                if task_of_spec(t).exclusive_classes and "confusion_matrix" in final[t.name]:
                    plot_confusion_matrix(final[t.name]["confusion_matrix"], t.labels, stage / f"confusion_matrix_{t.name}.png",
                                          title=f"{t.name} ({split_name})")
            plot_history(history, stage / "training_curves.png")
        run_dir = final_dir
    return MultiTaskResult(model, tasks, history, metrics, run_dir, config)


def load_multitask_run(run_dir: str | os.PathLike) -> tuple[Any, list[TaskSpec], RunConfig]:
    """Loads a multi-task run: ``(model, tasks, config)``.

    Raises:
        TLKerasError: not a multi-task run directory (no ``tasks.json``), an unreadable model.
    """
    from tlkeras.config import load_config
    from tlkeras.core.loading import load_run_model
    from tlkeras.runs import read_json

    run_dir = Path(run_dir)
    if not (run_dir / "tasks.json").is_file():
        raise TLKerasError(f"{run_dir} has no tasks.json; pass a directory written by tlkeras.multitask.train_multitask")
    spec = read_json(run_dir / "tasks.json")
    tasks = check_tasks([TaskSpec(**t) for t in spec["tasks"]])
    return load_run_model(run_dir), tasks, load_config(run_dir / "config.yaml")
