"""What an export returns and the checks every bundle (image or text) shares.

:class:`ExportResult` and :class:`ExportCheckError` are the result and the exit-3 failure of
every bundle export (:mod:`tlkeras.export.pipeline`);
:func:`compare_outputs` scores a variant's outputs against the Keras model's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tlkeras.core.results import ExportCheckError, ExportResult
from tlkeras.core.tasks import Task
from tlkeras.core.tasks import task_of_head as head_task
from tlkeras.errors import TLKerasError

__all__ = ["ExportResult", "ExportCheckError", "primary_metric", "compare_outputs", "unknown_threshold", "finish_export", "head_task", "has_classes",
           "OUTPUT_MEANING"]


# What the served output means, by task (the bundle's ``outputs[i].meaning``).
OUTPUT_MEANING = {
    "classification": "softmax probabilities over task.class_names (sum to 1); argmax is the label",
    "multilabel": "independent sigmoid probabilities per class in task.class_names; >= 0.5 means present",
    "regression": "regression values, one per target in task.class_names",
}


def has_classes(task: Task) -> bool:
    """Whether a task's outputs are scores over named classes that two models can agree on.

    Such a variant gets a classification output in its TFLite metadata and is checked in a
    MediaPipe classifier; the others (regression) get a feature output and no MediaPipe check.
    """
    return type(task).agreement is not Task.agreement


def primary_metric(head: str) -> str:
    """The primary metric of the task a ``head`` value names (accuracy, subset_accuracy, mae)."""
    return head_task(head).primary_metric


def compare_outputs(y: np.ndarray, keras_out: np.ndarray, out: np.ndarray, class_names: list[str], head: str, keras_metrics: dict) -> dict[str, Any]:
    """A variant's metrics against the labels and its agreement with the Keras outputs, by the task's rules.

    ``drop_points`` is the loss of the task's primary metric in points: for a metric where higher is
    better, 100 x (Keras - variant); for an error (regression's MAE), the relative increase in percent.
    ``agreement`` is the task's agreement rule (None where the task defines none).
    """
    task = head_task(head)
    metrics = task.metrics(y, out, class_names)
    key = task.primary_metric
    result: dict[str, Any] = {k: metrics[k] for k in ("accuracy", "subset_accuracy", "f1_macro", "f1_micro", "mae", "rmse", "count") if k in metrics}
    result["agreement"] = task.agreement(out, keras_out)
    if task.higher_is_better:
        result["drop_points"] = 100.0 * (keras_metrics[key] - metrics[key])
    else:
        result["drop_points"] = 100.0 * (metrics[key] - keras_metrics[key]) / max(keras_metrics[key], 1e-12)
    result["max_abs_diff"] = float(np.max(np.abs(out - keras_out))) if len(out) else 0.0
    if "confusion_matrix" in metrics:
        result["confusion_matrix"] = metrics["confusion_matrix"]
    return result


def unknown_threshold(calibration: dict[str, Any] | None) -> float | None:
    """The "unknown" score threshold of a run's calibration, checked (None without calibration)."""
    if not calibration or calibration.get("unknown_threshold") is None:
        return None
    value = calibration["unknown_threshold"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise TLKerasError(f"calibration.json's unknown_threshold must be a score in [0, 1], got {value!r}; recalibrate the run")
    return float(value)


def finish_export(result: ExportResult, options) -> ExportResult:
    """Returns ``result``, or raises :class:`ExportCheckError` when a check failed and ``allow_drop`` is off."""
    if result.failed and not options.allow_drop:
        raise ExportCheckError(_failure_message(result, options), result)
    return result


def _failure_message(result: ExportResult, options) -> str:
    parts = "; ".join(f"{v} {why}" for v, why in result.failed.items())
    message = f"{parts} (limit {options.max_drop:g})"
    variants = result.metadata["variants"]
    worst = next((variants[v].get("worst_layers") for v in result.failed if (variants.get(v) or {}).get("worst_layers")), None)
    if worst:
        layers = ", ".join(f"{w['layer']} ({w['rmse_over_scale']:.1f})" for w in worst[:3])
        report = next(p.name for v, p in result.reports.items() if v in result.failed)
        message += (f"; largest int8 errors (RMSE in quantization steps): {layers}, see {result.bundle_dir / report}; "
                    f"try a larger --representative-size, quantization-aware training, or a float variant")
    return message + f"; bundle written to {result.bundle_dir}; pass --allow-drop to accept"
