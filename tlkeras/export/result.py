"""What an export returns and the checks every bundle (image or text) shares.

:class:`ExportResult` and :class:`ExportCheckError` are the result and the exit-3 failure of
:func:`tlkeras.export.bundle.export_model` and :func:`tlkeras.export.text.export_text_model`;
:func:`compare_outputs` scores a variant's outputs against the Keras model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkeras.errors import ExportCheckFailed, TLKerasError

__all__ = ["ExportResult", "ExportCheckError", "primary_metric", "compare_outputs", "unknown_threshold"]


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and measured.

    Attributes:
        bundle_dir: the bundle directory.
        metadata: the content of metadata.json.
        failed: variants whose drop exceeded ``max_drop`` or that LiteRT could not run, with why.
        reports: quantization-report CSV paths by variant.
    """

    bundle_dir: Path
    metadata: dict[str, Any]
    failed: dict[str, str] = field(default_factory=dict)
    reports: dict[str, Path] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failed

    def variant_path(self, name: str) -> Path:
        return self.bundle_dir / self.metadata["variants"][name]["file"]


class ExportCheckError(ExportCheckFailed):
    """A variant lost more than ``max_drop`` points (or did not run); the bundle was written.

    ``result`` holds the :class:`ExportResult`; the CLI exits with code 3.
    """

    def __init__(self, message: str, result: ExportResult):
        super().__init__(message, exit_code=3)
        self.result = result


def primary_metric(head: str) -> str:
    return {"softmax": "accuracy", "sigmoid": "subset_accuracy"}.get(head, "mae")


def compare_outputs(y: np.ndarray, keras_out: np.ndarray, out: np.ndarray, class_names: list[str], head: str, keras_metrics: dict) -> dict[str, Any]:
    from tlkeras.core.metrics import compute_metrics

    metrics = compute_metrics(y, out, class_names, head)
    key = primary_metric(head)
    result: dict[str, Any] = {k: metrics[k] for k in ("accuracy", "subset_accuracy", "f1_macro", "f1_micro", "mae", "rmse", "count") if k in metrics}
    if head == "softmax":
        result["agreement"] = float(np.mean(out.argmax(1) == keras_out.argmax(1)))
        result["drop_points"] = 100.0 * (keras_metrics[key] - metrics[key])
    elif head == "sigmoid":
        result["agreement"] = float(np.mean(np.all((out >= 0.5) == (keras_out >= 0.5), axis=1)))
        result["drop_points"] = 100.0 * (keras_metrics[key] - metrics[key])
    else:
        base = max(keras_metrics[key], 1e-12)
        result["agreement"] = None
        result["drop_points"] = 100.0 * (metrics[key] - keras_metrics[key]) / base
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
