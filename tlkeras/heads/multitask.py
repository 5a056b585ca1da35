"""Multi-task learning: one shared backbone, several named heads, one multi-output TFLite model.

A phone app that needs a species, a set of attributes and an age estimate from the same photo
runs one backbone instead of three. :func:`build_multitask_model` puts one head per
:class:`TaskSpec` on the pooled features of a :func:`tlkeras.models.build_model` backbone:

- ``softmax`` (single label), ``sigmoid`` (multi-label) or ``regression`` heads, each named
  after its task (``head_<task>_dense`` -> ``head_<task>_output``); the Keras model returns a dict
  ``{task: output}``.
- The total loss is ``sum_i w_i * L_i``. The weights are fixed (``TaskSpec.weight``) or learned by
  homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018):
  ``sum_i c_i * exp(-s_i) * L_i + s_i / 2`` with one trainable ``s_i = log sigma_i^2`` per task
  (``c_i`` = 1 for classification, 1/2 for regression), held by the :class:`UncertaintyWeighting`
  layer so the values are saved with the model.
- Labels may be missing per task (``-1`` for a softmax task, a row of NaN for sigmoid and
  regression): such images train the other heads only, and metrics skip them.

:func:`train_multitask` trains both phases (frozen backbone, then the top of the backbone at a
lower learning rate, as in :func:`tlkeras.training.fit_two_phase`) and writes a run directory with
``tasks.json`` and per-task metrics; :func:`export_multitask` writes a TFLite bundle whose
``metadata.json`` names each output tensor after its task.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import math
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.config import HEADS, DataConfig, ModelConfig, RunConfig, save_config
from tlkeras.errors import TLKerasError

__all__ = [
    "TaskSpec",
    "MultiTaskSplit",
    "MultiTaskData",
    "MultiTaskResult",
    "UncertaintyWeighting",
    "multitask_from_arrays",
    "load_multitask_csv",
    "build_multitask_model",
    "compile_multitask",
    "fit_multitask",
    "evaluate_multitask",
    "train_multitask",
    "load_multitask_run",
    "export_multitask",
    "run_signature",
]

WEIGHTINGS = ("fixed", "uncertainty")
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
        if self.kind == "softmax" and self.labels and len(self.labels) < 2:
            raise TLKerasError(f"task {self.name}: a softmax task needs at least two classes, got {self.labels}")
        return self

    @property
    def num_outputs(self) -> int:
        return len(self.labels)


def _check_tasks(tasks: Sequence[TaskSpec]) -> list[TaskSpec]:
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


def labelled_mask(y: np.ndarray, kind: str) -> np.ndarray:
    """Boolean mask of the rows that carry a label for a task of ``kind``."""
    if kind == "softmax":
        return np.asarray(y).reshape(-1) >= 0
    y = np.asarray(y, np.float32)
    return ~np.all(np.isnan(y.reshape(len(y), -1)), axis=1)


def _prepare_labels(task: TaskSpec, y: Any, n: int) -> np.ndarray:
    """Checks one task's labels and fills ``task.labels`` when empty (mutates ``task``)."""
    y = np.asarray(y)
    if len(y) != n:
        raise TLKerasError(f"task {task.name}: {len(y)} labels for {n} images")
    if task.kind == "softmax":
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
        if task.kind == "sigmoid":
            task.labels = [f"class_{i}" for i in range(y.shape[1])]
        else:
            task.labels = ["target"] if y.shape[1] == 1 else [f"target_{i}" for i in range(y.shape[1])]
    if y.shape[1] != len(task.labels):
        raise TLKerasError(f"task {task.name}: labels have {y.shape[1]} columns but the task names {len(task.labels)}")
    if task.kind == "sigmoid":
        known = y[labelled_mask(y, "sigmoid")]
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
    tasks = _check_tasks([replace(t) if isinstance(t, TaskSpec) else TaskSpec(**t) for t in tasks])

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
    tasks = _check_tasks([replace(t) if isinstance(t, TaskSpec) else TaskSpec(**t) for t in tasks])
    path = Path(path)
    if not path.is_file():
        raise TLKerasError(f"CSV {path} does not exist")
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
        if t.kind == "regression":
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
        tags = [[s.strip() for s in c.split(sep) if s.strip()] if t.kind == "sigmoid" else ([c] if c else []) for c in cells]
        seen = sorted({s for ts in tags for s in ts})
        if not t.labels:
            t.labels = seen
        unknown = sorted(set(seen) - set(t.labels))
        if unknown:
            raise TLKerasError(f"CSV {path}: task {t.name} has label(s) {unknown} that are not in its labels {t.labels}")
        lookup = {c: i for i, c in enumerate(t.labels)}
        if t.kind == "softmax":
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
        if t.kind == "softmax" and len(t.labels) < 2:
            raise TLKerasError(f"CSV {path}: task {t.name} has only {len(t.labels)} class(es); a softmax task needs two")
        if not labelled_mask(data.train.labels[t.name], t.kind).any():
            raise TLKerasError(f"task {t.name} has no labelled training images")
    return data


# ---------------------------------------------------------------------------------------------
# Model


@keras.saving.register_keras_serializable(package="tlkeras")
class UncertaintyWeighting(keras.layers.Layer):
    """Holds one trainable log-variance ``s_i`` per task for uncertainty loss weighting.

    The layer passes its input through unchanged (so it costs nothing at inference and vanishes
    from the TFLite graph); it sits in the model only so that ``s`` is trained by the model's
    optimizer and saved in ``model.keras``. The losses of :func:`compile_multitask` read it: task
    ``i`` contributes ``c_i * exp(-s_i) * L_i + s_i / 2`` (Kendall et al. 2018, with ``c_i`` = 1
    for classification and 1/2 for a Gaussian regression likelihood).

    Args:
        task_names: the tasks, in order.
        kinds: their head kinds (``softmax``/``sigmoid``/``regression``).
    """

    def __init__(self, task_names: Sequence[str], kinds: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        self.task_names = list(task_names)
        self.kinds = list(kinds)
        if len(self.task_names) != len(self.kinds):
            raise TLKerasError("UncertaintyWeighting needs one kind per task")

    def build(self, input_shape):
        self.log_vars = self.add_weight(name="log_vars", shape=(len(self.task_names),), initializer="zeros",
                                        trainable=True, dtype="float32")
        super().build(input_shape)

    def call(self, inputs):
        return inputs

    def coefficient(self, index: int) -> float:
        return 0.5 if self.kinds[index] == "regression" else 1.0

    def weighted(self, index: int, loss):
        """The uncertainty-weighted value of task ``index``'s (per-sample) ``loss``."""
        s = tf.cast(self.log_vars[index], loss.dtype)
        return self.coefficient(index) * tf.exp(-s) * loss + 0.5 * s

    def effective_weights(self) -> dict[str, float]:
        """``{task: c_i * exp(-s_i)}``: the weight each task's loss currently gets."""
        s = self.log_vars.numpy()
        return {n: float(self.coefficient(i) * np.exp(-s[i])) for i, n in enumerate(self.task_names)}

    def get_config(self):
        return {**super().get_config(), "task_names": self.task_names, "kinds": self.kinds}


class _UncertaintyLoss(keras.losses.Loss):
    """A task loss scaled by the task's learned uncertainty (training only; never saved)."""

    def __init__(self, base: keras.losses.Loss, weighting: UncertaintyWeighting, index: int, name: str):
        super().__init__(name=name)
        self.base = base
        self.weighting = weighting
        self.index = index

    def call(self, y_true, y_pred):
        return self.weighting.weighted(self.index, self.base.fn(y_true, y_pred, **self.base._fn_kwargs))


def build_multitask_model(model_cfg: ModelConfig, tasks: Sequence[TaskSpec], image_size: int | None = None,
                          weighting: str = "fixed") -> keras.Model:
    """Builds a shared backbone with one head per task, as one flat functional model.

    The backbone, its preprocessing and ``head_pool`` come from :func:`tlkeras.build_model`;
    each task gets ``head_<task>_hidden_i`` (``model_cfg.hidden_units``), ``head_<task>_dropout``
    (``model_cfg.dropout``), ``head_<task>_dense`` and ``head_<task>_output``. The model maps raw
    pixels to ``{task: probabilities or values}``. The backbone starts frozen.

    Args:
        model_cfg: backbone, weights, alpha, dropout, hidden units (``head`` is ignored).
        tasks: the tasks, with ``labels`` filled in.
        image_size: square input size (None: the backbone's default).
        weighting: ``fixed`` or ``uncertainty`` (adds the :class:`UncertaintyWeighting` layer
            ``head_uncertainty``).

    Raises:
        TLKerasError: bad tasks or weighting, and everything :func:`tlkeras.build_model` raises.
    """
    from tlkeras.core.models import build_model, freeze_backbone

    tasks = _check_tasks(tasks)
    if weighting not in WEIGHTINGS:
        raise TLKerasError(f"weighting={weighting!r} is not valid; choose one of {', '.join(WEIGHTINGS)}")
    for t in tasks:
        if t.num_outputs < 1:
            raise TLKerasError(f"task {t.name} has no labels; fill TaskSpec.labels or build from data")
    base = build_model(replace(model_cfg, head="softmax", dropout=0.0, hidden_units=[]), 2, image_size)
    features = base.get_layer("head_pool").output
    if weighting == "uncertainty":
        features = UncertaintyWeighting([t.name for t in tasks], [t.kind for t in tasks], name="head_uncertainty")(features)
    outputs = {}
    for t in tasks:
        y = features
        for i, units in enumerate(model_cfg.hidden_units):
            y = keras.layers.Dense(int(units), activation="relu", name=f"head_{t.name}_hidden_{i}")(y)
        if model_cfg.dropout > 0:
            y = keras.layers.Dropout(model_cfg.dropout, name=f"head_{t.name}_dropout")(y)
        y = keras.layers.Dense(t.num_outputs, name=f"head_{t.name}_dense")(y)
        activation = {"softmax": "softmax", "sigmoid": "sigmoid", "regression": "linear"}[t.kind]
        outputs[t.name] = keras.layers.Activation(activation, dtype="float32", name=f"head_{t.name}_output")(y)
    backbone = model_cfg.backbone.replace("hub:", "hub_").split("/")[-1]
    model = keras.Model(base.inputs, outputs, name=f"tlkeras_multitask_{re.sub(r'[^A-Za-z0-9_]', '_', backbone)}")
    freeze_backbone(model)
    return model


def _task_loss(task: TaskSpec, label_smoothing: float):
    if task.kind == "softmax":
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    if task.kind == "sigmoid":
        return keras.losses.BinaryCrossentropy()
    return keras.losses.MeanSquaredError()


def _task_metrics(task: TaskSpec) -> list:
    if task.kind == "softmax":
        return [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if task.kind == "sigmoid":
        return [keras.metrics.BinaryAccuracy(name="accuracy")]
    return [keras.metrics.MeanAbsoluteError(name="mae")]


def _weighting_layer(model) -> UncertaintyWeighting | None:
    return next((l for l in model.layers if isinstance(l, UncertaintyWeighting)), None)


def loss_weights(model, tasks: Sequence[TaskSpec]) -> dict[str, float]:
    """The weight each task's loss gets: learned (uncertainty) or fixed (``TaskSpec.weight``)."""
    layer = _weighting_layer(model)
    return layer.effective_weights() if layer is not None else {t.name: float(t.weight) for t in tasks}


def compile_multitask(model, tasks: Sequence[TaskSpec], learning_rate, *, optimizer: str = "adam",
                      weight_decay: float = 0.0, label_smoothing: float = 0.0, training: bool = True) -> None:
    """Compiles ``model`` with one loss and metric set per task.

    With an :class:`UncertaintyWeighting` layer in the model and ``training`` on, each loss is
    uncertainty-weighted (its log-variance trains with the model); otherwise the losses get
    fixed weights (``TaskSpec.weight``, or the learned weights frozen at their current values
    when ``training`` is off, so a saved model carries only built-in losses).

    Side effect: replaces the model's optimizer.
    """
    layer = _weighting_layer(model)
    losses = {t.name: _task_loss(t, label_smoothing) for t in tasks}
    weights = {t.name: float(t.weight) for t in tasks}
    if layer is not None:
        if training:
            losses = {t.name: _UncertaintyLoss(losses[t.name], layer, i, f"{t.name}_uncertainty") for i, t in enumerate(tasks)}
            weights = {t.name: 1.0 for t in tasks}
        else:
            weights = layer.effective_weights()
    if optimizer == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    else:
        opt = keras.optimizers.Adam(learning_rate=learning_rate)
    # Metrics are weighted too, so images without a task's label do not count for that task.
    model.compile(optimizer=opt, loss=losses, loss_weights=weights,
                  weighted_metrics={t.name: _task_metrics(t) for t in tasks})


def _targets(split: MultiTaskSplit, tasks: Sequence[TaskSpec]) -> tuple[dict, dict]:
    """Keras targets and per-sample weights (0 where a task's label is missing)."""
    ys, ws = {}, {}
    for t in tasks:
        y = split.labels[t.name]
        mask = labelled_mask(y, t.kind)
        if t.kind == "softmax":
            enc = np.zeros((len(y), t.num_outputs), np.float32)
            enc[mask, y[mask]] = 1.0
        else:
            enc = np.nan_to_num(np.asarray(y, np.float32), nan=0.0)
        ys[t.name] = enc
        ws[t.name] = mask.astype(np.float32)
    return ys, ws


def _dataset(split: MultiTaskSplit, tasks, batch_size: int, shuffle: bool = False, augment: str = "off", seed: int = 42):
    from tlkeras.core.augment import augmenter

    ys, ws = _targets(split, tasks)
    ds = tf.data.Dataset.from_tensor_slices((split.x, ys, ws))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x, y, w: (tf.cast(x, tf.float32), y, w), num_parallel_calls=tf.data.AUTOTUNE)
    aug = augmenter(augment, seed)
    if aug is not None:
        ds = ds.map(lambda x, y, w: (tf.clip_by_value(aug(x, training=True), 0.0, 255.0), y, w), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _lr(lr: float, schedule: str, steps: int):
    if schedule == "constant":
        return lr
    return keras.optimizers.schedules.CosineDecay(lr, max(1, steps), alpha=0.0)


def _merge_history(total: dict[str, list], history, phase: int) -> None:
    logs = history.history if history is not None else {}
    epochs = len(next(iter(logs.values()))) if logs else 0
    for key, series in logs.items():
        if key == "lr":
            continue
        total.setdefault(key, [None] * len(total["phase"]))
        total[key].extend(float(v) for v in series)
    total["phase"].extend([phase] * epochs)
    for series in total.values():
        series.extend([None] * (len(total["phase"]) - len(series)))


def fit_multitask(model, data: MultiTaskData, config: RunConfig, *, callbacks: list | None = None) -> tuple[dict, dict]:
    """Trains ``model`` in place in two phases (frozen backbone, then the top of the backbone).

    Uses ``config.train`` (epochs, learning rates, ``unfreeze``, optimizer, schedule, label
    smoothing, early stopping on the total validation loss, whose best weights are restored;
    phase 1 runs on cached features unless it is augmented) and ``config.data`` (batch size,
    augmentation).

    Returns:
        ``(history, timings)``; history holds per-task losses and metrics per epoch and
        ``phase``; with uncertainty weighting also ``weight_<task>`` per epoch.

    Side effects: changes the model's weights, ``trainable`` flags and optimizer; it is left
    compiled with fixed weights (the learned ones, if any).
    """
    from tlkeras.core.models import feature_extractor, feature_layer_name, freeze_backbone, unfreeze_backbone
    from tlkeras.train.recipe import uses_feature_cache

    tc, dc = config.train, config.data
    tasks = data.tasks
    bs = dc.batch_size
    steps = max(1, math.ceil(len(data.train) / bs))
    train_ds = _dataset(data.train, tasks, bs, shuffle=True, augment=dc.augment, seed=config.seed)
    val_ds = _dataset(data.val, tasks, bs)
    history: dict[str, list] = {"phase": []}
    timings: dict[str, float] = {}
    layer = _weighting_layer(model)

    class _RecordWeights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if layer is not None and logs is not None:
                for name, w in layer.effective_weights().items():
                    logs[f"weight_{name}"] = w

    def stop():
        patience = tc.early_stopping_patience if tc.early_stopping_patience > 0 else 10**9
        return keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)

    def fit(net, train, val, epochs: int, lr, phase: int):
        compile_multitask(net, tasks, lr, optimizer=tc.optimizer, weight_decay=tc.weight_decay, label_smoothing=tc.label_smoothing)
        h = net.fit(train, validation_data=val, epochs=epochs, verbose=tc.verbose,
                    callbacks=[_RecordWeights(), stop(), *(callbacks or [])])
        _merge_history(history, h, phase)

    start = time.perf_counter()
    if tc.phase1_epochs > 0:
        freeze_backbone(model)
        lr1 = _lr(tc.phase1_lr, tc.schedule, steps * tc.phase1_epochs)
        if uses_feature_cache(config):
            # A frozen backbone without augmentation maps each image to the same features every
            # epoch: compute them once and train the heads on them (the layers are shared).
            extractor = feature_extractor(model)
            feats = {name: extractor.predict(tf.data.Dataset.from_tensor_slices(s.x).batch(bs).map(lambda b: tf.cast(b, tf.float32)), verbose=0)
                     for name, s in (("train", data.train), ("val", data.val))}
            heads = keras.Model(model.get_layer(feature_layer_name(model)).output, model.output, name=f"{model.name}_heads")
            ys, ws = _targets(data.train, tasks)
            train_feats = (tf.data.Dataset.from_tensor_slices((feats["train"], ys, ws))
                           .shuffle(len(data.train), seed=config.seed, reshuffle_each_iteration=True).batch(bs).prefetch(tf.data.AUTOTUNE))
            val_feats = tf.data.Dataset.from_tensor_slices((feats["val"], *_targets(data.val, tasks))).batch(bs)
            fit(heads, train_feats, val_feats, tc.phase1_epochs, lr1, 1)
        else:
            augment1 = dc.augment if getattr(tc, "phase1_augment", True) else "off"
            ds1 = train_ds if augment1 == dc.augment else _dataset(data.train, tasks, bs, shuffle=True, augment=augment1, seed=config.seed)
            fit(model, ds1, val_ds, tc.phase1_epochs, lr1, 1)
    timings["phase1"] = time.perf_counter() - start
    start = time.perf_counter()
    opened: list[str] = []
    if tc.phase2_epochs > 0 and tc.unfreeze != "none":
        pretrained = str(config.model.weights).lower() != "none"
        opened = unfreeze_backbone(model, config.model.backbone, tc.unfreeze, keep_batchnorm_frozen=pretrained)
        fit(model, train_ds, val_ds, tc.phase2_epochs, _lr(tc.phase1_lr * tc.phase2_lr_factor, tc.schedule, steps * tc.phase2_epochs), 2)
    timings["phase2"] = time.perf_counter() - start
    timings["phase2_trainable_layers"] = len(opened)
    compile_multitask(model, tasks, tc.phase1_lr, optimizer=tc.optimizer, training=False)
    return history, timings


def predict_multitask(model, x: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Runs a multi-task model on uint8 images; returns ``{task: float32 outputs}``."""
    ds = tf.data.Dataset.from_tensor_slices(x).batch(batch_size).map(lambda b: tf.cast(b, tf.float32))
    out = model.predict(ds, verbose=0)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def evaluate_multitask(model, split: MultiTaskSplit, tasks: Sequence[TaskSpec], batch_size: int = 64,
                       outputs: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, Any]]:
    """Per-task metrics (:func:`tlkeras.evaluation.compute_metrics`) on the labelled rows.

    Returns:
        ``{task: metrics}``; a task without labelled images in ``split`` gets ``{"count": 0}``.
    """
    from tlkeras.core.metrics import compute_metrics

    outputs = outputs if outputs is not None else predict_multitask(model, split.x, batch_size)
    result = {}
    for t in tasks:
        y = split.labels[t.name]
        mask = labelled_mask(y, t.kind)
        if not mask.any():
            result[t.name] = {"count": 0}
            continue
        result[t.name] = compute_metrics(y[mask], outputs[t.name][mask], list(t.labels), t.kind)
    return result


@dataclass
class MultiTaskResult:
    """What :func:`train_multitask` made.

    Attributes:
        model: the trained multi-output Keras model.
        tasks: the tasks (labels filled in).
        history: per-epoch values of both phases.
        metrics: ``{"tasks": {task: {"val", "final"}}, "final_split", "weighting", "loss_weights", "timings"}``.
        run_dir: the run directory (None when not written).
        config: the run config used.
    """

    model: Any
    tasks: list[TaskSpec]
    history: dict[str, list]
    metrics: dict[str, Any]
    run_dir: Path | None
    config: RunConfig


def train_multitask(config: RunConfig, data: MultiTaskData, *, weighting: str = "fixed", write: bool = True,
                    callbacks: list | None = None) -> MultiTaskResult:
    """Builds, trains and evaluates a multi-task model; writes its run directory.

    The run directory (``<output_dir>/<name>/``) holds ``config.yaml`` (the backbone, data and
    training settings; ``model.head`` is not used, so it is no ``tlkeras.train`` replay
    config), ``tasks.json`` (tasks, their labels, weighting and
    the final loss weights), ``model.keras``, ``history.json``, ``metrics.json`` (per task, on val
    and on the test split if any, else val), one ``confusion_matrix_<task>.png`` per softmax task
    and ``training_curves.png``.

    Raises:
        TLKerasError: bad tasks, weighting or config; an existing run directory.

    Side effects: seeds Python, NumPy and TensorFlow from ``config.seed``; writes the run
    directory atomically.
    """
    from tlkeras.core.models import check_model_config
    from tlkeras.core.plots import plot_confusion_matrix, plot_history
    from tlkeras.runs import atomic_path, default_run_name, staged_directory, write_json

    config.validate()
    if weighting not in WEIGHTINGS:
        raise TLKerasError(f"weighting={weighting!r} is not valid; choose one of {', '.join(WEIGHTINGS)}")
    tasks = _check_tasks(data.tasks)
    if write and config.name and (Path(config.output_dir) / config.name).exists():
        raise TLKerasError(f"{Path(config.output_dir) / config.name} already exists; choose another --name or remove it")
    t0 = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    size = check_model_config(config.model, data.image_size)
    config.data.image_size = size
    model = build_multitask_model(config.model, tasks, size, weighting)
    config.name = config.name or default_run_name("multitask-" + config.model.backbone.replace("hub:", "hub-").split("/")[-1])
    history, timings = fit_multitask(model, data, config, callbacks=callbacks)
    split_name, split = data.eval_split
    val = evaluate_multitask(model, data.val, tasks, config.data.batch_size)
    final = evaluate_multitask(model, split, tasks, config.data.batch_size)
    timings["total"] = time.perf_counter() - t0
    weights = loss_weights(model, tasks)
    metrics = {
        "tasks": {t.name: {"kind": t.kind, "val": val[t.name], "final": final[t.name]} for t in tasks},
        "final_split": split_name,
        "weighting": weighting,
        "loss_weights": weights,
        "timings": timings,
    }
    run_dir = None
    if write:
        final_dir = Path(config.output_dir) / config.name
        with staged_directory(final_dir) as stage:
            if data.source and Path(data.source).is_file():
                config.data.source = str(data.source)
            save_config(config, stage / "config.yaml")
            write_json(stage / "tasks.json", {"weighting": weighting, "loss_weights": weights,
                                              "tasks": [asdict(t) for t in tasks]})
            with atomic_path(stage / "model.keras") as tmp:
                model.save(tmp)
            write_json(stage / "history.json", history)
            write_json(stage / "metrics.json", metrics)
            for t in tasks:
                if t.kind == "softmax" and "confusion_matrix" in final[t.name]:
                    plot_confusion_matrix(final[t.name]["confusion_matrix"], t.labels, stage / f"confusion_matrix_{t.name}.png",
                                          title=f"{t.name} ({split_name})")
            plot_history(history, stage / "training_curves.png")
        run_dir = final_dir
    return MultiTaskResult(model, tasks, history, metrics, run_dir, config)


def load_multitask_run(run_dir: str | os.PathLike) -> tuple[Any, list[TaskSpec], RunConfig]:
    """Loads a multi-task run: ``(model, tasks, config)``.

    Raises:
        TLKerasError: not a multi-task run directory (no ``tasks.json``), an unreadable model.
    """
    from tlkeras.config import load_config
    from tlkeras.core.loading import load_run_model
    from tlkeras.runs import read_json

    run_dir = Path(run_dir)
    if not (run_dir / "tasks.json").is_file():
        raise TLKerasError(f"{run_dir} has no tasks.json; pass a directory written by tlkeras.multitask.train_multitask")
    spec = read_json(run_dir / "tasks.json")
    tasks = _check_tasks([TaskSpec(**t) for t in spec["tasks"]])
    return load_run_model(run_dir), tasks, load_config(run_dir / "config.yaml")


# ---------------------------------------------------------------------------------------------
# TFLite


def save_multitask_serving(model, directory: str | os.PathLike, tasks: Sequence[TaskSpec], batch: int | None = 1) -> Path:
    """Saves a SavedModel whose ``serving_default`` maps ``image`` to ``{task: output}``.

    Like :func:`tlkeras.exporting.save_serving_model` (a ``tf.Module`` holding the variables
    and one traced function), but with one named signature output per task.

    Side effects: writes ``directory``.
    """
    shape = [batch] + [int(d) for d in model.inputs[0].shape[1:]]
    names = [t.name for t in tasks]
    module = tf.Module()
    module.variables_ = list(model.variables)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="image")])
    def serve(image):
        out = model(image, training=False)
        return {n: out[n] for n in names}

    module.serve = serve
    tf.saved_model.save(module, str(directory), signatures={"serving_default": serve})
    return Path(directory)


def _signature_map(interpreter) -> dict[str, dict[str, int]]:
    """``{"inputs": {name: tensor index}, "outputs": {name: tensor index}}`` of serving_default."""
    full = interpreter._get_full_signature_list()  # noqa: SLF001 - LiteRT exposes no public mapping
    sig = full.get("serving_default") or next(iter(full.values()))
    return {"inputs": dict(sig["inputs"]), "outputs": dict(sig["outputs"])}


def run_signature(model, images: np.ndarray, num_threads: int | None = None) -> dict[str, np.ndarray]:
    """Runs a multi-output ``.tflite`` model on images one at a time, by signature names.

    Args:
        model: an allocated LiteRT interpreter, model bytes or a ``.tflite`` path.
        images: N x S x S x 3 raw pixels (0..255); quantized when the input is an integer tensor.

    Returns:
        ``{output name: N x K float32}``, dequantized where the output is an integer tensor.
    """
    from tlkeras.core import litert

    interpreter = model if hasattr(model, "invoke") else litert.load_interpreter(model, num_threads)
    sig = _signature_map(interpreter)
    by_index = {d["index"]: d for d in interpreter.get_input_details() + interpreter.get_output_details()}
    (in_name, in_index), = sig["inputs"].items()
    i_desc = litert._describe(by_index[in_index])  # noqa: SLF001
    expected = tuple(i_desc["shape"][1:])
    images = np.asarray(images)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise TLKerasError(f"images have shape {tuple(images.shape)}, the model takes N x {' x '.join(map(str, expected))}")
    outs: dict[str, list] = {name: [] for name in sig["outputs"]}
    for image in images:
        interpreter.set_tensor(in_index, litert.quantize(image[None].astype(np.float32), i_desc["dtype"], i_desc["scale"], i_desc["zero_point"]))
        interpreter.invoke()
        for name, index in sig["outputs"].items():
            d = litert._describe(by_index[index])  # noqa: SLF001
            outs[name].append(litert.dequantize(interpreter.get_tensor(index), d["scale"], d["zero_point"])[0])
    return {k: np.stack(v) for k, v in outs.items()}


def export_multitask(
    model,
    data: MultiTaskData,
    output_dir: str | os.PathLike,
    *,
    variants: Sequence[str] = ("float32", "int8_float_io"),
    representative_size: int = 100,
    max_drop: float = 2.0,
    overwrite: bool = False,
    name: str | None = None,
    source_run: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Converts a multi-task model to TFLite variants, verifies each with LiteRT, writes a bundle.

    The bundle holds ``<variant>.tflite`` (one input ``image``, one signature output per task),
    ``labels_<task>.txt`` per task and ``metadata.json`` whose ``outputs`` list names every output
    (task, kind, labels, shape, its tensor index and position in the interpreter's outputs, and
    its signature name). Each variant runs on the evaluation split with LiteRT and is compared
    with Keras per task (metrics, top-1 agreement, largest difference); ``passed`` is false when a
    task's primary metric drops by more than ``max_drop`` points.

    Args:
        variants: names from :data:`tlkeras.exporting.VARIANTS` with float input/output
            (``float32``, ``dynamic_range``, ``float16``, ``int8_float_io``, ``int16x8``).
        representative_size: training images that calibrate int8/int16x8 activations.

    Returns:
        The metadata dict (also written to ``metadata.json``).

    Raises:
        TLKerasError: an unknown or integer-I/O variant, an existing ``output_dir`` (without
            ``overwrite``), a conversion failure.

    Side effects: writes ``output_dir`` atomically.
    """
    from tlkeras.core import litert
    from tlkeras.export.bundle import VARIANTS, convert_variant, parse_variants, representative_indices
    from tlkeras.runs import atomic_write_bytes, atomic_write_text, staged_directory, write_json

    say = progress or (lambda line: None)
    tasks = _check_tasks(data.tasks)
    names = parse_variants(list(variants))
    bad = [v for v in names if VARIANTS[v].io != "float32"]
    if bad:
        raise TLKerasError(f"multi-task export supports float input/output variants; drop {', '.join(bad)} (use int8_float_io)")
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise TLKerasError(f"{output_dir} already exists; pass overwrite=True or choose another directory")
    if not isinstance(model.output, dict) or sorted(model.output) != sorted(t.name for t in tasks):
        raise TLKerasError(f"the model's outputs do not match the tasks {[t.name for t in tasks]}")
    split_name, split = data.eval_split
    size = int(model.inputs[0].shape[1])
    # Calibration images: stratified by the first softmax task's classes (unlabelled rows count
    # as one more group), else a seeded random draw.
    first = next((t for t in tasks if t.kind == "softmax"), None)
    groups = data.train.labels[first.name] + 1 if first is not None else np.zeros(len(data.train), np.int64)
    rep = data.train.x[representative_indices(groups, representative_size, 42, "softmax")]
    keras_out = predict_multitask(model, split.x)
    keras_metrics = evaluate_multitask(model, split, tasks, outputs=keras_out)
    primary = {"softmax": "accuracy", "sigmoid": "subset_accuracy", "regression": "mae"}
    variants_meta: dict[str, Any] = {}
    outputs_meta: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="tlkeras-mt-export-") as work, staged_directory(output_dir, overwrite=overwrite) as stage:
        saved = save_multitask_serving(model, Path(work) / "serving", tasks)
        for vname in names:
            variant = VARIANTS[vname]
            say(f"converting {vname}")
            content = convert_variant(saved, variant, rep if variant.needs_data else None)
            interpreter = litert.load_interpreter(content, num_threads=os.cpu_count())
            out = run_signature(interpreter, split.x)
            missing = sorted({t.name for t in tasks} - set(out))
            if missing:
                raise TLKerasError(f"the {vname} model lacks outputs {missing}; the converter renamed them")
            lite_metrics = evaluate_multitask(model, split, tasks, outputs=out)
            per_task = {}
            for t in tasks:
                m = dict(lite_metrics[t.name])
                m.pop("per_class", None)
                m.pop("per_class_f1", None)
                m.pop("confusion_matrix", None)
                mask = labelled_mask(split.labels[t.name], t.kind)
                a, b = out[t.name], keras_out[t.name]
                m["max_abs_diff"] = float(np.max(np.abs(a - b))) if len(a) else 0.0
                if t.kind == "softmax":
                    m["agreement"] = float(np.mean(a.argmax(1) == b.argmax(1)))
                elif t.kind == "sigmoid":
                    m["agreement"] = float(np.mean(np.all((a >= 0.5) == (b >= 0.5), axis=1)))
                key = primary[t.kind]
                if mask.any() and key in m:
                    ref = keras_metrics[t.name][key]
                    m["drop_points"] = 100.0 * (m[key] - ref) / max(ref, 1e-12) if t.kind == "regression" else 100.0 * (ref - m[key])
                    if m["drop_points"] > max_drop + 1e-9:
                        failed[f"{vname}/{t.name}"] = f"dropped {m['drop_points']:.1f} points of {key}"
                per_task[t.name] = m
            agreements = [m["agreement"] for m in per_task.values() if "agreement" in m]
            entry = {"file": f"{vname}.tflite", "description": variant.description, "bytes": len(content),
                     "gzip_bytes": len(gzip.compress(content, 9)), "sha256": hashlib.sha256(content).hexdigest(),
                     "metrics": {"agreement": min(agreements) if agreements else None, "tasks": per_task},
                     "ops": litert.inspect_model(content).op_names,
                     "within_threshold": not any(k.startswith(vname + "/") for k in failed)}
            atomic_write_bytes(stage / entry["file"], content)
            variants_meta[vname] = entry
            if not outputs_meta:
                sig = _signature_map(interpreter)
                order = [d["index"] for d in interpreter.get_output_details()]
                details = {d["index"]: litert._describe(d) for d in interpreter.get_output_details()}  # noqa: SLF001
                for t in tasks:
                    index = sig["outputs"][t.name]
                    outputs_meta.append({
                        "name": t.name, "kind": t.kind, "labels": list(t.labels), "labels_file": f"labels_{t.name}.txt",
                        "shape": details[index]["shape"], "signature_output": t.name, "tensor_index": index,
                        "tensor_name": details[index]["name"], "position": order.index(index),
                        "meaning": {"softmax": "softmax probabilities over labels", "sigmoid": "independent sigmoid probabilities per label (>= 0.5: present)",
                                    "regression": "regression values, one per label"}[t.kind],
                    })
            say(f"  {vname}: {len(content) / 1024:.0f} KB, agreement {entry['metrics']['agreement']}")
        for t in tasks:
            atomic_write_text(stage / f"labels_{t.name}.txt", "\n".join(t.labels) + "\n")
        from tlkeras.core.versions import versions

        meta = {
            "format": "tlkeras-bundle",
            "kind": "multitask",
            "name": name or output_dir.name,
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "versions": versions(),
            "source_run": source_run or {},
            "input": {"name": "image", "shape": [1, size, size, 3], "layout": "NHWC", "color": "RGB", "dtype": "float32",
                      "value_range": [0, 255], "preprocessing": f"resize to {size}x{size}; raw 0..255 values, normalization is inside the model"},
            "outputs": outputs_meta,
            "task": {"head": "multitask", "class_names": [t.name for t in tasks], "tasks": [asdict(t) for t in tasks]},
            "evaluation": {"split": split_name, "count": int(len(split)), "data": data.source, "primary_metric": "agreement",
                           "max_drop_points": max_drop,
                           "keras": {t.name: {k: v for k, v in keras_metrics[t.name].items() if isinstance(v, (int, float))} for t in tasks}},
            "variants": variants_meta,
            "passed": not failed,
            "failed": failed,
        }
        write_json(stage / "metadata.json", meta)
    return meta
