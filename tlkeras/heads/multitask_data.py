"""Multi-task data: the tasks (:class:`TaskSpec`), labels per task with missing values, and loaders.

Labels may be missing per task (``-1`` for a softmax task, a row of NaN for sigmoid and
regression): such images train the other heads only, and metrics skip them.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlkeras.config import HEADS, TASK_OF_HEAD, DataConfig
from tlkeras.core.tasks import Task, get_task
from tlkeras.errors import TLKerasError
from tlkeras.export.result import has_classes

__all__ = ["TaskSpec", "MultiTaskSplit", "MultiTaskData", "check_tasks", "labelled_mask", "task_of_kind", "task_of_spec", "multitask_from_arrays", "load_multitask_csv"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


# ---------------------------------------------------------------------------------------------
# Tasks and data


@dataclass
class TaskSpec:
    """One head of a multi-task model.

    Attributes:
        name: the task's name: the Keras output key, the TFLite signature output name and the
            metrics key (letters, digits and ``_``, starting with a letter).
        kind: ``softmax`` (single label), ``sigmoid`` (multi-label) or ``regression``.
        labels: class names (softmax/sigmoid) or target names (regression); empty: inferred from
            the data (class indices ``class_0..``; regression ``target`` / ``target_i``).
        weight: the task's loss weight with fixed weighting; the initial emphasis is irrelevant
            with uncertainty weighting, which learns it.
    """

    name: str
    kind: str = "softmax"
    labels: list[str] = field(default_factory=list)
    weight: float = 1.0

    def validate(self) -> "TaskSpec":
        if not _NAME.match(str(self.name)):
            raise TLKerasError(f"task name {self.name!r} is not valid; use letters, digits and _ (starting with a letter)")
        if self.kind not in HEADS:
            raise TLKerasError(f"task {self.name}: kind={self.kind!r} is not valid; choose one of {', '.join(HEADS)}")
        if not (self.weight >= 0 and math.isfinite(self.weight)):
            raise TLKerasError(f"task {self.name}: weight must be a finite number >= 0, got {self.weight}")
        if len(set(self.labels)) != len(self.labels):
            raise TLKerasError(f"task {self.name}: labels must be unique, got {self.labels}")
        if _single_label(self.kind) and self.labels and len(self.labels) < 2:
            raise TLKerasError(f"task {self.name}: a softmax task needs at least two classes, got {self.labels}")
        return self

    @property
    def num_outputs(self) -> int:
        return len(self.labels)


def check_tasks(tasks: Sequence[TaskSpec]) -> list[TaskSpec]:
    tasks = [t if isinstance(t, TaskSpec) else TaskSpec(**t) for t in tasks]
    if not tasks:
        raise TLKerasError("a multi-task model needs at least one task")
    for t in tasks:
        t.validate()
    names = [t.name for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TLKerasError(f"task names must be unique; {', '.join(dup)} appear twice")
    return tasks


@dataclass
class MultiTaskSplit:
    """Images (uint8, N x S x S x 3) and one label array per task.

    ``labels[task]`` is int class indices (softmax, ``-1`` = missing), a multi-hot float matrix
    (sigmoid, a NaN row = missing) or float targets N x T (regression, NaN row = missing).
    """

    x: np.ndarray
    labels: dict[str, np.ndarray]
    paths: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, index: np.ndarray) -> "MultiTaskSplit":
        return MultiTaskSplit(self.x[index], {k: v[index] for k, v in self.labels.items()},
                              [self.paths[i] for i in index] if self.paths else [])


@dataclass
class MultiTaskData:
    """Images and per-task labels, split three ways.

    Attributes:
        train, val, test: the splits (``test`` may be None).
        tasks: the tasks, with ``labels`` filled in.
        image_size: the square size of every image.
        source: where the data came from.
    """

    train: MultiTaskSplit
    val: MultiTaskSplit
    test: MultiTaskSplit | None
    tasks: list[TaskSpec]
    image_size: int
    source: str = "arrays"

    @property
    def eval_split(self) -> tuple[str, MultiTaskSplit]:
        """The split final metrics are reported on: test if there is one, else val."""
        return ("test", self.test) if self.test is not None and len(self.test) else ("val", self.val)


def task_of_kind(kind: str) -> Task:
    """The registered task a multi-task head ``kind`` names (``softmax`` -> classification, ...)."""
    return get_task(TASK_OF_HEAD[kind])


def task_of_spec(spec: TaskSpec) -> Task:
    """The registered task of a multi-task head."""
    return task_of_kind(spec.kind)


def _single_label(kind: str) -> bool:
    """Whether a head kind's labels are one class id per image (-1: missing)."""
    return task_of_kind(kind).exclusive_classes


def _has_classes(kind: str) -> bool:
    """Whether a head kind's outputs are class scores (not regression values)."""
    return has_classes(task_of_kind(kind))


def _multi_label(kind: str) -> bool:
    """Whether a head kind's labels are a 0/1 row per image (a NaN row: missing)."""
    return task_of_kind(kind) is get_task("multilabel")


def labelled_mask(y: np.ndarray, kind: str) -> np.ndarray:
    """Boolean mask of the rows that carry a label for a task of ``kind``."""
    if _single_label(kind):
        return np.asarray(y).reshape(-1) >= 0
    y = np.asarray(y, np.float32)
    return ~np.all(np.isnan(y.reshape(len(y), -1)), axis=1)


def _prepare_labels(task: TaskSpec, y: Any, n: int) -> np.ndarray:
    """Checks one task's labels and fills ``task.labels`` when empty (mutates ``task``)."""
    y = np.asarray(y)
    if len(y) != n:
        raise TLKerasError(f"task {task.name}: {len(y)} labels for {n} images")
    if _single_label(task.kind):
        if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise TLKerasError(f"task {task.name}: softmax labels must be class indices (N,), got shape {y.shape}")
        y = y.reshape(-1)
        if y.dtype.kind == "f":
            if np.any(np.isnan(y)):
                y = np.where(np.isnan(y), -1, y)
            if np.any(y != np.round(y)):
                raise TLKerasError(f"task {task.name}: softmax labels must be integer class indices")
        y = y.astype(np.int64)
        count = int(y.max()) + 1 if y.size and y.max() >= 0 else 0
        if not task.labels:
            task.labels = [f"class_{i}" for i in range(max(count, 2))]
        if y.size and (y.min() < -1 or y.max() >= len(task.labels)):
            raise TLKerasError(f"task {task.name}: class indices must be in [0, {len(task.labels) - 1}] (or -1 for missing), got {int(y.min())}..{int(y.max())}")
        return y
    y = y.astype(np.float32)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise TLKerasError(f"task {task.name}: {task.kind} labels must be N x C, got shape {y.shape}")
    if not task.labels:
        if _multi_label(task.kind):
            task.labels = [f"class_{i}" for i in range(y.shape[1])]
        else:
            task.labels = ["target"] if y.shape[1] == 1 else [f"target_{i}" for i in range(y.shape[1])]
    if y.shape[1] != len(task.labels):
        raise TLKerasError(f"task {task.name}: labels have {y.shape[1]} columns but the task names {len(task.labels)}")
    if _multi_label(task.kind):
        known = y[labelled_mask(y, task.kind)]
        if np.any(np.isnan(known)) or np.any((known != 0) & (known != 1)):
            raise TLKerasError(f"task {task.name}: multi-label targets must be 0/1 (a whole row of NaN marks a missing label)")
    return y


def _split_indices(n: int, config: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * config.val_fraction))
    n_test = int(round(n * config.test_fraction))
    if n - n_val - n_test < 1 or n_val < 1:
        raise TLKerasError(f"{n} images are too few to split with val_fraction={config.val_fraction} and test_fraction={config.test_fraction}; add images or pass explicit val data")
    return np.sort(order[n_val + n_test:]), np.sort(order[:n_val]), np.sort(order[n_val:n_val + n_test])


def multitask_from_arrays(
    x: np.ndarray,
    labels: dict[str, Any],
    tasks: Sequence[TaskSpec | dict],
    *,
    val: tuple[np.ndarray, dict[str, Any]] | None = None,
    test: tuple[np.ndarray, dict[str, Any]] | None = None,
    config: DataConfig | None = None,
    image_size: int | None = None,
    seed: int = 42,
    source: str = "arrays",
) -> MultiTaskData:
    """Wraps images and per-task label arrays as :class:`MultiTaskData`.

    Args:
        x: N x H x W (x 1/3/4) images in [0, 255]; converted to uint8 RGB, resized to
            ``image_size`` when given.
        labels: ``{task name: labels}`` for every task (see :class:`MultiTaskSplit`).
        tasks: the tasks; empty ``labels`` lists are filled in from the data.
        val, test: explicit splits as ``(images, labels)``; without ``val`` a seeded random split
            of ``x`` uses ``config.val_fraction`` and ``config.test_fraction``.

    Raises:
        TLKerasError: a task without labels, labels for an unknown task, mismatched lengths,
            out-of-range class indices.
    """
    from tlkeras.core.data import as_rgb_uint8

    config = config or DataConfig()
    tasks = check_tasks([replace(t) if isinstance(t, TaskSpec) else TaskSpec(**t) for t in tasks])

    def prepare(images, lab) -> MultiTaskSplit:
        images = as_rgb_uint8(images, image_size if image_size else None)
        names = {t.name for t in tasks}
        unknown = sorted(set(lab) - names)
        missing = sorted(names - set(lab))
        if unknown or missing:
            raise TLKerasError(f"labels must be given for exactly the tasks {sorted(names)}; unknown: {unknown or '-'}, missing: {missing or '-'}")
        return MultiTaskSplit(images, {t.name: _prepare_labels(t, lab[t.name], len(images)) for t in tasks})

    everything = prepare(x, labels)
    if val is None:
        tr, va, te = _split_indices(len(everything), config, seed)
        train, val_split = everything.take(tr), everything.take(va)
        test_split = everything.take(te) if len(te) else None
    else:
        size = everything.x.shape[1]
        train = everything
        val_split = prepare(as_rgb_uint8(val[0], size), val[1])
        test_split = prepare(as_rgb_uint8(test[0], size), test[1]) if test is not None else None
    for t in tasks:
        if not labelled_mask(train.labels[t.name], t.kind).any():
            raise TLKerasError(f"task {t.name} has no labelled training images")
    return MultiTaskData(train, val_split, test_split, tasks, int(everything.x.shape[1]), source)


def load_multitask_csv(path: str | os.PathLike, tasks: Sequence[TaskSpec | dict], image_size: int,
                       config: DataConfig | None = None, seed: int = 42) -> MultiTaskData:
    """Reads a CSV with a ``path`` column and one column per task (plus an optional ``split``).

    A softmax cell holds a class name, a sigmoid cell class names joined by
    ``config.label_separator``, a regression cell numbers joined by it; an empty cell means the
    image has no label for that task. Classes not given in ``TaskSpec.labels`` are collected
    from the column (sorted). Paths are relative to the CSV's folder and must stay inside it.

    Raises:
        TLKerasError: a missing file or column, a class not in the task's labels, non-numeric
            regression values, unreadable images with ``on_corrupt="error"``.
    """
    import csv

    from tlkeras.core.data import decode_all, resolve_inside, warn_skipped

    config = config or DataConfig()
    config.validate()
    tasks = check_tasks([replace(t) if isinstance(t, TaskSpec) else TaskSpec(**t) for t in tasks])
    path = Path(path)
    if not path.is_file():
        raise TLKerasError(f"CSV {path} does not exist; check the path")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise TLKerasError(f"CSV {path} has no rows; expected a header 'path,{','.join(t.name for t in tasks)}'")
    needed = {"path"} | {t.name for t in tasks}
    missing = sorted(needed - set(rows[0]))
    if missing:
        raise TLKerasError(f"CSV {path} lacks column(s) {', '.join(missing)} (found: {', '.join(c for c in rows[0] if c)})")
    sep = config.label_separator
    labels: dict[str, np.ndarray] = {}
    for t in tasks:
        cells = [(r[t.name] or "").strip() for r in rows]
        if not _has_classes(t.kind):
            try:
                values = [[float(v) for v in c.split(sep)] if c else None for c in cells]
            except ValueError:
                raise TLKerasError(f"CSV {path}: task {t.name} needs numbers") from None
            widths = {len(v) for v in values if v is not None}
            if len(widths) > 1:
                raise TLKerasError(f"CSV {path}: task {t.name} rows have different numbers of targets")
            width = widths.pop() if widths else max(1, len(t.labels))
            labels[t.name] = np.array([v if v is not None else [np.nan] * width for v in values], np.float32)
            continue
        tags = [[s.strip() for s in c.split(sep) if s.strip()] if _multi_label(t.kind) else ([c] if c else []) for c in cells]
        seen = sorted({s for ts in tags for s in ts})
        if not t.labels:
            t.labels = seen
        unknown = sorted(set(seen) - set(t.labels))
        if unknown:
            raise TLKerasError(f"CSV {path}: task {t.name} has label(s) {unknown} that are not in its labels {t.labels}")
        lookup = {c: i for i, c in enumerate(t.labels)}
        if _single_label(t.kind):
            labels[t.name] = np.array([lookup[ts[0]] if ts else -1 for ts in tags], np.int64)
        else:
            y = np.zeros((len(tags), len(t.labels)), np.float32)
            for i, (cell, ts) in enumerate(zip(cells, tags)):
                if cell:
                    y[i, [lookup[s] for s in ts]] = 1.0
                else:
                    y[i] = np.nan
            labels[t.name] = y
    paths = [str(resolve_inside(path.parent, r["path"] or "")) for r in rows]
    x, kept, skipped = decode_all(paths, image_size, config.on_corrupt)
    warn_skipped(skipped)
    kept = np.asarray(kept, np.int64)
    everything = MultiTaskSplit(x, {k: v[kept] for k, v in labels.items()}, [paths[i] for i in kept])
    splits = [(rows[i].get("split") or "").strip().lower() for i in kept]
    if any(splits):
        bad = sorted(set(splits) - {"train", "val", "test"})
        if bad:
            raise TLKerasError(f"CSV {path}: unknown split value(s) {bad}; use train, val or test")
        pick = lambda name: np.array([i for i, s in enumerate(splits) if s == name], np.int64)  # noqa: E731
        tr, va, te = pick("train"), pick("val"), pick("test")
        if not len(tr) or not len(va):
            raise TLKerasError(f"CSV {path}: the split column needs train and val rows")
    else:
        tr, va, te = _split_indices(len(everything), config, seed)
    data = MultiTaskData(everything.take(tr), everything.take(va), everything.take(te) if len(te) else None,
                         tasks, image_size, str(path))
    for t in tasks:
        if _single_label(t.kind) and len(t.labels) < 2:
            raise TLKerasError(f"CSV {path}: task {t.name} has only {len(t.labels)} class(es); a softmax task needs two")
        if not labelled_mask(data.train.labels[t.name], t.kind).any():
            raise TLKerasError(f"task {t.name} has no labelled training images")
    return data


# ---------------------------------------------------------------------------------------------
# Model
