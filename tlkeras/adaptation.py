"""Domain adaptation: labelled source images, unlabelled target images, one classifier for the target.

Three techniques, all starting from the same pretrained backbone and head as ``tlkeras.train``:

* **DANN** (Ganin & Lempitsky, 2015): a domain discriminator learns to tell source features from
  target features, and a :class:`GradientReversal` layer between the features and the
  discriminator flips (and scales) its gradient, so the backbone learns features the discriminator
  cannot separate. The reversal weight ramps up from 0 with ``2 / (1 + exp(-gamma * p)) - 1``
  (``p`` = training progress), so the noisy early discriminator does not wreck the features.
* **MMD** (Long et al., DAN, 2015): the squared maximum mean discrepancy between source and target
  features under a sum of Gaussian kernels is added to the classification loss.
* **Importance weighting** (covariate shift, Shimodaira 2000): a logistic-regression domain
  classifier on frozen backbone features estimates ``p(target | x) / p(source | x)`` for every
  source image; the two-phase training then weights each source image's loss by it.

DANN and MMD run in two steps: phase 1 trains the head on the frozen backbone with the source
labels (``fit_two_phase``'s phase 1, with its feature cache), then the adaptation phase unfreezes
the top of the backbone (``train.unfreeze``; BatchNorm stays frozen) and trains it with
:class:`DomainAdaptationModel`, a ``keras.Model`` whose ``train_step`` adds the alignment loss.
The features aligned are the input of the output layer (the pooled backbone features, or the last
hidden layer when ``model.hidden_units`` is set).

Every technique writes the same run directory as ``tlkeras.train`` (``config.yaml``,
``model.keras``, ``labels.txt``, ``history.json``, ``metrics.json``, ``run.json``, plots) plus
``unlabeled.json`` (the technique and its options). ``model.keras`` is the plain classifier,
so ``python -m tlkeras.evaluate`` and ``python -m tlkeras.export`` take it unchanged.

This module also holds the plumbing the three unlabelled-data modules share (loading unlabelled
images, preparing the labelled data, writing the run), and :func:`train_with_unlabeled`, which
dispatches to any of the six techniques by name.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.config import RunConfig, save_config
from tlkeras.data import IMAGE_EXTENSIONS, DataBundle, Split, augmenter, encode_labels, load_data, load_image, make_dataset
from tlkeras.errors import TLKerasError
from tlkeras.evaluation import evaluate_model, predict, write_reports
from tlkeras.models import (
    backbone_layers,
    build_model,
    check_model_config,
    feature_extractor,
    feature_layer_name,
    freeze_backbone,
    head_model,
    unfreeze_backbone,
)
from tlkeras.runs import atomic_path, atomic_write_text, default_run_name, staged_directory, write_json
from tlkeras.training import TrainResult, compile_model, fit_two_phase

__all__ = [
    "GradientReversal",
    "reversal_schedule",
    "gaussian_mmd",
    "adaptation_feature_layer",
    "DomainAdaptationOptions",
    "DomainAdaptationModel",
    "adapt_domain",
    "ImportanceWeightingOptions",
    "importance_weights",
    "train_importance_weighted",
    "load_unlabeled",
    "load_labelled_split",
    "METHODS",
    "train_with_unlabeled",
    "prepare_data",
    "merge_history",
    "warm_up_head",
    "open_backbone",
    "make_optimizer",
    "compile_trainer",
    "unlabeled_dataset",
    "write_unlabeled_run",
]

UNLABELED_FILE = "unlabeled.json"


# ---------------------------------------------------------------------------------------------
# Building blocks


@keras.saving.register_keras_serializable(package="tlkeras")
class GradientReversal(keras.layers.Layer):
    """Identity on the forward pass; multiplies the gradient by ``-weight`` on the backward pass.

    ``weight`` lives in a non-trainable variable (``reversal_weight``), so a schedule can change it
    during training without retracing (see :func:`reversal_schedule` and
    :class:`DomainAdaptationModel`, which assigns it every step). Registered as
    ``tlkeras>GradientReversal``, so models holding it save and load in Keras' safe mode.

    Args:
        weight: the initial reversal weight (lambda); 0 lets no gradient through.
    """

    def __init__(self, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_weight = float(weight)

    def build(self, input_shape):
        self.reversal_weight = self.add_weight(
            name="reversal_weight", shape=(), dtype="float32",
            initializer=keras.initializers.Constant(self.initial_weight), trainable=False,
        )
        super().build(input_shape)

    def set_weight(self, value: float) -> None:
        """Sets the reversal weight (side effect: assigns the layer's variable)."""
        if not self.built:
            self.initial_weight = float(value)
        else:
            self.reversal_weight.assign(float(value))

    def call(self, inputs):
        weight = tf.convert_to_tensor(self.reversal_weight)

        @tf.custom_gradient
        def reverse(x, w):
            def grad(dy):
                # The weight itself gets no gradient: it is a schedule, not a parameter.
                return -tf.cast(w, dy.dtype) * dy, tf.zeros_like(w)

            return tf.identity(x), grad

        return reverse(inputs, weight)

    def get_config(self):
        config = super().get_config()
        config["weight"] = self.initial_weight
        return config


def reversal_schedule(progress, max_weight: float = 1.0, gamma: float = 10.0):
    """DANN's reversal weight at ``progress`` in [0, 1]: ``max_weight * (2 / (1 + exp(-gamma p)) - 1)``.

    Works on Python floats, NumPy arrays and tensors; 0 at the start, ~``max_weight`` at the end.
    """
    if isinstance(progress, (tf.Tensor, tf.Variable)):
        p = tf.clip_by_value(tf.cast(progress, tf.float32), 0.0, 1.0)
        return max_weight * (2.0 / (1.0 + tf.exp(-gamma * p)) - 1.0)
    p = np.clip(np.asarray(progress, dtype=np.float64), 0.0, 1.0)
    value = max_weight * (2.0 / (1.0 + np.exp(-gamma * p)) - 1.0)
    return float(value) if value.ndim == 0 else value


def _pairwise_sq_distances(a, b):
    aa = tf.reduce_sum(tf.square(a), axis=1, keepdims=True)
    bb = tf.reduce_sum(tf.square(b), axis=1, keepdims=True)
    return tf.maximum(aa - 2.0 * tf.matmul(a, b, transpose_b=True) + tf.transpose(bb), 0.0)


def gaussian_mmd(x, y, scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0), bandwidth=None):
    """Squared MMD between samples ``x`` (n x d) and ``y`` (m x d) under a mix of Gaussian kernels.

    ``k(a, b) = mean_s exp(-|a - b|^2 / (s * bandwidth))``. ``bandwidth`` defaults to the mean
    squared distance between all points of both samples (the DAN heuristic), held constant for the
    gradient. The biased (V-statistic) estimate is used: it is never negative and is exactly 0 when
    ``x`` and ``y`` are the same sample.

    Returns:
        A float32 scalar tensor.
    """
    x = tf.cast(tf.convert_to_tensor(x), tf.float32)
    y = tf.cast(tf.convert_to_tensor(y), tf.float32)
    n = tf.shape(x)[0]
    joint = tf.concat([x, y], axis=0)
    d2 = _pairwise_sq_distances(joint, joint)
    if bandwidth is None:
        total = tf.cast(tf.shape(joint)[0], tf.float32)
        bandwidth = tf.stop_gradient(tf.reduce_sum(d2) / tf.maximum(total * total - total, 1.0))
    bandwidth = tf.maximum(tf.cast(bandwidth, tf.float32), 1e-8)
    kernel = tf.add_n([tf.exp(-d2 / (float(s) * bandwidth)) for s in scales]) / float(len(scales))
    kxx = tf.reduce_mean(kernel[:n, :n])
    kyy = tf.reduce_mean(kernel[n:, n:])
    kxy = tf.reduce_mean(kernel[:n, n:])
    return tf.maximum(kxx + kyy - 2.0 * kxy, 0.0)


def adaptation_feature_layer(model) -> str:
    """Name of the layer whose output is aligned: the last hidden head layer, else the pooled features."""
    hidden = [l.name for l in model.layers if l.name.startswith("head_hidden_") and "dropout" not in l.name]
    return hidden[-1] if hidden else feature_layer_name(model)


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
        import csv

        with open(source, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
        if rows and "path" not in rows[0]:
            raise TLKerasError(f"CSV {source} needs a 'path' column listing the unlabelled images")
        return [(source.parent / r["path"]).resolve() if not os.path.isabs(r["path"]) else Path(r["path"]) for r in rows]
    raise TLKerasError(f"{source} is neither a folder of images nor a .csv file of paths")


def load_unlabeled(source, image_size: int, *, what: str = "unlabeled", on_corrupt: str = "skip") -> np.ndarray:
    """Loads unlabelled images as a uint8 ``N x S x S x 3`` array.

    Args:
        source: a folder (every image below it, any depth; subfolder names are ignored), a CSV
            file with a ``path`` column, a :class:`~tlkeras.data.Split` or an array of images.
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
    if config.model.head != "softmax":
        raise TLKerasError(
            f"the unlabelled-data techniques need single-label classes (model.head softmax), got {config.model.head}"
        )
    if config.name and (Path(config.output_dir) / config.name).exists():
        raise TLKerasError(f"{Path(config.output_dir) / config.name} already exists; choose another --name or remove it")
    keras.utils.set_random_seed(config.seed)
    size = check_model_config(config.model, data.image_size if data is not None else config.data.image_size)
    images = load_unlabeled(unlabeled, size, what=what, on_corrupt=config.data.on_corrupt)
    if data is None:
        data = load_data(config.data, size, config.model.head, config.seed)
    elif data.head != "softmax":
        raise TLKerasError(f"the data is labelled for a {data.head} head; these techniques need softmax labels")
    config.data.image_size = size
    return data, size, images


def merge_history(into: dict[str, list], part: dict[str, list] | Any, phase: int, **columns) -> None:
    """Appends a Keras History (or a history dict) to ``into``, labelling rows with ``phase``.

    Keeps every column the same length (missing values are None), like ``history.json`` of
    ``tlkeras.train``. Extra ``columns`` (e.g. ``round=2``) are constant for the appended rows.
    """
    logs = part.history if hasattr(part, "history") else dict(part or {})
    phases = logs.pop("phase", None)
    rows = len(next(iter(logs.values()))) if logs else 0
    into.setdefault("phase", [])
    start = len(into["phase"])
    for key, series in logs.items():
        if key == "lr":
            continue
        into.setdefault(key, [None] * start)
        into[key].extend(None if v is None else float(v) for v in series)
    into["phase"].extend(phases if phases is not None else [phase] * rows)
    for key, value in columns.items():
        into.setdefault(key, [None] * start)
        into[key].extend([value] * rows)
    for series in into.values():
        series.extend([None] * (len(into["phase"]) - len(series)))


def warm_up_head(model, data: DataBundle, config: RunConfig) -> tuple[dict, dict]:
    """Phase 1 only: trains the head on the frozen backbone with the labels (feature cache and all).

    Side effects: changes the head's weights; leaves the model compiled.
    """
    warm = copy.deepcopy(config)
    warm.train.phase2_epochs = 0
    return fit_two_phase(model, data, warm)


def open_backbone(model, config: RunConfig, unfreeze: str | None = None) -> list[str]:
    """Unfreezes the top of the backbone for a technique's main phase (BatchNorm stays frozen
    for pretrained weights). Returns the opened layers. Side effect: ``trainable`` flags."""
    spec = unfreeze if unfreeze is not None else config.train.unfreeze
    if spec == "none":
        freeze_backbone(model)
        return []
    pretrained = str(config.model.weights).lower() != "none"
    return unfreeze_backbone(model, config.model.backbone, spec, keep_batchnorm_frozen=pretrained)


def make_optimizer(config: RunConfig, learning_rate: float, total_steps: int):
    """The optimizer of a technique's main phase: ``train.optimizer`` with ``train.schedule``."""
    from tlkeras import training

    lr = training.learning_rate_schedule(learning_rate, config.train.schedule, total_steps)
    return training.make_optimizer(config.train.optimizer, lr, config.train.weight_decay)


def compile_trainer(trainer, optimizer) -> None:
    """Compiles a custom-``train_step`` model and creates its optimizer's slots up front.

    Creating every variable before the first step lets ``fit`` trace its train function once
    instead of twice (a tf.function that creates variables on its first call is traced again).
    """
    trainer.compile(optimizer=optimizer)
    optimizer.build(trainer.trainable_variables)


def unlabeled_dataset(x: np.ndarray, batch_size: int, seed: int, augment: str = "off"):
    """An endless, shuffled tf.data pipeline of float32 batches of ``x`` (optionally augmented)."""
    ds = (
        tf.data.Dataset.from_tensor_slices(x)
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=len(x) >= batch_size)
        .map(lambda b: tf.cast(b, tf.float32), num_parallel_calls=tf.data.AUTOTUNE)
    )
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
    from tlkeras.training import _versions  # the same version record as tlkeras.train

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
        "versions": _versions(),
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


@dataclass
class DomainAdaptationOptions:
    """Settings of DANN / MMD adaptation (the rest comes from the RunConfig).

    Attributes:
        method: ``dann`` (gradient reversal and a domain discriminator), ``mmd`` (multi-kernel
            Gaussian MMD between source and target features) or ``source_only`` (the same
            training without an alignment term: the baseline).
        epochs: adaptation epochs after the head warm-up (None: ``train.phase2_epochs``); one
            epoch is one pass over the larger of the source and target sets.
        weight: the largest weight of the alignment loss (DANN: the reversal weight lambda);
            None: 0.3 for DANN, 3.0 for MMD (the better of the values tried on flowers5, see
            benchmarks/unlabeled.md).
        gamma: steepness of the ramp ``2 / (1 + exp(-gamma * progress)) - 1`` of the weight.
        discriminator_units: hidden layer sizes of the DANN domain discriminator.
        discriminator_dropout: dropout in the discriminator.
        discriminator_lr_factor: the discriminator's learning rate is the adaptation learning
            rate times this (it gets its own optimizer). A discriminator that learns faster than
            the pretrained backbone it plays against keeps the adversarial game stable; at 1 the
            backbone overpowers it and the features degrade.
        kernel_scales: MMD kernel bandwidths as multiples of the mean squared distance.
        learning_rate: learning rate of the adaptation phase (None: ``phase1_lr * phase2_lr_factor``).
        unfreeze: what the adaptation phase trains (None: ``train.unfreeze``).
    """

    method: str = "dann"
    epochs: int | None = None
    weight: float | None = None
    gamma: float = 10.0
    discriminator_units: list[int] = field(default_factory=lambda: [256])
    discriminator_dropout: float = 0.25
    discriminator_lr_factor: float = 10.0
    kernel_scales: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    learning_rate: float | None = None
    unfreeze: str | None = None

    def resolved_weight(self) -> float:
        """The alignment weight used: ``weight``, or the method's default."""
        if self.weight is not None:
            return float(self.weight)
        return {"dann": 0.3, "mmd": 3.0}.get(self.method, 0.0)

    def validate(self) -> "DomainAdaptationOptions":
        if self.method not in ("dann", "mmd", "source_only"):
            raise TLKerasError(f"method={self.method!r} is not a domain adaptation method; choose dann, mmd or source_only")
        if self.epochs is not None and self.epochs < 1:
            raise TLKerasError(f"adaptation epochs must be >= 1, got {self.epochs}")
        if self.weight is not None and self.weight < 0:
            raise TLKerasError(f"the alignment weight must be >= 0, got {self.weight}")
        if self.gamma <= 0:
            raise TLKerasError(f"gamma must be > 0, got {self.gamma}")
        if self.discriminator_lr_factor <= 0:
            raise TLKerasError(f"discriminator_lr_factor must be > 0, got {self.discriminator_lr_factor}")
        if not 0.0 <= self.discriminator_dropout < 1.0:
            raise TLKerasError(f"discriminator_dropout must be in [0, 1), got {self.discriminator_dropout}")
        if any(int(u) < 1 for u in self.discriminator_units):
            raise TLKerasError(f"discriminator_units must be positive, got {self.discriminator_units}")
        if not self.kernel_scales or any(s <= 0 for s in self.kernel_scales):
            raise TLKerasError(f"kernel_scales must be positive numbers, got {self.kernel_scales}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise TLKerasError(f"learning_rate must be > 0, got {self.learning_rate}")
        return self


class DomainAdaptationModel(keras.Model):
    """Trains ``classifier`` on labelled source batches while aligning source and target features.

    Feed it a dataset of ``((source_images, source_onehot), target_images)``. Each step runs both
    batches through the classifier in one pass, computes the cross-entropy on the source part and
    the alignment loss (DANN's domain cross-entropy behind a :class:`GradientReversal` layer, or
    the MMD), and applies the gradients. The alignment weight follows :func:`reversal_schedule`
    over ``total_steps`` optimizer steps. With :meth:`set_discriminator_optimizer`, the
    discriminator's variables get their own optimizer (e.g. a higher learning rate). Validation batches ``(images, onehot)`` report the
    classifier's loss and accuracy.

    The classifier's layers are shared, not copied: training this model trains ``classifier``,
    which is what gets saved. The discriminator is thrown away after training.
    """

    def __init__(self, classifier, options: DomainAdaptationOptions, total_steps: int, label_smoothing: float = 0.0, **kwargs):
        super().__init__(name=f"{options.method}_trainer", **kwargs)
        options.validate()
        self.classifier = classifier
        self.method = options.method
        self.max_weight = float(options.resolved_weight())
        self.gamma = float(options.gamma)
        self.kernel_scales = [float(s) for s in options.kernel_scales]
        self.total_steps = float(max(1, total_steps))
        features = classifier.get_layer(adaptation_feature_layer(classifier)).output
        self.dual = keras.Model(classifier.inputs, [features, classifier.output], name="features_and_outputs")
        if self.method == "dann":
            self.reversal = GradientReversal(0.0, name="gradient_reversal")
            self.reversal.build(features.shape)  # creates the weight variable the steps assign
            layers = []
            for i, units in enumerate(options.discriminator_units):
                layers.append(keras.layers.Dense(int(units), activation="relu", name=f"domain_hidden_{i}"))
                if options.discriminator_dropout > 0:
                    layers.append(keras.layers.Dropout(options.discriminator_dropout, name=f"domain_dropout_{i}"))
            layers.append(keras.layers.Dense(1, name="domain_logit"))
            self.discriminator = keras.Sequential(layers, name="domain_discriminator")
            self.discriminator.build(features.shape)
        self.discriminator_optimizer = None
        self.class_loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        self.domain_loss = keras.losses.BinaryCrossentropy(from_logits=True)
        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in ("loss", "class_loss", "align_loss", "align_weight")
        }
        self.accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
        self.domain_accuracy = keras.metrics.BinaryAccuracy(name="domain_accuracy", threshold=0.0)

    @property
    def metrics(self):
        found = list(self.trackers.values()) + [self.accuracy]
        return found + ([self.domain_accuracy] if self.method == "dann" else [])

    def call(self, inputs, training=None):
        return self.classifier(inputs, training=training)

    def set_discriminator_optimizer(self, optimizer) -> None:
        """Trains the discriminator with ``optimizer`` (call after ``compile``; DANN only).

        Side effect: creates the optimizer's slot variables for the discriminator.
        """
        if self.method != "dann":
            raise TLKerasError("only DANN has a discriminator")
        optimizer.build(self.discriminator.trainable_variables)
        self.discriminator_optimizer = optimizer

    def current_weight(self):
        """The alignment weight of the next step (a float32 tensor)."""
        progress = tf.cast(self.optimizer.iterations, tf.float32) / self.total_steps
        return reversal_schedule(progress, self.max_weight, self.gamma)

    def train_step(self, data):
        (xs, ys), xt = data
        ns = tf.shape(xs)[0]
        nt = tf.shape(xt)[0]
        weight = self.current_weight()
        with tf.GradientTape() as tape:
            features, outputs = self.dual(tf.concat([xs, xt], axis=0), training=True)
            features = tf.cast(features, tf.float32)
            class_loss = self.class_loss(ys, outputs[:ns])
            if self.method == "dann":
                self.reversal.reversal_weight.assign(weight)
                logits = self.discriminator(self.reversal(features), training=True)
                domains = tf.concat([tf.zeros((ns, 1)), tf.ones((nt, 1))], axis=0)
                # The discriminator learns from this loss at full strength; the backbone sees it
                # through the reversal layer, i.e. with the sign flipped and scaled by ``weight``.
                align_loss = self.domain_loss(domains, logits)
                total = class_loss + align_loss
            elif self.method == "mmd":
                align_loss = gaussian_mmd(features[:ns], features[ns:], self.kernel_scales)
                total = class_loss + weight * align_loss
            else:
                align_loss = tf.constant(0.0)
                total = class_loss
            if self.classifier.losses:
                total += tf.add_n(self.classifier.losses)
        variables = self.trainable_variables
        grads = tape.gradient(total, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if self.discriminator_optimizer is not None:
            own = {id(v) for v in self.discriminator.trainable_variables}
            self.discriminator_optimizer.apply_gradients([(g, v) for g, v in pairs if id(v) in own])
            pairs = [(g, v) for g, v in pairs if id(v) not in own]
        self.optimizer.apply_gradients(pairs)
        self.trackers["loss"].update_state(total)
        self.trackers["class_loss"].update_state(class_loss)
        self.trackers["align_loss"].update_state(align_loss)
        self.trackers["align_weight"].update_state(weight)
        self.accuracy.update_state(ys, outputs[:ns])
        if self.method == "dann":
            self.domain_accuracy.update_state(domains, logits)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data[0], data[1]
        outputs = self.classifier(x, training=False)
        loss = self.class_loss(y, outputs)
        self.trackers["loss"].update_state(loss)
        self.trackers["class_loss"].update_state(loss)
        self.accuracy.update_state(y, outputs)
        return {"loss": self.trackers["loss"].result(), "accuracy": self.accuracy.result()}


def _has_trainable_features(model) -> bool:
    if any(l.name.startswith("head_hidden_") and l.trainable_weights for l in model.layers):
        return True
    return any(l.trainable and l.trainable_weights for l in backbone_layers(model))


def _target_splits(target_test, data: DataBundle, size: int) -> dict[str, Split]:
    if target_test is None:
        return {}
    return {"target": load_labelled_split(target_test, size, data.class_names)}


def adapt_domain(
    config: RunConfig,
    target,
    options: DomainAdaptationOptions | None = None,
    *,
    data: DataBundle | None = None,
    target_test=None,
    write: bool = True,
    callbacks: list | None = None,
) -> TrainResult:
    """DANN or MMD domain adaptation from labelled source data to unlabelled target images.

    Phase 1 trains the head on the frozen backbone with the source labels; the adaptation phase
    unfreezes ``options.unfreeze`` (default ``train.unfreeze``) and trains on source labels plus
    the alignment loss for ``options.epochs`` epochs. The last weights are kept: without target
    labels, source validation accuracy says little about the target.

    Args:
        config: the run's settings; ``config.data.source`` is the labelled source data.
        target: unlabelled target images: a folder, a CSV of paths, or an array at the model's size.
        options: the technique and its settings (default: DANN).
        data: the labelled source data as a DataBundle (default: load ``config.data.source``).
        target_test: optional labelled target images (a Split, an ``(x, y)`` pair or a folder of
            class folders) used only to report ``metrics["target"]``.
        write: write the run directory.
        callbacks: extra Keras callbacks for the adaptation phase.

    Returns:
        A TrainResult; ``metrics`` has ``val`` and ``final`` (source) and ``target`` (when given).

    Raises:
        TLKerasError: no target images, target images of another size, nothing trainable to
            align (``unfreeze none`` and no hidden head layer), a non-softmax head.

    Side effects: seeds the random generators; writes ``<output_dir>/<name>/`` when ``write``.
    """
    options = (options or DomainAdaptationOptions()).validate()
    t0 = time.perf_counter()
    data, size, xt = prepare_data(config, data, target, what="target")
    targets = _target_splits(target_test, data, size)
    timings: dict[str, float] = {"data": time.perf_counter() - t0}
    model = build_model(config.model, data.num_outputs, size)
    history: dict[str, list] = {}

    start = time.perf_counter()
    if config.train.phase1_epochs > 0:
        merge_history(history, warm_up_head(model, data, config)[0], 1)
    timings["phase1"] = time.perf_counter() - start

    start = time.perf_counter()
    opened = open_backbone(model, config, options.unfreeze)
    if options.method != "source_only" and not _has_trainable_features(model):
        raise TLKerasError(
            "domain alignment needs trainable feature layers: set train.unfreeze to blocks:N or layers:N, "
            "or add model.hidden_units"
        )
    bs = config.data.batch_size
    epochs = options.epochs or max(1, config.train.phase2_epochs)
    steps = _count_steps(max(len(data.train), len(xt)), bs)
    n = data.num_outputs
    source_ds = make_dataset(data.train, head="softmax", num_outputs=n, batch_size=bs, shuffle=True,
                             augment=config.data.augment, seed=config.seed).repeat()
    target_ds = unlabeled_dataset(xt, bs, config.seed, config.data.augment)
    train_ds = tf.data.Dataset.zip((source_ds, target_ds)).prefetch(tf.data.AUTOTUNE)
    val_ds = make_dataset(data.val, head="softmax", num_outputs=n, batch_size=bs)
    trainer = DomainAdaptationModel(model, options, epochs * steps, label_smoothing=config.train.label_smoothing)
    lr = options.learning_rate or config.train.phase1_lr * config.train.phase2_lr_factor
    compile_trainer(trainer, make_optimizer(config, lr, epochs * steps))
    if options.method == "dann":
        trainer.set_discriminator_optimizer(make_optimizer(config, lr * options.discriminator_lr_factor, epochs * steps))
    h = trainer.fit(train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps,
                    callbacks=list(callbacks or []), verbose=config.train.verbose)
    merge_history(history, h, 2)
    timings["adaptation"] = timings["phase2"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - t0

    return write_unlabeled_run(
        config, data, model, history, method=options.method, options=options, timings=timings,
        unlabeled_count=len(xt), unlabeled_source=target, extra_splits=targets,
        extra_info={"trainable_backbone_layers": opened}, write=write,
    )


# ---------------------------------------------------------------------------------------------
# Importance weighting


@dataclass
class ImportanceWeightingOptions:
    """Settings of importance weighting by a domain classifier.

    Attributes:
        C: inverse regularization strength of the logistic-regression domain classifier.
        folds: cross-fitting folds: each source image is weighted by a classifier that did not
            see it, so the weights do not just reflect memorized images.
        max_weight: weights are clipped to [1 / max_weight, max_weight] times their mean, which
            bounds the variance a few extreme weights would add.
    """

    C: float = 0.1
    folds: int = 5
    max_weight: float = 10.0

    def validate(self) -> "ImportanceWeightingOptions":
        if self.C <= 0:
            raise TLKerasError(f"C must be > 0, got {self.C}")
        if self.folds < 2:
            raise TLKerasError(f"folds must be >= 2, got {self.folds}")
        if self.max_weight <= 1:
            raise TLKerasError(f"max_weight must be > 1, got {self.max_weight}")
        return self


def importance_weights(source_features: np.ndarray, target_features: np.ndarray, options: ImportanceWeightingOptions | None = None, seed: int = 0) -> tuple[np.ndarray, dict[str, float]]:
    """Per-source-sample weights ``p(target|x) / p(source|x) * n_source / n_target``.

    A standardized logistic regression separates source from target features; its cross-fitted
    probabilities give the density ratio. Weights are normalized to mean 1 and clipped by
    ``options.max_weight``.

    Returns:
        (weights, info): weights of shape (n_source,), and ``domain_auc`` (0.5: the domains look
        alike, 1.0: perfectly separable), ``effective_sample_size`` and the weights' range.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    options = (options or ImportanceWeightingOptions()).validate()
    fs = np.asarray(source_features, np.float64).reshape(len(source_features), -1)
    ft = np.asarray(target_features, np.float64).reshape(len(target_features), -1)
    ns, nt = len(fs), len(ft)
    if ns < 2 or nt < 2:
        raise TLKerasError("importance weighting needs at least 2 source and 2 target images")
    x = np.concatenate([fs, ft])
    d = np.concatenate([np.zeros(ns, np.int64), np.ones(nt, np.int64)])
    folds = StratifiedKFold(n_splits=min(options.folds, ns, nt), shuffle=True, random_state=seed)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=options.C, max_iter=2000))
    p = cross_val_predict(classifier, x, d, cv=folds, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(d, p))
    ps = np.clip(p[:ns], 1e-6, 1 - 1e-6)
    w = ps / (1.0 - ps) * (ns / nt)
    w = w / w.mean()
    w = np.clip(w, 1.0 / options.max_weight, options.max_weight)
    w = w / w.mean()
    info = {
        "domain_auc": auc,
        "effective_sample_size": float(w.sum() ** 2 / np.sum(w ** 2)),
        "weight_min": float(w.min()),
        "weight_max": float(w.max()),
    }
    return w.astype(np.float32), info


def _weighted_fit(model, data: DataBundle, config: RunConfig, weights: np.ndarray, source_features: np.ndarray, callbacks: list) -> tuple[dict, dict]:
    """Two-phase training where each source image's loss is multiplied by its weight."""
    tc, dc = config.train, config.data
    n, bs = data.num_outputs, dc.batch_size
    history: dict[str, list] = {}
    timings: dict[str, float] = {}
    targets = encode_labels(data.train.y, "softmax", n)
    val_targets = encode_labels(data.val.y, "softmax", n)

    def stopper():
        patience = tc.early_stopping_patience if tc.early_stopping_patience > 0 else 10**9
        return keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)

    start = time.perf_counter()
    if tc.phase1_epochs > 0:
        # Phase 1 always trains the head on cached features (the frozen backbone never changes).
        freeze_backbone(model)
        head = head_model(model)
        steps = _count_steps(len(source_features), bs)
        head.compile(optimizer=make_optimizer(config, tc.phase1_lr, steps * tc.phase1_epochs),
                     loss=keras.losses.CategoricalCrossentropy(label_smoothing=tc.label_smoothing),
                     metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")], weighted_metrics=[])
        val_features = predict(feature_extractor(model), data.val.x, bs)
        ds = (tf.data.Dataset.from_tensor_slices((source_features, targets, weights))
              .shuffle(len(targets), seed=config.seed, reshuffle_each_iteration=True).batch(bs))
        h = head.fit(ds, validation_data=(val_features, val_targets), epochs=tc.phase1_epochs,
                     callbacks=[stopper(), *callbacks], verbose=tc.verbose)
        merge_history(history, h, 1)
    timings["phase1"] = time.perf_counter() - start

    start = time.perf_counter()
    opened: list[str] = []
    if tc.phase2_epochs > 0 and tc.unfreeze != "none":
        opened = open_backbone(model, config)
        steps = _count_steps(len(data.train), bs)
        model.compile(optimizer=make_optimizer(config, tc.phase1_lr * tc.phase2_lr_factor, steps * tc.phase2_epochs),
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=tc.label_smoothing),
                      metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
        aug = augmenter(dc.augment, config.seed)
        ds = (tf.data.Dataset.from_tensor_slices((data.train.x, targets, weights))
              .shuffle(len(targets), seed=config.seed, reshuffle_each_iteration=True).batch(bs)
              .map(lambda x, y, w: (tf.cast(x, tf.float32), y, w), num_parallel_calls=tf.data.AUTOTUNE))
        if aug is not None:
            ds = ds.map(lambda x, y, w: (tf.clip_by_value(aug(x, training=True), 0.0, 255.0), y, w),
                        num_parallel_calls=tf.data.AUTOTUNE)
        val_ds = make_dataset(data.val, head="softmax", num_outputs=n, batch_size=bs)
        h = model.fit(ds.prefetch(tf.data.AUTOTUNE), validation_data=val_ds, epochs=tc.phase2_epochs,
                      callbacks=[stopper(), *callbacks], verbose=tc.verbose)
        merge_history(history, h, 2)
    timings["phase2"] = time.perf_counter() - start
    timings["phase2_trainable_layers"] = len(opened)
    return history, timings


def train_importance_weighted(
    config: RunConfig,
    target,
    options: ImportanceWeightingOptions | None = None,
    *,
    data: DataBundle | None = None,
    target_test=None,
    write: bool = True,
    callbacks: list | None = None,
) -> TrainResult:
    """Two-phase training on the source data with each image weighted by how target-like it is.

    The weights come from :func:`importance_weights` on the pretrained (frozen) backbone's pooled
    features of the source training images and the target images; ``metrics["importance"]``
    records the domain classifier's AUC and the effective sample size. An AUC above 0.95 warns:
    domains that hardly overlap cannot be matched by re-weighting (use DANN or MMD then). Early stopping uses the
    (unweighted) source validation loss, as in ``tlkeras.train``.

    Args and Raises: as :func:`adapt_domain`.

    Side effects: seeds the random generators; writes ``<output_dir>/<name>/`` when ``write``.
    """
    options = (options or ImportanceWeightingOptions()).validate()
    t0 = time.perf_counter()
    data, size, xt = prepare_data(config, data, target, what="target")
    targets = _target_splits(target_test, data, size)
    timings: dict[str, float] = {"data": time.perf_counter() - t0}
    model = build_model(config.model, data.num_outputs, size)
    start = time.perf_counter()
    extractor = feature_extractor(model)
    fs = predict(extractor, data.train.x, config.data.batch_size)
    ft = predict(extractor, xt, config.data.batch_size)
    weights, info = importance_weights(fs, ft, options, seed=config.seed)
    if info["domain_auc"] > 0.95:
        import warnings

        warnings.warn(
            f"the domain classifier separates source from target almost perfectly (AUC {info['domain_auc']:.3f}, "
            f"effective sample size {info['effective_sample_size']:.0f} of {len(fs)}); importance weights cannot "
            f"correct a shift the domains do not overlap in; prefer dann or mmd",
            stacklevel=2,
        )
    timings["weights"] = time.perf_counter() - start
    history, fit_timings = _weighted_fit(model, data, config, weights, fs, list(callbacks or []))
    timings.update(fit_timings)
    timings["total"] = time.perf_counter() - t0
    return write_unlabeled_run(
        config, data, model, history, method="importance", options=options, timings=timings,
        unlabeled_count=len(xt), unlabeled_source=target, extra_metrics={"importance": info},
        extra_splits=targets, write=write,
    )


# ---------------------------------------------------------------------------------------------
# One entry point for all techniques


METHODS = ("dann", "mmd", "importance", "pseudo_label", "fixmatch", "simclr")


def train_with_unlabeled(config: RunConfig, method: str, unlabeled, options=None, *, data: DataBundle | None = None, target_test=None, write: bool = True) -> TrainResult:
    """Runs one unlabelled-data technique by name; what ``python -m tlkeras.adapt`` calls.

    Args:
        config: the run's settings (labelled data, backbone, head, training).
        method: one of :data:`METHODS` (``pseudo-label`` is accepted for ``pseudo_label``).
        unlabeled: the unlabelled (for dann/mmd/importance: target-domain) images.
        options: the technique's options dataclass (default: its defaults).
        data: a ready labelled DataBundle (default: load ``config.data.source``).
        target_test: labelled target images to report on (domain adaptation only).
        write: write the run directory.

    Raises:
        TLKerasError: an unknown method, options of the wrong type, or the technique's own errors.
    """
    method = str(method).replace("-", "_").lower()
    if method not in METHODS:
        raise TLKerasError(f"unknown technique {method!r}; choose one of {', '.join(METHODS)}")
    if target_test is not None and method not in ("dann", "mmd", "importance"):
        raise TLKerasError("a labelled target test set only applies to dann, mmd and importance")
    from tlkeras import selfsupervised, semisupervised

    kinds = {
        "dann": DomainAdaptationOptions, "mmd": DomainAdaptationOptions, "importance": ImportanceWeightingOptions,
        "pseudo_label": semisupervised.PseudoLabelOptions, "fixmatch": semisupervised.FixMatchOptions,
        "simclr": selfsupervised.SimCLROptions,
    }
    if options is None:
        options = kinds[method]()
    if not isinstance(options, kinds[method]):
        raise TLKerasError(f"{method} takes {kinds[method].__name__}, got {type(options).__name__}")
    if method in ("dann", "mmd"):
        options = dataclasses.replace(options, method=method)
        return adapt_domain(config, unlabeled, options, data=data, target_test=target_test, write=write)
    if method == "importance":
        return train_importance_weighted(config, unlabeled, options, data=data, target_test=target_test, write=write)
    if method == "pseudo_label":
        return semisupervised.self_train(config, unlabeled, options, data=data, write=write)
    if method == "fixmatch":
        return semisupervised.train_fixmatch(config, unlabeled, options, data=data, write=write)
    return selfsupervised.train_simclr(config, unlabeled, options, data=data, write=write)
