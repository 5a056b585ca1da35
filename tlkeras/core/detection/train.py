"""Two-phase detector training: the neck and head on the frozen backbone, then the top backbone blocks
at a lower rate; the kept weights are the best on val AP50 across both phases (so the run never ends
worse than phase 1 on val).

The recipe's defaults (:data:`DEFAULTS`) stand in for every training field the config leaves at the
classification engine's default, because a detector needs other numbers (more epochs, a lower
phase-1 rate, a deeper unfreeze).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.config import TrainConfig
from tlkeras.core.detection.anchors import AnchorConfig, make_anchors, postprocess
from tlkeras.core.detection.metrics import coco_metrics
from tlkeras.core.detection.model import detection_loss
from tlkeras.core.detection.pipeline import Decoded, train_dataset
from tlkeras.core.models import freeze_backbone, unfreeze_backbone

__all__ = ["DEFAULTS", "Recipe", "recipe_from", "predict", "evaluate_decoded", "fit", "NMS"]

# MediaPipe ObjectDetector's post-processing, used for every Keras-side score too.
NMS = {"score_threshold": 0.05, "iou": 0.3, "max_results": 100}

DEFAULTS = {"image_size": 320, "batch_size": 16, "phase1_epochs": 40, "phase1_lr": 2e-3, "phase2_epochs": 12,
            "phase2_lr_factor": 0.1, "unfreeze": "blocks:12", "eval_every": 3}


@dataclass
class Recipe:
    image_size: int
    batch_size: int
    phase1_epochs: int
    phase1_lr: float
    phase2_epochs: int
    phase2_lr_factor: float
    unfreeze: str
    eval_every: int
    augment: bool
    basis: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "basis"} | {"from_detection_defaults": sorted(self.basis)}


def recipe_from(config) -> Recipe:
    """The recipe: the config's value where it differs from the classification default, else :data:`DEFAULTS`."""
    plain = TrainConfig()
    t, chosen, basis = config.train, {}, {}
    for key in ("phase1_epochs", "phase1_lr", "phase2_epochs", "phase2_lr_factor", "unfreeze"):
        value = getattr(t, key)
        if value is None or value == getattr(plain, key):
            chosen[key], basis[key] = DEFAULTS[key], True
        else:
            chosen[key] = value
    chosen["image_size"] = config.data.image_size or DEFAULTS["image_size"]
    chosen["batch_size"] = config.data.batch_size or DEFAULTS["batch_size"]
    return Recipe(**chosen, eval_every=DEFAULTS["eval_every"], augment=config.data.augment != "off", basis=basis)


def predict(model, decoded: Decoded, anchors: np.ndarray, box_scales, batch: int = 16, nms: dict | None = None) -> list:
    """Detections per sample in the sample's own pixels (xmin, ymin, xmax, ymax), MediaPipe-style NMS."""
    nms = nms or NMS
    out = []
    for start in range(0, len(decoded.images), batch):
        loc, logits = model(decoded.images[start:start + batch].astype("float32"), training=False)
        for j, (l, s) in enumerate(zip(np.asarray(loc), np.asarray(logits))):
            out.append(to_pixels(*postprocess(l, s, anchors, box_scales, **nms), decoded.samples[start + j]))
    return out


def to_pixels(boxes, scores, classes, sample):
    """Normalized ymin, xmin, ymax, xmax -> the sample's pixels xmin, ymin, xmax, ymax (clipped)."""
    b = np.stack([boxes[:, 1] * sample.width, boxes[:, 0] * sample.height, boxes[:, 3] * sample.width, boxes[:, 2] * sample.height], 1)
    b = np.clip(b, 0, [sample.width, sample.height, sample.width, sample.height])
    return b, scores, classes


def evaluate_decoded(model, decoded: Decoded, anchor_config: AnchorConfig, class_names, batch: int = 16, *, with_detections: bool = False):
    """COCO metrics of ``model`` on a decoded split (and the detections, with ``with_detections``)."""
    anchors = make_anchors(anchor_config)
    dets = predict(model, decoded, anchors, anchor_config.box_scales, batch)
    metrics = coco_metrics(decoded.samples, dets, class_names)
    return (metrics, dets) if with_detections else metrics


def _step_fn(model, optimizer, num_classes):
    @tf.function(reduce_retracing=True)
    def step(images, box_t, cls_t):
        with tf.GradientTape() as tape:
            loc, logits = model(images, training=True)
            loss, cls_loss, box_loss = detection_loss(box_t, cls_t, loc, logits, num_classes)
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        grads, _ = tf.clip_by_global_norm(grads, 10.0)
        optimizer.apply_gradients(zip(grads, variables))
        return loss, cls_loss, box_loss
    return step


def cached_views(feature_model, train: Decoded, anchors, box_scales, num_classes: int, batch: int = 16):
    """Backbone features of every training image and of its mirror image, computed once (float16),
    with their training targets: phase 1 trains the head on them for many epochs in the time a
    few epochs through the frozen backbone would take."""
    from tlkeras.core.detection.anchors import tf_targets
    from tlkeras.core.detection.pipeline import PAD_LABEL

    feats, box_t, cls_t = None, [], []
    for flip in (False, True):
        for start in range(0, len(train.images), batch):
            x = train.images[start:start + batch].astype("float32")
            out = [np.asarray(f, "float16") for f in feature_model(x[:, :, ::-1] if flip else x, training=False)]
            feats = [list() for _ in out] if feats is None else feats
            for store, f in zip(feats, out):
                store.append(f)
        for b, lab in zip(train.boxes, train.labels):
            real = lab != PAD_LABEL
            b, lab = b[real], lab[real]
            if flip:
                b = np.stack([b[:, 0], 1 - b[:, 3], b[:, 2], 1 - b[:, 1]], 1) if len(b) else b
            t, c = tf_targets(tf.constant(b.reshape(-1, 4), tf.float32), tf.constant(lab, tf.int32), anchors, box_scales, num_classes)
            box_t.append(t.numpy())
            cls_t.append(c.numpy())
    return [np.concatenate(f) for f in feats], np.stack(box_t), np.stack(cls_t)


def _phase1_cached(head, cache, *, epochs: int, lr: float, batch: int, seed: int, num_classes: int, evaluate, verbose, history, best):
    feats, box_t, cls_t = cache
    n = len(box_t)
    steps_per_epoch = max(1, n // batch)
    schedule = keras.optimizers.schedules.CosineDecay(lr, steps_per_epoch * epochs, alpha=0.02)
    optimizer = keras.optimizers.Adam(schedule)
    step = _step_fn(head, optimizer, num_classes)
    t0 = time.perf_counter()
    every = max(1, epochs // 4)
    for e in range(epochs):
        order = np.random.default_rng([seed, 1000 + e]).permutation(n)
        losses = []
        for k in range(steps_per_epoch):
            idx = np.sort(order[k * batch:(k + 1) * batch])
            inputs = [tf.constant(f[idx], tf.float32) for f in feats]
            losses.append([float(v) for v in step(inputs, box_t[idx], cls_t[idx])])
        loss = np.mean(losses, axis=0)
        logs = {"loss": float(loss[0]), "class_loss": float(loss[1]), "box_loss": float(loss[2])}
        if (e + 1) % every == 0 or e + 1 == epochs:
            logs.update(evaluate(1, e + 1))
        for key in history:
            history[key].append({"epoch": e + 1, "phase": 1, "lr": float(schedule(optimizer.iterations))}.get(key, logs.get(key)))
        _say(f"phase 1 (cached features) epoch {e + 1}/{epochs} | " + " | ".join(f"{k} {v:.4f}" for k, v in logs.items())
             + f" | {time.perf_counter() - t0:.0f}s", verbose)


def _say(text: str, verbose: int) -> None:
    if verbose:
        print(text, file=sys.stderr, flush=True)


def fit(model, train: Decoded, val: Decoded, *, config, recipe: Recipe, anchor_config: AnchorConfig, class_names,
        parts=None, callbacks=None, verbose: int = 2):
    """Trains ``model`` in two phases and leaves the best val-AP50 weights in it.

    Phase 1 trains the neck and head on the frozen backbone: on features cached once (``parts`` =
    (feature model, head model) from :func:`~tlkeras.core.detection.model.build_detector`), else
    through the backbone. Phase 2 unfreezes ``recipe.unfreeze`` (BatchNorm stays frozen) and trains
    on augmented views at ``phase1_lr * phase2_lr_factor`` after a short warm-up.

    Returns:
        ``(history, timings, selection)``: per-epoch losses and val metrics, seconds per phase,
        and which phase/epoch the kept weights come from.

    Side effects: changes ``model``'s weights and trainable flags; prints one line per epoch to
    stderr when ``verbose``; calls ``callbacks``' ``on_epoch_end(epoch, logs)`` if given.
    """
    anchors = make_anchors(anchor_config)
    num_classes = len(class_names)
    history: dict[str, list] = {"epoch": [], "phase": [], "loss": [], "class_loss": [], "box_loss": [], "val_AP50": [], "val_AP": [], "lr": []}
    best = {"AP50": -1.0, "weights": None, "phase": 0, "epoch": 0}
    timings = {"phase1": 0.0, "phase2": 0.0}

    def evaluate(phase: int, epoch: int) -> dict:
        m = evaluate_decoded(model, val, anchor_config, class_names, recipe.batch_size)
        if m["AP50"] > best["AP50"]:
            best.update(AP50=m["AP50"], AP=m["AP"], weights=model.get_weights(), phase=phase, epoch=epoch)
        return {"val_AP50": m["AP50"], "val_AP": m["AP"]}

    if recipe.phase1_epochs > 0:
        t0 = time.perf_counter()
        freeze_backbone(model)
        if parts is not None:
            cache = cached_views(parts[0], train, anchors, anchor_config.box_scales, num_classes)
            _say(f"phase 1: backbone features of {len(cache[1])} views cached in {time.perf_counter() - t0:.0f}s", verbose)
            _phase1_cached(parts[1], cache, epochs=recipe.phase1_epochs, lr=recipe.phase1_lr, batch=recipe.batch_size, seed=config.seed,
                           num_classes=num_classes, evaluate=evaluate, verbose=verbose, history=history, best=best)
            del cache
        else:
            _phase_loop(model, 1, recipe.phase1_epochs, recipe.phase1_lr, train, anchors, anchor_config, recipe, config, num_classes,
                        evaluate, history, callbacks, verbose, epoch0=0, warm=False)
        timings["phase1"] = time.perf_counter() - t0
    if recipe.phase2_epochs > 0:
        t0 = time.perf_counter()
        unfreeze_backbone(model, config.model.backbone, recipe.unfreeze, keep_batchnorm_frozen=str(config.model.weights).lower() != "none")
        _phase_loop(model, 2, recipe.phase2_epochs, recipe.phase1_lr * recipe.phase2_lr_factor, train, anchors, anchor_config, recipe,
                    config, num_classes, evaluate, history, callbacks, verbose, epoch0=recipe.phase1_epochs, warm=True)
        timings["phase2"] = time.perf_counter() - t0
    if best["weights"] is not None:
        model.set_weights(best["weights"])
    selection = {"metric": "val_AP50", "phase": best["phase"], "epoch": best["epoch"], "val_AP50": best["AP50"]}
    return history, timings, selection


def _phase_loop(model, phase, epochs, lr, train, anchors, anchor_config, recipe, config, num_classes, evaluate, history, callbacks,
                verbose, *, epoch0: int, warm: bool):
    """Epochs through the whole model on (augmented) tf.data batches."""
    t0 = time.perf_counter()
    steps = max(1, -(-len(train.images) // recipe.batch_size)) * epochs
    warm_steps = min(steps // 10, 50) if warm else 0
    if warm_steps:  # from a tenth of the rate: the new head's gradients reach the backbone gently
        schedule = keras.optimizers.schedules.CosineDecay(lr * 0.1, steps - warm_steps, alpha=0.02, warmup_target=lr, warmup_steps=warm_steps)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.02)
    optimizer = keras.optimizers.Adam(schedule)
    step = _step_fn(model, optimizer, num_classes)
    for e in range(epochs):
        losses = []
        ds = train_dataset(train, anchors, anchor_config.box_scales, num_classes, recipe.batch_size, seed=config.seed,
                           epoch=epoch0 + e, augmented=recipe.augment)
        for images, (box_t, cls_t) in ds:
            losses.append([float(v) for v in step(images, box_t, cls_t)])
        loss = np.mean(losses, axis=0) if losses else np.zeros(3)
        logs = {"loss": float(loss[0]), "class_loss": float(loss[1]), "box_loss": float(loss[2])}
        if (e + 1) % recipe.eval_every == 0 or e + 1 == epochs:
            logs.update(evaluate(phase, epoch0 + e + 1))
        for key in history:
            history[key].append({"epoch": epoch0 + e + 1, "phase": phase, "lr": float(schedule(optimizer.iterations))}.get(key, logs.get(key)))
        _say(f"phase {phase} epoch {e + 1}/{epochs} | " + " | ".join(f"{k} {v:.4f}" for k, v in logs.items())
             + f" | {time.perf_counter() - t0:.0f}s", verbose)
        for cb in callbacks or []:
            if hasattr(cb, "on_epoch_end"):
                cb.on_epoch_end(epoch0 + e, logs)
