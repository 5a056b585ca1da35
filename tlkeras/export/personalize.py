"""Drive a bundle's trainable variant as an app does: LiteRT signature runners, no TensorFlow.

``OnDeviceHead(bundle_dir / "trainable.tflite")`` wraps the five signatures of
:mod:`tlkeras.export.trainable` with the checks an app should make (labels inside the slots,
features of the right width, a finite learning rate, weights of the right shapes), each failing in
one line. Use it to simulate on-device learning on a desktop before shipping: these are the same
interpreter calls a Kotlin or Swift app makes (``Interpreter.runSignature``). Importing this module
does not import TensorFlow.

    head = OnDeviceHead("export/run/trainable.tflite")
    feats = head.embed(images)                       # N x F, store these instead of the images
    head.fit(feats, labels)                          # SGD with momentum on the device's head
    saved = head.get_weights()                       # persist (np.savez) and restore at start:
    OnDeviceHead(path).set_weights(**saved)
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from tlkeras.core.litert import load_interpreter
from tlkeras.errors import TLKerasError

__all__ = ["OnDeviceHead", "simulate_step"]


class OnDeviceHead:
    """The trainable variant in a LiteRT interpreter (``num_threads`` CPU threads)."""

    def __init__(self, model: bytes | str | os.PathLike, num_threads: int | None = 1):
        self.interpreter = load_interpreter(model, num_threads)
        names = set(self.interpreter.get_signature_list())
        missing = {"infer", "embed", "train", "get_weights", "set_weights"} - names
        if missing:
            raise TLKerasError(f"the model has no {', '.join(sorted(missing))} signature(s); pass a bundle's trainable.tflite (python -m tlkeras.export RUN --trainable)")
        self._runners = {name: self.interpreter.get_signature_runner(name) for name in names}
        weights = self.get_weights()
        self.features, self.slots = weights["weights"].shape
        self.size = int(self._runners["infer"].get_input_details()["image"]["shape"][1])

    def _images(self, images) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1:] != (self.size, self.size, 3):
            raise TLKerasError(f"images have shape {images.shape}; the model takes N x {self.size} x {self.size} x 3 RGB pixels 0..255")
        return images

    def embed(self, images) -> np.ndarray:
        """Feature vectors (N x F) of raw RGB images (N x S x S x 3, 0..255), one invoke each."""
        return np.stack([self._runners["embed"](image=x[None])["features"][0] for x in self._images(images)])

    def infer(self, images) -> np.ndarray:
        """Softmax scores over the slots (N x K); unused slots score 0."""
        return np.stack([self._runners["infer"](image=x[None])["scores"][0] for x in self._images(images)])

    def scores(self, features) -> np.ndarray:
        """Softmax scores (N x K) of stored features with the current head, in NumPy (what ``infer``
        computes after ``embed``; no image needed)."""
        w = self.get_weights()
        logits = np.asarray(features, np.float64) @ w["weights"] + w["bias"] + (1.0 - w["active"]) * -1e9
        logits -= logits.max(axis=1, keepdims=True)
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    def train_step(self, features, labels, learning_rate: float) -> float:
        """One SGD step on a batch; returns the loss before it. Raises on inputs an app must not send."""
        features = np.asarray(features, np.float32)
        labels = np.asarray(labels)
        if features.ndim != 2 or features.shape[1] != self.features:
            raise TLKerasError(f"features have shape {features.shape}; the head takes n x {self.features} (the embed signature's output)")
        if labels.shape != (len(features),) or not np.issubdtype(labels.dtype, np.integer):
            raise TLKerasError(f"labels must be {len(features)} integers, one slot per feature row, got shape {labels.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.slots):
            raise TLKerasError(f"label {int(labels.max() if labels.max() >= self.slots else labels.min())} is outside the head's slots 0..{self.slots - 1}")
        if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
            raise TLKerasError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
        out = self._runners["train"](features=features, labels=labels.astype(np.int32), learning_rate=np.float32(learning_rate))
        return float(out["loss"])

    def fit(self, features, labels, *, epochs: int = 100, batch_size: int = 32, learning_rate: float = 0.1, seed: int = 0,
            balance: bool = True) -> list[float]:
        """``epochs`` passes of shuffled mini-batches; returns each epoch's mean loss.

        With ``balance`` every class is drawn as often as the largest one in each epoch (its
        examples repeated): a user's 5 photos of a new class would otherwise drown among the
        hundreds the app keeps for the old ones.
        """
        features, labels = np.asarray(features, np.float32), np.asarray(labels)
        rng = np.random.default_rng(seed)
        losses = []
        for _ in range(epochs):
            order = _balanced(labels, rng) if balance and len(labels) else rng.permutation(len(features))
            batch = [self.train_step(features[order[i:i + batch_size]], labels[order[i:i + batch_size]], learning_rate)
                     for i in range(0, len(order), batch_size)]
            losses.append(float(np.mean(batch)))
        return losses

    def get_weights(self) -> dict[str, np.ndarray]:
        """The head as plain arrays: ``weights`` (F x K), ``bias`` (K), ``active`` (K, 1 for a used slot)."""
        return {k: np.array(v) for k, v in self._runners["get_weights"]().items()}

    def set_weights(self, weights, bias, active) -> None:
        """Restores a head saved by :meth:`get_weights` (momentum starts afresh)."""
        arrays = {"weights": np.asarray(weights, np.float32), "bias": np.asarray(bias, np.float32), "active": np.asarray(active, np.float32)}
        shapes = {"weights": (self.features, self.slots), "bias": (self.slots,), "active": (self.slots,)}
        for name, array in arrays.items():
            if array.shape != shapes[name]:
                raise TLKerasError(f"{name} has shape {array.shape}; this head's is {shapes[name]}: restore weights saved from the same trainable.tflite")
            if not np.all(np.isfinite(array)):
                raise TLKerasError(f"{name} holds NaN or infinite values; restore a head saved before it went wrong")
        self._runners["set_weights"](**arrays)

    def reset(self) -> None:
        """Every slot empty and every weight zero: training from zero."""
        self.set_weights(np.zeros((self.features, self.slots)), np.zeros(self.slots), np.zeros(self.slots))


def _balanced(labels: np.ndarray, rng) -> np.ndarray:
    """A shuffled index in which every class appears as often as the most frequent one."""
    classes, counts = np.unique(labels, return_counts=True)
    top = counts.max()
    parts = [rng.choice(np.flatnonzero(labels == c), size=top, replace=count < top) for c, count in zip(classes, counts)]
    return rng.permutation(np.concatenate(parts))


def simulate_step(weights: dict[str, np.ndarray], velocity: dict[str, np.ndarray], features, labels, learning_rate: float,
                  l2: float, momentum: float) -> tuple[dict[str, Any], dict[str, Any], float]:
    """The device's training step in NumPy (float64): the reference the LiteRT step is tested against.

    Returns:
        (new weights, new velocity, loss before the step).
    """
    w, b, active = (np.asarray(weights[k], np.float64) for k in ("weights", "bias", "active"))
    f = np.asarray(features, np.float64)
    onehot = np.eye(w.shape[1])[np.asarray(labels)]
    active = np.maximum(active, onehot.max(axis=0))
    logits = f @ w + b + (1.0 - active) * -1e9
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    n = len(f)
    loss = -np.sum(onehot * np.log(probs + 1e-12)) / n + 0.5 * l2 * np.sum(w * w)
    delta = (probs - onehot) / n
    vw = momentum * velocity["weights"] + f.T @ delta + l2 * w
    vb = momentum * velocity["bias"] + delta.sum(axis=0)
    return {"weights": w - learning_rate * vw, "bias": b - learning_rate * vb, "active": active}, {"weights": vw, "bias": vb}, float(loss)
