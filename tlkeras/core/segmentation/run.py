"""A segmentation training run and its run folder; re-evaluating a saved run.

The run folder matches classification runs: ``config.yaml``, ``model.keras``, ``labels.txt``,
``history.json``, ``metrics.json``, ``run.json`` and ``report.html``, assembled in
``<output_dir>/.<name>.partial`` and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tlkeras._backend import keras, tf
from tlkeras.config import RunConfig, TrainConfig, load_config, save_config
from tlkeras.core.results import TrainResult
from tlkeras.core.segmentation.data import SegData, load_segmentation
from tlkeras.core.segmentation.fit import RECIPE, fit_two_phase, predict_masks
from tlkeras.core.segmentation.metrics import mask_metrics
from tlkeras.core.segmentation.model import DEFAULT_SIZE, build_segmenter, check_segmenter
from tlkeras.core.versions import versions
from tlkeras.errors import DataError, RunDirectoryError, TLKerasError
from tlkeras.runs import (
    atomic_path,
    atomic_write_text,
    default_run_name,
    directory_lock,
    ensure_unlocked,
    read_json,
    read_labels,
    write_json,
)

__all__ = ["train_segmentation", "evaluate_segmentation_run", "load_segmentation_run"]


def resolve_recipe(config: RunConfig) -> dict[str, Any]:
    """Fills the fields a run left at the classification defaults with the segmentation recipe.

    Returns what was filled (for run.json). Side effects: changes ``config``.
    """
    filled: dict[str, Any] = {}
    t, d = config.train, config.data
    if d.image_size is None:
        d.image_size = filled["image_size"] = DEFAULT_SIZE
    if d.batch_size is None:
        d.batch_size = filled["batch_size"] = RECIPE["batch_size"]
    if t.phase1_epochs == TrainConfig.phase1_epochs and t.phase2_epochs == TrainConfig.phase2_epochs:
        t.phase1_epochs, t.phase2_epochs = RECIPE["phase1_epochs"], RECIPE["phase2_epochs"]
        filled.update(phase1_epochs=t.phase1_epochs, phase2_epochs=t.phase2_epochs)
    if t.phase1_lr == TrainConfig.phase1_lr:
        t.phase1_lr = filled["phase1_lr"] = RECIPE["phase1_lr"]
    if t.phase2_lr_factor is None:
        t.phase2_lr_factor = filled["phase2_lr_factor"] = RECIPE["phase2_lr_factor"]
    if t.unfreeze is None:
        t.unfreeze = filled["unfreeze"] = "all"
    return filled


class _Stage:
    """``<output_dir>/.<name>.partial`` while training, renamed to ``<name>`` when complete."""

    def __init__(self, config: RunConfig, write: bool):
        self.write = write
        config.name = config.name or default_run_name(f"seg-{config.model.backbone}")
        self.final = Path(config.output_dir) / config.name
        self.partial = Path(config.output_dir) / f".{config.name}.partial"
        if write:
            ensure_unlocked(self.partial)
            if self.final.exists():
                raise RunDirectoryError(f"{self.final} already exists; choose another --name or remove it")
            if self.partial.exists():
                raise RunDirectoryError(f"an interrupted run {self.partial} exists; remove it (segmentation runs cannot be resumed yet)")

    @contextlib.contextmanager
    def open(self, config: RunConfig):
        if not self.write:
            yield None
            return
        try:
            self.partial.mkdir(parents=True)
        except OSError as exc:
            raise RunDirectoryError(f"cannot create a run directory under {self.final.parent}: {exc.strerror}; choose a writable --output-dir") from None
        try:
            with directory_lock(self.partial):
                save_config(config, self.partial / "config.yaml")
                yield self.partial
            os.replace(self.partial, self.final)
        except BaseException:
            shutil.rmtree(self.partial, ignore_errors=True)  # nothing to resume from: leave nothing
            raise


def _evaluate(model, data: SegData, batch: int) -> dict[str, Any]:
    split_name, split = data.eval_split
    val = mask_metrics(data.val.y, predict_masks(model, data.val.x, batch), data.class_names, data.ignore_index)
    final = val if split is data.val else mask_metrics(split.y, predict_masks(model, split.x, batch), data.class_names, data.ignore_index)
    return {"val": val, "final_split": split_name, "final": final}


def train_segmentation(task, config: RunConfig, data: SegData | None = None, *, write: bool = True, callbacks=None,
                       resume: bool = False, report_writer=None) -> TrainResult:
    """Loads the data, trains both phases, evaluates on val and test and writes the run folder.

    Side effects: seeds Python, NumPy and TensorFlow from ``config.seed``; writes
    ``<output_dir>/<name>/`` (through ``.<name>.partial``) when ``write``; prints one line per
    epoch when ``config.train.verbose``. ``report_writer`` is unused (the task writes its own page).

    Raises:
        TLKerasError: bad input (nothing is written then); ``resume`` (not supported yet).
    """
    if resume:
        raise TLKerasError("segmentation runs cannot be resumed yet; start the run again without --resume")
    t0 = time.perf_counter()
    config.model.task = "segmentation"
    if data is not None:
        config.data.image_size = data.image_size
    recipe = resolve_recipe(config)
    config.validate()
    from tlkeras.core.models import check_model_config

    check_model_config(config.model, config.data.image_size)
    check_segmenter(config.model, config.data.image_size)
    stage = _Stage(config, write)
    keras.utils.set_random_seed(config.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    if data is None:
        if config.data.source is None:
            raise DataError("segmentation needs --data: a folder with images/ and masks/ (or train/ val/ test/ holding them)")
        data = load_segmentation(config.data, config.data.image_size, config.seed)
    data.task = task
    if data.ignore_index is None:
        data.ignore_index = config.data.ignore_index
    t_data = time.perf_counter() - t0
    if config.train.verbose:
        print(f"segmentation: {len(data.train)} train / {len(data.val)} val / {len(data.test) if data.test else 0} test images, "
              f"{data.num_outputs} classes ({', '.join(data.class_names)}), {config.data.image_size} px"
              + (f"; skipped {data.skipped}" if data.skipped else ""), flush=True)
    model = build_segmenter(config.model, data.num_outputs, config.data.image_size)
    with stage.open(config) as run_dir:
        fitted = fit_two_phase(model, data, config, callbacks)
        metrics = _evaluate(model, data, config.data.batch_size)
        timings = dict(fitted.timings, data=t_data, total=time.perf_counter() - t0)
        metrics["timings"] = timings
        info = {
            "task": "segmentation",
            "versions": versions(),
            "data": {"source": data.source, "train": len(data.train), "val": len(data.val),
                     "test": len(data.test) if data.test is not None else 0, "skipped": data.skipped,
                     "ignore_index": data.ignore_index, "image_size": data.image_size},
            "recipe": {"segmentation_defaults": recipe, "loss": "cross-entropy + soft Dice", "decoder": "U-Net-lite (skips 1/2..1/16)"},
            "selection": fitted.selection,
            "timings": timings,
            "resumed": False,
        }
        if run_dir is not None:
            with atomic_path(run_dir / "model.keras") as tmp:
                model.save(tmp)
            atomic_write_text(run_dir / "labels.txt", "\n".join(data.class_names) + "\n")
            write_json(run_dir / "history.json", fitted.history)
            write_json(run_dir / "metrics.json", metrics)
            write_json(run_dir / "run.json", info)
            if config.report:
                _report(run_dir, model, data, metrics, config, fitted.selection)
    return TrainResult(model, fitted.history, metrics, timings, stage.final if write else None, config, info, data)


def _report(run_dir: Path, model, data: SegData, metrics: dict, config: RunConfig, selection: dict) -> None:
    import sys

    try:
        from tlkeras.core.segmentation.report import write_segmentation_report

        write_segmentation_report(run_dir, model, data, metrics, config.data.batch_size, selection=selection)
    except (TLKerasError, OSError, ImportError) as exc:  # the run is complete without its page
        print(f"report.html not written: {exc}", file=sys.stderr)


def load_segmentation_run(run_dir) -> tuple[Any, RunConfig, list[str]]:
    """(model, config, class names) of a saved segmentation run.

    Raises:
        RunDirectoryError, ModelFileError: a missing folder, model or labels.
    """
    from tlkeras.core.loading import load_run_model

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirectoryError(f"{run_dir} has no config.yaml; pass a run directory written by python -m tlkeras.train")
    model = load_run_model(run_dir)
    return model, load_config(run_dir / "config.yaml"), read_labels(run_dir)


def run_data(run_dir, config: RunConfig, labels: list[str], data_source: str | None) -> SegData:
    """The run's data (or ``data_source``), checked to have the run's classes."""
    source = data_source or config.data.source
    if source is None:
        raise DataError(f"{run_dir} was trained on arrays; pass --data <folder with images/ and masks/> to evaluate or export it")
    data_config = config.data
    data_config.source = str(source)
    data = load_segmentation(data_config, int(config.data.image_size), config.seed)
    if len(data.class_names) > len(labels) or (data.class_names != labels and len(data.class_names) == len(labels)):
        raise DataError(f"the data's classes {data.class_names} differ from the run's {labels}; use data with the same classes")
    data.class_names = labels
    return data


def evaluate_segmentation_run(run_dir, data_source: str | None = None, split: str = "test", write: bool = True,
                              verbose: bool = False) -> dict[str, Any]:
    """Re-evaluates a saved run: per-class IoU, mIoU, pixel accuracy (Dice for two classes).

    Side effects: writes ``eval_metrics.json`` into the run when ``write``; prints a summary when
    ``verbose``.

    Raises:
        TLKerasError: a bad run folder, data with other classes, an unknown split.
    """
    if split not in ("train", "val", "test"):
        raise TLKerasError(f"split must be train, val or test, got {split!r}")
    model, config, labels = load_segmentation_run(run_dir)
    data = run_data(run_dir, config, labels, data_source)
    chosen = getattr(data, split)
    if chosen is None or not len(chosen):
        split, chosen = "val", data.val
    pred = predict_masks(model, chosen.x, int(config.data.batch_size or 16))
    metrics = {"split": split, "data": data.source, "final": mask_metrics(chosen.y, pred, labels, data.ignore_index)}
    if write:
        write_json(Path(run_dir) / "eval_metrics.json", metrics)
    if verbose:
        m = metrics["final"]
        per = ", ".join(f"{k} {v:.3f}" for k, v in m["per_class_iou"].items() if v is not None)
        print(f"{split} ({m['count']} images): mIoU {m['miou']:.3f} | pixel accuracy {m['pixel_accuracy']:.3f}"
              + (f" | Dice {m['dice']:.3f}" if "dice" in m else "") + f" | IoU per class: {per}")
    return metrics


def stored_metrics(run_dir) -> dict[str, Any]:
    return read_json(Path(run_dir) / "metrics.json")
