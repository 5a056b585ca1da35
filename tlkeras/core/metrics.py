"""Metrics of model outputs against labels (scikit-learn), and batched prediction.

Side effects are limited to the files :func:`write_reports` writes into a run directory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tlkeras.core.data import Split

__all__ = ["predict", "compute_metrics", "evaluate_model"]


def predict(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Runs ``model`` on uint8 images in batches; returns the output as float32 NumPy."""
    from tlkeras.core.stream import image_batches

    # Streams a disk store (np.memmap) batch by batch instead of copying it into one tensor.
    return np.asarray(model.predict(image_batches(x, batch_size), verbose=0), dtype=np.float32)


def compute_metrics(y_true: np.ndarray, outputs: np.ndarray, class_names: list[str], head: str = "softmax") -> dict[str, Any]:
    """Metrics of model outputs against labels.

    softmax: accuracy, macro precision/recall/F1, per-class report, top-k accuracy, confusion
    matrix. sigmoid: micro/macro F1 at 0.5, subset accuracy, per-class F1. regression: MAE, RMSE,
    R^2.
    """
    from sklearn import metrics as skm

    if head == "regression":
        y_true = y_true.reshape(outputs.shape)
        return {
            "mae": float(skm.mean_absolute_error(y_true, outputs)),
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, outputs))),
            "r2": float(skm.r2_score(y_true, outputs)) if len(y_true) > 1 else float("nan"),
            "count": int(len(y_true)),
        }
    if head == "sigmoid":
        pred = (outputs >= 0.5).astype(int)
        truth = y_true.astype(int)
        per = skm.f1_score(truth, pred, average=None, zero_division=0)
        return {
            "subset_accuracy": float(skm.accuracy_score(truth, pred)),
            "f1_micro": float(skm.f1_score(truth, pred, average="micro", zero_division=0)),
            "f1_macro": float(skm.f1_score(truth, pred, average="macro", zero_division=0)),
            "per_class_f1": {c: float(v) for c, v in zip(class_names, per)},
            "count": int(len(truth)),
        }
    labels = list(range(len(class_names)))
    pred = outputs.argmax(axis=1)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    k = min(5, len(class_names) - 1) if len(class_names) > 2 else 1
    result = {
        "accuracy": float(skm.accuracy_score(y_true, pred)),
        "precision_macro": float(np.mean(p)),
        "recall_macro": float(np.mean(r)),
        "f1_macro": float(np.mean(f)),
        f"top{k}_accuracy": float(skm.top_k_accuracy_score(y_true, outputs, k=k, labels=labels)) if len(class_names) > 2 else float(skm.accuracy_score(y_true, pred)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(class_names)
        },
        "confusion_matrix": skm.confusion_matrix(y_true, pred, labels=labels).tolist(),
        "count": int(len(y_true)),
    }
    return result


def evaluate_model(model, split: Split, class_names: list[str], head: str, batch_size: int = 64) -> dict[str, Any]:
    """Predicts ``split`` with ``model`` and returns :func:`compute_metrics` of it."""
    return compute_metrics(split.y, predict(model, split.x, batch_size), class_names, head)


