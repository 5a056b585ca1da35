"""Metrics of model outputs against labels (scikit-learn), and batched prediction.

Side effects are limited to the files :func:`write_reports` writes into a run directory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tlkeras.core.data import Split
from tlkeras.core.tasks import task_of_head

__all__ = ["predict", "compute_metrics", "evaluate_model"]


def predict(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Runs ``model`` on uint8 images in batches; returns the output as float32 NumPy."""
    from tlkeras.core.stream import image_batches

    # Streams a disk store (np.memmap) batch by batch instead of copying it into one tensor.
    return np.asarray(model.predict(image_batches(x, batch_size), verbose=0), dtype=np.float32)


def compute_metrics(y_true: np.ndarray, outputs: np.ndarray, class_names: list[str], head: str = "softmax") -> dict[str, Any]:
    """Metrics of model outputs against labels, as the task of ``head`` defines them.

    softmax: accuracy, macro precision/recall/F1, per-class report, top-k accuracy, confusion
    matrix. sigmoid: micro/macro F1 at 0.5, subset accuracy, per-class F1. regression: MAE, RMSE,
    R^2 (see :mod:`tlkeras.core.tasks.classification`).
    """
    return task_of_head(head).metrics(y_true, outputs, class_names)


def evaluate_model(model, split: Split, class_names: list[str], head: str, batch_size: int = 64) -> dict[str, Any]:
    """Predicts ``split`` with ``model`` and returns :func:`compute_metrics` of it."""
    return compute_metrics(split.y, predict(model, split.x, batch_size), class_names, head)


