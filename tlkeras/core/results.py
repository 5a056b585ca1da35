"""What a training run and an export return, whichever task made them.

The shared engine (:func:`tlkeras.train.run.train_model`), the bundle pipeline
(:mod:`tlkeras.export.pipeline`) and the tasks that own their pipeline (detection, segmentation)
return these same types, so the CLIs and reports read every run and bundle one way. Pure data; no
side effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlkeras.errors import ExportCheckFailed

__all__ = ["TrainResult", "ExportResult", "ExportCheckError"]


@dataclass
class TrainResult:
    """What a training run made.

    Attributes:
        model: the trained Keras model (compiled).
        history: per-epoch metrics of both phases (``phase`` says which).
        metrics: ``{"val": ..., "final": ..., "final_split": "test"|"val"}`` in the task's metrics.
        timings: wall seconds per stage (``phase1``, ``phase2``, ``data``, ``total``).
        run_dir: the run directory (None when not written).
        config: the RunConfig used (with the resolved image size and recipe defaults).
        info: what ``run.json`` holds (versions, data counts, recipe, selection, ...).
        data: the data the run trained and was evaluated on (for reports).
    """

    model: Any
    history: dict[str, list]
    metrics: dict[str, Any]
    timings: dict[str, float]
    run_dir: Path | None
    config: Any
    info: dict[str, Any] = field(default_factory=dict)
    data: Any = None


@dataclass
class ExportResult:
    """What an export wrote and measured.

    Attributes:
        bundle_dir: the bundle directory.
        metadata: the content of metadata.json.
        failed: variants that missed their gate or that a runtime could not run, with why.
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
    """A variant missed its gate (or did not run); the bundle was written.

    ``result`` holds the :class:`ExportResult`; the CLI exits with code 3.
    """

    def __init__(self, message: str, result: ExportResult):
        super().__init__(message, exit_code=3)
        self.result = result
