"""What every data source ends as, whatever the modality: splits, a bundle, and the split rules.

Images (:mod:`tlkeras.core.data`) and texts (:mod:`tlkeras.core.text.data`) both return a
:class:`DataBundle`; the stratified seeded split, the label parsing of a CSV and the checks of a
finished bundle are shared here so the two readers cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlkeras.config import DataConfig
from tlkeras.core.paths import check_class_names
from tlkeras.core.tasks import task_of_head
from tlkeras.errors import TLKerasError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test",)}

__all__ = ["IMAGE_EXTENSIONS", "Split", "DataBundle", "is_text", "require_images", "find_split_dirs", "stratified_split", "check_classes", "check_nonempty", "take", "pick", "csv_labels", "csv_split_index"]


@dataclass
class Split:
    """One split: inputs ``x``, labels ``y`` and where they came from.

    ``x`` is uint8 images (N x S x S x 3) or texts (a 1-D object array of ``str``; see
    :func:`is_text`).
    ``y`` is int class indices (softmax), a multi-hot float matrix (sigmoid) or float targets
    (regression). ``x`` is in memory or a read-only ``np.memmap`` (see :mod:`tlkeras.core.cache`);
    ``shard`` is ``(index, count)`` when this process holds only its worker's share of the split.
    """

    x: np.ndarray
    y: np.ndarray
    paths: list[str] = field(default_factory=list)
    shard: tuple[int, int] | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def count_hint(self) -> int:
        """How many examples the split holds, without waiting for a split still decoding in the
        background (:class:`tlkeras.core.pending.PendingSplit`: an upper bound until it ends)."""
        return len(self)

    @property
    def labels_hint(self) -> np.ndarray:
        """``y``, or for a split still decoding every given file's label (see :attr:`count_hint`)."""
        return self.y


@dataclass
class DataBundle:
    """Images and labels of a task, split three ways.

    Attributes:
        train, val, test: the splits (``test`` may be None when the source has none).
        class_names: class names (softmax/sigmoid) or target names (regression).
        head: ``softmax``, ``sigmoid`` or ``regression``.
        image_size: the square size every image was resized to.
        skipped: paths of unreadable images that were skipped.
        source: a description of where the data came from.
        cache: where the decoded images live and why (``memory: ...`` or ``disk: ...``).
        modality: ``image`` or ``text`` (then ``image_size`` is unused and the splits hold texts).
        text_stats: for text, what the reader counted (texts dropped as empty or unreadable, ...).
    """

    train: Split
    val: Split
    test: Split | None
    class_names: list[str]
    head: str = "softmax"
    image_size: int = 224
    skipped: list[str] = field(default_factory=list)
    source: str = ""
    cache: str = "memory"
    modality: str = "image"
    text_stats: dict = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        return len(self.class_names)

    @property
    def eval_split(self) -> tuple[str, Split]:
        """The split final metrics are reported on: test if there is one, else val."""
        return ("test", self.test) if self.test is not None and len(self.test) else ("val", self.val)


def is_text(x) -> bool:
    """Whether ``x`` (a split's inputs) holds texts rather than images."""
    return getattr(x, "dtype", None) is not None and x.dtype.kind in "OUS" and getattr(x, "ndim", 0) == 1


def find_split_dirs(root: Path) -> dict[str, Path]:
    """The ``train/ val/ test/`` folders under ``root`` (also ``training``, ``valid``, ``validation``)."""
    found = {}
    for split, names in SPLIT_NAMES.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    return found


def require_images(bundle: DataBundle, what: str) -> DataBundle:
    """Returns ``bundle``, or raises a one-line error when ``what`` (a stage) gets text data."""
    if bundle.modality != "image":
        raise TLKerasError(f"{what} takes image data and {bundle.source} holds texts; train text with python -m tlkeras.train (docs/text.md)")
    return bundle


def stratified_split(labels: np.ndarray, config: DataConfig, seed: int, stratify: bool):
    """Returns index arrays (train, val, test), stratified by class and seeded."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    strat = labels if stratify else None
    held = config.val_fraction + config.test_fraction
    if held == 0:
        return index, index[:0], index[:0]
    try:
        train_idx, rest = train_test_split(index, test_size=held, random_state=seed, stratify=strat)
        if config.test_fraction == 0:
            return train_idx, rest, index[:0]
        if config.val_fraction == 0:
            return train_idx, index[:0], rest
        val_idx, test_idx = train_test_split(
            rest, test_size=config.test_fraction / held, random_state=seed,
            stratify=None if strat is None else labels[rest],
        )
    except ValueError:
        counts = np.bincount(labels) if stratify else [len(labels)]
        raise TLKerasError(
            f"too few examples to split into train/val/test (smallest class has {int(np.min(counts))}); "
            f"add examples, lower --val-fraction/--test-fraction, or provide train/ val/ test/ folders"
        ) from None
    return np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)


def check_classes(class_names: list[str], where) -> None:
    check_class_names(class_names, where)  # they become lines of labels.txt
    if len(class_names) < 2:
        raise TLKerasError(
            f"{where} has only one class ({class_names[0]!r}); a classifier needs at least two "
            f"class folders"
        )


def check_nonempty(bundle: DataBundle) -> None:
    what = "texts" if bundle.modality == "text" else "images"
    # The hints do not wait for splits still decoding in the background (files given, not yet
    # known readable); those splits' unreadable files are counted when decoding ends.
    if bundle.train.count_hint == 0:
        raise TLKerasError(f"no readable training {what} in {bundle.source}")
    if bundle.val.count_hint == 0:
        raise TLKerasError(
            f"no validation {what} in {bundle.source}; add a val/ folder or set --val-fraction > 0"
        )
    if task_of_head(bundle.head).exclusive_classes:
        missing = sorted(set(range(bundle.num_outputs)) - set(bundle.train.labels_hint.tolist()))
        if missing:
            names = [bundle.class_names[i] for i in missing]
            raise TLKerasError(f"class(es) {names} have no readable training {what}; add {what}")


def take(split: Split, index: np.ndarray) -> Split:
    return Split(split.x[index], split.y[index], [split.paths[i] for i in index] if split.paths else [])


def pick(part: tuple[list[str], np.ndarray], index: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The rows ``index`` of a (paths, labels) file list."""
    paths, labels = part
    return [paths[i] for i in index], labels[index]


def csv_labels(rows: list[dict[str, str]], path: Path, config: DataConfig, head: str):
    """Parses the ``label`` column of CSV rows for the task of ``head``; returns (labels, class_names, strata).

    ``strata`` are the class indices to stratify the split by (None for sigmoid and regression).
    """
    raw = [(r["label"] or "").strip() for r in rows]
    return task_of_head(head).csv_labels(raw, path, config.label_separator)


def csv_split_index(rows: list[dict[str, str]], path: Path, strat, config: DataConfig, seed: int):
    """(train, val, test) row indices: the CSV's ``split`` column when filled, else a stratified split."""
    splits = [(r.get("split") or "").strip().lower() for r in rows]
    if any(splits):
        unknown = sorted(set(splits) - {"train", "val", "test"})
        if unknown:
            raise TLKerasError(f"CSV {path}: unknown split value(s) {unknown}; use train, val or test")
        tr, va, te = (np.array([i for i, s in enumerate(splits) if s == name], np.int64) for name in ("train", "val", "test"))
    else:
        tr, va, te = stratified_split(
            strat if strat is not None else np.zeros(len(rows), np.int64), config, seed, strat is not None
        )
    return tr, va, te
