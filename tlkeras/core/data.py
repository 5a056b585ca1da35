"""Data: image folders, CSV files, TFDS and NumPy arrays into one in-memory form, and tf.data.

Every source ends as a :class:`DataBundle`: uint8 RGB images of one square size (decoded once, so
epochs never decode JPEGs again), labels, class names, and the train/val/test splits. tlkeras'
users have hundreds to a few thousand images, for which this in-memory cache is the fastest
pipeline; :func:`make_dataset` turns a split into a batched, augmented, prefetched tf.data pipeline.

Unreadable images (corrupt, truncated, zero bytes) are skipped with a warning that counts them and
names the first few (``on_corrupt="skip"``, the default), or stop the run naming the file
(``on_corrupt="error"``). Grayscale, palette, RGBA (composited on white) and animated images (first
frame) become RGB; EXIF orientation is applied.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tlkeras.config import DataConfig
from tlkeras.core.paths import check_class_names, read_csv_rows, resolve_inside
from tlkeras.errors import TLKerasError

__all__ = [
    "IMAGE_EXTENSIONS",
    "Split",
    "DataBundle",
    "load_data",
    "from_arrays",
    "load_image",
    "make_dataset",
    "class_weights",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclass
class Split:
    """One split: images ``x`` (uint8, N x S x S x 3), labels ``y`` and where they came from.

    ``y`` is int class indices (softmax), a multi-hot float matrix (sigmoid) or float targets
    (regression).
    """

    x: np.ndarray
    y: np.ndarray
    paths: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])


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
    """

    train: Split
    val: Split
    test: Split | None
    class_names: list[str]
    head: str = "softmax"
    image_size: int = 224
    skipped: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def num_outputs(self) -> int:
        return len(self.class_names)

    @property
    def eval_split(self) -> tuple[str, Split]:
        """The split final metrics are reported on: test if there is one, else val."""
        return ("test", self.test) if self.test is not None and len(self.test) else ("val", self.val)


# ---------------------------------------------------------------------------------------------
# Decoding


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decodes one image file into a ``size x size x 3`` uint8 RGB array.

    Raises:
        OSError or ValueError: if the file is not a readable image (callers decide what to do).
    """
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.seek(0)  # first frame of an animation
        img.load()  # forces a full decode: truncated files fail here, not later
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def decode_all(paths: Sequence[str], size: int, on_corrupt: str) -> tuple[np.ndarray, list[int], list[str]]:
    """Decodes ``paths`` in threads; returns (images, indices kept, paths skipped)."""

    def one(path):
        try:
            return load_image(path, size)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            return exc

    workers = min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, paths))
    kept, skipped, images = [], [], []
    for i, (path, result) in enumerate(zip(paths, results)):
        if isinstance(result, Exception):
            if on_corrupt == "error":
                raise TLKerasError(
                    f"cannot read image {path} ({type(result).__name__}); remove or replace it, "
                    f"or pass --on-corrupt skip"
                )
            skipped.append(str(path))
        else:
            kept.append(i)
            images.append(result)
    x = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return x, kept, skipped


def warn_skipped(skipped: list[str]) -> None:
    if skipped:
        shown = ", ".join(Path(p).name for p in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): {shown}{more}", stacklevel=3)


# ---------------------------------------------------------------------------------------------
# Image folders


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _class_folders(root: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise TLKerasError(
            f"{root} has no class subfolders; put the images of each class in their own "
            f"subfolder (e.g. {root}/cats/*.jpg, {root}/dogs/*.jpg)"
        )
    found = {c.name: _image_files(c) for c in classes}
    for name, files in found.items():
        if not files:
            raise TLKerasError(
                f"class folder {root / name} has no images ({', '.join(IMAGE_EXTENSIONS)}); add "
                f"images or remove the folder"
            )
    return found


def _find_split_dirs(root: Path) -> dict[str, Path]:
    found = {}
    for split, names in _SPLIT_NAMES.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    return found


def _stratified_split(labels: np.ndarray, config: DataConfig, seed: int, stratify: bool):
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
            f"too few images to split into train/val/test (smallest class has {int(np.min(counts))}); "
            f"add images, lower --val-fraction/--test-fraction, or provide train/ val/ test/ folders"
        ) from None
    return np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)


def _load_folder(root: Path, config: DataConfig, size: int, head: str, seed: int) -> DataBundle:
    if head != "softmax":
        raise TLKerasError(
            f"an image folder gives single-label classes; for a {head} head use a CSV of path,label"
        )
    split_dirs = _find_split_dirs(root)
    skipped: list[str] = []
    if split_dirs:
        if "train" not in split_dirs:
            raise TLKerasError(f"{root} has {', '.join(split_dirs)} folders but no train/ folder")
        layouts = {name: _class_folders(path) for name, path in split_dirs.items()}
        class_names = list(layouts["train"])
        for name, layout in layouts.items():
            if list(layout) != class_names:
                missing = sorted(set(class_names) - set(layout))
                extra = sorted(set(layout) - set(class_names))
                raise TLKerasError(
                    f"class folders of {split_dirs[name]} differ from train/ (missing: "
                    f"{missing or '-'}, extra: {extra or '-'}); use the same class folders in every split"
                )
        _check_classes(class_names, root)
        splits = {}
        for name, layout in layouts.items():
            paths = [str(p) for c in class_names for p in layout[c]]
            labels = np.array([i for i, c in enumerate(class_names) for _ in layout[c]], np.int64)
            x, kept, bad = decode_all(paths, size, config.on_corrupt)
            skipped += bad
            splits[name] = Split(x, labels[kept], [paths[i] for i in kept])
        if "val" not in splits:
            train = splits["train"]
            tr, va, _ = _stratified_split(train.y, DataConfig(val_fraction=config.val_fraction or 0.15, test_fraction=0.0), seed, True)
            splits["train"], splits["val"] = _take(train, tr), _take(train, va)
        bundle = DataBundle(splits["train"], splits["val"], splits.get("test"), class_names, head, size, skipped, str(root))
    else:
        layout = _class_folders(root)
        class_names = list(layout)
        _check_classes(class_names, root)
        paths = [str(p) for c in class_names for p in layout[c]]
        labels = np.array([i for i, c in enumerate(class_names) for _ in layout[c]], np.int64)
        x, kept, skipped = decode_all(paths, size, config.on_corrupt)
        everything = Split(x, labels[kept], [paths[i] for i in kept])
        tr, va, te = _stratified_split(everything.y, config, seed, True)
        bundle = DataBundle(
            _take(everything, tr), _take(everything, va), _take(everything, te) if len(te) else None,
            class_names, head, size, skipped, str(root),
        )
    warn_skipped(bundle.skipped)
    _check_nonempty(bundle)
    return bundle


def _check_classes(class_names: list[str], where) -> None:
    check_class_names(class_names, where)  # they become lines of labels.txt
    if len(class_names) < 2:
        raise TLKerasError(
            f"{where} has only one class ({class_names[0]!r}); a classifier needs at least two "
            f"class folders"
        )


def _check_nonempty(bundle: DataBundle) -> None:
    if len(bundle.train) == 0:
        raise TLKerasError(f"no readable training images in {bundle.source}")
    if len(bundle.val) == 0:
        raise TLKerasError(
            f"no validation images in {bundle.source}; add a val/ folder or set --val-fraction > 0"
        )
    if bundle.head == "softmax":
        missing = sorted(set(range(bundle.num_outputs)) - set(bundle.train.y.tolist()))
        if missing:
            names = [bundle.class_names[i] for i in missing]
            raise TLKerasError(f"class(es) {names} have no readable training images; add images")


def _take(split: Split, index: np.ndarray) -> Split:
    return Split(split.x[index], split.y[index], [split.paths[i] for i in index] if split.paths else [])


# ---------------------------------------------------------------------------------------------
# CSV


def _load_csv(path: Path, config: DataConfig, size: int, head: str, seed: int) -> DataBundle:
    rows = read_csv_rows(path, ("path", "label"))  # UTF-8, size and column checks
    base = path.parent
    paths = [str(resolve_inside(base, r["path"] or "", source=path)) for r in rows]
    raw = [(r["label"] or "").strip() for r in rows]
    if any(not label for label in raw) and head != "sigmoid":
        line = raw.index("") + 2
        raise TLKerasError(f"CSV {path} line {line} has an empty label; fill it in or drop the row")
    if head == "regression":
        try:
            values = [[float(v) for v in label.split(config.label_separator)] for label in raw]
        except ValueError:
            raise TLKerasError(f"CSV {path}: a regression head needs numeric labels") from None
        width = {len(v) for v in values}
        if len(width) != 1:
            raise TLKerasError(f"CSV {path}: every row needs the same number of regression targets")
        labels = np.array(values, np.float32)
        class_names = [f"target_{i}" for i in range(labels.shape[1])] if labels.shape[1] > 1 else ["target"]
        strat = None
    elif head == "sigmoid":
        tags = [[t.strip() for t in label.split(config.label_separator) if t.strip()] for label in raw]
        class_names = sorted({t for ts in tags for t in ts})
        if not class_names:
            raise TLKerasError(f"CSV {path} has no labels")
        check_class_names(class_names, path)
        lookup = {c: i for i, c in enumerate(class_names)}
        labels = np.zeros((len(tags), len(class_names)), np.float32)
        for i, ts in enumerate(tags):
            labels[i, [lookup[t] for t in ts]] = 1.0
        strat = None
    else:
        class_names = sorted(set(raw))
        _check_classes(class_names, path)
        lookup = {c: i for i, c in enumerate(class_names)}
        labels = np.array([lookup[c] for c in raw], np.int64)
        strat = labels
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing and config.on_corrupt == "error":
        raise TLKerasError(f"CSV {path} lists {len(missing)} missing file(s), first: {missing[0]}")
    x, kept, skipped = decode_all(paths, size, config.on_corrupt)
    everything = Split(x, labels[kept], [paths[i] for i in kept])
    splits = [(r.get("split") or "").strip().lower() for r in rows]
    splits = [splits[i] for i in kept]
    if any(splits):
        unknown = sorted(set(splits) - {"train", "val", "test"})
        if unknown:
            raise TLKerasError(f"CSV {path}: unknown split value(s) {unknown}; use train, val or test")
        pick = lambda name: np.array([i for i, s in enumerate(splits) if s == name], np.int64)  # noqa: E731
        tr, va, te = pick("train"), pick("val"), pick("test")
    else:
        tr, va, te = _stratified_split(
            strat[kept] if strat is not None else np.zeros(len(kept), np.int64), config, seed, strat is not None
        )
    bundle = DataBundle(
        _take(everything, tr), _take(everything, va), _take(everything, te) if len(te) else None,
        class_names, head, size, skipped, str(path),
    )
    warn_skipped(skipped)
    _check_nonempty(bundle)
    return bundle


# ---------------------------------------------------------------------------------------------
# TFDS and NumPy


def _load_tfds(name: str, config: DataConfig, size: int, head: str, seed: int) -> DataBundle:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise TLKerasError(
            f"tfds:{name} needs tensorflow-datasets; `pip install tensorflow-datasets` and prepare "
            f"the dataset where there is network"
        ) from None
    from tlkeras._backend import tf

    try:
        ds, info = tfds.load(name, split="train", as_supervised=True, with_info=True, download=False)
    except Exception as exc:  # noqa: BLE001
        raise TLKerasError(
            f"TFDS dataset {name!r} is not available offline ({type(exc).__name__}); run "
            f"tfds.load({name!r}) once with network, or point TFDS_DATA_DIR at a prepared copy"
        ) from None
    images, labels = [], []
    for image, label in ds.map(lambda i, l: (tf.cast(tf.image.resize(i, (size, size)), tf.uint8), l)):
        img = image.numpy()
        images.append(np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3])
        labels.append(int(label.numpy()))
    names = list(info.features["label"].names)
    return from_arrays(np.stack(images), np.array(labels), class_names=names, config=config, image_size=size, seed=seed, source=f"tfds:{name}")


def as_rgb_uint8(x: np.ndarray, size: int | None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise TLKerasError(f"image arrays must be N x H x W (x 1, 3 or 4), got shape {x.shape}")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    x = x[..., :3]
    if x.dtype != np.uint8:
        x = np.clip(np.round(x.astype(np.float32)), 0, 255).astype(np.uint8)
    if size is not None and (x.shape[1], x.shape[2]) != (size, size):
        from tlkeras._backend import tf

        x = tf.cast(tf.round(tf.image.resize(x, (size, size))), tf.uint8).numpy()
    return x


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    head: str = "softmax",
    config: DataConfig | None = None,
    image_size: int | None = None,
    seed: int = 42,
    source: str = "arrays",
) -> DataBundle:
    """Wraps NumPy arrays as a DataBundle.

    Args:
        x: images, N x H x W (x 1/3/4), pixel values in [0, 255]; converted to uint8 RGB and
            resized to ``image_size`` when given.
        y: int class indices (softmax), multi-hot rows (sigmoid) or float targets (regression).
        class_names: defaults to ``class_0 ... class_{C-1}``.
        val, test: explicit splits; without ``val`` a stratified, seeded split of ``x`` is made
            using ``config.val_fraction`` and ``config.test_fraction``.
    """
    config = config or DataConfig()
    x = as_rgb_uint8(x, image_size)
    y = np.asarray(y)
    if head == "softmax":
        y = y.astype(np.int64).reshape(-1)
        count = int(y.max()) + 1 if y.size else 0
    else:
        y = y.astype(np.float32)
        if y.ndim == 1:
            y = y[:, None]
        count = y.shape[1]
    if len(x) != len(y):
        raise TLKerasError(f"{len(x)} images but {len(y)} labels")
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(count)]
    if head == "softmax":
        _check_classes(names, source)
    everything = Split(x, y)
    if val is None:
        strat = y if head == "softmax" else np.zeros(len(y), np.int64)
        tr, va, te = _stratified_split(strat, config, seed, head == "softmax")
        train, val_split = _take(everything, tr), _take(everything, va)
        test_split = _take(everything, te) if len(te) else None
    else:
        train = everything
        val_split = Split(as_rgb_uint8(val[0], x.shape[1]), np.asarray(val[1]).astype(y.dtype).reshape((-1,) + y.shape[1:]))
        test_split = (
            Split(as_rgb_uint8(test[0], x.shape[1]), np.asarray(test[1]).astype(y.dtype).reshape((-1,) + y.shape[1:]))
            if test is not None else None
        )
    bundle = DataBundle(train, val_split, test_split, names, head, int(x.shape[1]), [], source)
    _check_nonempty(bundle)
    return bundle


def load_data(config: DataConfig, image_size: int, head: str = "softmax", seed: int = 42) -> DataBundle:
    """Loads ``config.source`` into memory at ``image_size`` pixels.

    Raises:
        TLKerasError: a missing path, no class folders, an empty class, a single class,
            mismatched split folders, a bad CSV, unreadable images with ``on_corrupt="error"``.
    """
    config.validate()
    if config.split_seed is not None:
        seed = config.split_seed
    source = config.source
    if source is None:
        raise TLKerasError("no data source given; pass --data <folder|file.csv|tfds:name>")
    if str(source).startswith("tfds:"):
        return _load_tfds(str(source)[5:], config, image_size, head, seed)
    path = Path(source).expanduser()
    if not path.exists():
        raise TLKerasError(f"data path {source} does not exist; pass an image folder, a CSV file or tfds:<name>")
    if not os.access(path, os.R_OK):
        raise TLKerasError(f"data path {source} is not readable; check its permissions")
    if path.is_dir():
        return _load_folder(path, config, image_size, head, seed)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return _load_csv(path, config, image_size, head, seed)
    raise TLKerasError(f"data path {source} is neither a folder nor a .csv file")


# ---------------------------------------------------------------------------------------------
# tf.data


def encode_labels(y: np.ndarray, head: str, num_outputs: int) -> np.ndarray:
    """Model targets: one-hot rows for softmax (so label smoothing works), floats otherwise."""
    if head == "softmax":
        return np.eye(num_outputs, dtype=np.float32)[y]
    return y.astype(np.float32)


def make_dataset(
    split: Split,
    *,
    head: str,
    num_outputs: int,
    batch_size: int,
    shuffle: bool = False,
    augment: str = "off",
    seed: int = 42,
    targets: np.ndarray | None = None,
):
    """Builds a batched tf.data pipeline of (float32 raw pixels, targets) from a split.

    Shuffling reshuffles every epoch from ``seed``; augmentation runs on batches in parallel;
    the pipeline ends with ``prefetch``. Images stay uint8 in memory (the cache) and become
    float32 only per batch. ``targets`` (one row per image, e.g. soft labels) replaces the
    encoded ``split.y``.
    """
    from tlkeras._backend import tf

    if targets is None:
        targets = encode_labels(split.y, head, num_outputs)
    elif len(targets) != len(split):
        raise TLKerasError(f"{len(targets)} targets for {len(split)} images")
    ds = tf.data.Dataset.from_tensor_slices((split.x, targets))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    from tlkeras.core.augment import augmenter

    aug = augmenter(augment, seed)
    if aug is not None:
        ds = ds.map(lambda x, y: (tf.clip_by_value(aug(x, training=True), 0.0, 255.0), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def class_weights(bundle: DataBundle, mode: str) -> dict[int, float] | None:
    """Per-class loss weights for an imbalanced softmax task (scikit-learn's "balanced").

    ``auto`` returns balanced weights only when the largest class has 1.5x the images of the
    smallest; ``none`` and non-softmax heads return None.
    """
    if mode == "none" or bundle.head != "softmax":
        return None
    counts = np.bincount(bundle.train.y, minlength=bundle.num_outputs)
    if mode == "auto" and counts.max() < 1.5 * max(counts.min(), 1):
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(bundle.train.y)
    weights = compute_class_weight("balanced", classes=present, y=bundle.train.y)
    return {int(c): float(w) for c, w in zip(present, weights)}
