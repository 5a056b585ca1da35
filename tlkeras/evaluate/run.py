"""Re-evaluating a saved run on its own data or on other images with the same classes, and
measuring how well it rejects images of other classes (``unknown``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlkeras.core.data import Split
from tlkeras.core.loading import load_run_model
from tlkeras.core.metrics import compute_metrics, predict
from tlkeras.core.plots import write_reports
from tlkeras.core.tasks import task_of
from tlkeras.errors import TLKerasError

__all__ = ['Evaluation', 'evaluate_split', 'write_evaluation', 'evaluate_run', 'unknown_images']


@dataclass
class Evaluation:
    """One evaluation: the metrics and what they were computed from (for reports)."""

    metrics: dict[str, Any]
    model: Any
    split: Split
    split_name: str
    outputs: np.ndarray
    class_names: list[str]
    head: str


def unknown_images(folder: str | os.PathLike, size: int, on_corrupt: str = "skip") -> tuple[np.ndarray, list[str]]:
    """Decodes every image under ``folder`` (recursively) at ``size``; returns (images, paths).

    Raises:
        TLKerasError: a missing folder, no readable image in it.
    """
    from tlkeras.core.data import IMAGE_EXTENSIONS, decode_all

    folder = Path(folder)
    if not folder.is_dir():
        raise TLKerasError(f"--unknown {folder} is not a folder; pass a folder of images of classes the model does not know")
    paths = sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    x, kept, _ = decode_all(paths, size, on_corrupt) if paths else (np.zeros((0, size, size, 3), np.uint8), [], [])
    if len(x) == 0:
        raise TLKerasError(f"no readable images under {folder} ({', '.join(IMAGE_EXTENSIONS)})")
    return x, [paths[i] for i in kept]


def _rejection(run_dir: Path, model, known_scores: np.ndarray, val: Split, unknown: str, batch_size: int, on_corrupt: str) -> dict[str, Any]:
    from tlkeras.core.calibration import unknown_rejection, unknown_threshold
    from tlkeras.runs import read_json

    calibration = run_dir / "calibration.json"
    if calibration.is_file() and read_json(calibration).get("unknown_threshold") is not None:
        threshold, source = float(read_json(calibration)["unknown_threshold"]), "calibration.json"
    else:
        # Older runs have no calibration: choose the threshold on val now, the same way.
        threshold, source = unknown_threshold(predict(model, val.x, batch_size).max(axis=1), 0.95), "val (the run has no calibration.json)"
    x, paths = unknown_images(unknown, int(model.inputs[0].shape[1]), on_corrupt)
    scores = predict(model, x, batch_size).max(axis=1)
    return {**unknown_rejection(known_scores, scores, threshold), "source": str(unknown), "threshold_source": source}


def evaluate_split(run_dir: str | os.PathLike, data_source: str | None = None, split: str = "test", *,
                   unknown: str | os.PathLike | None = None) -> Evaluation:
    """Evaluates a saved run on one split, and with ``unknown`` its rejection of other classes' images.

    Args:
        run_dir: a run directory written by ``tlkeras.train``.
        data_source: an image folder, CSV or ``tfds:`` name; default: the run's own data source.
        split: ``test``, ``val`` or ``train``; falls back to ``val`` when there is no test split.
        unknown: a folder of images of none of the run's classes: adds ``metrics["unknown"]``
            (AUROC of known vs unknown by top score, false-accept rate at the run's unknown
            threshold from ``calibration.json``; see :func:`tlkeras.core.calibration.unknown_rejection`).

    Raises:
        TLKerasError: a bad run directory, a data source whose classes differ from the run's,
            ``unknown`` on a non-softmax run or without images.

    Writes nothing.
    """
    from tlkeras.config import load_config
    from tlkeras.core.data import load_data
    from tlkeras.runs import read_labels

    run_dir = Path(run_dir)
    model = load_run_model(run_dir)
    config = load_config(run_dir / "config.yaml")
    labels = read_labels(run_dir)
    if unknown is not None and not task_of(config.model).exclusive_classes:
        raise TLKerasError(f"--unknown needs a softmax classifier; {run_dir} has a {config.model.head} head")
    if data_source is not None:
        config.data.source = data_source
    if config.data.source is None:
        raise TLKerasError(f"{run_dir} was trained on the embedded demo; pass --data to evaluate on your images")
    text = model.inputs[0].dtype == "string"
    if text and unknown is not None:
        raise TLKerasError("--unknown takes a folder of images; it does not apply to a text run")
    size = 0 if text else int(model.inputs[0].shape[1])  # a text model reads strings: no image size
    bundle = load_data(config.data, size, config.model.head, config.seed)
    if bundle.class_names != labels:
        raise TLKerasError(
            f"the data's classes {bundle.class_names} differ from the run's {labels}; evaluate on data with the same classes"
        )
    chosen = {"train": bundle.train, "val": bundle.val, "test": bundle.test}.get(split)
    if chosen is None or len(chosen) == 0:
        split, chosen = "val", bundle.val
    outputs = predict(model, chosen.x, config.data.batch_size)
    metrics: dict[str, Any] = {"split": split, "data": bundle.source,
                               "final": compute_metrics(chosen.y, outputs, labels, config.model.head)}
    if unknown is not None:
        metrics["unknown"] = _rejection(run_dir, model, outputs.max(axis=1), bundle.val, str(unknown),
                                        config.data.batch_size, config.data.on_corrupt)
    return Evaluation(metrics, model, chosen, split, outputs, labels, config.model.head)


def write_evaluation(run_dir: str | os.PathLike, evaluation: Evaluation) -> None:
    """Writes ``eval_metrics.json`` and ``eval_confusion_matrix.png`` into the run (atomically)."""
    write_reports(Path(run_dir), evaluation.metrics, evaluation.class_names, evaluation.head, prefix="eval_")


def evaluate_run(run_dir: str | os.PathLike, data_source: str | None = None, split: str = "test", write: bool = True,
                 unknown: str | os.PathLike | None = None) -> dict[str, Any]:
    """Re-evaluates a saved run on its own data (or ``data_source`` with the same classes).

    Args:
        run_dir: a run directory written by ``tlkeras.train``.
        data_source: an image folder, CSV or ``tfds:`` name; default: the run's own data source.
        split: ``test``, ``val`` or ``train``; falls back to ``val`` when there is no test split.
        write: write ``eval_metrics.json`` and ``eval_confusion_matrix.png`` into the run.
        unknown: a folder of images of other classes; see :func:`evaluate_split`.

    Raises:
        TLKerasError: a bad run directory, a data source whose classes differ from the run's.
    """
    from tlkeras.core.tasks import task_of_run

    task = task_of_run(run_dir)
    if task.owns_pipeline:
        return task.evaluate_run(run_dir, data_source=data_source, split=split, write=write)
    evaluation = evaluate_split(run_dir, data_source, split, unknown=unknown)
    if write:
        write_evaluation(run_dir, evaluation)
    return evaluation.metrics
