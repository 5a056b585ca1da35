"""Configuration dataclasses shared by the Python API, the CLIs and YAML files.

A run is described by one :class:`RunConfig` (data, model, training). The CLIs fill it from flags or
from a YAML file (``--config run.yaml``); every run directory stores the full config it used as
``config.yaml``, so ``python -m tlkeras.train --config runs/<name>/config.yaml`` replays it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tlkeras.errors import ConfigError, TLKerasError  # noqa: F401  (TLKerasError: documented base)

__all__ = [
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "RunConfig",
    "load_config",
    "save_config",
    "config_from_dict",
    "config_to_dict",
    "read_yaml",
]

AUGMENT_PRESETS = ("off", "light", "strong")
HEADS = ("softmax", "sigmoid", "regression")
# The classification family: each task and the ``head`` value that named it before tasks existed.
# ``head`` stays the stored form for these three (run folders and YAML files of every release load);
# ``task`` names the others (detection, segmentation), which tlkeras.core.tasks registers.
HEAD_OF_TASK = {"classification": "softmax", "multilabel": "sigmoid", "regression": "regression"}
TASK_OF_HEAD = {head: task for task, head in HEAD_OF_TASK.items()}
MODALITIES = ("auto", "image", "text")
MAX_SEQUENCE_LENGTH = 4096  # tokens; BERT-family encoders stop at 512
MAX_VOCABULARY = 1_000_000

# Limits that keep a typo (or a hostile config) from asking for terabytes of memory.
MAX_IMAGE_SIZE = 2048  # pixels per side; pretrained backbones use 224-600
MAX_BATCH_SIZE = 65536
# From here DataConfig.stream "auto" decodes in the background: about 20 s of decoding at the
# 500 images/s this pipeline reaches on 2 cores (BENCHMARKS.md), worth not waiting for.
STREAM_AUTO_MIN = 10_000
MAX_HIDDEN_UNITS = 65536
MAX_EPOCHS = 100_000
MAX_SEED = 2**32 - 1  # NumPy and TensorFlow seeds are unsigned 32-bit
MAX_YAML_BYTES = 1 << 20  # a config or search-space file is a few hundred bytes
MAX_YAML_NODES = 100_000  # after expanding aliases: stops "billion laughs" files


def _choice(value: str, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(allowed)}")


def _number(value, key: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
            high_open: bool = False, hint: str = "") -> None:
    """Checks that ``value`` is a finite number in the given range (NaN and inf never pass)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
        hi = "" if high is None else (f"< {high:g}" if high_open else f"<= {high:g}")
        rule = " and ".join(r for r in (lo, hi) if r) or "a finite number"
        raise ConfigError(f"{key} must be a finite number {rule}{hint}, got {value!r}".replace("number a finite number", "number"))


@dataclass
class DataConfig:
    """Where the images come from and how they are fed.

    Attributes:
        source: an image folder (one subfolder per class, optionally under train/ val/ test/),
            a CSV file of ``path,label`` rows, ``tfds:<name>`` for a cached TensorFlow Datasets
            set, or None for the embedded offline demo.
        image_size: square input size in pixels; None uses the backbone's default size.
        batch_size: images per batch (None: the backbone family's recipe default,
            ``tlkeras.core.backbones.Recipe``).
        val_fraction: share of the images held out for validation when the source has no split.
        test_fraction: share held out for testing when the source has no split.
        augment: augmentation preset: ``off``, ``light`` (flip, small rotation and zoom) or
            ``strong`` (adds larger rotation/zoom, contrast and translation).
        on_corrupt: ``skip`` unreadable images with a warning and a count, or ``error`` out
            naming the first bad file.
        class_weight: ``auto`` (balanced weights when the largest class is 1.5x the smallest or
            more), ``balanced`` or ``none``.
        label_separator: separator of several labels in one CSV cell (multi-label heads).
        split_seed: seed of the train/val/test split (None: the run's ``seed``). Fixing it keeps
            the held-out images the same while the training seed varies; a distilled student
            gets its teacher's, so it never tests on images the teacher trained on.
        cache_memory: memory for the decoded images, e.g. ``2GB``, ``512MB`` or ``0`` (``auto``:
            a quarter of the available RAM, at most 1 GiB); larger sets go to a disk cache.
        cache_dir: folder of the disk cache (None: ``$TLKERAS_CACHE`` or ``~/.cache/tlkeras``).
        stream: decode the images in the background and start training on the first ones
            (``on``), decode them all first (``off``), or ``auto``: in the background from
            :data:`STREAM_AUTO_MIN` images, when ``on_corrupt`` is ``skip`` and the source is a
            folder or CSV. The training split then decodes first, in a seeded random order, and
            its first epoch reads the images as they arrive.
        modality: ``image``, ``text`` or ``auto`` (decided from the source: a CSV with a ``path``
            column or a folder of images is image data, a CSV with a text column or a folder of
            ``.txt`` files is text; a source that could be either is refused, naming this flag).
        text_column: the CSV column that holds the texts (text data).
        sequence_length: tokens per text the model reads, start/special tokens included; longer
            texts are truncated and the run counts them (None: the text encoder's default, 128).
        ignore_index: segmentation: a mask id left out of the loss and the metrics (e.g. 255 for
            "void" borders); None: every id is a class.
    """

    source: str | None = None
    image_size: int | None = None
    batch_size: int | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    augment: str = "light"
    on_corrupt: str = "skip"
    class_weight: str = "auto"
    label_separator: str = ";"
    split_seed: int | None = None
    cache_memory: str = "auto"
    cache_dir: str | None = None
    stream: str = "auto"
    modality: str = "auto"
    text_column: str = "text"
    sequence_length: int | None = None
    ignore_index: int | None = None

    def validate(self) -> None:
        _choice(self.augment, AUGMENT_PRESETS, "augment")
        _choice(self.modality, MODALITIES, "modality")
        if self.ignore_index is not None and not 0 <= int(self.ignore_index) <= 65535:
            raise ConfigError(f"ignore_index must be a mask id in [0, 65535], got {self.ignore_index}; e.g. --ignore-index 255")
        if self.sequence_length is not None and not 2 <= self.sequence_length <= MAX_SEQUENCE_LENGTH:
            raise ConfigError(f"sequence_length must be in [2, {MAX_SEQUENCE_LENGTH}] tokens, got {self.sequence_length}; BERT-family encoders take up to 512, e.g. --sequence-length 128")
        if not str(self.text_column).strip():
            raise ConfigError("text_column must name a CSV column, e.g. --text-column text")
        _choice(self.on_corrupt, ("skip", "error"), "on_corrupt")
        _choice(self.stream, ("auto", "on", "off"), "stream")
        if self.stream == "on" and self.on_corrupt == "error":
            # A file found unreadable in the background would stop the epoch mid-way with a
            # pipeline error instead of the one-line error --on-corrupt error promises.
            raise ConfigError("stream on decodes in the background, where an unreadable image cannot stop the run cleanly; pass --on-corrupt skip, or --stream off")
        _choice(self.class_weight, ("auto", "balanced", "none"), "class_weight")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.batch_size is not None and self.batch_size > MAX_BATCH_SIZE:
            raise ConfigError(f"batch_size must be at most {MAX_BATCH_SIZE}, got {self.batch_size}; use 16-256")
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"image_size must be a positive number of pixels, got {self.image_size}")
        if self.image_size is not None and self.image_size > MAX_IMAGE_SIZE:
            raise ConfigError(
                f"image_size {self.image_size} is too large (at most {MAX_IMAGE_SIZE} px); pretrained "
                f"backbones use 224-600 px, so pick e.g. --image-size 224"
            )
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError("val_fraction + test_fraction must leave some images for training")
        if self.split_seed is not None and not 0 <= self.split_seed <= MAX_SEED:
            raise ConfigError(f"split_seed must be in [0, {MAX_SEED}], got {self.split_seed}")
        if self.source is not None and "\0" in str(self.source):
            raise ConfigError("source contains a NUL character; pass a real path")


@dataclass
class ModelConfig:
    """The backbone and the new head.

    Attributes:
        backbone: a registered backbone name (see ``tlkeras.list_backbones()``),
            ``hub:<handle-or-SavedModel-dir>`` for a TF-Hub feature-vector model, or
            ``hf:<folder|zip|package>`` for a Hugging Face BERT-family checkpoint (docs/bert.md).
        weights: ``imagenet`` (Keras' download cache), ``none`` (random init) or a path to a
            weights file made for this backbone.
        alpha: width multiplier for the MobileNet families (None: the family's default, 1.0).
        task: what the model predicts: ``classification``, ``multilabel``, ``regression`` (the
            classification family, stored as ``head``), or a task registered in
            ``tlkeras.core.tasks`` such as ``detection`` or ``segmentation``. None: ``head`` decides.
        head: the classification family's older name for the task, kept as an alias:
            ``softmax`` (classification), ``sigmoid`` (multilabel) or ``regression``.
        dropout: dropout rate before the output layer (None: the family's recipe default).
        hidden_units: sizes of optional hidden Dense layers in the head.
        word_vectors: text, ``word_embedding`` encoder: a pretrained word-vectors file in the
            GloVe / word2vec / fastText text format whose vectors initialize the embedding
            (frozen in phase 1, fine-tuned in phase 2); None: a random initialization.
        preprocess: text, BERT-family encoders: the TF-Hub preprocessing model (handle or local
            SavedModel directory) that pairs with the encoder (None: the registered pairing).
        vocab_size: text, ``word_embedding``: at most this many words, the most frequent of the
            training texts (plus 3 special tokens).
        embedding_dim: text, ``word_embedding``: the embedding width (None: the vectors' width,
            or 64 without vectors).
        ngram_buckets: text, ``word_embedding``: hashed word-bigram buckets averaged with the
            words (fastText-style; computed inside the model from the word ids, so a phone's
            MediaPipe TextClassifier runs it as is); 0 turns bigrams off. None: 100,000, fewer
            with many classes so the bigram table holds at most 2M weights (one per class each).
    """

    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    alpha: float | None = None
    task: str | None = None
    head: str = "softmax"
    dropout: float | None = None
    hidden_units: list[int] = field(default_factory=list)
    word_vectors: str | None = None
    preprocess: str | None = None
    vocab_size: int = 20000
    embedding_dim: int | None = None
    ngram_buckets: int | None = None

    @property
    def task_name(self) -> str:
        """The task this config asks for: ``task`` when set, else the one ``head`` names."""
        return self.task if self.task is not None else TASK_OF_HEAD.get(self.head, self.head)

    def validate(self) -> None:
        """Checks every field; folds a classification-family ``task`` into ``head`` (its stored form).

        Side effects: ``task: multilabel`` becomes ``head: sigmoid`` with ``task`` None, so a config
        written by this release and one written before tasks existed read the same.
        """
        if self.task is not None:
            task = str(self.task).strip().lower()
            if not task.isidentifier():
                raise ConfigError(f"task {self.task!r} is not a task name; e.g. --task classification or --task detection")
            if task in HEAD_OF_TASK:
                self.head, self.task = HEAD_OF_TASK[task], None
            else:
                self.task = task
        if self.task is None:
            _choice(self.head, HEADS, "head")
        if not 1 <= int(self.vocab_size) <= MAX_VOCABULARY:
            raise ConfigError(f"vocab_size must be in [1, {MAX_VOCABULARY}], got {self.vocab_size}; e.g. --vocab-size 20000")
        if self.embedding_dim is not None and not 1 <= int(self.embedding_dim) <= 4096:
            raise ConfigError(f"embedding_dim must be in [1, 4096], got {self.embedding_dim}; e.g. --embedding-dim 64")
        if self.ngram_buckets is not None and not 0 <= int(self.ngram_buckets) <= MAX_VOCABULARY:
            raise ConfigError(f"ngram_buckets must be in [0, {MAX_VOCABULARY}] (0: off), got {self.ngram_buckets}")
        for key in ("word_vectors", "preprocess"):
            value = getattr(self, key)
            if value is not None and (not str(value).strip() or "\0" in str(value)):
                raise ConfigError(f"{key} {value!r} is not a usable path or handle")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if any(int(u) < 1 for u in self.hidden_units):
            raise ConfigError(f"hidden_units must be positive, got {self.hidden_units}")
        if any(int(u) > MAX_HIDDEN_UNITS for u in self.hidden_units) or len(self.hidden_units) > 64:
            raise ConfigError(f"hidden_units asks for too large a head (at most 64 layers of {MAX_HIDDEN_UNITS}); use e.g. --hidden-units 256")
        if self.alpha is not None:
            _number(self.alpha, "alpha", low=0.0, high=4.0, low_open=True, hint=" (MobileNet widths are 0.25-1.4)")


@dataclass
class TrainConfig:
    """Two-phase training: a frozen backbone first, then fine-tuning from the top.

    Attributes:
        phase1_epochs: epochs of head training on the frozen backbone.
        phase1_lr: phase-1 learning rate.
        phase2_epochs: fine-tuning epochs (0 skips phase 2).
        phase2_lr_factor: phase-2 learning rate = phase1_lr * this factor (must be < 1;
            0.01-0.1 is the usual range). None: the backbone family's recipe default
            (``tlkeras.core.backbones.Recipe``; so are ``unfreeze``, ``warmup_epochs``,
            ``batchnorm``, ``data.batch_size`` and ``model.dropout`` when None).
        unfreeze: what phase 2 trains: ``layers:N`` (top N backbone layers), ``blocks:N`` (top N
            whole blocks), ``all`` or ``none``.
        batchnorm: ``frozen`` (BatchNorm layers keep their pretrained statistics and stay frozen
            in phase 2) or ``train``.
        optimizer: ``adam``, ``adamw`` or ``sgd`` (momentum 0.9).
        weight_decay: decoupled weight decay (adamw only).
        schedule: learning-rate schedule per phase: ``cosine`` or ``constant``.
        warmup_epochs: linear warm-up at the start of phase 2 (in epochs).
        select_metric: the validation value that picks the kept model, across both phases (the
            phase-1 model competes with every phase-2 epoch) and for early stopping:
            ``val_loss`` (default) or another logged value such as ``val_accuracy`` (losses are
            minimized, scores maximized).
        find_lr: before training, run a short learning-rate sweep of phase 2 and write
            ``lr_finder.png`` / ``lr_finder.json`` with a suggested phase-2 rate into the run
            directory (the run then uses its own settings).
        label_smoothing: label smoothing of the softmax loss.
        early_stopping_patience: epochs without val-loss improvement before stopping (0: off);
            the best weights are restored either way.
        phase1_solver: how phase 1 fits the head: ``auto`` fits a plain softmax head (no hidden
            layers, cached features) as an L2-regularized logistic regression with scikit-learn's
            L-BFGS, choosing the L2 strength by validation log-loss (the linear-probe-then-fine-tune
            recipe; seconds, and better calibrated than a few epochs of Adam); ``keras`` always
            trains the head with the optimizer for ``phase1_epochs``.
        phase1_augment: augment phase 1 too. Off by default: a linear head gains little from
            augmentation, and without it phase 1 can run on cached features; phase 2 always uses
            the ``augment`` preset.
        feature_cache: ``auto`` (phase 1 trains the head on backbone features computed once
            whenever phase 1 is not augmented, which gives the same model), ``on`` or ``off``.
        feature_cache_views: with ``phase1_augment`` and the cache forced ``on``, the number of
            views of each training image (the original plus augmented copies) whose features are
            computed once.
        mixed_precision: train with the ``mixed_float16`` policy (GPU).
        xla: compile the train step with XLA.
        distribute: ``auto`` (MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy
            with several GPUs, else none), ``none``, ``mirrored`` or ``multiworker``.
        deterministic: make TensorFlow ops deterministic
            (``tf.config.experimental.enable_op_determinism``): same seed, data and machine give
            the same metrics, at some speed cost on GPU. On CPU runs repeat without it too.
        verbose: progress display: 0 silent, 1 Keras progress bar, 2 one line per epoch.
    """

    phase1_epochs: int = 30
    phase1_lr: float = 3e-3
    phase2_epochs: int = 8
    phase2_lr_factor: float | None = None
    unfreeze: str | None = None
    batchnorm: str | None = None
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float | None = None
    select_metric: str = "val_loss"
    find_lr: bool = False
    label_smoothing: float = 0.0
    early_stopping_patience: int = 5
    phase1_solver: str = "auto"
    phase1_augment: bool = False
    feature_cache: str = "auto"
    feature_cache_views: int = 1
    mixed_precision: bool = False
    xla: bool = False
    distribute: str = "auto"
    deterministic: bool = False
    verbose: int = 2

    def validate(self) -> None:
        _choice(self.optimizer, ("adam", "adamw", "sgd"), "optimizer")
        _choice(self.schedule, ("cosine", "constant"), "schedule")
        _choice(self.phase1_solver, ("auto", "keras"), "phase1_solver")
        _choice(self.feature_cache, ("auto", "on", "off"), "feature_cache")
        _choice(self.distribute, ("auto", "none", "mirrored", "multiworker"), "distribute")
        if self.phase1_epochs < 0 or self.phase2_epochs < 0:
            raise ConfigError("phase1_epochs and phase2_epochs must be >= 0")
        if max(self.phase1_epochs, self.phase2_epochs) > MAX_EPOCHS:
            raise ConfigError(f"phase1_epochs and phase2_epochs must be at most {MAX_EPOCHS}; lower them (early stopping ends long runs anyway)")
        _number(self.phase1_lr, "phase1_lr", low=0.0, high=10.0, low_open=True, hint=" (e.g. 0.003)")
        if self.warmup_epochs is not None:
            _number(self.warmup_epochs, "warmup_epochs", low=0.0, high=MAX_EPOCHS, hint=" (epochs of phase 2, 0 turns it off)")
        _number(self.weight_decay, "weight_decay", low=0.0, high=1.0, hint=" (e.g. 0.0001)")
        if self.early_stopping_patience < 0:
            raise ConfigError(f"early_stopping_patience must be >= 0 (0: off), got {self.early_stopping_patience}")
        if self.batchnorm is not None:
            _choice(self.batchnorm, ("frozen", "train"), "batchnorm")
        if not self.select_metric.startswith("val_"):
            raise ConfigError(f"select_metric must name a validation value such as val_loss or val_accuracy, got {self.select_metric!r}")
        if self.phase2_lr_factor is not None and not 0.0 < self.phase2_lr_factor < 1.0:
            raise ConfigError(
                f"phase2_lr_factor must be in (0, 1) so fine-tuning uses a lower learning rate, "
                f"got {self.phase2_lr_factor}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 1 <= self.feature_cache_views <= 64:
            raise ConfigError(f"feature_cache_views must be in [1, 64], got {self.feature_cache_views}")
        if self.unfreeze is not None:
            parse_unfreeze(self.unfreeze)


def parse_unfreeze(spec: str) -> tuple[str, int]:
    """Parses ``layers:N``, ``blocks:N``, ``all`` or ``none`` into (kind, count)."""
    spec = str(spec).strip().lower()
    if spec in ("all", "none"):
        return spec, 0
    kind, _, count = spec.partition(":")
    if kind in ("layers", "blocks") and count.isdigit() and int(count) > 0:
        return kind, int(count)
    raise ConfigError(
        f"unfreeze={spec!r} is not valid; use layers:N, blocks:N (N >= 1), all or none"
    )


@dataclass
class RunConfig:
    """Everything one training run needs; written to ``runs/<name>/config.yaml``.

    Attributes:
        data: the data section.
        model: the model section.
        train: the training section.
        output_dir: parent folder of run directories.
        name: run directory name (default: ``<backbone>-<timestamp>``).
        seed: seeds the split, shuffling, augmentation and weight initialization.
        report: write ``report.html`` into the run folder (metrics, curves, the confusion matrix,
            the misclassified examples; the train CLI adds their Grad-CAM overlays).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs"
    name: str | None = None
    seed: int = 42
    report: bool = True

    def validate(self) -> "RunConfig":
        """Checks every section; raises TLKerasError naming the bad key. Returns self."""
        from tlkeras.runs import check_run_name

        self.data.validate()
        self.model.validate()
        self.train.validate()
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be in [0, {MAX_SEED}], got {self.seed}; pass e.g. --seed 42")
        check_run_name(self.name)
        if not str(self.output_dir).strip() or "\0" in str(self.output_dir):
            raise ConfigError(f"output_dir {self.output_dir!r} is not a usable folder path; pass e.g. --output-dir runs")
        return self


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Returns a plain dict (YAML-safe) of a RunConfig."""
    return dataclasses.asdict(config)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Converts a YAML scalar to the type a dataclass field declares, or raises TLKerasError."""
    hint = annotation
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args or hint is Any:
            return None
        raise ConfigError(f"{key} must not be empty")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, args[0], key) for v in value]
    try:
        if hint is bool:
            if isinstance(value, str):
                lowered = value.lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError, OverflowError):
        kind = getattr(hint, "__name__", hint)
        raise ConfigError(f"{key} must be of type {kind}, got {value!r}; write {'a whole number' if kind == 'int' else 'a ' + str(kind) + ' value'}") from None
    return value


def _fill(cls, values: dict[str, Any], prefix: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping of keys to values, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        import difflib

        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known keys: {', '.join(sorted(known))}"
        raise ConfigError(f"unknown config key {prefix}{key}{hint}")
    kwargs = {}
    for name, value in values.items():
        if name in _SECTIONS and cls is RunConfig:
            kwargs[name] = _fill(_SECTIONS[name], value or {}, f"{name}.")
        else:
            kwargs[name] = _coerce(value, hints[name], prefix + name)
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Builds and validates a RunConfig from a nested dict (as read from YAML).

    Raises:
        TLKerasError: on an unknown key (with a close match), a wrongly typed or invalid value.
    """
    return _fill(RunConfig, values or {}, "").validate()


def read_yaml(path: str | os.PathLike, what: str = "config file") -> Any:
    """Reads a small YAML file with the safe loader, refusing what would hang or exhaust memory.

    Raises:
        ConfigError: a missing path, a folder, a file over 1 MiB, text that is not UTF-8, invalid
            YAML, or aliases that expand to more than 100,000 nodes ("billion laughs").
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; pass the YAML file itself (e.g. {path}/config.yaml)")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist; check the path") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}; check the path and its permissions") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_YAML_BYTES >> 20} MiB; a config is a few lines of YAML, pass the right file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None
        _check_expansion(node, path, what)
        loader = yaml.SafeLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{what} {path} is not valid YAML{where}; fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{what} {path} is nested too deeply; write it as section: key: value (two levels)") from None


def _check_expansion(root: yaml.Node, path: Path, what: str) -> None:
    """Counts the nodes the YAML expands to (aliases counted at every use) without expanding."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if depth > 50:
            raise ConfigError(f"{what} {path} is nested more than 50 levels deep; write it as section: key: value (two levels)")
        sizes[id(node)] = 1  # a node that refers to itself counts once
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        if total > MAX_YAML_NODES:
            raise ConfigError(
                f"{what} {path} expands to more than {MAX_YAML_NODES:,} values through its aliases (&/*); "
                f"write the values out instead of nesting aliases"
            )
        sizes[id(node)] = total
        return total

    size(root, 0)


def load_config(path: str | os.PathLike) -> RunConfig:
    """Reads a YAML config with the safe loader (see :func:`read_yaml`) and validates it.

    Raises:
        ConfigError: if the file is missing, a folder, not UTF-8, not YAML, too large, or holds
            unknown or invalid keys.
    """
    return config_from_dict(read_yaml(path, "config file") or {})


def save_config(config: RunConfig, path: str | os.PathLike) -> None:
    """Writes ``config`` as YAML, atomically (a reader never sees a partial file)."""
    from tlkeras.runs import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def apply_explicit(target: RunConfig, base: RunConfig, explicit, fixed=()) -> RunConfig:
    """Copies onto ``target`` the data/model/train fields the user set explicitly in ``base``.

    Args:
        explicit: "section.field" names given on the command line (the CLI's namespace keys).
        fixed: "section.field" names that stay ``target``'s (e.g. the demo's own data and weights).

    Returns:
        ``target``, changed in place.
    """
    for dest in explicit or ():
        section, _, name = dest.partition(".")
        if name and section in ("data", "model", "train") and dest not in fixed:
            setattr(getattr(target, section), name, getattr(getattr(base, section), name))
    return target
