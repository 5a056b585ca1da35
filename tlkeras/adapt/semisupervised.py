"""Semi-supervised transfer: a few labelled images, many unlabelled ones.

Two techniques on the same backbones, heads and run directories as ``tlkeras.train``:

* **Pseudo-labelling / self-training** (:func:`self_train`): train on the labels (the normal
  two-phase fit), label the unlabelled images whose predicted class probability reaches a
  confidence ``threshold``, retrain on labels + pseudo-labels, and repeat for ``rounds`` rounds.
  Every round re-labels all unlabelled images with the newest model, so an early mistake can be
  undone, and (by default) retrains a fresh model from the pretrained backbone, so the student
  does not inherit the teacher's over-confidence.
* **FixMatch** (Sohn et al., 2020; :func:`train_fixmatch`): after a supervised head warm-up, each
  step predicts a weakly augmented view (flip + translation) of unlabelled images; where the top
  probability reaches ``threshold`` its class becomes the target for a strongly augmented view
  (flip, translation, colour jitter incl. contrast, brightness, saturation and hue, random
  grayscale, cutout). :class:`FixMatchModel` is a ``keras.Model`` whose ``train_step`` adds that
  consistency loss to the supervised cross-entropy.

The augmentations are batched TensorFlow ops with per-image randomness in
:mod:`tlkeras.core.augment` (``weak_augment``, ``strong_augment``, ``random_resized_crop``,
``color_jitter``, ...), shared with :mod:`tlkeras.adapt.simclr`. They take and return float pixels
in [0, 255].
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.adapt.common import (
    fit_main_phase,
    prepare_data,
    unlabeled_dataset,
    warm_up_and_open,
    write_unlabeled_run,
)
from tlkeras.config import RunConfig
from tlkeras.core.augment import (
    color_jitter,
    cutout,
    random_flip,
    random_grayscale,
    random_resized_crop,
    random_translate,
    strong_augment,
    weak_augment,
)
from tlkeras.core.data import DataBundle, Split, encode_labels, make_dataset
from tlkeras.core.metrics import evaluate_model, predict
from tlkeras.core.models import build_model
from tlkeras.core.stream import indexed_batches
from tlkeras.errors import TLKerasError
from tlkeras.train.optim import epoch_seed, phase2_learning_rate
from tlkeras.train.phase import PhaseHistory
from tlkeras.train.recipe import fit_two_phase
from tlkeras.train.run import TrainResult

__all__ = [
    "random_flip",
    "random_translate",
    "random_resized_crop",
    "color_jitter",
    "random_grayscale",
    "cutout",
    "weak_augment",
    "strong_augment",
    "check_threshold",
    "select_pseudo_labels",
    "PseudoLabelOptions",
    "self_train",
    "FixMatchOptions",
    "FixMatchModel",
    "train_fixmatch",
]


# ---------------------------------------------------------------------------------------------
# Batched augmentations (float pixels in [0, 255], per-image randomness)


# ---------------------------------------------------------------------------------------------
# Pseudo-labelling


def check_threshold(threshold: float, name: str = "threshold") -> float:
    """Returns ``threshold`` as a float, or raises TLKerasError unless it is in (0, 1)."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise TLKerasError(f"{name} must be a number in (0, 1), got {threshold!r}") from None
    if not 0.0 < value < 1.0:
        raise TLKerasError(f"{name} must be in (0, 1) (a class probability), got {threshold}")
    return value


def select_pseudo_labels(probs: np.ndarray, threshold: float, max_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Picks the confidently predicted images.

    Args:
        probs: N x C class probabilities.
        threshold: the lowest top-class probability accepted, in (0, 1).
        max_per_class: keep at most this many per class (the most confident), so one easy class
            cannot flood the training set.

    Returns:
        (indices, labels, confidences) of the selected images, indices ascending.
    """
    threshold = check_threshold(threshold)
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    labels = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    chosen = np.flatnonzero(confidence >= threshold)
    if max_per_class is not None:
        kept = []
        for c in np.unique(labels[chosen]):
            members = chosen[labels[chosen] == c]
            kept.append(members[np.argsort(-confidence[members], kind="stable")[: int(max_per_class)]])
        chosen = np.sort(np.concatenate(kept)) if kept else chosen[:0]
    return chosen.astype(np.int64), labels[chosen].astype(np.int64), confidence[chosen]


@dataclass
class PseudoLabelOptions:
    """Settings of self-training with confidence-thresholded pseudo-labels.

    Attributes:
        threshold: the lowest predicted class probability that becomes a pseudo-label, in (0, 1).
            On flowers5 with 10 labels per class, 0.8 took ~250 of 450 images at ~88% label
            accuracy; 0.9 took ~150 at ~93% and gained less.
        rounds: pseudo-labelling rounds after the supervised model (each retrains).
        max_per_class: cap of pseudo-labels per class and round (None: no cap).
        fresh_model: retrain each round from the pretrained backbone (True) or continue
            training the previous round's model (False).
    """

    threshold: float = 0.8
    rounds: int = 3
    max_per_class: int | None = None
    fresh_model: bool = True

    def validate(self) -> "PseudoLabelOptions":
        check_threshold(self.threshold)
        if self.rounds < 1:
            raise TLKerasError(f"rounds must be >= 1, got {self.rounds}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise TLKerasError(f"max_per_class must be >= 1, got {self.max_per_class}")
        return self


def self_train(
    config: RunConfig,
    unlabeled,
    options: PseudoLabelOptions | None = None,
    *,
    data: DataBundle | None = None,
    write: bool = True,
    diagnostic_labels: np.ndarray | None = None,
) -> TrainResult:
    """Iterated pseudo-labelling: supervised fit, then ``rounds`` x (label confidently, refit).

    Each fit is the normal two-phase fit (``fit_two_phase``) on the labelled images plus the
    current pseudo-labelled ones; validation (early stopping, best weights) uses the labelled
    validation split. ``metrics["rounds"]`` lists per round how many images were pseudo-labelled,
    per class, their mean confidence and the validation accuracy of the round's model.

    Args:
        config: the run's settings; ``config.data.source`` holds the labelled images.
        unlabeled: the unlabelled images (folder, CSV of paths, or array at the model's size).
        options: threshold, rounds, cap, fresh model.
        data: the labelled data as a DataBundle (default: load ``config.data.source``).
        write: write the run directory.
        diagnostic_labels: true labels of ``unlabeled``, used only to report the pseudo-labels'
            accuracy per round (benchmarks); never used for training.

    Raises:
        TLKerasError: no unlabelled images, images of another size, a threshold outside (0, 1).

    Side effects: seeds the random generators; writes ``<output_dir>/<name>/`` when ``write``.
    """
    options = (options or PseudoLabelOptions()).validate()
    t0 = time.perf_counter()
    data, size, xu = prepare_data(config, data, unlabeled)
    if diagnostic_labels is not None and len(diagnostic_labels) != len(xu):
        raise TLKerasError(f"{len(diagnostic_labels)} diagnostic labels for {len(xu)} unlabelled images")
    timings: dict[str, float] = {"data": time.perf_counter() - t0}
    history: dict[str, list] = {}
    bs = config.data.batch_size

    start = time.perf_counter()
    model = build_model(config.model, data.num_outputs, size)
    h, _ = fit_two_phase(model, data, config)
    PhaseHistory(history).add(h, 1, round=0)
    rounds: list[dict[str, Any]] = [{"round": 0, "pseudo_labels": 0,
                                     "val_accuracy": evaluate_model(model, data.val, data.class_names, "softmax", bs)["accuracy"]}]
    timings["round_0"] = time.perf_counter() - start
    for r in range(1, options.rounds + 1):
        start = time.perf_counter()
        probs = predict(model, xu, bs)
        idx, labels, confidence = select_pseudo_labels(probs, options.threshold, options.max_per_class)
        record: dict[str, Any] = {
            "round": r,
            "pseudo_labels": int(len(idx)),
            "fraction": float(len(idx) / len(xu)),
            "per_class": {name: int(np.sum(labels == i)) for i, name in enumerate(data.class_names)},
            "mean_confidence": float(confidence.mean()) if len(idx) else None,
        }
        if diagnostic_labels is not None:
            truth = np.asarray(diagnostic_labels).reshape(-1)
            record["pseudo_label_accuracy"] = float(np.mean(truth[idx] == labels)) if len(idx) else None
            record["unlabeled_accuracy"] = float(np.mean(truth == probs.argmax(axis=1)))
        if len(idx) == 0:
            record["note"] = f"no prediction reached threshold {options.threshold}; stopped (lower the threshold)"
            rounds.append(record)
            break
        train = Split(np.concatenate([data.train.x, xu[idx]]), np.concatenate([data.train.y, labels]))
        bundle = dataclasses.replace(data, train=train)
        keras.utils.set_random_seed(config.seed + r)
        if options.fresh_model:
            model = build_model(config.model, data.num_outputs, size)
        h, _ = fit_two_phase(model, bundle, config)
        PhaseHistory(history).add(h, 1, round=r)
        record["val_accuracy"] = evaluate_model(model, data.val, data.class_names, "softmax", bs)["accuracy"]
        rounds.append(record)
        timings[f"round_{r}"] = time.perf_counter() - start
    # The keys every run reports: phase 1 = the supervised round, phase 2 = the self-training rounds.
    timings["phase1"] = timings["round_0"]
    timings["phase2"] = sum(v for k, v in timings.items() if k.startswith("round_") and k != "round_0")
    timings["total"] = time.perf_counter() - t0
    return write_unlabeled_run(
        config, data, model, history, method="pseudo_label", options=options, timings=timings,
        unlabeled_count=len(xu), unlabeled_source=unlabeled, extra_metrics={"rounds": rounds}, write=write,
    )


# ---------------------------------------------------------------------------------------------
# FixMatch


@dataclass
class FixMatchOptions:
    """Settings of FixMatch.

    Attributes:
        threshold: confidence a weak view's prediction needs to become a target, in (0, 1).
            The paper's 0.95 assumes ~10^6 steps; with tens of epochs 0.8 uses more of the
            unlabelled images.
        unlabeled_ratio: unlabelled images per labelled image in a step (FixMatch's mu).
        unlabeled_weight: weight of the consistency loss (lambda_u).
        epochs: FixMatch epochs after the head warm-up (None: ``train.phase2_epochs``); one
            epoch is one pass over the unlabelled images.
        learning_rate: learning rate (None: ``phase1_lr * phase2_lr_factor`` when backbone
            layers are trained, else ``phase1_lr``).
        unfreeze: what FixMatch trains: ``none`` (the default) trains the head on the frozen
            backbone, ``blocks:N``/``layers:N``/``all`` also the backbone's top, None uses
            ``train.unfreeze``. With few labels, fine-tuning the backbone overfits them: on
            flowers5 (10 labels per class) head-only FixMatch reached 0.68, top 6 blocks 0.60.
        translate: weak and strong views shift by up to this fraction of the image size.
        strength: colour-jitter strength of the strong view.
        cutout: largest cutout side of the strong view, as a fraction of the image size.
        restore_best: keep the weights of the epoch with the lowest validation loss.
    """

    threshold: float = 0.8
    unlabeled_ratio: int = 2
    unlabeled_weight: float = 1.0
    epochs: int | None = None
    learning_rate: float | None = None
    unfreeze: str | None = "none"
    translate: float = 0.125
    strength: float = 0.5
    cutout: float = 0.5
    restore_best: bool = True

    def validate(self) -> "FixMatchOptions":
        check_threshold(self.threshold)
        if self.unlabeled_ratio < 1:
            raise TLKerasError(f"unlabeled_ratio must be >= 1, got {self.unlabeled_ratio}")
        if self.unlabeled_weight < 0:
            raise TLKerasError(f"unlabeled_weight must be >= 0, got {self.unlabeled_weight}")
        if self.epochs is not None and self.epochs < 1:
            raise TLKerasError(f"epochs must be >= 1, got {self.epochs}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise TLKerasError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.translate < 0.5 or not 0.0 <= self.cutout < 1.0 or self.strength < 0:
            raise TLKerasError("translate must be in [0, 0.5), cutout in [0, 1) and strength >= 0")
        return self


class FixMatchModel(keras.Model):
    """Trains ``classifier`` with FixMatch on ``((labelled_images, onehot), unlabelled_images)``.

    Labelled images get a weak view and cross-entropy; unlabelled images get a weak view whose
    confident predictions (top probability >= threshold, no gradient) are the targets of a strong
    view. The consistency loss averages over all unlabelled images of the batch (unconfident ones
    count as 0), as in the paper. Validation batches ``(images, onehot)`` report the classifier's
    loss and accuracy. The classifier's layers are shared, so training this trains ``classifier``.
    """

    def __init__(self, classifier, options: FixMatchOptions, label_smoothing: float = 0.0, **kwargs):
        super().__init__(name="fixmatch_trainer", **kwargs)
        self.options = options.validate()
        self.classifier = classifier
        self.supervised_loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "supervised_loss", "consistency_loss", "mask_rate")}
        self.accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        return list(self.trackers.values()) + [self.accuracy]

    def call(self, inputs, training=None):
        return self.classifier(inputs, training=training)

    def train_step(self, data):
        (xl, yl), xu = data
        o = self.options
        nl = tf.shape(xl)[0]
        weak_u = weak_augment(xu, o.translate)
        strong_u = strong_augment(xu, o.translate, o.strength, cutout_fraction=o.cutout)
        # The weak view only makes targets: predicted outside the tape, dropout off.
        guess = tf.stop_gradient(tf.cast(self.classifier(weak_u, training=False), tf.float32))
        mask = tf.cast(tf.reduce_max(guess, axis=1) >= o.threshold, tf.float32)
        targets = tf.one_hot(tf.argmax(guess, axis=1), tf.shape(guess)[1])
        with tf.GradientTape() as tape:
            outputs = tf.cast(self.classifier(tf.concat([weak_augment(xl, o.translate), strong_u], 0), training=True), tf.float32)
            supervised = self.supervised_loss(yl, outputs[:nl])
            per_image = keras.losses.categorical_crossentropy(targets, outputs[nl:])
            consistency = tf.reduce_mean(per_image * mask)
            total = supervised + o.unlabeled_weight * consistency
            if self.classifier.losses:
                total += tf.add_n(self.classifier.losses)
        variables = self.trainable_variables
        grads = tape.gradient(total, variables)
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        self.trackers["loss"].update_state(total)
        self.trackers["supervised_loss"].update_state(supervised)
        self.trackers["consistency_loss"].update_state(consistency)
        self.trackers["mask_rate"].update_state(tf.reduce_mean(mask))
        self.accuracy.update_state(yl, outputs[:nl])
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data[0], data[1]
        outputs = self.classifier(x, training=False)
        loss = self.supervised_loss(y, outputs)
        self.trackers["loss"].update_state(loss)
        self.accuracy.update_state(y, outputs)
        return {"loss": self.trackers["loss"].result(), "accuracy": self.accuracy.result()}


def _labelled_dataset(split: Split, num_outputs: int, batch_size: int, seed: int):
    targets = encode_labels(split.y, "softmax", num_outputs)
    return indexed_batches(split.x, batch_size, extras=(targets,), shuffle=True, seed=seed, repeat=True)


def train_fixmatch(
    config: RunConfig,
    unlabeled,
    options: FixMatchOptions | None = None,
    *,
    data: DataBundle | None = None,
    write: bool = True,
    callbacks: list | None = None,
) -> TrainResult:
    """FixMatch on the labelled data plus unlabelled images, from the pretrained backbone.

    Phase 1 trains the head on the frozen backbone with the labels (as ``tlkeras.train``); the
    FixMatch phase trains the head (and, with ``options.unfreeze``, the top of the backbone) with
    :class:`FixMatchModel`. ``config.data.augment`` is not used in the FixMatch phase: the weak
    and strong views are its augmentation. ``metrics["fixmatch"]`` records the share of
    unlabelled images above the threshold in the last epoch.

    Args:
        config: the run's settings; ``config.data.source`` holds the labelled images.
        unlabeled: the unlabelled images (folder, CSV of paths, or array at the model's size).
        options: FixMatch settings.
        data: the labelled data as a DataBundle (default: load ``config.data.source``).
        write: write the run directory.
        callbacks: extra Keras callbacks for the FixMatch phase.

    Raises:
        TLKerasError: no unlabelled images, images of another size, a threshold outside (0, 1).

    Side effects: seeds the random generators; writes ``<output_dir>/<name>/`` when ``write``.
    """
    options = (options or FixMatchOptions()).validate()
    t0 = time.perf_counter()
    data, size, xu = prepare_data(config, data, unlabeled)
    timings: dict[str, float] = {"data": time.perf_counter() - t0}
    model = build_model(config.model, data.num_outputs, size)
    history, timings["phase1"], opened = warm_up_and_open(model, data, config, options.unfreeze)
    start = time.perf_counter()
    bs = config.data.batch_size
    ubs = bs * options.unlabeled_ratio
    epochs = options.epochs or max(1, config.train.phase2_epochs)
    steps = max(1, -(-len(xu) // ubs))

    def make_train_ds(epoch):
        seed = epoch_seed(config.seed, 2, epoch)
        return tf.data.Dataset.zip((
            _labelled_dataset(data.train, data.num_outputs, bs, seed),
            unlabeled_dataset(xu, ubs, seed),
        )).prefetch(tf.data.AUTOTUNE)

    val_ds = make_dataset(data.val, head="softmax", num_outputs=data.num_outputs, batch_size=bs)
    trainer = FixMatchModel(model, options, label_smoothing=config.train.label_smoothing)
    lr = options.learning_rate or (phase2_learning_rate(config) if opened else config.train.phase1_lr)
    # FixMatch runs all its epochs (its validation loss is noisy early on); restore_best keeps the
    # best epoch, or the warmed-up model when no epoch beats it.
    result, selection = fit_main_phase(trainer, make_train_ds, val_ds, config, epochs=epochs, steps=steps, learning_rate=lr,
                                       candidate=config.train.phase1_epochs > 0, callbacks=list(callbacks or []),
                                       patience=0, restore_best=options.restore_best)
    PhaseHistory(history).add(result.history, 2)
    timings["fixmatch"] = timings["phase2"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - t0
    mask_rates = result.history.get("mask_rate") or [None]
    return write_unlabeled_run(
        config, data, model, history, method="fixmatch", options=options, timings=timings,
        unlabeled_count=len(xu), unlabeled_source=unlabeled,
        extra_metrics={"fixmatch": {"last_mask_rate": mask_rates[-1], "trainable_backbone_layers": len(opened)}},
        extra_info={"selection": selection}, write=write,
    )
