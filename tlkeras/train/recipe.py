"""The two-phase recipe: phase 1 trains the new head on a frozen backbone, phase 2 fine-tunes.

When the backbone is frozen and the inputs are not augmented, the backbone's output never changes,
so phase 1 computes the pooled features once and trains the head on them (seconds instead of
minutes); a plain softmax head is then fitted in closed form as a logistic regression (the linear
probe). The head's layers are shared with the full model, so the result is the same model. Phase 2
unfreezes the top of the backbone (BatchNorm stays frozen by default, so it keeps its moving
statistics), recompiles at the phase-2 learning rate with warm-up, and fine-tunes with early
stopping. The model at the end of phase 1 competes with every phase-2 epoch, so the recipe never
ends worse on validation than its own phase 1 (:func:`train_phase` gives techniques the same rule).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlkeras._backend import tf
from tlkeras.config import TASK_OF_HEAD, RunConfig
from tlkeras.core.data import DataBundle, class_weights, encode_labels, make_dataset
from tlkeras.core.features import feature_store
from tlkeras.core.models import feature_extractor, freeze_backbone, head_model, unfreeze_backbone
from tlkeras.core.pending import images_of
from tlkeras.core.probe import fit_logistic
from tlkeras.core.stream import keep_worker_shard, shard_count
from tlkeras.core.tasks import get_task
from tlkeras.core.text.probe import fit_word_probe, is_word_model
from tlkeras.train.optim import (
    compile_model,
    epoch_seed,
    final_learning_rate,
    learning_rate_schedule,
    phase2_learning_rate,
    steps_per_epoch,
)
from tlkeras.train.phase import Candidate, PhaseHistory, PhaseResult, evaluate_candidate, run_phase, tensorboard

__all__ = [
    "FitResult",
    "fit_two_phase",
    "train_phase",
    "fine_tune",
    "open_backbone",
    "open_and_fine_tune",
    "selection_record",
    "uses_feature_cache",
    "uses_linear_probe",
    "phase1_augmentation",
    "cached_features",
    "fit_linear_probe",
    "PROBE_C",
]

PROBE_C = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


class FitResult(tuple):
    """``(history, timings)`` of a two-phase fit, with ``selection`` (which model was kept, see
    :func:`selection_record`) and ``lr_finder`` (the sweep's summary, or None) as attributes."""

    def __new__(cls, history: dict, timings: dict, selection: dict | None = None, lr_finder: dict | None = None):
        self = super().__new__(cls, (history, timings))
        self.selection, self.lr_finder = selection, lr_finder
        return self

    @property
    def history(self) -> dict:
        return self[0]

    @property
    def timings(self) -> dict:
        return self[1]


def uses_feature_cache(config: RunConfig) -> bool:
    """Whether phase 1 trains the head on cached backbone features."""
    mode = config.train.feature_cache
    if mode == "on":
        return True
    return mode == "auto" and phase1_augmentation(config) == "off"


def phase1_augmentation(config: RunConfig) -> str:
    """The augmentation preset phase 1 uses: the data preset only with ``phase1_augment``."""
    return config.data.augment if config.train.phase1_augment else "off"


def uses_linear_probe(model, config: RunConfig, head: str) -> bool:
    """Whether phase 1 fits the head in closed form (see ``TrainConfig.phase1_solver``)."""
    plain = all(not layer.name.startswith("head_hidden") for layer in model.layers)
    return config.train.phase1_solver == "auto" and get_task(TASK_OF_HEAD.get(head, head)).exclusive_classes and plain and uses_feature_cache(config)


def cached_features(
    model, x: np.ndarray, batch_size: int, augment: str, views: int, seed: int, *, cache_memory="auto", cache_dir=None
) -> np.ndarray:
    """Pooled backbone features of ``x``; with augmentation, of ``views`` augmented copies.

    The images stream a batch at a time from memory or their disk store; the features go to
    memory within ``cache_memory``, else to a memory-mapped file under ``cache_dir`` (see
    :func:`tlkeras.core.features.feature_store`). Side effects: a progress line on a terminal;
    may write (and at once unlink) a file under ``cache_dir``.
    """
    return feature_store(
        feature_extractor(model), x, batch_size, augment=augment, views=views, seed=seed, cache_memory=cache_memory, cache_dir=cache_dir
    )


def fit_linear_probe(model, train_feats, train_y, val_feats, val_y, num_classes: int, class_weight) -> dict[str, list]:
    """Fits ``head_dense`` as a logistic regression on cached features; returns phase-1 logs.

    The L2 strength is chosen by validation log-loss over :data:`PROBE_C`. Side effect: sets the
    weights of the model's ``head_dense`` layer.
    """
    coef, intercept, logs = fit_logistic(train_feats, train_y, val_feats, val_y, num_classes, class_weight, PROBE_C)
    model.get_layer("head_dense").set_weights([coef.T.astype(np.float32), intercept.astype(np.float32)])
    return logs


def open_backbone(model, config: RunConfig, unfreeze: str | None = None) -> list[str]:
    """Unfreezes the top of the backbone for fine-tuning (``unfreeze`` or ``train.unfreeze``).

    BatchNorm stays frozen with pretrained weights unless ``train.batchnorm`` is ``train``.
    Returns the opened layers. Side effect: ``trainable`` flags.
    """
    from tlkeras.core.models import freeze_backbone as freeze

    spec = unfreeze if unfreeze is not None else (config.train.unfreeze or "blocks:6")
    if spec == "none":
        freeze(model)
        return []
    pretrained = str(config.model.weights).lower() != "none"
    keep_frozen = pretrained and (getattr(config.train, "batchnorm", None) or "frozen") == "frozen"
    return unfreeze_backbone(model, config.model.backbone, spec, keep_batchnorm_frozen=keep_frozen)


def selection_record(result: PhaseResult, *, kept_label: str = "phase 1", phase: int = 2) -> dict[str, Any] | None:
    """Which model a fine-tuning phase kept, with a one-line message; None without a candidate."""
    if result.candidate_value is None:
        return None
    name = result.monitor.removeprefix("val_").replace("_", " ")
    ran = result.phase_best is not None
    if result.kept_candidate:
        shown = f"val {name} {result.phase_best:.4g} vs {result.candidate_value:.4g}" if ran else "no epoch ran"
        message = f"phase {phase} did not improve on {kept_label} ({shown}): keeping the {kept_label.replace(' ', '-')} model"
        kept = kept_label
    else:
        message = (
            f"phase {phase} improved on {kept_label} (val {name} {result.best_value:.4g} vs {result.candidate_value:.4g}): "
            f"keeping phase-{phase} epoch {result.best_epoch}"
        )
        kept = f"phase {phase}"
    return {
        "monitor": result.monitor, "kept": kept, "epoch": result.best_epoch, "value": result.best_value,
        "candidate": result.candidate_value, "phase_best": result.phase_best, "message": message,
    }


def train_phase(
    fit_model,
    make_train_ds: Callable[[int], Any],
    val_ds,
    config: RunConfig,
    *,
    phase: int,
    epochs: int,
    learning_rate: float,
    steps: int,
    compile: Callable[[Any], None],
    warmup_steps: int = 0,
    candidate: bool = False,
    monitor: str | None = None,
    class_weight=None,
    callbacks: list | None = None,
    checkpoint_dir: Path | None = None,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    patience: int | None = None,
    restore_best: bool = True,
    select_from_epoch: int = 0,
    verbose: int | None = None,
) -> PhaseResult:
    """Compiles ``fit_model`` for one phase and runs it with the shared phase runner.

    This is what every technique's fine-tuning calls: it supplies its trainer (a model or a
    custom-``train_step`` wrapper), its datasets and how to compile it; the schedule, warm-up,
    early stopping, restore-best, checkpointing and selection against the starting model are the
    same for all.

    Args:
        compile: ``compile(learning_rate_or_schedule)`` compiles ``fit_model``.
        learning_rate: the phase's peak learning rate.
        steps: optimizer steps per epoch (sizes the schedule).
        warmup_steps: linear warm-up steps at the start.
        candidate: the weights ``fit_model`` holds before the phase compete with its epochs
            (scored on ``val_ds`` after compiling), so the phase never ends worse on ``monitor``.
        monitor: the selecting value (default ``train.select_metric``, else ``val_loss``).
        patience: early-stopping patience (default ``train.early_stopping_patience``; 0: none).
        restore_best: end with the best weights (default) or the last epoch's.
        select_from_epoch: the first epoch that may be selected (earlier ones only train).
        verbose: progress display (default ``train.verbose``).

    Other arguments are those of :func:`tlkeras.train.phase.run_phase`.
    """
    tc = config.train
    monitor = monitor or getattr(tc, "select_metric", None) or "val_loss"
    compile(learning_rate_schedule(learning_rate, tc.schedule, steps * epochs, warmup_steps))
    start: Candidate | None = None
    resuming = checkpoint_dir is not None and (checkpoint_dir / "state.json").is_file()
    if candidate and val_ds is not None and not resuming:
        start = evaluate_candidate(fit_model, val_ds, monitor, steps=validation_steps)
    return run_phase(
        fit_model, make_train_ds, val_ds, phase=phase, epochs=epochs,
        patience=tc.early_stopping_patience if patience is None else patience, restore_best=restore_best,
        select_from_epoch=select_from_epoch,
        verbose=tc.verbose if verbose is None else verbose, class_weight=class_weight, callbacks=callbacks, checkpoint_dir=checkpoint_dir,
        monitor=monitor, candidate=start, steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
    )


def open_and_fine_tune(model, config: RunConfig, timings: dict[str, float],
                       fit: Callable[[], dict[str, Any] | None]) -> tuple[dict[str, Any] | None, list[str]]:
    """Phase 2's frame, the same for every technique: opens the backbone and runs ``fit``.

    ``fit`` (usually a :func:`fine_tune` call) runs only when phase 2 is on (``phase2_epochs > 0``
    and ``unfreeze`` is not ``none``). Side effects: ``trainable`` flags of ``model``; records
    ``phase2`` (seconds) and ``phase2_trainable_layers`` in ``timings``.

    Returns:
        ``fit``'s selection record (None when phase 2 did not run) and the opened layers.
    """
    start = time.perf_counter()
    opened: list[str] = []
    selection = None
    if config.train.phase2_epochs > 0 and config.train.unfreeze != "none":
        opened = open_backbone(model, config)
        selection = fit()
    timings["phase2"] = time.perf_counter() - start
    timings["phase2_trainable_layers"] = len(opened)
    return selection, opened


def fine_tune(
    fit_model,
    make_train_ds: Callable[[int], Any],
    val_ds,
    config: RunConfig,
    history: PhaseHistory,
    *,
    steps: int,
    compile: Callable[[Any], None],
    monitor: str | None = None,
    class_weight=None,
    callbacks: list | None = None,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any] | None:
    """Phase 2 of a two-phase recipe, the same for every technique (after :func:`open_backbone`).

    Runs :func:`train_phase` at the phase-2 learning rate with the configured warm-up; when
    phase 1 ran, its model is the candidate to beat. Appends the epochs to ``history`` as phase 2
    and prints which model was kept (when ``train.verbose``).

    Returns:
        :func:`selection_record` of the phase (None when phase 1 did not run).
    """
    tc = config.train
    result = train_phase(
        fit_model, make_train_ds, val_ds, config, phase=2, epochs=tc.phase2_epochs, learning_rate=phase2_learning_rate(config),
        steps=steps, warmup_steps=int(round(tc.warmup_epochs * steps)), compile=compile, candidate=tc.phase1_epochs > 0,
        monitor=monitor, class_weight=class_weight, callbacks=callbacks, checkpoint_dir=checkpoint_dir,
    )
    history.add(result.history, 2)
    selection = selection_record(result)
    if selection and tc.verbose:
        print(selection["message"], flush=True)
    return selection


def fit_two_phase(
    model,
    bundle: DataBundle,
    config: RunConfig,
    *,
    log_dir: Path | None = None,
    callbacks: list | None = None,
    strategy=None,
    checkpoint_dir: Path | None = None,
    lr_finder_dir: Path | None = None,
) -> FitResult:
    """Trains ``model`` in place: phase 1 (frozen backbone), then phase 2 (fine-tuning).

    Args:
        model: a model from :func:`tlkeras.build_model` (its backbone frozen).
        bundle: the data; ``bundle.train`` is fitted, ``bundle.val`` drives early stopping.
        config: training settings (``config.train``) and augmentation (``config.data``); unset
            recipe fields take the backbone family's defaults.
        log_dir: TensorBoard log folder (None: no logs).
        callbacks: extra Keras callbacks for both phases.
        strategy: a tf.distribute strategy whose scope built ``model`` (default: none).
        checkpoint_dir: where to checkpoint after every epoch; if it holds checkpoints of an
            interrupted call, training continues after the last completed epoch.
        lr_finder_dir: with ``train.find_lr``, where the learning-rate sweep of phase 2 writes
            its plot (None: the sweep runs and is returned, nothing is written).

    Returns:
        A :class:`FitResult` ``(history, timings)``: per-epoch values of both phases and wall
        seconds per phase; ``.selection`` says whether the phase-1 or a phase-2 model was kept.

    Side effects: changes the model's weights, ``trainable`` flags and optimizer; writes
    checkpoints under ``checkpoint_dir``; fills unset recipe fields of ``config``.
    """
    from tlkeras.core.backbones import apply_recipe_defaults

    apply_recipe_defaults(config)
    tc, dc = config.train, config.data
    strategy = strategy or tf.distribute.get_strategy()
    extra = list(callbacks or [])
    history = PhaseHistory()
    timings: dict[str, float] = {}
    weights = class_weights(bundle, dc.class_weight)
    n, bs = bundle.num_outputs, dc.batch_size
    # A worker's shard: each optimizer step takes batch_size images across all workers, so an
    # epoch (and the schedule) counts the whole training split, not this worker's share.
    workers = shard_count(bundle.train)
    # count_hint: a split still decoding in the background is not waited for here.
    steps = steps_per_epoch(bundle.train.count_hint * workers, bs)
    val_ds = make_dataset(bundle.val, head=bundle.head, num_outputs=n, batch_size=bs)

    def ckpt(phase: int) -> Path | None:
        return checkpoint_dir / f"phase{phase}" if checkpoint_dir is not None else None

    def tb(phase: int) -> list:
        return tensorboard(log_dir / f"phase{phase}" if log_dir else None)

    start = time.perf_counter()
    if tc.phase1_epochs > 0:
        history.add(_phase1(model, bundle, config, strategy=strategy, weights=weights, workers=workers, steps=steps, val_ds=val_ds,
                            callbacks=extra + tb(1), checkpoint_dir=ckpt(1)), 1)
    timings["phase1"] = time.perf_counter() - start

    finder = None

    def make_phase2_ds(epoch):
        return make_dataset(bundle.train, head=bundle.head, num_outputs=n, batch_size=bs, shuffle=True, augment=dc.augment, seed=epoch_seed(config.seed, 2, epoch))

    def compile2(lr):
        with strategy.scope():
            compile_model(model, config, n, lr)

    def fit2():
        nonlocal finder
        resuming = ckpt(2) is not None and (ckpt(2) / "state.json").is_file()
        if tc.find_lr and not resuming:
            from tlkeras.train.lr_finder import find_learning_rate

            finder = find_learning_rate(model, make_phase2_ds(0), config, n, out_dir=lr_finder_dir, compile=compile2)
        return fine_tune(model, make_phase2_ds, val_ds, config, history, steps=steps, compile=compile2, class_weight=weights,
                         callbacks=extra + tb(2), checkpoint_dir=ckpt(2))

    selection, opened = open_and_fine_tune(model, config, timings, fit2)
    # Leave the model compiled (for evaluate()) with a fresh optimizer, so model.keras does not
    # carry optimizer state it will never use.
    with strategy.scope():
        compile_model(model, config, n, final_learning_rate(config, bool(opened)))
    return FitResult(history.values, timings, selection, finder)


def _phase1(model, bundle: DataBundle, config: RunConfig, *, strategy, weights, workers: int, steps: int, val_ds, callbacks: list,
            checkpoint_dir: Path | None) -> dict[str, list]:
    """Phase 1, the frozen backbone: the closed-form probe when it applies, else gradient steps. Returns its logs."""
    freeze_backbone(model)
    augment1 = phase1_augmentation(config)
    views = config.train.feature_cache_views if augment1 != "off" else 1
    # The closed-form probe fits on this process's features alone: with shards it would give
    # each worker a different head, so sharded runs train the head with synced gradients.
    if uses_linear_probe(model, config, bundle.head) and workers == 1:
        return _phase1_probe(model, bundle, config, augment1, views, weights)
    return _phase1_gradient(model, bundle, config, augment1, views, strategy=strategy, weights=weights, workers=workers, steps=steps,
                            val_ds=val_ds, callbacks=callbacks, checkpoint_dir=checkpoint_dir)


def _phase1_features(model, bundle: DataBundle, config: RunConfig, augment1: str, views: int):
    """Backbone features of the training split (``views`` augmented copies) and of val, cached by the images' budget."""
    dc = config.data
    store = {"cache_memory": dc.cache_memory, "cache_dir": dc.cache_dir}  # features follow the images' budget
    train_feats = cached_features(model, images_of(bundle.train), dc.batch_size, augment1, views, config.seed, **store)
    val_feats = cached_features(model, images_of(bundle.val), dc.batch_size, "off", 1, config.seed, **store)
    return train_feats, val_feats


def _phase1_probe(model, bundle: DataBundle, config: RunConfig, augment1: str, views: int, weights) -> dict[str, list]:
    """Phase 1 as a closed-form logistic regression on cached features (the word model's also on the bag of words)."""
    n = bundle.num_outputs
    train_feats, val_feats = _phase1_features(model, bundle, config, augment1, views)
    if is_word_model(model):  # the word model's probe also fits the bag of words (core/text/probe.py)
        logs = fit_word_probe(model, bundle.train.x, bundle.train.y, bundle.val.x, bundle.val.y, train_feats, val_feats, n, weights)
    else:
        logs = fit_linear_probe(model, train_feats, np.tile(bundle.train.y, views), val_feats, bundle.val.y, n, weights)
    if config.train.verbose:
        print(f"phase 1 linear probe (C={logs['probe_C'][0]}) - val_loss {logs['val_loss'][0]:.4f} - val_accuracy {logs['val_accuracy'][0]:.4f}", flush=True)
    return logs


def _phase1_gradient(model, bundle: DataBundle, config: RunConfig, augment1: str, views: int, *, strategy, weights, workers: int,
                     steps: int, val_ds, callbacks: list, checkpoint_dir: Path | None) -> dict[str, list]:
    """Phase 1 with gradient steps: on cached features through the head alone, or on images through the whole model."""
    n, bs = bundle.num_outputs, config.data.batch_size
    if uses_feature_cache(config):
        train_feats, val_feats = _phase1_features(model, bundle, config, augment1, views)
        targets = np.tile(encode_labels(bundle.train.y, bundle.head, n), (views, 1))
        with strategy.scope():
            fit_model = head_model(model)
        features = tf.data.Dataset.from_tensor_slices((train_feats, targets))
        if workers > 1:
            features = keep_worker_shard(features)
        phase1_steps, jit = steps_per_epoch(len(train_feats) * workers, bs), False

        def make_phase1_ds(epoch):
            return features.shuffle(len(train_feats), seed=epoch_seed(config.seed, 1, epoch)).batch(bs).prefetch(tf.data.AUTOTUNE)

        phase1_val = tf.data.Dataset.from_tensor_slices((val_feats, encode_labels(bundle.val.y, bundle.head, n))).batch(bs)
    else:
        fit_model, phase1_val, phase1_steps, jit = model, val_ds, steps, None

        def make_phase1_ds(epoch):
            return make_dataset(bundle.train, head=bundle.head, num_outputs=n, batch_size=bs, shuffle=True, augment=augment1, seed=epoch_seed(config.seed, 1, epoch))

    def compile1(lr):
        with strategy.scope():
            compile_model(fit_model, config, n, lr, jit=jit)

    return train_phase(
        fit_model, make_phase1_ds, phase1_val, config, phase=1, epochs=config.train.phase1_epochs, learning_rate=config.train.phase1_lr,
        steps=phase1_steps, compile=compile1, monitor="val_loss", class_weight=weights, callbacks=callbacks, checkpoint_dir=checkpoint_dir,
    ).history


