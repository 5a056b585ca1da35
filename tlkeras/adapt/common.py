"""Plumbing the unlabelled-data techniques share: loading unlabelled images, preparing the labelled
data, warming up the head, opening the backbone, and writing the run directory.

Every technique writes the same run directory as ``tlkeras.train`` (``config.yaml``, ``model.keras``,
``labels.txt``, ``history.json``, ``metrics.json``, ``run.json``, plots) plus ``unlabeled.json`` (the
technique and its options), so ``python -m tlkeras.evaluate`` and ``.export`` take it unchanged.
"""

from __future__ import annotations

import copy
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.config import RunConfig, save_config
from tlkeras.core.augment import augmenter
from tlkeras.core.bundle import require_images
from tlkeras.core.data import IMAGE_EXTENSIONS, DataBundle, Split, load_data, load_image
from tlkeras.core.metrics import evaluate_model
from tlkeras.core.models import check_model_config
from tlkeras.core.plots import write_reports
from tlkeras.core.stream import indexed_batches
from tlkeras.core.tasks import task_of, task_of_head
from tlkeras.errors import TLKerasError
from tlkeras.runs import atomic_path, atomic_write_text, default_run_name, staged_directory, write_json
from tlkeras.train.optim import compile_model
from tlkeras.train.recipe import fit_two_phase, open_backbone
from tlkeras.train.run import TrainResult

__all__ = [
    "load_unlabeled",
    "load_labelled_split",
    "prepare_data",
    "warm_up_and_open",
    "open_backbone",  # the engine's (tlkeras.train.recipe), re-exported for the techniques
    "compile_trainer",
    "fit_main_phase",
    "unlabeled_dataset",
    "write_unlabeled_run",
]

UNLABELED_FILE = "unlabeled.json"


# ---------------------------------------------------------------------------------------------
# Building blocks


# ---------------------------------------------------------------------------------------------
# Shared plumbing: unlabelled images, labelled data, run directories


def _as_images(x, image_size: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise TLKerasError(f"{what} images must be an N x H x W x 3 array, got shape {x.shape}")
    if (x.shape[1], x.shape[2]) != (image_size, image_size):
        raise TLKerasError(
            f"{what} images are {x.shape[1]}x{x.shape[2]} but the model takes {image_size}x{image_size}; "
            f"resize them, or pass a folder of images (resized on load)"
        )
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if x.dtype != np.uint8:
        x = np.clip(np.round(x.astype(np.float32)), 0, 255).astype(np.uint8)
    return x


def _image_paths(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(
            p for p in source.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
    if source.suffix.lower() == ".csv":
        from tlkeras.core.paths import read_csv_rows, resolve_inside

        # The same checks as a labelled CSV: UTF-8, a path column, paths contained in its folder.
        rows = read_csv_rows(source, ("path",), what="unlabelled-images CSV")
        return [resolve_inside(source.parent, r["path"] or "", source=source) for r in rows]
    raise TLKerasError(f"{source} is neither a folder of images nor a .csv file of paths; pass one of those")


def load_unlabeled(source, image_size: int, *, what: str = "unlabeled", on_corrupt: str = "skip") -> np.ndarray:
    """Loads unlabelled images as a uint8 ``N x S x S x 3`` array.

    Args:
        source: a folder (every image below it, any depth; subfolder names are ignored), a CSV
            file with a ``path`` column, a :class:`~tlkeras.core.bundle.Split` or an array of images.
        image_size: the model's input size; files are resized to it, arrays must already have it.
        what: what the images are, for error messages (``target``, ``unlabeled``).
        on_corrupt: ``skip`` unreadable files or ``error`` out naming the first.

    Raises:
        TLKerasError: no source, no images, an array of another size, a missing path.
    """
    if source is None:
        raise TLKerasError(f"no {what} images given; pass a folder of images (or an array) as the {what} data")
    if isinstance(source, Split):
        source = source.x
    if isinstance(source, (np.ndarray, list, tuple)):
        x = _as_images(source, image_size, what)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise TLKerasError(f"{what} data path {source} does not exist; pass a folder of images or a CSV of paths")
        paths = _image_paths(path)

        def one(p):
            try:
                return load_image(p, image_size)
            except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
                if on_corrupt == "error":
                    raise TLKerasError(f"cannot read {what} image {p} ({type(exc).__name__}); remove or replace it") from None
                return None

        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
            images = [img for img in pool.map(one, paths) if img is not None]
        x = np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)
    if len(x) == 0:
        raise TLKerasError(f"no {what} images found in {source if not isinstance(source, np.ndarray) else 'the array'}; "
                           f"pass a folder with images ({', '.join(IMAGE_EXTENSIONS)})")
    return x


def load_labelled_split(source, image_size: int, class_names: list[str], *, what: str = "target test") -> Split:
    """Loads a labelled evaluation split: a Split, an ``(x, y)`` pair, or a folder of class folders.

    Class folders must have the training data's class names (a subset is fine).

    Raises:
        TLKerasError: unknown class folders, images of another size, an empty folder.
    """
    if isinstance(source, Split):
        return Split(_as_images(source.x, image_size, what), np.asarray(source.y), list(source.paths))
    if isinstance(source, tuple) and len(source) == 2:
        return Split(_as_images(source[0], image_size, what), np.asarray(source[1]).astype(np.int64).reshape(-1))
    root = Path(source).expanduser()
    if not root.is_dir():
        raise TLKerasError(f"{what} data {source} is not a folder of class folders")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in class_names]
    if unknown:
        raise TLKerasError(f"{what} folder {root} has class folders {unknown} that the training data lacks; use the same class names")
    xs, ys = [], []
    for folder in folders:
        images = load_unlabeled(folder, image_size, what=what)
        xs.append(images)
        ys.append(np.full(len(images), class_names.index(folder.name), np.int64))
    if not xs:
        raise TLKerasError(f"{what} folder {root} has no class folders")
    return Split(np.concatenate(xs), np.concatenate(ys))


def prepare_data(config: RunConfig, data: DataBundle | None, unlabeled=None, *, what: str = "unlabeled") -> tuple[DataBundle, int, np.ndarray]:
    """Validates ``config``, loads the unlabelled images, then the labelled data.

    The unlabelled images are loaded first, so a missing or empty folder, or an array of the wrong
    size, fails before the (slower) labelled data is read.

    Returns:
        (labelled bundle, image size, unlabelled uint8 images).

    Side effect: sets ``config.data.image_size`` to the resolved size and seeds Python, NumPy and
    TensorFlow from ``config.seed``.
    """
    config.validate()
    if not task_of(config.model).exclusive_classes:
        raise TLKerasError(
            f"the unlabelled-data techniques need single-label classes (model.head softmax), got {config.model.head}"
        )
    if config.name and (Path(config.output_dir) / config.name).exists():
        raise TLKerasError(f"{Path(config.output_dir) / config.name} already exists; choose another --name or remove it")
    keras.utils.set_random_seed(config.seed)
    size = check_model_config(config.model, data.image_size if data is not None else config.data.image_size)
    images = load_unlabeled(unlabeled, size, what=what, on_corrupt=config.data.on_corrupt)
    if data is None:
        data = require_images(load_data(config.data, size, config.model.head, config.seed), "--technique")
    elif not task_of_head(data.head).exclusive_classes:
        raise TLKerasError(f"the data is labelled for a {data.head} head; these techniques need softmax labels")
    config.data.image_size = size
    from tlkeras.core.backbones import apply_recipe_defaults

    apply_recipe_defaults(config, train_count=len(data.train), num_classes=data.num_outputs)
    return data, size, images


def warm_up_and_open(model, data: DataBundle, config: RunConfig, unfreeze: str | None = None) -> tuple[dict[str, list], float, list[str]]:
    """Before a technique's main phase: phase 1 of the recipe (the head on the frozen backbone,
    feature cache and all, when ``train.phase1_epochs`` > 0), then the top of the backbone opened.

    Returns:
        ``(history, phase1_seconds, opened_layers)``; history holds the phase-1 rows.

    Side effects: changes the head's weights and the ``trainable`` flags; leaves the model compiled.
    """
    import time

    from tlkeras.train.phase import PhaseHistory

    history = PhaseHistory()
    start = time.perf_counter()
    if config.train.phase1_epochs > 0:
        warm = copy.deepcopy(config)
        warm.train.phase2_epochs = 0
        history.add(fit_two_phase(model, data, warm)[0], 1)
    seconds = time.perf_counter() - start
    return history.values, seconds, open_backbone(model, config, unfreeze)


def compile_trainer(trainer, optimizer) -> None:
    """Compiles a custom-``train_step`` model and creates its optimizer's slots up front.

    Creating every variable before the first step lets ``fit`` trace its train function once
    instead of twice (a tf.function that creates variables on its first call is traced again).
    """
    trainer.compile(optimizer=optimizer)
    optimizer.build(trainer.trainable_variables)


def fit_main_phase(trainer, make_train_ds, val_ds, config: RunConfig, *, epochs: int, steps: int, learning_rate: float,
                   candidate: bool, callbacks: list | None = None, on_compile=None, patience: int | None = None,
                   restore_best: bool = True):
    """A technique's main phase through the shared engine (:func:`tlkeras.train.recipe.train_phase`).

    ``trainer`` is the technique's custom-``train_step`` model; ``make_train_ds(epoch)`` its
    endless training pipeline (``steps`` steps make an epoch). The schedule, early stopping on
    ``train.select_metric``, restore-best and the rule that the warmed-up model (``candidate``)
    is kept when the phase does not improve on it are the engine's. ``on_compile(schedule)``
    runs after compiling (e.g. to give a discriminator its optimizer). ``patience`` and
    ``restore_best`` are :func:`tlkeras.train.recipe.train_phase`'s.

    Returns:
        ``(result, selection)``: the engine's PhaseResult and which model was kept (or None).

    Side effects: trains ``trainer`` (and the model it wraps); prints the selection when verbose.
    """
    from tlkeras.train.optim import make_optimizer
    from tlkeras.train.recipe import selection_record, train_phase

    tc = config.train

    def compile(schedule):
        compile_trainer(trainer, make_optimizer(tc.optimizer, schedule, tc.weight_decay))
        if on_compile is not None:
            on_compile(schedule)

    result = train_phase(trainer, make_train_ds, val_ds, config, phase=2, epochs=epochs, learning_rate=learning_rate, steps=steps,
                         compile=compile, candidate=candidate and restore_best, callbacks=callbacks, steps_per_epoch=steps,
                         patience=patience, restore_best=restore_best)
    selection = selection_record(result)
    if selection and tc.verbose:
        print(selection["message"], flush=True)
    return result, selection


def unlabeled_dataset(x: np.ndarray, batch_size: int, seed: int, augment: str = "off"):
    """An endless, shuffled tf.data pipeline of float32 batches of ``x`` (optionally augmented)."""
    # Indices are shuffled and each batch read from ``x`` (memory or disk store): no tensor copy.
    ds = indexed_batches(x, batch_size, shuffle=True, seed=seed, repeat=True, drop_remainder=len(x) >= batch_size)
    aug = augmenter(augment, seed + 17)
    if aug is not None:
        ds = ds.map(lambda b: tf.clip_by_value(aug(b, training=True), 0.0, 255.0), num_parallel_calls=tf.data.AUTOTUNE)
    return ds


def write_unlabeled_run(
    config: RunConfig,
    data: DataBundle,
    model,
    history: dict[str, list],
    *,
    method: str,
    options: Any,
    timings: dict[str, float],
    unlabeled_count: int,
    unlabeled_source: Any = None,
    extra_metrics: dict[str, Any] | None = None,
    extra_info: dict[str, Any] | None = None,
    extra_splits: dict[str, Split] | None = None,
    write: bool = True,
) -> TrainResult:
    """Evaluates ``model`` and writes the run directory of a technique; returns a TrainResult.

    The directory has the files of ``tlkeras.train`` (config.yaml, model.keras, labels.txt,
    history.json, run.json, metrics.json, plots) plus ``unlabeled.json``. ``model`` is compiled
    with the head's loss first, so ``model.keras`` loads and evaluates like any other run.
    ``extra_splits`` (e.g. ``{"target": split}``) are evaluated too and reported under their name.

    Side effects: compiles ``model``; with ``write``, creates ``<output_dir>/<name>/`` atomically
    and sets ``config.name`` when it was empty.
    """
    from tlkeras.core.versions import versions  # the same version record as tlkeras.train

    n = data.num_outputs
    compile_model(model, config, n, config.train.phase1_lr)
    split_name, split = data.eval_split
    metrics: dict[str, Any] = {
        "val": evaluate_model(model, data.val, data.class_names, data.head, config.data.batch_size),
        "final_split": split_name,
        "final": evaluate_model(model, split, data.class_names, data.head, config.data.batch_size),
    }
    for name, extra_split in (extra_splits or {}).items():
        metrics[name] = evaluate_model(model, extra_split, data.class_names, data.head, config.data.batch_size)
    metrics.update(extra_metrics or {})
    metrics["timings"] = timings
    options_dict = asdict(options) if options is not None and hasattr(options, "__dataclass_fields__") else (options or {})
    described = unlabeled_source if isinstance(unlabeled_source, (str, os.PathLike)) else (
        None if unlabeled_source is None else f"<{type(unlabeled_source).__name__}>"
    )
    method_record = {"method": method, "options": options_dict, "unlabeled": {"source": None if described is None else str(described), "count": int(unlabeled_count)}}
    info = {
        "versions": versions(),
        "data": {"source": data.source, "train": len(data.train), "val": len(data.val),
                 "test": len(data.test) if data.test is not None else 0, "skipped": data.skipped},
        "unlabeled": method_record,
        "timings": timings,
        **(extra_info or {}),
    }
    run_dir = None
    if write:
        config.name = config.name or default_run_name(f"{method}-{config.model.backbone.split('/')[-1]}")
        final_dir = Path(config.output_dir) / config.name
        with staged_directory(final_dir) as stage:
            save_config(config, stage / "config.yaml")
            with atomic_path(stage / "model.keras") as tmp:
                model.save(tmp)
            atomic_write_text(stage / "labels.txt", "\n".join(data.class_names) + "\n")
            write_json(stage / "history.json", history)
            write_json(stage / "run.json", info)
            write_json(stage / UNLABELED_FILE, method_record)
            write_reports(stage, metrics, data.class_names, data.head, history)
        run_dir = final_dir
    return TrainResult(model, history, metrics, timings, run_dir, config, info)


def _count_steps(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


# ---------------------------------------------------------------------------------------------
# DANN and MMD


# ---------------------------------------------------------------------------------------------
# Importance weighting


# ---------------------------------------------------------------------------------------------
# One entry point for all techniques


