"""A training run's ``report.html`` with Grad-CAM overlays of its mistakes.

The page itself is :func:`tlkeras.report.html.write_run_report`; this module adds what a finished
:class:`tlkeras.train.run.TrainResult` can give it (the evaluated split's images and outputs, and
Grad-CAM for image models), so the CLIs and the quickstart write the same page.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

__all__ = ["write_train_report"]


def write_train_report(run_dir: str | os.PathLike, result=None) -> Path:
    """Writes ``<run_dir>/report.html``.

    Args:
        run_dir: a run directory written by ``tlkeras.train``.
        result: the run's TrainResult when it kept its data: adds the gallery of misclassified
            examples (softmax heads), with Grad-CAM overlays for images and the quoted texts for text.

    Returns:
        The report's path.

    Raises:
        TLKerasError: when the run directory lacks what the page needs.

    Side effects: writes ``report.html`` atomically; runs the model on the evaluated split.
    """
    from tlkeras.explain.gradcam import gradcam_overlays
    from tlkeras.report.html import write_result_report

    return write_result_report(run_dir, result, lambda model: functools.partial(gradcam_overlays, model))
