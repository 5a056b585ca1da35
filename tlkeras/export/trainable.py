"""A model that keeps learning on the phone: one ``.tflite`` with infer / embed / train /
get_weights / set_weights signatures, all TFLite builtin ops (no Select-TF "Flex" ops).

The frozen backbone (preprocessing inside, as in every variant) gives a feature vector; the head is
a softmax regression with L2 over ``K`` class slots: the run's classes first (its trained head is the
starting point), then empty slots an app fills with its user's own classes. Its training step is
written out with builtin ops instead of a gradient tape (whose ops convert to Flex, which the
standalone LiteRT runtimes lack): logits ``f W + b`` with unused slots masked to -1e9, softmax,
the cross-entropy gradient ``(p - y) / n`` (plus ``l2 W``), SGD with momentum on resource
variables. A step whose loss, gradient or learning rate is not finite leaves the head as it was
(checked as ``sum |x| < inf``, false for NaN and inf). ``get_weights`` / ``set_weights`` move
the head as plain tensors, so an app persists it in its own storage (TensorFlow's checkpoint ops
are Flex ops too).

The objective is phase 1's linear probe (softmax regression with L2), so the head trained on the
device over the training split's features lands where the Keras probe does (measured in
BENCHMARKS.md). :mod:`tlkeras.export.personalize` drives the same signatures from Python without
TensorFlow, as an app does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tlkeras._backend import tf
from tlkeras.core.models import feature_extractor
from tlkeras.errors import TLKerasError
from tlkeras.export.convert import _conversion_error, _quiet_converter

__all__ = ["TrainableOptions", "build_trainable_head", "convert_trainable", "export_trainable", "SIGNATURES", "DEFAULT_L2", "DEFAULT_MOMENTUM"]

SIGNATURES = ("infer", "embed", "train", "get_weights", "set_weights")
DEFAULT_L2 = 1e-3
DEFAULT_MOMENTUM = 0.9
DEFAULT_FREE_SLOTS = 5  # room for an app's own classes when --trainable-classes is not given
_MASKED = -1e9  # logit of an unused slot: exp() of it is 0 in float32


class TrainableOptions:
    """The on-device head's slots and its optimizer (SGD with momentum, L2 weight penalty)."""

    def __init__(self, slots: int, l2: float = DEFAULT_L2, momentum: float = DEFAULT_MOMENTUM):
        self.slots, self.l2, self.momentum = int(slots), float(l2), float(momentum)


class _Head(tf.Module):
    def __init__(self, extractor, kernel: np.ndarray, bias: np.ndarray, options: TrainableOptions, size: int):
        super().__init__()
        features, classes = kernel.shape
        slots = options.slots
        w = np.zeros((features, slots), np.float32)
        w[:, :classes] = kernel
        b = np.zeros(slots, np.float32)
        b[:classes] = bias
        active = np.zeros(slots, np.float32)
        active[:classes] = 1.0
        self.extractor = extractor
        self.w, self.b, self.active = tf.Variable(w, name="weights"), tf.Variable(b, name="bias"), tf.Variable(active, name="active")
        self.vw, self.vb = tf.Variable(np.zeros_like(w)), tf.Variable(np.zeros_like(b))
        self.l2, self.momentum, self.slots, self.features = options.l2, options.momentum, slots, features
        image = tf.TensorSpec([1, size, size, 3], tf.float32, name="image")
        self.infer = tf.function(self._infer, input_signature=[image])
        self.embed = tf.function(self._embed, input_signature=[image])
        self.train = tf.function(self._train, input_signature=[
            tf.TensorSpec([None, features], tf.float32, name="features"), tf.TensorSpec([None], tf.int32, name="labels"),
            tf.TensorSpec([], tf.float32, name="learning_rate")])
        self.get_weights = tf.function(self._get_weights, input_signature=[])
        self.set_weights = tf.function(self._set_weights, input_signature=[
            tf.TensorSpec([features, slots], tf.float32, name="weights"), tf.TensorSpec([slots], tf.float32, name="bias"),
            tf.TensorSpec([slots], tf.float32, name="active")])

    def _logits(self, features, active):
        return tf.matmul(features, self.w) + self.b + (1.0 - active) * _MASKED

    def _embed(self, image):
        return {"features": self.extractor(image, training=False)}

    def _infer(self, image):
        return {"scores": tf.nn.softmax(self._logits(self.extractor(image, training=False), self.active))}

    def _train(self, features, labels, learning_rate):
        onehot = tf.one_hot(labels, self.slots, dtype=tf.float32)
        active = tf.maximum(self.active, tf.reduce_max(onehot, axis=0))  # a slot is live once it has an example
        probs = tf.nn.softmax(self._logits(features, active))
        count = tf.cast(tf.shape(features)[0], tf.float32)
        loss = -tf.reduce_sum(onehot * tf.math.log(probs + 1e-12)) / count + 0.5 * self.l2 * tf.reduce_sum(self.w * self.w)
        delta = (probs - onehot) / count
        grad_w = tf.matmul(features, delta, transpose_a=True) + self.l2 * self.w
        grad_b = tf.reduce_sum(delta, axis=0)
        vw = self.momentum * self.vw + grad_w
        vb = self.momentum * self.vb + grad_b
        # One scalar says whether everything is finite: a sum of magnitudes is NaN or inf otherwise,
        # and NaN < inf is false. (x * 0 == 0 would read better, but the converter folds x * 0 to 0.)
        size = tf.reduce_sum(tf.abs(grad_w)) + tf.reduce_sum(tf.abs(grad_b)) + tf.abs(loss) + tf.abs(learning_rate)
        finite = tf.less(size, np.float32(np.inf))
        self.vw.assign(tf.where(finite, vw, self.vw))
        self.vb.assign(tf.where(finite, vb, self.vb))
        self.w.assign(tf.where(finite, self.w - learning_rate * vw, self.w))
        self.b.assign(tf.where(finite, self.b - learning_rate * vb, self.b))
        self.active.assign(tf.where(finite, active, self.active))
        return {"loss": loss, "applied": tf.cast(finite, tf.float32)}

    def _get_weights(self):
        return {"weights": tf.identity(self.w), "bias": tf.identity(self.b), "active": tf.identity(self.active)}

    def _set_weights(self, weights, bias, active):
        self.w.assign(weights)
        self.b.assign(bias)
        self.active.assign(active)
        self.vw.assign(tf.zeros_like(self.vw))  # a restored head starts a fresh momentum
        self.vb.assign(tf.zeros_like(self.vb))
        return {"active": tf.identity(self.active)}


def build_trainable_head(model, options: TrainableOptions) -> _Head:
    """The on-device module of a softmax image model: its backbone frozen, its head in ``options.slots`` slots.

    Raises:
        TLKerasError: a model without a plain softmax head (``head_dense`` right before the output),
            or fewer slots than the run's classes.
    """
    try:
        dense = model.get_layer("head_dense")
    except ValueError:
        raise TLKerasError("--trainable needs a tlkeras model with a softmax head (head_dense)") from None
    if any(layer.name.startswith("head_hidden") for layer in model.layers):
        raise TLKerasError("--trainable trains a linear softmax head on the device; this run has hidden head layers (--hidden-units): retrain without them")
    kernel, bias = (np.asarray(w, np.float32) for w in dense.get_weights())
    if options.slots < kernel.shape[1]:
        raise TLKerasError(f"--trainable-classes {options.slots} is fewer than the run's {kernel.shape[1]} classes; pass at least {kernel.shape[1]}")
    if options.slots > 4096:
        raise TLKerasError(f"--trainable-classes {options.slots} is more than 4096 slots; an on-device head this wide is not a personalization head")
    extractor = feature_extractor(model)
    size = int(model.inputs[0].shape[1])
    return _Head(extractor, kernel, bias, options, size)


def convert_trainable(head: _Head, work: Path) -> bytes:
    """Saves ``head`` with its five signatures and converts it with builtin ops and resource variables.

    Raises:
        TLKerasError: an op that TFLite builtins cannot express (the converter's own message, in one line).
    """
    path = Path(work) / "trainable"
    signatures = {name: getattr(head, name).get_concrete_function() for name in SIGNATURES}
    tf.saved_model.save(head, str(path), signatures=signatures)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(path), signature_keys=list(SIGNATURES))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.experimental_enable_resource_variables = True
    try:
        with _quiet_converter():
            return bytes(converter.convert())
    except Exception as exc:  # noqa: BLE001 - ConverterError and friends
        raise _conversion_error(exc, "trainable") from None


def describe(head: _Head, classes: int) -> dict[str, Any]:
    """The trainable variant's entry in metadata.json (signatures, tensors, optimizer)."""
    return {
        "signatures": {
            "infer": {"inputs": {"image": "float32 [1, S, S, 3], raw 0..255 RGB"}, "outputs": {"scores": f"float32 [1, {head.slots}] softmax over the slots"}},
            "embed": {"inputs": {"image": "float32 [1, S, S, 3]"}, "outputs": {"features": f"float32 [1, {head.features}]"}},
            "train": {"inputs": {"features": f"float32 [n, {head.features}] (from embed)", "labels": f"int32 [n], slot indices 0..{head.slots - 1}",
                                 "learning_rate": "float32 scalar"},
                      "outputs": {"loss": "float32 scalar (before the step)", "applied": "1.0, or 0.0 when the step was not finite and was skipped"}},
            "get_weights": {"outputs": {"weights": f"float32 [{head.features}, {head.slots}]", "bias": f"float32 [{head.slots}]",
                                        "active": f"float32 [{head.slots}], 1 for a slot in use"}},
            "set_weights": {"inputs": {"weights": "as get_weights", "bias": "as get_weights", "active": "as get_weights"}},
        },
        "slots": head.slots, "classes": classes, "free_slots": head.slots - classes,
        "optimizer": {"name": "sgd", "momentum": head.momentum, "l2": head.l2, "loss": "softmax cross-entropy + 0.5 * l2 * |W|^2 (the linear probe's objective)"},
    }


def export_trainable(model, stage: Path, work: Path, *, slots: int | None, eval_x: np.ndarray, keras_out: np.ndarray,
                     float32_bytes: int | None, say=None) -> dict[str, Any]:
    """Builds, converts and verifies the trainable variant; writes ``stage/trainable.tflite``.

    Verified on LiteRT here: ``infer`` with the run's head against Keras (top-1 on the evaluation
    images), and one ``train`` step against :func:`tlkeras.export.personalize.simulate_step`.

    Returns:
        Its metadata.json entry (signatures, slots, optimizer, size, agreement, p50 latencies).
    """
    from tlkeras.export.personalize import OnDeviceHead, simulate_step
    from tlkeras.runs import atomic_write_bytes

    say = say or (lambda line: None)
    classes = int(keras_out.shape[1])
    options = TrainableOptions(slots if slots is not None else classes + DEFAULT_FREE_SLOTS)
    head = build_trainable_head(model, options)
    content = convert_trainable(head, work)
    atomic_write_bytes(stage / "trainable.tflite", content)
    device = OnDeviceHead(content)
    scores = device.infer(eval_x)
    agreement = float(np.mean(scores[:, :classes].argmax(1) == keras_out.argmax(1))) if len(eval_x) else None
    # One step on the device against the same step in NumPy (float64): the simulation apps test with.
    feats = device.embed(eval_x[: min(8, len(eval_x))])
    labels = keras_out[: len(feats)].argmax(1)
    before = device.get_weights()
    zeros = {"weights": np.zeros_like(before["weights"], np.float64), "bias": np.zeros_like(before["bias"], np.float64)}
    expected, _, _ = simulate_step(before, zeros, feats, labels, 0.05, options.l2, options.momentum)
    device.train_step(feats, labels, 0.05)
    after = device.get_weights()
    step_error = float(max(np.max(np.abs(after[k] - expected[k])) for k in ("weights", "bias")))
    timings = _signature_latency(device, eval_x[:1], feats)  # last: its train calls move the head a little
    entry = describe(head, classes)
    entry.update({"file": "trainable.tflite", "bytes": len(content), "size_vs_float32": len(content) / float32_bytes if float32_bytes else None,
                  "infer_agreement_with_keras": agreement, "train_step_max_error_vs_numpy": step_error, "latency": timings,
                  "verified_on": ["litert"] if agreement is not None and agreement >= 0.995 and step_error < 1e-4 else []})
    say(f"  trainable: {len(content) / 1024:.0f} KB, {options.slots} slots, infer agreement {agreement}, "
        f"train step vs NumPy {step_error:.1e}, train p50 {timings['train_32_ms']:.2f} ms per 32 features")
    return entry


def _signature_latency(device, image: np.ndarray, feats: np.ndarray, iterations: int = 30) -> dict[str, float]:
    """p50 milliseconds of embed, infer (one image) and a train step on 32 features, on ``device``
    (an :class:`~tlkeras.export.personalize.OnDeviceHead`, 1 thread)."""
    import time

    batch = np.resize(feats, (32, feats.shape[1])).astype(np.float32)
    labels = np.zeros(32, np.int64)
    calls = {"embed_ms": lambda: device.embed(image), "infer_ms": lambda: device.infer(image),
             "train_32_ms": lambda: device.train_step(batch, labels, 1e-6)}
    out = {}
    for name, call in calls.items():
        call()
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1000.0)
        out[name] = float(np.percentile(times, 50))
    return out
