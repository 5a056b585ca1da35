"""The segmentation task: per-pixel classes with an explicit background, mIoU as its primary metric.

Imports no TensorFlow at module level: the registry imports this module to ask
:meth:`Segmentation.recognises`; training, evaluation and export import their modules when called.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tlkeras.core.tasks.base import Task

__all__ = ["Segmentation"]


class Segmentation(Task):
    """Semantic segmentation: images/ + masks/ in, a [1,H,W,C] score map out (MediaPipe ImageSegmenter)."""

    name = "segmentation"
    primary_metric = "miou"
    higher_is_better = True
    owns_pipeline = True
    techniques: frozenset[str] = frozenset()

    def recognises(self, source: str) -> bool:
        """A folder with images/ + masks/ (directly or under train/ val/ test/). Never raises."""
        from tlkeras.core.segmentation.data import recognise_folder

        return recognise_folder(source)

    def metrics(self, y_true: np.ndarray, outputs: np.ndarray, class_names: list[str]) -> dict[str, Any]:
        from tlkeras.core.segmentation.metrics import mask_metrics

        return mask_metrics(y_true, np.argmax(outputs, axis=-1), class_names)

    def agreement(self, a: np.ndarray, b: np.ndarray) -> float | None:
        from tlkeras.core.segmentation.metrics import agreement

        return agreement(np.argmax(a, axis=-1), np.argmax(b, axis=-1))

    def output_name(self) -> str:
        return "segmentation_scores"

    def train(self, config, data=None, *, write: bool = True, callbacks=None, resume: bool = False, report_writer=None, **_):
        """See :func:`tlkeras.core.segmentation.run.train_segmentation` (writes the run folder)."""
        from tlkeras.core.segmentation.run import train_segmentation

        return train_segmentation(self, config, data, write=write, callbacks=callbacks, resume=resume, report_writer=report_writer)

    def evaluate_run(self, run_dir, data_source=None, split: str = "test", write: bool = True, verbose: bool = False, **_):
        """See :func:`tlkeras.core.segmentation.run.evaluate_segmentation_run` (writes eval_metrics.json)."""
        from tlkeras.core.segmentation.run import evaluate_segmentation_run

        return evaluate_segmentation_run(run_dir, data_source=data_source, split=split, write=write, verbose=verbose)

    def export_run(self, run_dir, target, options=None, data_source=None, progress=None, **_):
        """See :func:`tlkeras.core.segmentation.export.export_segmentation_run` (writes the bundle folder)."""
        from tlkeras.core.segmentation.export import export_segmentation_run

        return export_segmentation_run(run_dir, target, options=options, data_source=data_source, progress=progress)
