"""Segmentation metrics from a pixel confusion matrix: per-class IoU, mIoU, pixel accuracy, Dice.

NumPy only. Pixels whose true id is the ignore id (or outside the class list) count nowhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["confusion", "scores", "mask_metrics", "agreement"]


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """C x C pixel counts, rows true ids, columns predicted ids (ignored and out-of-range true ids left out)."""
    t = np.asarray(y_true).reshape(-1).astype(np.int64)
    p = np.asarray(y_pred).reshape(-1).astype(np.int64)
    valid = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    if ignore_index is not None:
        valid &= t != ignore_index
    return np.bincount(t[valid] * num_classes + p[valid], minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(conf: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Metrics of a confusion matrix: ``miou`` (mean over classes present in truth or prediction),
    ``pixel_accuracy``, ``per_class_iou`` (None for a class absent from both), ``dice`` for two
    classes (of class 1, the foreground), ``confusion_matrix`` and ``pixels``."""
    conf = np.asarray(conf, np.float64)
    tp = np.diag(conf)
    denom = conf.sum(0) + conf.sum(1) - tp
    iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    total = conf.sum()
    result: dict[str, Any] = {
        "miou": float(np.nanmean(iou)) if np.any(denom > 0) else 0.0,
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
    }
    if len(class_names) == 2:
        d = 2 * tp[1] + conf[0, 1] + conf[1, 0]
        result["dice"] = float(2 * tp[1] / d) if d else 0.0
        result[f"iou_{class_names[1]}"] = 0.0 if np.isnan(iou[1]) else float(iou[1])
    result["confusion_matrix"] = conf.astype(np.int64).tolist()
    result["pixels"] = int(total)
    return result


def mask_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], ignore_index: int | None = None) -> dict[str, Any]:
    """:func:`scores` of predicted id masks against true ones, plus ``count`` (images)."""
    result = scores(confusion(y_true, y_pred, len(class_names), ignore_index), class_names)
    result["count"] = int(len(y_true))
    return result


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels on which two id masks agree."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.mean(a == b)) if a.size else 1.0
