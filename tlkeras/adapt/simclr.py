"""Self-supervised transfer: SimCLR-style contrastive pretraining on unlabelled images.

:func:`train_simclr` continues training the pretrained backbone on the user's unlabelled images
with the NT-Xent loss (Chen et al., SimCLR, 2020): two random views of each image (random resized
crop, flip, colour jitter, random grayscale) go through the backbone and a small projection head;
each view must pick its partner out of all other views in the batch. The projection head is
thrown away afterwards; the backbone keeps what it learned and the normal two-phase fine-tune
(``fit_two_phase``) trains the classifier on the labels, so the run directory and ``model.keras``
are those of ``tlkeras.train``.

A :func:`linear_probe` (scikit-learn logistic regression on frozen pooled features, trained on the
labelled training split and scored on the evaluation split) runs before and after pretraining,
so ``metrics["linear_probe"]`` shows honestly whether the pretraining helped the features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.adapt.common import (
    compile_trainer,
    open_backbone,
    prepare_data,
    unlabeled_dataset,
    write_unlabeled_run,
)
from tlkeras.config import RunConfig
from tlkeras.core.augment import color_jitter, random_flip, random_grayscale, random_resized_crop
from tlkeras.core.data import DataBundle, Split
from tlkeras.core.metrics import predict
from tlkeras.core.models import build_model, feature_extractor, freeze_backbone
from tlkeras.errors import TLKerasError
from tlkeras.train.optim import phase2_learning_rate, phase_optimizer
from tlkeras.train.phase import PhaseHistory
from tlkeras.train.recipe import fit_two_phase
from tlkeras.train.run import TrainResult

__all__ = [
    "nt_xent_loss",
    "simclr_view",
    "SimCLROptions",
    "SimCLRModel",
    "pretrain_simclr",
    "linear_probe",
    "train_simclr",
]


def nt_xent_loss(z1, z2, temperature: float = 0.2):
    """SimCLR's normalized-temperature cross-entropy of two batches of paired embeddings.

    Row ``i`` of ``z1`` and row ``i`` of ``z2`` are two views of one image. Every one of the 2N
    L2-normalized embeddings must find its partner among the other 2N - 1 by cosine similarity
    divided by ``temperature``; the loss is the mean cross-entropy of those 2N choices.

    Returns:
        A float32 scalar tensor; ``log(2N - 1)`` for embeddings that carry no information.
    """
    if temperature <= 0:
        raise TLKerasError(f"temperature must be > 0, got {temperature}")
    z = tf.math.l2_normalize(tf.cast(tf.concat([z1, z2], axis=0), tf.float32), axis=1)
    n = tf.shape(z1)[0]
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    # A view must not choose itself: push the diagonal far below every other similarity.
    logits -= tf.eye(2 * n) * 1e9
    partners = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], axis=0)
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(partners, logits, from_logits=True))


def simclr_view(x, crop_scale: float = 0.2, strength: float = 0.5, grayscale: float = 0.2):
    """One random SimCLR view of a batch of float pixels in [0, 255]."""
    y = random_resized_crop(x, scale=(crop_scale, 1.0))
    y = random_flip(y)
    y = color_jitter(y, strength, p=0.8)
    return random_grayscale(y, grayscale)


@dataclass
class SimCLROptions:
    """Settings of SimCLR pretraining and its evaluation.

    Attributes:
        epochs: contrastive epochs over the unlabelled images.
        temperature: NT-Xent temperature.
        projection_units: hidden width of the projection head.
        projection_dim: output size of the projection head.
        learning_rate: learning rate (None: ``phase1_lr * phase2_lr_factor``, the fine-tuning rate).
        unfreeze: what pretraining trains (None: ``train.unfreeze``; must open backbone layers).
        batch_size: images per step (2 views each); None: ``data.batch_size``. Larger batches
            give more negatives.
        crop_scale: smallest crop area (fraction of the image) of the random resized crop.
        strength: colour-jitter strength.
        grayscale: probability of a grayscale view.
        probe_C: inverse regularization of the linear probe's logistic regression.
        finetune: run the normal two-phase fine-tune on the labels afterwards.
    """

    epochs: int = 20
    temperature: float = 0.2
    projection_units: int = 256
    projection_dim: int = 64
    learning_rate: float | None = None
    unfreeze: str | None = None
    batch_size: int | None = None
    crop_scale: float = 0.2
    strength: float = 0.5
    grayscale: float = 0.2
    probe_C: float = 0.1
    finetune: bool = True

    def validate(self) -> "SimCLROptions":
        if self.epochs < 1:
            raise TLKerasError(f"epochs must be >= 1, got {self.epochs}")
        if self.temperature <= 0:
            raise TLKerasError(f"temperature must be > 0, got {self.temperature}")
        if self.projection_units < 1 or self.projection_dim < 1:
            raise TLKerasError("projection_units and projection_dim must be >= 1")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise TLKerasError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size is not None and self.batch_size < 2:
            raise TLKerasError(f"batch_size must be >= 2 (contrastive learning needs negatives), got {self.batch_size}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise TLKerasError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        if self.probe_C <= 0:
            raise TLKerasError(f"probe_C must be > 0, got {self.probe_C}")
        return self


class SimCLRModel(keras.Model):
    """Contrastive training of a classifier's backbone: feed it batches of unlabelled images.

    The encoder is :func:`tlkeras.core.models.feature_extractor` of ``classifier`` (shared layers, so
    training this trains the classifier's backbone); the projection head is new and discarded
    after training. Reports ``loss`` and ``contrastive_accuracy`` (how often a view's most similar
    other view is its partner).
    """

    def __init__(self, classifier, options: SimCLROptions, **kwargs):
        super().__init__(name="simclr_trainer", **kwargs)
        self.options = options.validate()
        self.encoder = feature_extractor(classifier)
        self.projector = keras.Sequential(
            [keras.layers.Dense(options.projection_units, activation="relu", name="projection_hidden"),
             keras.layers.Dense(options.projection_dim, name="projection_output")],
            name="projection_head",
        )
        self.projector.build(self.encoder.output_shape)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.Mean(name="contrastive_accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy]

    def call(self, inputs, training=None):
        return self.projector(self.encoder(inputs, training=training), training=training)

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        o = self.options
        n = tf.shape(x)[0]
        views = tf.concat([simclr_view(x, o.crop_scale, o.strength, o.grayscale),
                           simclr_view(x, o.crop_scale, o.strength, o.grayscale)], axis=0)
        with tf.GradientTape() as tape:
            z = tf.cast(self(views, training=True), tf.float32)
            loss = nt_xent_loss(z[:n], z[n:], o.temperature)
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        zn = tf.math.l2_normalize(z, axis=1)
        sims = tf.matmul(zn, zn, transpose_b=True) - 2.0 * tf.eye(2 * n)
        partners = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], axis=0)
        hits = tf.cast(tf.equal(tf.argmax(sims, axis=1, output_type=tf.int32), partners), tf.float32)
        self.loss_tracker.update_state(loss)
        self.accuracy.update_state(tf.reduce_mean(hits))
        return {m.name: m.result() for m in self.metrics}


def pretrain_simclr(model, images: np.ndarray, options: SimCLROptions, config: RunConfig, callbacks: list | None = None):
    """Continues training ``model``'s backbone with SimCLR on uint8 ``images``; returns the History.

    Side effects: changes the opened backbone layers' weights; leaves the backbone frozen again
    (the state ``fit_two_phase`` expects).

    Raises:
        TLKerasError: when ``unfreeze`` opens no backbone layer (nothing would learn), or fewer
            than 2 images.
    """
    options.validate()
    if len(images) < 2:
        raise TLKerasError("SimCLR needs at least 2 unlabelled images (each batch needs negatives)")
    opened = open_backbone(model, config, options.unfreeze)
    if not opened:
        raise TLKerasError("SimCLR needs trainable backbone layers; set unfreeze to blocks:N, layers:N or all")
    bs = min(options.batch_size or config.data.batch_size, len(images))
    steps = max(1, len(images) // bs)
    trainer = SimCLRModel(model, options)
    lr = options.learning_rate or phase2_learning_rate(config)
    compile_trainer(trainer, phase_optimizer(config, lr, steps * options.epochs))
    history = trainer.fit(unlabeled_dataset(images, bs, config.seed), epochs=options.epochs, steps_per_epoch=steps,
                          callbacks=list(callbacks or []), verbose=config.train.verbose)
    freeze_backbone(model)
    return history


def linear_probe(model, train: Split, test: Split, C: float = 0.1, batch_size: int = 64) -> dict[str, Any]:
    """Accuracy of a logistic regression on ``model``'s frozen pooled features.

    Features are standardized (fitted on ``train``); the regression is scikit-learn's
    ``LogisticRegression(C=C)``. Side effects: none (the model is only run).

    Returns:
        ``{"accuracy", "f1_macro", "train_accuracy", "C", "train", "test"}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train.y)) < 2:
        raise TLKerasError("the linear probe needs labelled training images of at least 2 classes")
    extractor = feature_extractor(model)
    f_train = predict(extractor, train.x, batch_size)
    f_test = predict(extractor, test.x, batch_size)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))
    probe.fit(f_train, train.y)
    pred = probe.predict(f_test)
    return {
        "accuracy": float(accuracy_score(test.y, pred)),
        "f1_macro": float(f1_score(test.y, pred, average="macro", zero_division=0)),
        "train_accuracy": float(probe.score(f_train, train.y)),
        "C": float(C),
        "train": int(len(train)),
        "test": int(len(test)),
    }


def train_simclr(
    config: RunConfig,
    unlabeled,
    options: SimCLROptions | None = None,
    *,
    data: DataBundle | None = None,
    write: bool = True,
    callbacks: list | None = None,
) -> TrainResult:
    """SimCLR pretraining on unlabelled images, linear probes before and after, then the fine-tune.

    Args:
        config: the run's settings; ``config.data.source`` holds the labelled images.
        unlabeled: the unlabelled images (folder, CSV of paths, or array at the model's size);
            passing the labelled training images here too is fine (their labels are not used).
        options: SimCLR settings.
        data: the labelled data as a DataBundle (default: load ``config.data.source``).
        write: write the run directory.
        callbacks: extra Keras callbacks for the pretraining.

    Returns:
        A TrainResult; ``metrics["linear_probe"]`` has ``before`` and ``after`` (accuracy on the
        evaluation split) and ``metrics["simclr"]`` the last contrastive loss and accuracy. With
        ``finetune=False`` the saved classifier's head is the untrained one, so ``final`` is
        near chance; the probes are the result then.

    Raises:
        TLKerasError: no unlabelled images, images of another size, nothing to unfreeze.

    Side effects: seeds the random generators; writes ``<output_dir>/<name>/`` when ``write``.
    """
    options = (options or SimCLROptions()).validate()
    if (options.unfreeze or config.train.unfreeze) == "none":  # fail before any work
        raise TLKerasError("SimCLR needs trainable backbone layers; set unfreeze to blocks:N, layers:N or all")
    t0 = time.perf_counter()
    data, size, xu = prepare_data(config, data, unlabeled)
    timings: dict[str, float] = {"data": time.perf_counter() - t0}
    model = build_model(config.model, data.num_outputs, size)
    split_name, split = data.eval_split
    bs = config.data.batch_size

    start = time.perf_counter()
    before = linear_probe(model, data.train, split, options.probe_C, bs)
    timings["probe"] = time.perf_counter() - start
    start = time.perf_counter()
    h = pretrain_simclr(model, xu, options, config, callbacks)
    timings["simclr"] = time.perf_counter() - start
    start = time.perf_counter()
    after = linear_probe(model, data.train, split, options.probe_C, bs)
    timings["probe"] += time.perf_counter() - start
    history: dict[str, list] = {}
    PhaseHistory(history).add({f"simclr_{k}": v for k, v in h.history.items()}, 0)
    start = time.perf_counter()
    if options.finetune:
        fit_history, fit_timings = fit_two_phase(model, data, config)
        PhaseHistory(history).add(fit_history, 1)
        timings.update(fit_timings)
    timings["finetune"] = time.perf_counter() - start
    timings.setdefault("phase1", 0.0)
    timings.setdefault("phase2", 0.0)
    timings["total"] = time.perf_counter() - t0
    extra = {
        "linear_probe": {"split": split_name, "before": before, "after": after},
        "simclr": {k: float(v[-1]) for k, v in h.history.items()},
    }
    return write_unlabeled_run(
        config, data, model, history, method="simclr", options=options, timings=timings,
        unlabeled_count=len(xu), unlabeled_source=unlabeled, extra_metrics=extra, write=write,
    )
