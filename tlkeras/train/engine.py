"""Two-phase transfer training.

Phase 1 trains the new head on a frozen backbone. When the backbone is frozen and the inputs are not
augmented, the backbone's output never changes, so tlkeras computes the pooled features once and
trains the head on them (seconds instead of minutes); the head's layers are shared with the full
model, so the result is the same model. Phase 2 unfreezes the top of the backbone (BatchNorm stays
frozen, so it keeps using its moving statistics), recompiles with a learning rate lowered by
``phase2_lr_factor``, and fine-tunes with warm-up/cosine schedules and early stopping that restores
the best weights.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.config import RunConfig, save_config
from tlkeras.core.data import DataBundle, class_weights, encode_labels, load_data, make_dataset
from tlkeras.core.metrics import evaluate_model
from tlkeras.core.models import (
    build_model,
    check_model_config,
    feature_extractor,
    freeze_backbone,
    head_model,
    trainable_backbone_layers,
    unfreeze_backbone,
)
from tlkeras.core.plots import write_reports
from tlkeras.core.versions import versions
from tlkeras.errors import TLKerasError
from tlkeras.runs import atomic_path, atomic_write_text, default_run_name, write_json

__all__ = ["TrainResult", "train_model", "fit_two_phase", "compile_model", "select_strategy", "uses_feature_cache", "uses_linear_probe", "precision_policy"]


@dataclass
class TrainResult:
    """What :func:`train` made.

    Attributes:
        model: the trained Keras model (compiled).
        history: per-epoch metrics of both phases (``phase`` says which).
        metrics: ``{"val": ..., "final": ..., "final_split": "test"|"val"}`` from scikit-learn.
        timings: wall seconds per stage (``phase1``, ``phase2``, ``data``, ``total``).
        run_dir: the run directory (None when not written).
        config: the config used (with the resolved image size).
    """

    model: Any
    history: dict[str, list]
    metrics: dict[str, Any]
    timings: dict[str, float]
    run_dir: Path | None
    config: RunConfig
    info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Strategy, precision, compile


def select_strategy(mode: str = "auto"):
    """Picks a tf.distribute strategy.

    ``auto``: MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster, MirroredStrategy
    with two or more GPUs, else the default (no-op) strategy.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if mode == "multiworker" or (mode == "auto" and os.environ.get("TF_CONFIG")):
        try:
            cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster")
        except json.JSONDecodeError:
            raise TLKerasError("TF_CONFIG is not valid JSON; see tf.distribute docs for its format") from None
        if not cluster:
            raise TLKerasError("distribute=multiworker needs TF_CONFIG with a cluster spec")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if mode == "mirrored" or (mode == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _is_chief() -> bool:
    """Whether this process writes the run directory (the chief, or worker 0 without a chief)."""
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except json.JSONDecodeError:
        return True
    task = tf_config.get("task") or {}
    kind = task.get("type")
    if kind is None or kind == "chief":
        return True
    return kind == "worker" and int(task.get("index", 0)) == 0 and "chief" not in tf_config.get("cluster", {})


def _loss_and_metrics(head: str, num_outputs: int, label_smoothing: float):
    if head == "softmax":
        k = min(5, num_outputs - 1) if num_outputs > 2 else 1
        return (
            keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
            [keras.metrics.CategoricalAccuracy(name="accuracy"), keras.metrics.TopKCategoricalAccuracy(k=k, name=f"top{k}")],
        )
    if head == "sigmoid":
        return keras.losses.BinaryCrossentropy(), [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(multi_label=True, name="auc")]
    return keras.losses.MeanSquaredError(), [keras.metrics.MeanAbsoluteError(name="mae")]


def make_optimizer(name: str, learning_rate, weight_decay: float = 0.0):
    """A fresh ``train.optimizer`` (adam, adamw or sgd with momentum 0.9) at ``learning_rate``."""
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    return keras.optimizers.Adam(learning_rate=learning_rate)


def learning_rate_schedule(lr: float, schedule: str, steps: int, warmup_steps: int = 0):
    """``lr`` as ``train.schedule`` over ``steps`` optimizer steps, after a linear warm-up.

    ``cosine`` decays to 0 after the warm-up; ``constant`` holds ``lr`` after it. One step or
    fewer gets the constant ``lr``.
    """
    warmup_steps = min(max(0, warmup_steps), max(0, steps - 1))
    if (schedule == "constant" and warmup_steps == 0) or steps <= 1:
        return lr
    decay_steps = max(1, steps - warmup_steps)
    if warmup_steps:
        # CosineDecay warms up linearly from initial_learning_rate to warmup_target.
        return keras.optimizers.schedules.CosineDecay(
            lr * 0.01, decay_steps, alpha=1.0 if schedule == "constant" else 0.0,
            warmup_target=lr, warmup_steps=warmup_steps,
        )
    return keras.optimizers.schedules.CosineDecay(lr, decay_steps, alpha=0.0)


def compile_model(model, config: RunConfig, num_outputs: int, learning_rate, jit: bool | None = None) -> None:
    """Compiles ``model`` with the loss and metrics of its head and ``learning_rate``.

    Side effect: replaces the model's optimizer (recompiling is required after changing
    ``trainable`` flags).
    """
    loss, metrics = _loss_and_metrics(config.model.head, num_outputs, config.train.label_smoothing)
    model.compile(
        optimizer=make_optimizer(config.train.optimizer, learning_rate, config.train.weight_decay),
        loss=loss, metrics=metrics, jit_compile=config.train.xla if jit is None else jit,
    )


def uses_feature_cache(config: RunConfig) -> bool:
    """Whether phase 1 trains the head on cached backbone features."""
    mode = config.train.feature_cache
    if mode == "on":
        return True
    return mode == "auto" and phase1_augmentation(config) == "off"


def phase1_augmentation(config: RunConfig) -> str:
    """The augmentation preset phase 1 uses: the data preset only with ``phase1_augment``."""
    return config.data.augment if config.train.phase1_augment else "off"


# ---------------------------------------------------------------------------------------------
# Two-phase fit


class _PhaseHistory:
    """Accumulates per-epoch logs of both phases into one dict with a ``phase`` column."""

    def __init__(self):
        self.values: dict[str, list] = {"phase": []}

    def add(self, logs: dict[str, list], phase: int) -> None:
        epochs = len(next(iter(logs.values()))) if logs else 0
        for key, series in logs.items():
            if key == "lr":
                continue
            self.values.setdefault(key, [None] * len(self.values["phase"]))
            self.values[key].extend(float(v) for v in series)
        self.values["phase"].extend([phase] * epochs)
        for series in self.values.values():
            series.extend([None] * (len(self.values["phase"]) - len(series)))


def _epoch_seed(seed: int, phase: int, epoch: int) -> int:
    # The shuffle order of an epoch depends only on (seed, phase, epoch), so a resumed run sees
    # the same batches as an uninterrupted one.
    return (seed * 1_000_003 + phase * 10_007 + epoch) % (2**31 - 1)


def _run_phase(
    fit_model,
    make_train_ds: Callable[[int], Any],
    val_ds,
    *,
    phase: int,
    epochs: int,
    patience: int,
    verbose: int,
    class_weight,
    callbacks: list,
    checkpoint_dir: Path | None,
) -> dict[str, list]:
    """Trains ``fit_model`` one epoch per ``fit`` call, with early stopping and checkpoints.

    After every epoch the weights, the optimizer state (with its step counter, which drives the
    learning-rate schedule), the early-stopping state and the history are checkpointed under
    ``checkpoint_dir`` (when given); a later call with the same directory continues after the last
    completed epoch. At the end the best epoch's weights (lowest val loss) are restored.

    Returns:
        The phase's per-epoch logs.
    """
    from tlkeras.runs import read_json

    state: dict[str, Any] = {"epoch": 0, "best": None, "wait": 0, "history": {}, "done": False, "checkpoint": None}
    checkpoint = tf.train.Checkpoint(model=fit_model, optimizer=fit_model.optimizer)
    best_weights = None
    if checkpoint_dir is not None and (checkpoint_dir / "state.json").is_file():
        state = read_json(checkpoint_dir / "state.json")
        if state["done"]:
            fit_model.load_weights(str(checkpoint_dir / "final.weights.h5"))
            return state["history"]
        if state["checkpoint"]:
            checkpoint.read(str(checkpoint_dir / state["checkpoint"])).expect_partial()
        if (checkpoint_dir / "best.npz").is_file():
            with np.load(checkpoint_dir / "best.npz") as saved:
                best_weights = [saved[f"w{i}"] for i in range(len(saved.files))]
    elif checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)

    for epoch in range(state["epoch"], epochs):
        started = time.perf_counter()
        result = fit_model.fit(
            make_train_ds(epoch), validation_data=val_ds, initial_epoch=epoch, epochs=epoch + 1,
            class_weight=class_weight, callbacks=callbacks, verbose=1 if verbose == 1 else 0,
        )
        logs = {k: float(v[-1]) for k, v in result.history.items()}
        for key, value in logs.items():
            state["history"].setdefault(key, []).append(value)
        if verbose == 2:
            shown = " - ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "lr")
            print(f"phase {phase} epoch {epoch + 1}/{epochs} - {shown} - {time.perf_counter() - started:.1f}s", flush=True)
        val_loss = logs.get("val_loss", logs.get("loss"))
        improved = state["best"] is None or val_loss < state["best"]
        if improved:
            state["best"], state["wait"] = val_loss, 0
            best_weights = fit_model.get_weights()
        else:
            state["wait"] += 1
        state["epoch"] = epoch + 1
        if checkpoint_dir is not None:
            _checkpoint_epoch(checkpoint_dir, checkpoint, state, best_weights if improved else None)
        if patience > 0 and state["wait"] >= patience:
            break
        if getattr(fit_model, "stop_training", False):
            break  # a user callback asked to stop
    if best_weights is not None:
        fit_model.set_weights(best_weights)
    if checkpoint_dir is not None:
        with atomic_path(checkpoint_dir / "final.weights.h5") as tmp:
            fit_model.save_weights(str(tmp.with_suffix(".h5")))
            tmp.with_suffix(".h5").replace(tmp)
        state["done"] = True
        write_json(checkpoint_dir / "state.json", state)
    return state["history"]


def _checkpoint_epoch(checkpoint_dir: Path, checkpoint, state: dict, best_weights) -> None:
    """Writes one epoch's checkpoint; ``state.json`` is written last, as the commit point."""
    if best_weights is not None:
        with atomic_path(checkpoint_dir / "best.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{f"w{i}": w for i, w in enumerate(best_weights)})
    previous = state["checkpoint"]
    state["checkpoint"] = f"epoch-{state['epoch']}"
    checkpoint.write(str(checkpoint_dir / state["checkpoint"]))
    write_json(checkpoint_dir / "state.json", state)
    if previous and previous != state["checkpoint"]:
        for stale in checkpoint_dir.glob(f"{previous}.*"):
            stale.unlink()


def _tensorboard(log_dir: Path | None) -> list:
    if log_dir is None:
        return []
    return [keras.callbacks.TensorBoard(log_dir=str(log_dir), profile_batch=0, write_graph=False)]


def _features(model, x: np.ndarray, batch_size: int, augment: str, views: int, seed: int) -> np.ndarray:
    """Pooled backbone features of ``x``; with augmentation, of ``views`` augmented copies."""
    from tlkeras.core.augment import augmenter

    extractor = feature_extractor(model)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(batch_size).map(lambda b: tf.cast(b, tf.float32))
    outputs = [extractor.predict(ds, verbose=0)]
    aug = augmenter(augment, seed)
    if aug is not None:
        for _ in range(views - 1):
            view = ds.map(lambda b: tf.clip_by_value(aug(b, training=True), 0.0, 255.0))
            outputs.append(extractor.predict(view, verbose=0))
    return np.concatenate(outputs).astype(np.float32)


_PROBE_C = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def uses_linear_probe(model, config: RunConfig, head: str) -> bool:
    """Whether phase 1 fits the head in closed form (see ``TrainConfig.phase1_solver``)."""
    plain = all(not l.name.startswith("head_hidden") for l in model.layers)
    return config.train.phase1_solver == "auto" and head == "softmax" and plain and uses_feature_cache(config)


def _fit_linear_probe(model, train_feats, train_y, val_feats, val_y, num_classes: int, class_weight) -> dict[str, list]:
    """Fits ``head_dense`` as a logistic regression on cached features; returns phase-1 logs.

    The L2 strength is chosen by validation log-loss over a small grid. Side effect: sets the
    weights of the model's ``head_dense`` layer.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    labels = list(range(num_classes))
    best = None
    for c in _PROBE_C:
        clf = LogisticRegression(C=c, max_iter=2000, class_weight=class_weight).fit(train_feats, train_y)
        loss = log_loss(val_y, clf.predict_proba(val_feats), labels=labels)
        if best is None or loss < best[0]:
            best = (loss, c, clf)
    loss, c, clf = best
    coef, intercept = clf.coef_, clf.intercept_
    if num_classes == 2:  # sklearn gives one logit z; softmax of (-z/2, z/2) is sigmoid(z)
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    model.get_layer("head_dense").set_weights([coef.T.astype(np.float32), intercept.astype(np.float32)])
    return {
        "loss": [float(log_loss(train_y, clf.predict_proba(train_feats), labels=labels))],
        "accuracy": [float(clf.score(train_feats, train_y))],
        "val_loss": [float(loss)],
        "val_accuracy": [float(clf.score(val_feats, val_y))],
        "probe_C": [float(c)],
    }


def fit_two_phase(
    model,
    bundle: DataBundle,
    config: RunConfig,
    *,
    log_dir: Path | None = None,
    callbacks: list | None = None,
    strategy=None,
    checkpoint_dir: Path | None = None,
) -> tuple[dict, dict]:
    """Trains ``model`` in place: phase 1 (frozen backbone), then phase 2 (fine-tuning).

    Args:
        model: a model from :func:`tlkeras.build_model` (its backbone frozen).
        bundle: the data; ``bundle.train`` is fitted, ``bundle.val`` drives early stopping.
        config: training settings (``config.train``) and augmentation (``config.data``).
        log_dir: TensorBoard log folder (None: no logs).
        callbacks: extra Keras callbacks for both phases.
        strategy: a tf.distribute strategy whose scope built ``model`` (default: none).
        checkpoint_dir: where to checkpoint after every epoch; if it holds checkpoints of an
            interrupted call, training continues after the last completed epoch.

    Returns:
        (history, timings): per-epoch values of both phases and wall seconds per phase.

    Side effects: changes the model's weights, ``trainable`` flags and optimizer; writes
    checkpoints under ``checkpoint_dir``.
    """
    tc, dc = config.train, config.data
    strategy = strategy or tf.distribute.get_strategy()
    extra = list(callbacks or [])
    history = _PhaseHistory()
    timings: dict[str, float] = {}
    weights = class_weights(bundle, dc.class_weight)
    n, bs = bundle.num_outputs, dc.batch_size
    steps = max(1, math.ceil(len(bundle.train) / bs))
    val_ds = make_dataset(bundle.val, head=bundle.head, num_outputs=n, batch_size=bs)

    def ckpt(phase: int) -> Path | None:
        return checkpoint_dir / f"phase{phase}" if checkpoint_dir is not None else None

    common = dict(patience=tc.early_stopping_patience, verbose=tc.verbose, class_weight=weights)

    start = time.perf_counter()
    if tc.phase1_epochs > 0:
        freeze_backbone(model)
        augment1 = phase1_augmentation(config)
        if uses_linear_probe(model, config, bundle.head):
            views = tc.feature_cache_views if augment1 != "off" else 1
            train_feats = _features(model, bundle.train.x, bs, augment1, views, config.seed)
            val_feats = _features(model, bundle.val.x, bs, "off", 1, config.seed)
            logs = _fit_linear_probe(model, train_feats, np.tile(bundle.train.y, views), val_feats, bundle.val.y, n, weights)
            fit_model = None
        elif uses_feature_cache(config):
            views = tc.feature_cache_views if augment1 != "off" else 1
            train_feats = _features(model, bundle.train.x, bs, augment1, views, config.seed)
            val_feats = _features(model, bundle.val.x, bs, "off", 1, config.seed)
            targets = np.tile(encode_labels(bundle.train.y, bundle.head, n), (views, 1))
            with strategy.scope():
                fit_model = head_model(model)
                feat_steps = max(1, math.ceil(len(train_feats) / bs))
                compile_model(fit_model, config, n, learning_rate_schedule(tc.phase1_lr, tc.schedule, feat_steps * tc.phase1_epochs, 0), jit=False)
            features = tf.data.Dataset.from_tensor_slices((train_feats, targets))

            def make_phase1_ds(epoch):
                seed = _epoch_seed(config.seed, 1, epoch)
                return features.shuffle(len(train_feats), seed=seed).batch(bs).prefetch(tf.data.AUTOTUNE)

            phase1_val = tf.data.Dataset.from_tensor_slices((val_feats, encode_labels(bundle.val.y, bundle.head, n))).batch(bs)
        else:
            fit_model, phase1_val = model, val_ds
            with strategy.scope():
                compile_model(model, config, n, learning_rate_schedule(tc.phase1_lr, tc.schedule, steps * tc.phase1_epochs, 0))

            def make_phase1_ds(epoch):
                return make_dataset(bundle.train, head=bundle.head, num_outputs=n, batch_size=bs, shuffle=True, augment=augment1, seed=_epoch_seed(config.seed, 1, epoch))

        if fit_model is not None:
            logs = _run_phase(
                fit_model, make_phase1_ds, phase1_val, phase=1, epochs=tc.phase1_epochs,
                callbacks=extra + _tensorboard(log_dir / "phase1" if log_dir else None), checkpoint_dir=ckpt(1), **common,
            )
        elif tc.verbose:
            print(f"phase 1 linear probe (C={logs['probe_C'][0]}) - val_loss {logs['val_loss'][0]:.4f} - val_accuracy {logs['val_accuracy'][0]:.4f}", flush=True)
        history.add(logs, 1)
    timings["phase1"] = time.perf_counter() - start

    start = time.perf_counter()
    opened: list[str] = []
    if tc.phase2_epochs > 0 and tc.unfreeze != "none":
        pretrained = str(config.model.weights).lower() != "none"
        opened = unfreeze_backbone(model, config.model.backbone, tc.unfreeze, keep_batchnorm_frozen=pretrained)
        lr2 = tc.phase1_lr * tc.phase2_lr_factor
        warmup = int(round(tc.warmup_epochs * steps))
        with strategy.scope():
            compile_model(model, config, n, learning_rate_schedule(lr2, tc.schedule, steps * tc.phase2_epochs, warmup))

        def make_phase2_ds(epoch):
            return make_dataset(bundle.train, head=bundle.head, num_outputs=n, batch_size=bs, shuffle=True, augment=dc.augment, seed=_epoch_seed(config.seed, 2, epoch))

        logs = _run_phase(
            model, make_phase2_ds, val_ds, phase=2, epochs=tc.phase2_epochs,
            callbacks=extra + _tensorboard(log_dir / "phase2" if log_dir else None), checkpoint_dir=ckpt(2), **common,
        )
        history.add(logs, 2)
    timings["phase2"] = time.perf_counter() - start
    timings["phase2_trainable_layers"] = len(opened)
    # Leave the model compiled (for evaluate()) with a fresh optimizer, so model.keras does not
    # carry optimizer state it will never use.
    with strategy.scope():
        compile_model(model, config, n, tc.phase1_lr * (tc.phase2_lr_factor if opened else 1.0))
    return history.values, timings


# ---------------------------------------------------------------------------------------------
# The whole run


@contextlib.contextmanager
def precision_policy(enabled: bool):
    """Sets the ``mixed_float16`` policy inside the block when ``enabled``, then restores the old one."""
    if not enabled:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def train_model(
    config: RunConfig,
    data: DataBundle | None = None,
    *,
    write: bool = True,
    callbacks: list | None = None,
    extra_files: dict[str, Callable[[Path], None]] | None = None,
    model=None,
    resume: bool = False,
) -> TrainResult:
    """Loads data, builds the model, trains both phases, evaluates, and writes the run directory.

    Args:
        config: the run's settings (validated here).
        data: a ready DataBundle (e.g. from :func:`tlkeras.data.from_arrays`); default: load
            ``config.data.source``.
        write: write ``<output_dir>/<name>/`` (config.yaml, model.keras, labels.txt,
            history.json, metrics.json, plots, TensorBoard logs).
        callbacks: extra Keras callbacks.
        extra_files: ``{filename: writer(path)}`` for more artifacts in the run directory.
        model: a prebuilt model to train instead of building one from ``config.model``.
        resume: continue the interrupted run ``<output_dir>/.<name>.partial`` from its last
            completed epoch, with the config stored there (only ``output_dir`` and ``name`` of
            ``config`` are used).

    Returns:
        A :class:`TrainResult`.

    Raises:
        TLKerasError: for bad input; nothing is left in ``output_dir`` then.

    Side effects: seeds Python, NumPy and TensorFlow from ``config.seed``. The run is assembled
    in ``<output_dir>/.<name>.partial/`` with a checkpoint after every epoch, and renamed to
    ``<output_dir>/<name>/`` when complete. If training dies, the partial directory stays (when
    at least one epoch finished) so ``resume=True`` can continue it; a bad input leaves nothing.
    """
    t0 = time.perf_counter()
    chief = _is_chief()
    stage = _Stage(config, write=write and chief, resume=resume)
    if resume:
        config = stage.stored_config()
    config.validate()
    keras.utils.set_random_seed(config.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    size = check_model_config(config.model, config.data.image_size if data is None else data.image_size)
    if data is None:
        data = load_data(config.data, size, config.model.head, config.seed)
    elif data.head != config.model.head:
        raise TLKerasError(f"the data is labelled for a {data.head} head but model.head is {config.model.head}")
    config.data.image_size = size
    t_data = time.perf_counter() - t0

    strategy = select_strategy(config.train.distribute)
    with precision_policy(config.train.mixed_precision):
        if model is None:
            with strategy.scope():
                model = build_model(config.model, data.num_outputs, size)
        with stage.open(config) as run_dir, _worker_scratch(write and not chief, stage, resume) as scratch:
            log_dir = run_dir / "logs" if run_dir else None
            # Checkpoint writes run collective ops under MultiWorkerMirroredStrategy, so every
            # worker must write them; non-chief workers write to a scratch folder (tf.distribute's
            # documented pattern) that is deleted at the end.
            checkpoints = run_dir / "checkpoints" if run_dir else scratch
            history, timings = fit_two_phase(model, data, config, log_dir=log_dir, callbacks=callbacks, strategy=strategy, checkpoint_dir=checkpoints)
            split_name, split = data.eval_split
            metrics = {
                "val": evaluate_model(model, data.val, data.class_names, data.head, config.data.batch_size),
                "final_split": split_name,
                "final": evaluate_model(model, split, data.class_names, data.head, config.data.batch_size),
            }
            timings["data"] = t_data
            timings["total"] = time.perf_counter() - t0
            info = {
                "versions": versions(),
                "data": {
                    "source": data.source, "train": len(data.train), "val": len(data.val),
                    "test": len(data.test) if data.test is not None else 0, "skipped": data.skipped,
                },
                "feature_cache": uses_feature_cache(config),
                "trainable_backbone_layers": trainable_backbone_layers(model),
                "resumed": resume,
                "timings": timings,
            }
            metrics["timings"] = timings
            if run_dir is not None:
                with atomic_path(run_dir / "model.keras") as tmp:
                    model.save(tmp)
                atomic_write_text(run_dir / "labels.txt", "\n".join(data.class_names) + "\n")
                write_json(run_dir / "history.json", history)
                write_json(run_dir / "run.json", info)
                write_reports(run_dir, metrics, data.class_names, data.head, history)
                for filename, writer in (extra_files or {}).items():
                    writer(Path(run_dir) / filename)
                shutil.rmtree(checkpoints, ignore_errors=True)
            elif scratch is not None:
                # Saving a MultiWorkerMirroredStrategy model runs collective ops: every worker
                # must save, or the chief waits forever.
                scratch.mkdir(parents=True, exist_ok=True)
                model.save(scratch / "model.keras")
    return TrainResult(model, history, metrics, timings, stage.final if write and chief else None, config, info)


@contextlib.contextmanager
def _worker_scratch(active: bool, stage: "_Stage", resume: bool):
    """A temporary folder for a non-chief worker's checkpoints and model (None when inactive).

    On ``resume`` it starts as a copy of the chief's checkpoints (found when the workers share
    a file system), so every worker continues from the same epoch.
    """
    if not active:
        yield None
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tlkeras-worker-") as tmp:
        scratch = Path(tmp) / "checkpoints"
        chief_checkpoints = stage.partial / "checkpoints"
        if resume and chief_checkpoints.is_dir():
            shutil.copytree(chief_checkpoints, scratch)
        yield scratch


class _Stage:
    """The run directory's life cycle: ``.<name>.partial`` while training, ``<name>`` when done."""

    def __init__(self, config: RunConfig, *, write: bool, resume: bool):
        self.write, self.resume = write, resume
        if resume and not config.name:
            raise TLKerasError("--resume needs the --name of the interrupted run")
        name = config.name or default_run_name(config.model.backbone.replace("hub:", "hub-").split("/")[-1].split("\\")[-1])
        config.name = name
        self.final = Path(config.output_dir) / name
        self.partial = Path(config.output_dir) / f".{name}.partial"
        if resume:
            if self.final.exists():
                raise TLKerasError(f"{self.final} is already complete; nothing to resume")
            if not (self.partial / "config.yaml").is_file():
                raise TLKerasError(f"nothing to resume: no interrupted run {self.partial}; start it without --resume")
        elif write:
            if self.final.exists():
                raise TLKerasError(f"{self.final} already exists; choose another --name or remove it")
            if self.partial.exists():
                raise TLKerasError(
                    f"an interrupted run {self.partial} exists; continue it with --resume --name {name} "
                    f"or remove it"
                )

    def stored_config(self) -> RunConfig:
        from tlkeras.config import load_config

        stored = load_config(self.partial / "config.yaml")
        stored.output_dir, stored.name = str(self.final.parent), self.final.name
        return stored

    @contextlib.contextmanager
    def open(self, config: RunConfig):
        if not self.write:
            yield None
            return
        try:
            self.partial.mkdir(parents=True, exist_ok=self.resume)
        except OSError as exc:
            raise TLKerasError(f"cannot create a run directory under {self.final.parent}: {exc.strerror}") from None
        if not self.resume:
            save_config(config, self.partial / "config.yaml")
        try:
            yield self.partial
        except BaseException:
            # Keep what a resume can use (a completed epoch); otherwise leave nothing behind.
            if not any((self.partial / "checkpoints").glob("phase*/state.json")):
                shutil.rmtree(self.partial, ignore_errors=True)
            raise
        os.replace(self.partial, self.final)
