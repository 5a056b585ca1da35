"""Re-evaluating a saved run on its own data or on other images with the same classes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tlkeras.core.loading import load_run_model
from tlkeras.core.metrics import evaluate_model
from tlkeras.core.plots import write_reports
from tlkeras.errors import TLKerasError

__all__ = ['evaluate_run']


def evaluate_run(run_dir: str | os.PathLike, data_source: str | None = None, split: str = "test", write: bool = True) -> dict[str, Any]:
    """Re-evaluates a saved run on its own data (or ``data_source`` with the same classes).

    Args:
        run_dir: a run directory written by ``tlkeras.train``.
        data_source: an image folder, CSV or ``tfds:`` name; default: the run's own data source.
        split: ``test``, ``val`` or ``train``; falls back to ``val`` when there is no test split.
        write: write ``eval_metrics.json`` and ``eval_confusion_matrix.png`` into the run.

    Raises:
        TLKerasError: a bad run directory, a data source whose classes differ from the run's.
    """
    from tlkeras.config import load_config
    from tlkeras.core.data import load_data
    from tlkeras.runs import read_labels

    run_dir = Path(run_dir)
    model = load_run_model(run_dir)
    config = load_config(run_dir / "config.yaml")
    labels = read_labels(run_dir)
    if data_source is not None:
        config.data.source = data_source
    if config.data.source is None:
        raise TLKerasError(f"{run_dir} was trained on the embedded demo; pass --data to evaluate on your images")
    size = int(model.inputs[0].shape[1])
    bundle = load_data(config.data, size, config.model.head, config.seed)
    if bundle.class_names != labels:
        raise TLKerasError(
            f"the data's classes {bundle.class_names} differ from the run's {labels}; evaluate on data with the same classes"
        )
    chosen = {"train": bundle.train, "val": bundle.val, "test": bundle.test}.get(split)
    if chosen is None or len(chosen) == 0:
        split, chosen = "val", bundle.val
    metrics = evaluate_model(model, chosen, labels, config.model.head, config.data.batch_size)
    metrics = {"split": split, "data": bundle.source, "final": metrics}
    if write:
        write_reports(run_dir, metrics, labels, config.model.head, prefix="eval_")
    return metrics
