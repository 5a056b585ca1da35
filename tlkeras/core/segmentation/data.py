"""Segmentation data: image + mask pairs from folders, a CSV or arrays, decoded once into arrays.

Layouts read by :func:`load_segmentation`:

- a folder with ``images/`` and ``masks/`` (a mask has its image's stem, ``.png``), directly or
  under ``train/``, ``val/``, ``test/``; an optional ``labels.txt`` (next to ``images/`` or in the
  root) names the ids, one per line, id 0 first; without it the ids are the names;
- a CSV with ``path,mask_path[,split]`` columns (relative paths are relative to the CSV);
- arrays (:func:`from_arrays`).

Masks hold class ids: grayscale PNGs, or palette PNGs whose palette indices are the ids. Images
are stretched to ``size`` x ``size`` (bilinear), masks with nearest neighbour, as MediaPipe's
ImageSegmenter stretches its input. Imports no TensorFlow.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkeras.errors import DataError

__all__ = ["SegSplit", "SegData", "recognise_folder", "load_segmentation", "from_arrays", "read_mask", "SPLITS"]

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_CLASSES = 256


@dataclass
class SegSplit:
    """One split: ``x`` N x S x S x 3 uint8 pixels, ``y`` N x S x S int32 ids, ``names`` one per image."""

    x: np.ndarray
    y: np.ndarray
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class SegData:
    """A decoded segmentation set.

    Attributes:
        train, val, test: the splits (test may be None).
        class_names: one name per id, id 0 first (the background).
        image_size: the square size images and masks were stretched to.
        source: where the data came from (for run.json).
        skipped: counts of what was left out (``images_without_mask``, ``unreadable``, ...).
        ignore_index: the mask id left out of loss and metrics (None: none).
        task: the Segmentation task (the train stage hands data that carries a task to it).
    """

    train: SegSplit
    val: SegSplit
    test: SegSplit | None
    class_names: list[str]
    image_size: int
    source: str
    skipped: dict[str, int] = field(default_factory=dict)
    ignore_index: int | None = None
    task: Any = None
    modality: str = "image"
    head: str = "segmentation"

    def __post_init__(self) -> None:
        if self.task is None:  # the train stage hands data that names its task to that task
            from tlkeras.core.tasks import get_task

            self.task = get_task("segmentation")

    @property
    def num_outputs(self) -> int:
        return len(self.class_names)

    @property
    def eval_split(self) -> tuple[str, SegSplit]:
        return ("test", self.test) if self.test is not None and len(self.test) else ("val", self.val)


def _has_pair(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "masks").is_dir()


def recognise_folder(source: str) -> bool:
    """Whether ``source`` is a folder with images/ + masks/, directly or under a split folder.

    Only looks at names on disk; never raises.
    """
    try:
        root = Path(source).expanduser()
        if not root.is_dir():
            return False
        return _has_pair(root) or any(_has_pair(root / s) for s in SPLITS)
    except (OSError, ValueError):
        return False


def _stems(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file() and entry.name.lower().endswith(suffixes) and not entry.name.startswith("."):
            found.setdefault(Path(entry.name).stem, Path(entry.path))
    return found


def _pairs_in(folder: Path, skipped: dict[str, int], on_missing: str) -> list[tuple[Path, Path]]:
    images = _stems(folder / "images", IMAGE_SUFFIXES)
    masks = _stems(folder / "masks", (".png",))
    pairs = []
    for stem, image in images.items():
        if stem not in masks:
            if on_missing == "error":
                raise DataError(f"{image} has no mask {folder / 'masks' / (stem + '.png')}; add the mask, remove the image, "
                                f"or pass --on-corrupt skip to leave such images out")
            skipped["images_without_mask"] = skipped.get("images_without_mask", 0) + 1
            continue
        pairs.append((image, masks[stem]))
    extra = len(set(masks) - set(images))
    if extra:
        skipped["masks_without_image"] = skipped.get("masks_without_image", 0) + extra
    return pairs


def _read_csv(path: Path, skipped: dict[str, int], on_missing: str) -> dict[str, list[tuple[Path, Path]]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} ({exc}); pass a UTF-8 CSV with path,mask_path[,split] columns") from None
    if not rows or "path" not in rows[0] or "mask_path" not in rows[0]:
        raise DataError(f"{path} needs a header with path,mask_path[,split] columns and at least one row")
    groups: dict[str, list[tuple[Path, Path]]] = {}
    for i, row in enumerate(rows, start=2):
        image = Path(path.parent, (row.get("path") or "").strip())
        mask_cell = (row.get("mask_path") or "").strip()
        split = (row.get("split") or "").strip().lower() or "all"
        if split not in (*SPLITS, "all"):
            raise DataError(f"{path} line {i}: split {split!r} is not train, val or test")
        if not mask_cell:
            if on_missing == "error":
                raise DataError(f"{path} line {i}: {image.name} has no mask_path; fill it in or pass --on-corrupt skip")
            skipped["images_without_mask"] = skipped.get("images_without_mask", 0) + 1
            continue
        groups.setdefault(split, []).append((image, Path(path.parent, mask_cell)))
    return groups


def read_mask(path: Path) -> np.ndarray:
    """The class ids of a mask PNG: grayscale values, palette indices, or a grey RGB's one channel.

    Raises:
        DataError: an RGB mask whose channels differ (colours, not ids), or an unreadable file.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode == "P":
                return np.asarray(im, dtype=np.int32)  # palette indices are the ids
            arr = np.asarray(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read mask {path} ({exc}); save it as a PNG of class ids") from None
    if arr.ndim == 3:
        channels = arr[..., :3]
        if not (np.array_equal(channels[..., 0], channels[..., 1]) and np.array_equal(channels[..., 0], channels[..., 2])):
            raise DataError(f"mask {path} is an RGB colour image; save masks as grayscale or palette PNGs whose values are class ids "
                            f"(0 background, 1, 2, ...)")
        arr = channels[..., 0]
    return arr.astype(np.int32)


def _read_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    from PIL import Image

    with Image.open(path) as im:
        original = im.size
        rgb = im.convert("RGB").resize((size, size), Image.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8), original


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(mask.astype(np.int32), mode="I").resize((size, size), Image.NEAREST), dtype=np.int32)


def _bomb():
    from PIL import Image

    return Image.DecompressionBombError  # an image over PIL's pixel limit: refused like an unreadable one


def _decode(pairs: list[tuple[Path, Path]], size: int, skipped: dict[str, int], on_corrupt: str) -> SegSplit:
    xs, ys, names = [], [], []
    for image_path, mask_path in pairs:
        if not mask_path.is_file():
            if on_corrupt == "error":
                raise DataError(f"mask {mask_path} of {image_path} does not exist; fix the path or pass --on-corrupt skip")
            skipped["images_without_mask"] = skipped.get("images_without_mask", 0) + 1
            continue
        try:
            image, original = _read_image(image_path, size)
        except (OSError, ValueError, SyntaxError, _bomb()) as exc:
            if on_corrupt == "error":
                raise DataError(f"cannot read image {image_path} ({exc}); remove it or pass --on-corrupt skip") from None
            skipped["unreadable"] = skipped.get("unreadable", 0) + 1
            continue
        mask = read_mask(mask_path)
        if (mask.shape[1], mask.shape[0]) != original:
            raise DataError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} is "
                            f"{original[0]}x{original[1]}; a mask must have its image's size (re-export the mask at that size)")
        xs.append(image)
        ys.append(_resize_mask(mask, size))
        names.append(str(image_path))
    if not xs:
        return SegSplit(np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.int32), [])
    return SegSplit(np.stack(xs), np.stack(ys), names)


def _labels(root: Path) -> list[str] | None:
    for folder in (root, *(root / s for s in SPLITS)):
        path = folder / "labels.txt"
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path} is not UTF-8 text; re-save it as UTF-8, one class name per line (id 0 first)") from None
            names = [line.strip() for line in text.split("\n") if line.strip()]
            if len(set(names)) != len(names):
                raise DataError(f"{path} names a class twice; give each id its own name")
            return names
    return None


def _class_names(labels: list[str] | None, splits: dict[str, SegSplit], ignore_index: int | None) -> list[str]:
    top = -1
    for split in splits.values():
        if len(split):
            ids = split.y[split.y != ignore_index] if ignore_index is not None else split.y
            if ids.size:
                top = max(top, int(ids.max()))
    if labels is not None:
        if top >= len(labels):
            raise DataError(f"a mask holds id {top} but labels.txt names only {len(labels)} classes (ids 0-{len(labels) - 1}); "
                            f"add the missing names to labels.txt or pass --ignore-index {top} to leave that id out")
        names = labels
    else:
        if top >= MAX_CLASSES:
            raise DataError(f"a mask holds id {top}; masks hold class ids below {MAX_CLASSES} (pass --ignore-index {top} if it marks void pixels)")
        names = [str(i) for i in range(max(top + 1, 2))]
    if len(names) < 2:
        raise DataError("segmentation needs at least two classes (0 background and one more); add a name to labels.txt")
    return names


def _split_off(pairs: list, fractions: tuple[float, float], seed: int) -> tuple[list, list, list]:
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = int(round(len(pairs) * fractions[0]))
    n_test = int(round(len(pairs) * fractions[1]))
    if len(pairs) >= 3:
        n_val = max(n_val, 1)
    val = [pairs[i] for i in order[:n_val]]
    test = [pairs[i] for i in order[n_val:n_val + n_test]]
    train = [pairs[i] for i in order[n_val + n_test:]]
    return train, val, test


def _pair_groups(source: str, skipped: dict[str, int], on_corrupt: str) -> tuple[dict[str, list], Path]:
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        return _read_csv(path, skipped, on_corrupt), path.parent
    if not path.is_dir():
        raise DataError(f"--data {source} does not exist; pass a folder with images/ and masks/ (or train/ val/ test/ holding them) "
                        f"or a CSV with path,mask_path[,split]")
    if _has_pair(path):
        return {"all": _pairs_in(path, skipped, on_corrupt)}, path
    groups = {s: _pairs_in(path / s, skipped, on_corrupt) for s in SPLITS if _has_pair(path / s)}
    if not groups:
        raise DataError(f"{source} has no images/ and masks/ folders (directly or under train/ val/ test/); "
                        f"put each image in images/ and its mask, same name .png, in masks/")
    return groups, path


def load_segmentation(data_config, size: int, seed: int = 42) -> SegData:
    """Reads and decodes ``data_config.source`` at ``size`` x ``size``.

    Raises:
        DataError: a missing source, a mask of another size than its image, ids past labels.txt,
            colour masks, no training pair, ... (one line each).
    """
    skipped: dict[str, int] = {}
    on_corrupt = getattr(data_config, "on_corrupt", "skip")
    groups, root = _pair_groups(str(data_config.source), skipped, on_corrupt)
    split_seed = data_config.split_seed if data_config.split_seed is not None else seed
    if "all" in groups:
        extra = groups.pop("all")
        train, val, test = _split_off(extra, (data_config.val_fraction, data_config.test_fraction), split_seed)
        for name, part in (("train", train), ("val", val), ("test", test)):
            groups[name] = groups.get(name, []) + part
    if "train" not in groups or not groups["train"]:
        raise DataError(f"{data_config.source} has no training pairs (image + mask); add images/ and masks/ (or train/images, train/masks)")
    if not groups.get("val"):
        train, val, _ = _split_off(groups["train"], (max(data_config.val_fraction, 0.1), 0.0), split_seed)
        groups["train"], groups["val"] = train, val
    splits = {name: _decode(pairs, size, skipped, on_corrupt) for name, pairs in groups.items() if pairs}
    if not len(splits.get("train", ())):
        raise DataError(f"{data_config.source}: no readable training pair; check the images and masks")
    if not len(splits.get("val", ())):
        raise DataError(f"{data_config.source}: no readable validation pair (val/ or the split taken from train); add pairs to val/")
    names = _class_names(_labels(root), splits, data_config.ignore_index)
    return SegData(splits["train"], splits["val"], splits.get("test"), names, size, str(data_config.source), skipped,
                   data_config.ignore_index)


def _resize_arrays(x: np.ndarray, y: np.ndarray, size: int) -> SegSplit:
    from PIL import Image

    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 4 or x.shape[-1] != 3 or y.shape != x.shape[:3]:
        raise DataError(f"arrays must be images N x H x W x 3 and masks N x H x W of the same H, W; got {x.shape} and {y.shape}")
    if x.shape[1:3] == (size, size):
        return SegSplit(np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int32), [f"array[{i}]" for i in range(len(x))])
    xs = [np.asarray(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)) for a in x]
    ys = [_resize_mask(m, size) for m in y]
    return SegSplit(np.stack(xs), np.stack(ys), [f"array[{i}]" for i in range(len(x))])


def from_arrays(x, y, *, class_names: list[str] | None = None, val=None, test=None, image_size: int = 256,
                ignore_index: int | None = None, seed: int = 42, source: str = "arrays") -> SegData:
    """A :class:`SegData` from arrays: images N x H x W x 3 (0..255), masks N x H x W of ids.

    Without ``val`` a seeded 15% of the training pairs becomes val.

    Raises:
        DataError: shapes that do not match, ids past ``class_names``.
    """
    train = _resize_arrays(x, y, image_size)
    if val is None:
        order = np.random.default_rng(seed).permutation(len(train))
        n_val = max(1, int(round(0.15 * len(train))))
        pick = lambda idx: SegSplit(train.x[idx], train.y[idx], [train.names[i] for i in idx])  # noqa: E731
        train, val_split = pick(order[n_val:]), pick(order[:n_val])
    else:
        val_split = _resize_arrays(*val, image_size)
    test_split = _resize_arrays(*test, image_size) if test is not None else None
    splits = {"train": train, "val": val_split, **({"test": test_split} if test_split is not None else {})}
    names = _class_names(list(class_names) if class_names is not None else None, splits, ignore_index)
    return SegData(train, val_split, test_split, names, image_size, source, {}, ignore_index)
