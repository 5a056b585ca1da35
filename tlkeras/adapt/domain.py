"""Domain adaptation by feature alignment: DANN (gradient reversal) and MMD.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.adapt.common import (
    _count_steps,
    fit_main_phase,
    load_labelled_split,
    prepare_data,
    unlabeled_dataset,
    warm_up_and_open,
    write_unlabeled_run,
)
from tlkeras.config import RunConfig
from tlkeras.core.data import DataBundle, Split, make_dataset
from tlkeras.core.models import backbone_layers, build_model, feature_layer_name
from tlkeras.errors import TLKerasError
from tlkeras.train.optim import epoch_seed, phase2_learning_rate, phase_optimizer
from tlkeras.train.phase import PhaseHistory
from tlkeras.train.run import TrainResult


@keras.saving.register_keras_serializable(package="tlkeras")
class GradientReversal(keras.layers.Layer):
    """Identity on the forward pass; multiplies the gradient by ``-weight`` on the backward pass.

    ``weight`` lives in a non-trainable variable (``reversal_weight``), so a schedule can change it
    during training without retracing (see :func:`reversal_schedule` and
    :class:`DomainAdaptationModel`, which assigns it every step). Registered as
    ``tlkeras>GradientReversal``, so models holding it save and load in Keras' safe mode.

    Args:
        weight: the initial reversal weight (lambda); 0 lets no gradient through.
    """

    def __init__(self, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_weight = float(weight)

    def build(self, input_shape):
        self.reversal_weight = self.add_weight(
            name="reversal_weight", shape=(), dtype="float32",
            initializer=keras.initializers.Constant(self.initial_weight), trainable=False,
        )
        super().build(input_shape)

    def set_weight(self, value: float) -> None:
        """Sets the reversal weight (side effect: assigns the layer's variable)."""
        if not self.built:
            self.initial_weight = float(value)
        else:
            self.reversal_weight.assign(float(value))

    def call(self, inputs):
        weight = tf.convert_to_tensor(self.reversal_weight)

        @tf.custom_gradient
        def reverse(x, w):
            def grad(dy):
                # The weight itself gets no gradient: it is a schedule, not a parameter.
                return -tf.cast(w, dy.dtype) * dy, tf.zeros_like(w)

            return tf.identity(x), grad

        return reverse(inputs, weight)

    def get_config(self):
        config = super().get_config()
        config["weight"] = self.initial_weight
        return config


def reversal_schedule(progress, max_weight: float = 1.0, gamma: float = 10.0):
    """DANN's reversal weight at ``progress`` in [0, 1]: ``max_weight * (2 / (1 + exp(-gamma p)) - 1)``.

    Works on Python floats, NumPy arrays and tensors; 0 at the start, ~``max_weight`` at the end.
    """
    if isinstance(progress, (tf.Tensor, tf.Variable)):
        p = tf.clip_by_value(tf.cast(progress, tf.float32), 0.0, 1.0)
        return max_weight * (2.0 / (1.0 + tf.exp(-gamma * p)) - 1.0)
    p = np.clip(np.asarray(progress, dtype=np.float64), 0.0, 1.0)
    value = max_weight * (2.0 / (1.0 + np.exp(-gamma * p)) - 1.0)
    return float(value) if value.ndim == 0 else value


def _pairwise_sq_distances(a, b):
    aa = tf.reduce_sum(tf.square(a), axis=1, keepdims=True)
    bb = tf.reduce_sum(tf.square(b), axis=1, keepdims=True)
    return tf.maximum(aa - 2.0 * tf.matmul(a, b, transpose_b=True) + tf.transpose(bb), 0.0)


def gaussian_mmd(x, y, scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0), bandwidth=None):
    """Squared MMD between samples ``x`` (n x d) and ``y`` (m x d) under a mix of Gaussian kernels.

    ``k(a, b) = mean_s exp(-|a - b|^2 / (s * bandwidth))``. ``bandwidth`` defaults to the mean
    squared distance between all points of both samples (the DAN heuristic), held constant for the
    gradient. The biased (V-statistic) estimate is used: it is never negative and is exactly 0 when
    ``x`` and ``y`` are the same sample.

    Returns:
        A float32 scalar tensor.
    """
    x = tf.cast(tf.convert_to_tensor(x), tf.float32)
    y = tf.cast(tf.convert_to_tensor(y), tf.float32)
    n = tf.shape(x)[0]
    joint = tf.concat([x, y], axis=0)
    d2 = _pairwise_sq_distances(joint, joint)
    if bandwidth is None:
        total = tf.cast(tf.shape(joint)[0], tf.float32)
        bandwidth = tf.stop_gradient(tf.reduce_sum(d2) / tf.maximum(total * total - total, 1.0))
    bandwidth = tf.maximum(tf.cast(bandwidth, tf.float32), 1e-8)
    kernel = tf.add_n([tf.exp(-d2 / (float(s) * bandwidth)) for s in scales]) / float(len(scales))
    kxx = tf.reduce_mean(kernel[:n, :n])
    kyy = tf.reduce_mean(kernel[n:, n:])
    kxy = tf.reduce_mean(kernel[:n, n:])
    return tf.maximum(kxx + kyy - 2.0 * kxy, 0.0)


def adaptation_feature_layer(model) -> str:
    """Name of the layer whose output is aligned: the last hidden head layer, else the pooled features."""
    hidden = [l.name for l in model.layers if l.name.startswith("head_hidden_") and "dropout" not in l.name]
    return hidden[-1] if hidden else feature_layer_name(model)


@dataclass
class DomainAdaptationOptions:
    """Settings of DANN / MMD adaptation (the rest comes from the RunConfig).

    Attributes:
        method: ``dann`` (gradient reversal and a domain discriminator), ``mmd`` (multi-kernel
            Gaussian MMD between source and target features) or ``source_only`` (the same
            training without an alignment term: the baseline).
        epochs: adaptation epochs after the head warm-up (None: ``train.phase2_epochs``); one
            epoch is one pass over the larger of the source and target sets.
        weight: the largest weight of the alignment loss (DANN: the reversal weight lambda);
            None: 0.3 for DANN, 3.0 for MMD (the better of the values tried on flowers5, see
            benchmarks/unlabeled.md).
        gamma: steepness of the ramp ``2 / (1 + exp(-gamma * progress)) - 1`` of the weight.
        discriminator_units: hidden layer sizes of the DANN domain discriminator.
        discriminator_dropout: dropout in the discriminator.
        discriminator_lr_factor: the discriminator's learning rate is the adaptation learning
            rate times this (it gets its own optimizer). A discriminator that learns faster than
            the pretrained backbone it plays against keeps the adversarial game stable; at 1 the
            backbone overpowers it and the features degrade.
        kernel_scales: MMD kernel bandwidths as multiples of the mean squared distance.
        learning_rate: learning rate of the adaptation phase (None: ``phase1_lr * phase2_lr_factor``).
        unfreeze: what the adaptation phase trains (None: ``train.unfreeze``).
    """

    method: str = "dann"
    epochs: int | None = None
    weight: float | None = None
    gamma: float = 10.0
    discriminator_units: list[int] = field(default_factory=lambda: [256])
    discriminator_dropout: float = 0.25
    discriminator_lr_factor: float = 10.0
    kernel_scales: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    learning_rate: float | None = None
    unfreeze: str | None = None

    def resolved_weight(self) -> float:
        """The alignment weight used: ``weight``, or the method's default."""
        if self.weight is not None:
            return float(self.weight)
        return {"dann": 0.3, "mmd": 3.0}.get(self.method, 0.0)

    def validate(self) -> "DomainAdaptationOptions":
        if self.method not in ("dann", "mmd", "source_only"):
            raise TLKerasError(f"method={self.method!r} is not a domain adaptation method; choose dann, mmd or source_only")
        if self.epochs is not None and self.epochs < 1:
            raise TLKerasError(f"adaptation epochs must be >= 1, got {self.epochs}")
        if self.weight is not None and self.weight < 0:
            raise TLKerasError(f"the alignment weight must be >= 0, got {self.weight}")
        if self.gamma <= 0:
            raise TLKerasError(f"gamma must be > 0, got {self.gamma}")
        if self.discriminator_lr_factor <= 0:
            raise TLKerasError(f"discriminator_lr_factor must be > 0, got {self.discriminator_lr_factor}")
        if not 0.0 <= self.discriminator_dropout < 1.0:
            raise TLKerasError(f"discriminator_dropout must be in [0, 1), got {self.discriminator_dropout}")
        if any(int(u) < 1 for u in self.discriminator_units):
            raise TLKerasError(f"discriminator_units must be positive, got {self.discriminator_units}")
        if not self.kernel_scales or any(s <= 0 for s in self.kernel_scales):
            raise TLKerasError(f"kernel_scales must be positive numbers, got {self.kernel_scales}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise TLKerasError(f"learning_rate must be > 0, got {self.learning_rate}")
        return self


class DomainAdaptationModel(keras.Model):
    """Trains ``classifier`` on labelled source batches while aligning source and target features.

    Feed it a dataset of ``((source_images, source_onehot), target_images)``. Each step runs both
    batches through the classifier in one pass, computes the cross-entropy on the source part and
    the alignment loss (DANN's domain cross-entropy behind a :class:`GradientReversal` layer, or
    the MMD), and applies the gradients. The alignment weight follows :func:`reversal_schedule`
    over ``total_steps`` optimizer steps. With :meth:`set_discriminator_optimizer`, the
    discriminator's variables get their own optimizer (e.g. a higher learning rate). Validation batches ``(images, onehot)`` report the
    classifier's loss and accuracy.

    The classifier's layers are shared, not copied: training this model trains ``classifier``,
    which is what gets saved. The discriminator is thrown away after training.
    """

    def __init__(self, classifier, options: DomainAdaptationOptions, total_steps: int, label_smoothing: float = 0.0, **kwargs):
        super().__init__(name=f"{options.method}_trainer", **kwargs)
        options.validate()
        self.classifier = classifier
        self.method = options.method
        self.max_weight = float(options.resolved_weight())
        self.gamma = float(options.gamma)
        self.kernel_scales = [float(s) for s in options.kernel_scales]
        self.total_steps = float(max(1, total_steps))
        features = classifier.get_layer(adaptation_feature_layer(classifier)).output
        self.dual = keras.Model(classifier.inputs, [features, classifier.output], name="features_and_outputs")
        if self.method == "dann":
            self.reversal = GradientReversal(0.0, name="gradient_reversal")
            self.reversal.build(features.shape)  # creates the weight variable the steps assign
            layers = []
            for i, units in enumerate(options.discriminator_units):
                layers.append(keras.layers.Dense(int(units), activation="relu", name=f"domain_hidden_{i}"))
                if options.discriminator_dropout > 0:
                    layers.append(keras.layers.Dropout(options.discriminator_dropout, name=f"domain_dropout_{i}"))
            layers.append(keras.layers.Dense(1, name="domain_logit"))
            self.discriminator = keras.Sequential(layers, name="domain_discriminator")
            self.discriminator.build(features.shape)
        self.discriminator_optimizer = None
        self.class_loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        self.domain_loss = keras.losses.BinaryCrossentropy(from_logits=True)
        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in ("loss", "class_loss", "align_loss", "align_weight")
        }
        self.accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
        self.domain_accuracy = keras.metrics.BinaryAccuracy(name="domain_accuracy", threshold=0.0)

    @property
    def metrics(self):
        found = list(self.trackers.values()) + [self.accuracy]
        return found + ([self.domain_accuracy] if self.method == "dann" else [])

    def call(self, inputs, training=None):
        return self.classifier(inputs, training=training)

    def set_discriminator_optimizer(self, optimizer) -> None:
        """Trains the discriminator with ``optimizer`` (call after ``compile``; DANN only).

        Side effect: creates the optimizer's slot variables for the discriminator.
        """
        if self.method != "dann":
            raise TLKerasError("only DANN has a discriminator")
        optimizer.build(self.discriminator.trainable_variables)
        self.discriminator_optimizer = optimizer

    def current_weight(self):
        """The alignment weight of the next step (a float32 tensor)."""
        progress = tf.cast(self.optimizer.iterations, tf.float32) / self.total_steps
        return reversal_schedule(progress, self.max_weight, self.gamma)

    def train_step(self, data):
        (xs, ys), xt = data
        ns = tf.shape(xs)[0]
        nt = tf.shape(xt)[0]
        weight = self.current_weight()
        with tf.GradientTape() as tape:
            features, outputs = self.dual(tf.concat([xs, xt], axis=0), training=True)
            features = tf.cast(features, tf.float32)
            class_loss = self.class_loss(ys, outputs[:ns])
            if self.method == "dann":
                self.reversal.reversal_weight.assign(weight)
                logits = self.discriminator(self.reversal(features), training=True)
                domains = tf.concat([tf.zeros((ns, 1)), tf.ones((nt, 1))], axis=0)
                # The discriminator learns from this loss at full strength; the backbone sees it
                # through the reversal layer, i.e. with the sign flipped and scaled by ``weight``.
                align_loss = self.domain_loss(domains, logits)
                total = class_loss + align_loss
            elif self.method == "mmd":
                align_loss = gaussian_mmd(features[:ns], features[ns:], self.kernel_scales)
                total = class_loss + weight * align_loss
            else:
                align_loss = tf.constant(0.0)
                total = class_loss
            if self.classifier.losses:
                total += tf.add_n(self.classifier.losses)
        variables = self.trainable_variables
        grads = tape.gradient(total, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if self.discriminator_optimizer is not None:
            own = {id(v) for v in self.discriminator.trainable_variables}
            self.discriminator_optimizer.apply_gradients([(g, v) for g, v in pairs if id(v) in own])
            pairs = [(g, v) for g, v in pairs if id(v) not in own]
        self.optimizer.apply_gradients(pairs)
        self.trackers["loss"].update_state(total)
        self.trackers["class_loss"].update_state(class_loss)
        self.trackers["align_loss"].update_state(align_loss)
        self.trackers["align_weight"].update_state(weight)
        self.accuracy.update_state(ys, outputs[:ns])
        if self.method == "dann":
            self.domain_accuracy.update_state(domains, logits)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data[0], data[1]
        outputs = self.classifier(x, training=False)
        loss = self.class_loss(y, outputs)
        self.trackers["loss"].update_state(loss)
        self.trackers["class_loss"].update_state(loss)
        self.accuracy.update_state(y, outputs)
        return {"loss": self.trackers["loss"].result(), "accuracy": self.accuracy.result()}


def _has_trainable_features(model) -> bool:
    if any(l.name.startswith("head_hidden_") and l.trainable_weights for l in model.layers):
        return True
    return any(l.trainable and l.trainable_weights for l in backbone_layers(model))


def _target_splits(target_test, data: DataBundle, size: int) -> dict[str, Split]:
    if target_test is None:
        return {}
    return {"target": load_labelled_split(target_test, size, data.class_names)}


def adapt_domain(
    config: RunConfig,
    target,
    options: DomainAdaptationOptions | None = None,
    *,
    data: DataBundle | None = None,
    target_test=None,
    write: bool = True,
    callbacks: list | None = None,
) -> TrainResult:
    """DANN or MMD domain adaptation from labelled source data to unlabelled target images.

    Phase 1 trains the head on the frozen backbone with the source labels; the adaptation phase
    unfreezes ``options.unfreeze`` (default ``train.unfreeze``) and trains on source labels plus
    the alignment loss for ``options.epochs`` epochs. The last weights are kept: without target
    labels, source validation accuracy says little about the target.

    Args:
        config: the run's settings; ``config.data.source`` is the labelled source data.
        target: unlabelled target images: a folder, a CSV of paths, or an array at the model's size.
        options: the technique and its settings (default: DANN).
        data: the labelled source data as a DataBundle (default: load ``config.data.source``).
        target_test: optional labelled target images (a Split, an ``(x, y)`` pair or a folder of
            class folders) used only to report ``metrics["target"]``.
        write: write the run directory.
        callbacks: extra Keras callbacks for the adaptation phase.

    Returns:
        A TrainResult; ``metrics`` has ``val`` and ``final`` (source) and ``target`` (when given).

    Raises:
        TLKerasError: no target images, target images of another size, nothing trainable to
            align (``unfreeze none`` and no hidden head layer), a non-softmax head.

    Side effects: seeds the random generators; writes ``<output_dir>/<name>/`` when ``write``.
    """
    options = (options or DomainAdaptationOptions()).validate()
    t0 = time.perf_counter()
    data, size, xt = prepare_data(config, data, target, what="target")
    targets = _target_splits(target_test, data, size)
    timings: dict[str, float] = {"data": time.perf_counter() - t0}
    model = build_model(config.model, data.num_outputs, size)
    history, timings["phase1"], opened = warm_up_and_open(model, data, config, options.unfreeze)
    start = time.perf_counter()
    if options.method != "source_only" and not _has_trainable_features(model):
        raise TLKerasError(
            "domain alignment needs trainable feature layers: set train.unfreeze to blocks:N or layers:N, "
            "or add model.hidden_units"
        )
    bs = config.data.batch_size
    epochs = options.epochs or max(1, config.train.phase2_epochs)
    steps = _count_steps(max(len(data.train), len(xt)), bs)
    n = data.num_outputs

    def make_train_ds(epoch):
        seed = epoch_seed(config.seed, 2, epoch)
        source_ds = make_dataset(data.train, head="softmax", num_outputs=n, batch_size=bs, shuffle=True,
                                 augment=config.data.augment, seed=seed).repeat()
        target_ds = unlabeled_dataset(xt, bs, seed, config.data.augment)
        return tf.data.Dataset.zip((source_ds, target_ds)).prefetch(tf.data.AUTOTUNE)

    val_ds = make_dataset(data.val, head="softmax", num_outputs=n, batch_size=bs)
    trainer = DomainAdaptationModel(model, options, epochs * steps, label_smoothing=config.train.label_smoothing)
    lr = options.learning_rate or phase2_learning_rate(config)

    def discriminator_optimizer(schedule):
        if options.method == "dann":
            trainer.set_discriminator_optimizer(phase_optimizer(config, lr * options.discriminator_lr_factor, epochs * steps))

    result, selection = fit_main_phase(trainer, make_train_ds, val_ds, config, epochs=epochs, steps=steps, learning_rate=lr,
                                       candidate=config.train.phase1_epochs > 0, callbacks=callbacks, on_compile=discriminator_optimizer)
    PhaseHistory(history).add(result.history, 2)
    timings["adaptation"] = timings["phase2"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - t0

    return write_unlabeled_run(
        config, data, model, history, method=options.method, options=options, timings=timings,
        unlabeled_count=len(xt), unlabeled_source=target, extra_splits=targets,
        extra_info={"trainable_backbone_layers": opened, "selection": selection}, write=write,
    )
