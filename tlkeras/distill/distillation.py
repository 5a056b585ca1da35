"""Knowledge distillation: a trained teacher run teaches a smaller student.

The student (a narrower backbone, a lower input resolution, or both) learns from the teacher's
temperature-softened class probabilities and from the hard labels (Hinton, Vinyals and Dean,
2015)::

    loss = (1 - w) * CE(y, softmax(z_s)) + w * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

where ``z_t``, ``z_s`` are the teacher's and student's logits, ``T`` the temperature and ``w``
the soft-target weight. The ``T^2`` factor keeps the soft term's gradients on the same scale as
the hard term's when ``T`` changes. Teacher and student see the same augmented image in every
step (the teacher at its own resolution, the student at a resized copy), which is what makes
distillation on small datasets work ("consistent teaching", Beyer et al. 2022).

Training follows the two phases of :func:`tlkeras.train.recipe.fit_two_phase`: phase 1 fits the
student's head on its frozen backbone, on features and teacher logits computed once when phase 1
is not augmented (by default as a linear probe: the convex distillation objective solved with
L-BFGS, its L2 strength chosen by validation log-loss, which with soft weight 0 is exactly
``tlkeras.train``'s logistic-regression probe), phase 2 unfreezes the top of the student's backbone at a lower learning rate
(BatchNorm frozen), with the data's augmentation; early stopping watches the hard-label
validation loss and restores the best weights. The student is written as an ordinary
run directory (``config.yaml``, ``model.keras``, ``labels.txt``, ``metrics.json``, ...), so
``python -m tlkeras.export`` and ``python -m tlkeras.evaluate`` take it like any run.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.config import RunConfig, load_config
from tlkeras.core.data import DataBundle, Split, class_weights, load_data, make_dataset
from tlkeras.core.tasks import task_of
from tlkeras.distill.split import inherit_teacher_split
from tlkeras.errors import TLKerasError

__all__ = [
    "DistillOptions",
    "soft_target_loss",
    "distillation_loss",
    "student_config",
    "logits_model",
    "fit_distillation",
    "fit_distillation_probe",
    "distill",
]


@dataclass
class DistillOptions:
    """How the teacher teaches.

    Attributes:
        temperature: softens both distributions (1 = plain softmax; 2-8 is usual).
        soft_weight: weight ``w`` of the soft-target term; the hard-label term gets ``1 - w``
            (0 trains on the labels only, the "without teacher" baseline with the same pipeline).
        mixup: Beta(a, a) parameter ``a`` of mixup between the images of a fine-tuning batch
            (0: off). The teacher labels each mixed image, so the student sees the teacher's
            answers on images it was never trained on ("consistent teaching"); the hard-label
            term mixes the labels the same way.
        unlabelled: text teachers only: a UTF-8 file of unlabelled texts, one per line, that the
            teacher labels for the student's fine-tuning (their hard-label target is the teacher's).
    """

    temperature: float = 4.0
    soft_weight: float = 0.7
    mixup: float = 0.0
    unlabelled: str | None = None

    def validate(self) -> "DistillOptions":
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise TLKerasError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.soft_weight <= 1.0:
            raise TLKerasError(f"soft_weight must be in [0, 1], got {self.soft_weight}")
        if not (self.mixup >= 0 and math.isfinite(self.mixup)):
            raise TLKerasError(f"mixup must be >= 0 (0 turns it off), got {self.mixup}")
        return self


# ---------------------------------------------------------------------------------------------
# Losses


def soft_target_loss(teacher_logits, student_logits, temperature: float):
    """Per-sample ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`` (a float32 tensor).

    Zero when the student's softened distribution equals the teacher's; the teacher gets no
    gradient.
    """
    t = tf.stop_gradient(tf.cast(teacher_logits, tf.float32)) / temperature
    s = tf.cast(student_logits, tf.float32) / temperature
    p = tf.nn.softmax(t, axis=-1)
    kl = tf.reduce_sum(p * (tf.nn.log_softmax(t, axis=-1) - tf.nn.log_softmax(s, axis=-1)), axis=-1)
    return (temperature ** 2) * kl


def distillation_loss(y_true, teacher_logits, student_logits, temperature: float, soft_weight: float,
                      label_smoothing: float = 0.0):
    """Per-sample ``(1 - w) * CE(y, softmax(z_s)) + w * soft_target_loss(z_t, z_s, T)``.

    Args:
        y_true: one-hot (or smoothed) targets, N x C.
        teacher_logits, student_logits: N x C logits.
        temperature: ``T``.
        soft_weight: ``w`` in [0, 1].
        label_smoothing: applied to the hard targets.
    """
    y = tf.cast(y_true, tf.float32)
    if label_smoothing:
        n = tf.cast(tf.shape(y)[-1], tf.float32)
        y = y * (1.0 - label_smoothing) + label_smoothing / n
    hard = tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(student_logits, tf.float32))
    if soft_weight == 0:
        return hard
    return (1.0 - soft_weight) * hard + soft_weight * soft_target_loss(teacher_logits, student_logits, temperature)


# ---------------------------------------------------------------------------------------------
# Models


def logits_model(model) -> keras.Model:
    """A model from the same input to the logits before ``head_output``'s softmax (shares layers).

    Raises:
        TLKerasError: if ``model`` has no softmax ``head_output`` (distillation needs classes).
    """
    names = [l.name for l in model.layers]
    if "head_output" not in names:
        raise TLKerasError(f"model {model.name} was not built by tlkeras (no head_output layer)")
    layer = model.get_layer("head_output")
    activation = getattr(layer, "activation", None)
    if getattr(activation, "__name__", "") != "softmax":
        raise TLKerasError("distillation needs a softmax (single-label) teacher and student; this model's head is not softmax")
    # Node 0 is the call inside ``model`` (later calls, e.g. by head_model, add more nodes).
    return keras.Model(model.inputs, layer.get_input_at(0), name=f"{model.name}_logits")


def _logits_head(student) -> keras.Model:
    """Pooled features -> the student's logits, sharing the student's head layers."""
    from tlkeras.core.models import feature_layer_name

    names = [l.name for l in student.layers]
    start, stop = names.index(feature_layer_name(student)), names.index("head_output")
    inputs = keras.Input(shape=tuple(student.get_layer(names[start]).get_output_at(0).shape[1:]), name="features")
    x = inputs
    for layer in student.layers[start + 1:stop]:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{student.name}_head_logits")


class _Distiller(keras.Model):
    """Trains ``student_logits`` against a frozen teacher; never saved.

    Batches are ``(images, y)`` (the teacher runs on the images, the student on a resized copy)
    or ``((student_inputs, teacher_logits), y)`` with both precomputed (phase 1 on cached
    features).
    """

    def __init__(self, student_logits, teacher_logits, student_size: int | None, options: DistillOptions, label_smoothing: float = 0.0):
        super().__init__(name="distiller")
        self.student_logits = student_logits
        self.teacher_logits = teacher_logits
        self.student_size = student_size
        self.temperature = float(options.temperature)
        self.soft_weight = float(options.soft_weight)
        self.label_smoothing = float(label_smoothing)
        self.mixup = float(options.mixup)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.soft_tracker = keras.metrics.Mean(name="soft_loss")
        self.accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.soft_tracker, self.accuracy]

    def _student_input(self, x):
        if self.student_size is None or int(x.shape[1]) == self.student_size:
            return x
        # Antialiased bilinear matches PIL's BILINEAR resize, which made the student's eval data.
        return tf.image.resize(x, (self.student_size, self.student_size), antialias=True)

    def _split(self, x):
        if isinstance(x, (tuple, list)):
            return x[0], x[1]
        return self._student_input(x), self.teacher_logits(x, training=False)

    def call(self, x, training=False):
        return self.student_logits(self._split(x)[0] if isinstance(x, (tuple, list)) else self._student_input(x), training=training)

    def _mix(self, x, y):
        """Mixup of a batch with a shuffled copy of itself, one Beta(a, a) weight per batch."""
        a = tf.constant(self.mixup, tf.float32)
        g1, g2 = tf.random.gamma([], a), tf.random.gamma([], a)
        lam = g1 / (g1 + g2)
        order = tf.random.shuffle(tf.range(tf.shape(x)[0]))
        x = tf.cast(x, tf.float32)
        return lam * x + (1.0 - lam) * tf.gather(x, order), lam * tf.cast(y, tf.float32) + (1.0 - lam) * tf.gather(tf.cast(y, tf.float32), order)

    def train_step(self, data):
        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        if self.mixup > 0 and not isinstance(x, (tuple, list)):
            x, y = self._mix(x, y)
        xs, t_logits = self._split(x)
        with tf.GradientTape() as tape:
            s_logits = self.student_logits(xs, training=True)
            per = distillation_loss(y, t_logits, s_logits, self.temperature, self.soft_weight, self.label_smoothing)
            if sw is not None:
                per = per * tf.cast(tf.reshape(sw, [-1]), per.dtype)
            loss = tf.reduce_mean(per)
            if self.student_logits.losses:
                loss += tf.add_n(self.student_logits.losses)
        variables = self.student_logits.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.loss_tracker.update_state(loss)
        self.soft_tracker.update_state(soft_target_loss(t_logits, s_logits, self.temperature))
        self.accuracy.update_state(y, s_logits)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        # Validation loss is the student's hard-label cross-entropy and accuracy its hard-label
        # accuracy (early stopping selects on it), whatever the teacher thinks.
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        xs, t_logits = self._split(x)
        s_logits = self.student_logits(xs, training=False)
        self.loss_tracker.update_state(tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.float32), logits=s_logits)))
        self.soft_tracker.update_state(soft_target_loss(t_logits, s_logits, self.temperature))
        self.accuracy.update_state(y, s_logits)
        return {m.name: m.result() for m in self.metrics}


def _cached_pairs(student, teacher_logits, x: np.ndarray, batch_size: int, augment: str, views: int, seed: int, size: int):
    """(student pooled features, teacher logits) of ``views`` views of ``x``, the same view to both."""
    from tlkeras.core.augment import augmenter
    from tlkeras.core.models import feature_extractor

    extractor = feature_extractor(student)
    aug = augmenter(augment, seed)
    feats, logits = [], []
    for view in range(views):
        for start in range(0, len(x), batch_size):
            batch = tf.cast(x[start:start + batch_size], tf.float32)
            if view > 0 and aug is not None:
                batch = tf.clip_by_value(aug(batch, training=True), 0.0, 255.0)
            logits.append(teacher_logits(batch, training=False).numpy())
            small = batch if int(batch.shape[1]) == size else tf.image.resize(batch, (size, size), antialias=True)
            feats.append(extractor(small, training=False).numpy())
    return np.concatenate(feats).astype(np.float32), np.concatenate(logits).astype(np.float32)


_PROBE_C = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_distillation_probe(features: np.ndarray, teacher_logits: np.ndarray, y: np.ndarray, num_classes: int,
                           options: DistillOptions, *, l2_c: float = 1.0, sample_weight: np.ndarray | None = None,
                           label_smoothing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A linear head (W, b) that minimizes the distillation loss on fixed features (L-BFGS).

    The objective is ``sum_i s_i * distillation_loss_i + ||W||^2 / (2 * l2_c)``, convex in
    ``(W, b)``; with ``soft_weight`` 0 it is scikit-learn's multinomial logistic regression with
    ``C = l2_c``, the linear probe of ``tlkeras.train``'s phase 1.

    Returns:
        ``(W, b)``: D x C kernel and C bias, float32.
    """
    from scipy.optimize import minimize

    x = np.asarray(features, np.float64)
    n, d = x.shape
    onehot = np.eye(num_classes)[np.asarray(y, np.int64)]
    if label_smoothing:
        onehot = onehot * (1 - label_smoothing) + label_smoothing / num_classes
    t, w = float(options.temperature), float(options.soft_weight)
    p_t = _softmax(np.asarray(teacher_logits, np.float64) / t)
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)

    def objective(theta):
        W, b = theta[: d * num_classes].reshape(d, num_classes), theta[d * num_classes:]
        z = x @ W + b
        log_q = z - z.max(axis=1, keepdims=True)
        log_q = log_q - np.log(np.exp(log_q).sum(axis=1, keepdims=True))
        zt = z / t
        log_qt = zt - zt.max(axis=1, keepdims=True)
        log_qt = log_qt - np.log(np.exp(log_qt).sum(axis=1, keepdims=True))
        hard = -(onehot * log_q).sum(axis=1)
        soft = t * t * (p_t * (np.log(np.maximum(p_t, 1e-300)) - log_qt)).sum(axis=1)
        loss = float(np.sum(sw * ((1 - w) * hard + w * soft)) + 0.5 * np.sum(W * W) / l2_c)
        g = sw[:, None] * ((1 - w) * (np.exp(log_q) - onehot) + w * t * (np.exp(log_qt) - p_t))
        grad = np.concatenate([(x.T @ g + W / l2_c).ravel(), g.sum(axis=0)])
        return loss, grad

    result = minimize(objective, np.zeros(d * num_classes + num_classes), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    theta = result.x
    return theta[: d * num_classes].reshape(d, num_classes).astype(np.float32), theta[d * num_classes:].astype(np.float32)


def _probe_phase(student, train_in, y_train, val_in, y_val, n: int, options: DistillOptions, class_weight, label_smoothing: float) -> dict[str, list]:
    """Phase 1 as ``tlkeras.train`` does it (a linear probe, L2 chosen by validation log-loss),
    with the distillation loss. Side effect: sets the student's ``head_dense`` weights."""
    (ft, lt), (fv, lv) = train_in, val_in
    sw = None if not class_weight else np.array([class_weight.get(int(c), 1.0) for c in y_train])
    best = None
    for c in _PROBE_C:
        W, b = fit_distillation_probe(ft, lt, y_train, n, options, l2_c=c, sample_weight=sw, label_smoothing=label_smoothing)
        q = _softmax(fv @ W + b)
        val_loss = float(-np.mean(np.log(np.maximum(q[np.arange(len(y_val)), y_val], 1e-12))))
        if best is None or val_loss < best[0]:
            best = (val_loss, c, W, b)
    val_loss, c, W, b = best
    student.get_layer("head_dense").set_weights([W, b])
    zt, zv = ft @ W + b, fv @ W + b
    soft = lambda z, lz: float(np.mean(soft_target_loss(lz, z, options.temperature).numpy()))  # noqa: E731
    qt = _softmax(zt)
    return {
        "loss": [float(-np.mean(np.log(np.maximum(qt[np.arange(len(y_train)), y_train], 1e-12))))],
        "soft_loss": [soft(zt, lt)],
        "accuracy": [float(np.mean(zt.argmax(1) == y_train))],
        "val_loss": [val_loss],
        "val_soft_loss": [soft(zv, lv)],
        "val_accuracy": [float(np.mean(zv.argmax(1) == y_val))],
        "probe_C": [float(c)],
    }


def fit_distillation(student, teacher, bundle: DataBundle, config: RunConfig, options: DistillOptions | None = None,
                     *, callbacks: list | None = None) -> tuple[dict, dict]:
    """Trains ``student`` in place from ``teacher`` in two phases.

    Args:
        student: a model from :func:`tlkeras.build_model` (softmax head; its input size is the
            student's resolution).
        teacher: the trained teacher model (softmax head, same classes).
        bundle: the data at the teacher's input size (the student gets resized copies).
        config: the student's run config (``train`` and ``data.augment``, ``data.batch_size``).
        options: temperature and soft-target weight.

    Returns:
        ``(history, timings)`` like :func:`tlkeras.train.recipe.fit_two_phase`; history also holds
        ``soft_loss`` (the KL term) per epoch.

    Side effects: changes the student's weights and ``trainable`` flags; leaves it compiled
    (plain cross-entropy) for evaluation.
    """
    from tlkeras.core.backbones import apply_recipe_defaults
    from tlkeras.core.data import encode_labels
    from tlkeras.core.models import freeze_backbone
    from tlkeras.train.optim import compile_model, epoch_seed, final_learning_rate, make_optimizer, steps_per_epoch
    from tlkeras.train.phase import PhaseHistory
    from tlkeras.train.recipe import (
        FitResult,
        fine_tune,
        open_and_fine_tune,
        phase1_augmentation,
        train_phase,
        uses_feature_cache,
        uses_linear_probe,
    )

    options = (options or DistillOptions()).validate()
    apply_recipe_defaults(config)
    tc, dc = config.train, config.data
    n, bs = bundle.num_outputs, dc.batch_size
    t_size, s_size = int(teacher.inputs[0].shape[1]), int(student.inputs[0].shape[1])
    if bundle.image_size != t_size:
        raise TLKerasError(f"the data is at {bundle.image_size}px but the teacher takes {t_size}px; load it at the teacher's size")
    t_out, s_out = int(teacher.outputs[0].shape[-1]), int(student.outputs[0].shape[-1])
    if t_out != n or s_out != n:
        raise TLKerasError(f"teacher ({t_out} classes), student ({s_out}) and data ({n}) must have the same classes")
    teacher.trainable = False
    teacher_logits = logits_model(teacher)
    steps = steps_per_epoch(len(bundle.train), bs)
    val_ds = make_dataset(bundle.val, head="softmax", num_outputs=n, batch_size=bs)
    weights = class_weights(bundle, dc.class_weight)
    history = PhaseHistory()
    timings: dict[str, float] = {}
    # Select on hard-label val accuracy, not val loss: a student trained on softened targets is
    # calibrated unlike a cross-entropy one, and from scratch its val cross-entropy can stay above
    # the uniform guess's ln(C) for many epochs, so "best val loss" kept epoch 1.
    monitor = tc.select_metric if tc.select_metric != "val_loss" else "val_accuracy"

    def compiler(trainer):
        return lambda lr: trainer.compile(optimizer=make_optimizer(tc.optimizer, lr, tc.weight_decay))

    def run(trainer, make_ds, val, *, epochs, lr, phase_steps):
        return train_phase(trainer, make_ds, val, config, phase=1, epochs=epochs, learning_rate=lr, steps=phase_steps,
                           compile=compiler(trainer), monitor=monitor, class_weight=weights, callbacks=callbacks)

    start = time.perf_counter()
    if tc.phase1_epochs > 0:
        freeze_backbone(student)
        augment1 = phase1_augmentation(config)
        if uses_feature_cache(config):
            # The frozen student backbone and the teacher give the same outputs for the same
            # image every epoch: compute both once (per view) and fit the head on them.
            views = tc.feature_cache_views if augment1 != "off" else 1
            train_in = _cached_pairs(student, teacher_logits, bundle.train.x, bs, augment1, views, config.seed, s_size)
            val_in = _cached_pairs(student, teacher_logits, bundle.val.x, bs, "off", 1, config.seed, s_size)
            if uses_linear_probe(student, config, "softmax"):
                history.add(_probe_phase(student, train_in, np.tile(bundle.train.y, views), val_in, bundle.val.y, n, options, weights, tc.label_smoothing), 1)
            else:
                targets = np.tile(encode_labels(bundle.train.y, "softmax", n), (views, 1))
                trainer = _Distiller(_logits_head(student), None, None, options, tc.label_smoothing)
                cached = tf.data.Dataset.from_tensor_slices((train_in, targets))
                val_cached = tf.data.Dataset.from_tensor_slices((val_in, encode_labels(bundle.val.y, "softmax", n))).batch(bs)

                def make_cached(epoch):
                    return cached.shuffle(len(targets), seed=epoch_seed(config.seed, 1, epoch)).batch(bs).prefetch(tf.data.AUTOTUNE)

                result = run(trainer, make_cached, val_cached, epochs=tc.phase1_epochs, lr=tc.phase1_lr,
                             phase_steps=steps_per_epoch(len(targets), bs))
                history.add(result.history, 1)
        else:
            trainer = _Distiller(logits_model(student), teacher_logits, s_size, options, tc.label_smoothing)

            def make_ds1(epoch):
                return make_dataset(bundle.train, head="softmax", num_outputs=n, batch_size=bs, shuffle=True, augment=augment1,
                                    seed=epoch_seed(config.seed, 1, epoch))

            result = run(trainer, make_ds1, val_ds, epochs=tc.phase1_epochs, lr=tc.phase1_lr, phase_steps=steps)
            history.add(result.history, 1)
    timings["phase1"] = time.perf_counter() - start

    def make_ds2(epoch):
        return make_dataset(bundle.train, head="softmax", num_outputs=n, batch_size=bs, shuffle=True, augment=dc.augment,
                            seed=epoch_seed(config.seed, 2, epoch))

    def fit2():
        trainer = _Distiller(logits_model(student), teacher_logits, s_size, options, tc.label_smoothing)
        return fine_tune(trainer, make_ds2, val_ds, config, history, steps=steps, compile=compiler(trainer), monitor=monitor,
                         class_weight=weights, callbacks=callbacks)

    selection, opened = open_and_fine_tune(student, config, timings, fit2)
    compile_model(student, config, n, final_learning_rate(config, bool(opened)), jit=False)
    return FitResult(history.values, timings, selection)


# ---------------------------------------------------------------------------------------------
# Runs


def student_config(teacher_config: RunConfig, *, image_size: int | None = None, alpha: float | None = None,
                   backbone: str | None = None, weights: str | None = None, name: str | None = None,
                   output_dir: str | None = None) -> RunConfig:
    """The teacher's run config with the student's model and input size swapped in.

    Data source, splits, augmentation, training schedule and seed stay the teacher's.
    """
    cfg = RunConfig(data=replace(teacher_config.data), model=replace(teacher_config.model, hidden_units=list(teacher_config.model.hidden_units)),
                    train=replace(teacher_config.train), output_dir=teacher_config.output_dir, name=None, seed=teacher_config.seed)
    if image_size is not None:
        cfg.data.image_size = int(image_size)
    if alpha is not None:
        cfg.model.alpha = float(alpha)
    if backbone is not None:
        cfg.model.backbone = backbone
    if weights is not None:
        cfg.model.weights = weights
    if name is not None:
        cfg.name = name
    if output_dir is not None:
        cfg.output_dir = output_dir
    return cfg.validate()


def _resized(split: Split | None, size: int) -> Split | None:
    if split is None or split.x.shape[1] == size:
        return split
    x = tf.image.resize(tf.cast(split.x, tf.float32), (size, size), antialias=True)
    return Split(tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8).numpy(), split.y, split.paths)


def _student_bundle(bundle: DataBundle, config: RunConfig, size: int) -> DataBundle:
    """The same splits at the student's size: decoded again from the files when they are known
    (as ``tlkeras.evaluate``/``export`` will do), else resized."""
    if size == bundle.image_size:
        return bundle
    if config.data.source is not None and bundle.source == str(config.data.source):
        with contextlib.suppress(TLKerasError):
            other = load_data(config.data, size, "softmax", config.seed)
            same = all(
                (a is None and b is None) or (a is not None and b is not None and a.paths == b.paths and np.array_equal(a.y, b.y))
                for a, b in ((bundle.train, other.train), (bundle.val, other.val), (bundle.test, other.test))
            )
            if same and other.class_names == bundle.class_names:
                return other
    return replace(bundle, train=_resized(bundle.train, size), val=_resized(bundle.val, size), test=_resized(bundle.test, size), image_size=size)


def distill(teacher_run: str | Path, config: RunConfig | None = None, options: DistillOptions | None = None, *,
            data: DataBundle | None = None, write: bool = True, callbacks: list | None = None):
    """Distills a trained teacher run into a student and writes the student's run directory.

    Args:
        teacher_run: the teacher's run directory (softmax head).
        config: the student's run config (default: :func:`student_config` of the teacher's, i.e.
            the same backbone and size: pass one with a smaller ``alpha`` or ``image_size``).
        options: temperature and soft-target weight.
        data: the data at the teacher's input size (default: ``config.data.source`` loaded at it).
        write: write ``<output_dir>/<name>/`` (as ``tlkeras.train`` does, plus the teacher's
            path, the options and the teacher's metrics in ``metrics.json`` under
            ``distillation``).

    Returns:
        A :class:`tlkeras.train.run.TrainResult` for the student.

    Raises:
        TLKerasError: a bad teacher run, a non-softmax head, classes that differ, no data.

    Side effects: seeds Python, NumPy and TensorFlow from ``config.seed``; writes the run
    directory atomically.
    """
    from tlkeras.core.loading import load_run_model
    from tlkeras.core.metrics import evaluate_model
    from tlkeras.core.models import build_model, check_model_config, trainable_backbone_layers
    from tlkeras.runs import default_run_name, read_labels
    from tlkeras.train.run import TrainResult

    options = (options or DistillOptions()).validate()
    teacher_run = Path(teacher_run)
    if not (teacher_run / "model.keras").is_file():
        raise TLKerasError(f"{teacher_run} is not a run directory with model.keras; pass a run written by tlkeras.train")
    teacher_cfg = load_config(teacher_run / "config.yaml")
    labels = read_labels(teacher_run)
    if not task_of(teacher_cfg.model).exclusive_classes:
        raise TLKerasError(f"the teacher {teacher_run} has a {teacher_cfg.model.head} head; distillation needs a softmax classifier")
    config = (config or student_config(teacher_cfg)).validate()
    if not task_of(config.model).exclusive_classes:
        raise TLKerasError("the student needs a softmax head like its teacher")
    if write and config.name and (Path(config.output_dir) / config.name).exists():
        raise TLKerasError(f"{Path(config.output_dir) / config.name} already exists; choose another --name or remove it")
    if teacher_cfg.data.modality == "text":  # raw strings in: the word-model student (tlkeras/distill/text.py)
        from tlkeras.distill.text import distill_text, read_unlabelled

        extra = read_unlabelled(options.unlabelled) if options.unlabelled else None
        return distill_text(teacher_run, load_run_model(teacher_run), teacher_cfg, labels, config, options, data=data,
                            unlabelled=extra, write=write, callbacks=callbacks,
                            parts=(_Distiller, logits_model))
    if config.model.backbone in ("word_embedding",) or str(config.model.backbone).startswith("hf:"):
        raise TLKerasError(f"the teacher {teacher_run} is an image classifier; a text student ({config.model.backbone}) needs a text teacher")
    s_size = check_model_config(config.model, config.data.image_size)
    t0 = time.perf_counter()
    teacher = load_run_model(teacher_run)
    t_size = int(teacher.inputs[0].shape[1])
    logits_model(teacher)  # fails early on a non-softmax model
    keras.utils.set_random_seed(config.seed)
    if data is None:
        if config.data.source is None:
            raise TLKerasError(f"no data source: the teacher {teacher_run} was trained on the embedded demo; pass data (config.data.source)")
        inherit_teacher_split(config, teacher_cfg)
        data = load_data(replace(config.data, image_size=t_size), t_size, "softmax", config.seed)
    if data.class_names != labels:
        raise TLKerasError(f"the data's classes {data.class_names} differ from the teacher's {labels}")
    config.data.image_size = s_size
    from tlkeras.core.backbones import apply_recipe_defaults

    recipe = apply_recipe_defaults(config, train_count=len(data.train), num_classes=data.num_outputs)
    student_data = _student_bundle(data, config, s_size)
    t_data = time.perf_counter() - t0

    student = build_model(config.model, data.num_outputs, s_size)
    config.name = config.name or default_run_name(f"{teacher_run.resolve().name}-student")
    fitted = fit_distillation(student, teacher, data, config, options, callbacks=callbacks)
    history, timings = fitted
    split_name, split = student_data.eval_split
    _, t_split = data.eval_split
    metrics: dict[str, Any] = {
        "val": evaluate_model(student, student_data.val, labels, "softmax", config.data.batch_size),
        "final_split": split_name,
        "final": evaluate_model(student, split, labels, "softmax", config.data.batch_size),
    }
    teacher_final = evaluate_model(teacher, t_split, labels, "softmax", config.data.batch_size)
    metrics["distillation"] = {
        "teacher_run": str(teacher_run),
        "temperature": options.temperature,
        "soft_weight": options.soft_weight,
        "teacher_image_size": t_size,
        "student_image_size": s_size,
        "teacher_final": {k: teacher_final[k] for k in ("accuracy", "f1_macro")},
        "teacher_params": int(teacher.count_params()),
        "student_params": int(student.count_params()),
    }
    timings["data"] = t_data
    timings["total"] = time.perf_counter() - t0
    metrics["timings"] = timings
    run_dir = None
    if write:
        run_dir = Path(config.output_dir) / config.name
        info = {"distillation": metrics["distillation"], "trainable_backbone_layers": trainable_backbone_layers(student),
                "data": {"source": data.source, "train": len(data.train), "val": len(data.val),
                         "test": len(data.test) if data.test is not None else 0},
                "recipe": recipe, "selection": fitted.selection, "timings": timings}
        from tlkeras.distill.text import write_student_run

        write_student_run(run_dir, config, student, labels, history, metrics, info)
    return TrainResult(student, history, metrics, timings, run_dir, config, {"teacher": str(teacher_run)})
