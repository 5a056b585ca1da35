"""Two-phase training of a segmentation model: the decoder on the frozen encoder, then fine-tuning.

The loss is pixel cross-entropy plus a soft Dice term (both skip the ignore id). Each epoch ends
with the val mIoU; each phase keeps its best epoch's weights, and phase 2's result is kept only if
its best val mIoU beats phase 1's (the never-worse rule). Everything is seeded: the shuffle, the
stateless augmentation and the initial weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.core.segmentation.augment import augment_pair
from tlkeras.core.segmentation.metrics import mask_metrics
from tlkeras.core.segmentation.model import freeze_encoder, unfreeze_encoder

__all__ = ["Fitted", "fit_two_phase", "predict_masks", "make_loss", "RECIPE"]

# Defaults that replace TrainConfig's classification defaults when a run leaves them unchanged.
RECIPE = {"phase1_epochs": 8, "phase2_epochs": 6, "phase1_lr": 2e-3, "phase2_lr_factor": 0.1, "batch_size": 16}


@dataclass
class Fitted:
    history: dict[str, list] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)


def make_loss(num_classes: int):
    """Cross-entropy + (1 - soft Dice) over pixels whose label is in [0, num_classes); -1 marks ignored pixels."""

    def segmentation_loss(y_true, y_pred):
        y = tf.cast(tf.reshape(y_true, tf.shape(y_pred)[:3]), tf.int32)
        valid = tf.cast((y >= 0) & (y < num_classes), tf.float32)
        yc = tf.where(y >= 0, tf.minimum(y, num_classes - 1), 0)
        ce = keras.losses.sparse_categorical_crossentropy(yc, y_pred)
        count = tf.maximum(tf.reduce_sum(valid), 1.0)
        ce = tf.reduce_sum(ce * valid) / count
        onehot = tf.one_hot(yc, num_classes) * valid[..., None]
        probs = y_pred * valid[..., None]
        inter = tf.reduce_sum(onehot * probs, axis=[0, 1, 2])
        denom = tf.reduce_sum(onehot, axis=[0, 1, 2]) + tf.reduce_sum(probs, axis=[0, 1, 2])
        dice = (2.0 * inter + 1.0) / (denom + 1.0)
        return ce + 1.0 - tf.reduce_mean(dice)

    return segmentation_loss


def _labels_for_loss(y: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    y = y.astype(np.int32).copy()
    if ignore_index is not None:
        y[y == ignore_index] = -1
    y[y >= num_classes] = -1
    return y


def _train_dataset(x: np.ndarray, y: np.ndarray, batch: int, seed: int, preset: str):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True).repeat().enumerate()

    def aug(i, pair):
        image, mask = tf.cast(pair[0], tf.float32), pair[1]
        if preset == "off":
            return image, mask
        return augment_pair(image, mask, tf.stack([tf.cast(seed, tf.int64), i]), preset)

    return ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch).prefetch(2)


def predict_masks(model, x: np.ndarray, batch: int = 16) -> np.ndarray:
    """Id masks (argmax of the scores) of raw uint8 images, N x H x W."""
    out = []
    for i in range(0, len(x), batch):
        out.append(np.argmax(model(x[i:i + batch].astype(np.float32), training=False).numpy(), axis=-1).astype(np.int32))
    return np.concatenate(out) if out else np.zeros(x.shape[:3], np.int32)


class _ValMIoU(keras.callbacks.Callback):
    """Logs ``val_miou`` after each epoch, keeps the best weights, stops after ``patience`` epochs without gain."""

    def __init__(self, data, batch: int, patience: int, verbose: int):
        super().__init__()
        self.data, self.batch, self.patience, self.verbose = data, batch, patience, verbose
        self.best, self.best_weights, self.best_epoch, self.wait = -1.0, None, -1, 0

    def on_epoch_end(self, epoch, logs=None):
        pred = predict_masks(self.model, self.data.val.x, self.batch)
        miou = mask_metrics(self.data.val.y, pred, self.data.class_names, self.data.ignore_index)["miou"]
        if logs is not None:
            logs["val_miou"] = miou
        if miou > self.best:
            self.best, self.best_weights, self.best_epoch, self.wait = miou, self.model.get_weights(), epoch, 0
        else:
            self.wait += 1
            if self.patience and self.wait >= self.patience:
                self.model.stop_training = True


class _Say(keras.callbacks.Callback):
    def __init__(self, phase: int, epochs: int):
        super().__init__()
        self.phase, self.epochs, self.t = phase, epochs, time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        print(f"phase {self.phase} epoch {epoch + 1}/{self.epochs}: loss {logs.get('loss', float('nan')):.4f} "
              f"val mIoU {logs.get('val_miou', float('nan')):.4f} ({time.perf_counter() - self.t:.1f}s)", flush=True)


def _compile(model, lr: float, steps: int, num_classes: int, schedule: str) -> None:
    rate = keras.optimizers.schedules.CosineDecay(lr, max(1, steps)) if schedule == "cosine" else lr
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=make_loss(num_classes))


def _phase(model, data, ds, steps: int, epochs: int, lr: float, phase: int, config, callbacks) -> tuple[dict, _ValMIoU]:
    train = config.train
    _compile(model, lr, steps * epochs, data.num_outputs, train.schedule)
    tracker = _ValMIoU(data, config.data.batch_size, train.early_stopping_patience, train.verbose)
    cbs = [tracker] + ([_Say(phase, epochs)] if train.verbose else []) + list(callbacks or [])
    hist = model.fit(ds, steps_per_epoch=steps, epochs=epochs, callbacks=cbs, verbose=0)
    if tracker.best_weights is not None:
        model.set_weights(tracker.best_weights)
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}, tracker


def fit_two_phase(model, data, config, callbacks=None) -> Fitted:
    """Trains ``model`` on ``data`` (a SegData) with ``config`` (a RunConfig whose recipe fields are resolved).

    Side effects: changes the model's weights and trainable flags; prints a line per epoch when
    ``config.train.verbose``.
    """
    train, batch = config.train, int(config.data.batch_size)
    y = _labels_for_loss(data.train.y, data.num_outputs, data.ignore_index)
    ds = _train_dataset(data.train.x, y, batch, config.seed, config.data.augment)
    steps = max(1, math.ceil(len(data.train) / batch))
    fitted = Fitted(history={"phase": [], "loss": [], "val_miou": []})
    t0 = time.perf_counter()
    best1 = -1.0
    if train.phase1_epochs:
        hist, tracker = _phase(model, data, ds, steps, train.phase1_epochs, train.phase1_lr, 1, config, callbacks)
        _extend(fitted.history, hist, 1)
        best1 = tracker.best
        fitted.selection["phase1"] = {"best_epoch": tracker.best_epoch + 1, "val_miou": tracker.best}
    fitted.timings["phase1"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    if train.phase2_epochs:
        phase1_weights = model.get_weights()
        top = None
        if train.unfreeze and train.unfreeze.startswith("layers:"):
            top = int(train.unfreeze.split(":")[1])
        if train.unfreeze != "none":
            unfreeze_encoder(model, top)
            lr2 = train.phase1_lr * float(train.phase2_lr_factor)
            hist, tracker = _phase(model, data, ds, steps, train.phase2_epochs, lr2, 2, config, callbacks)
            _extend(fitted.history, hist, 2)
            fitted.selection["phase2"] = {"best_epoch": tracker.best_epoch + 1, "val_miou": tracker.best, "lr": lr2}
            if tracker.best < best1:
                # Never worse: fine-tuning that did not beat the frozen-encoder model is undone.
                model.set_weights(phase1_weights)
                fitted.selection["kept"] = "phase1"
            else:
                fitted.selection["kept"] = "phase2"
            freeze_encoder(model)
    fitted.selection.setdefault("kept", "phase1")
    fitted.timings["phase2"] = time.perf_counter() - t1
    return fitted


def _extend(history: dict, hist: dict, phase: int) -> None:
    n = len(hist.get("loss", []))
    history["phase"].extend([phase] * n)
    for key in ("loss", "val_miou"):
        history[key].extend(hist.get(key, [float("nan")] * n))
