"""Detection data: one reader per layout users have, all returning :class:`DetectionData`.

Layouts (detected from the folder by :func:`layout_of`): Pascal VOC (``Annotations/*.xml`` +
``JPEGImages/``, optional ``ImageSets/Main/{train,val,test}.txt``), a CSV
``path,xmin,ymin,xmax,ymax,label[,split]`` (pixels, one row per box; a row with empty box columns is
an image without boxes), COCO JSON (``annotations/instances_<split>.json`` or ``*.json`` beside an
images folder) and YOLO / Roboflow (``data.yaml`` + ``<split>/images`` + ``<split>/labels``).

Real data's quirks are counted and skipped or repaired (``DetectionData.quirks``): degenerate boxes
are dropped, boxes past the border clipped, images without boxes kept as negatives, ``difficult``
boxes kept and flagged (COCO evaluation ignores them, as VOC's does). Hostile input raises a one-line
:class:`~tlkeras.errors.DataError`. Nothing here imports TensorFlow. The entry point that picks the
reader is :func:`tlkeras.core.detection.readers.read_detection_data`.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlkeras.errors import DataError

__all__ = ["Sample", "DetectionData", "layout_of", "read_voc", "read_csv", "from_arrays", "MAX_BOXES_PER_IMAGE", "MAX_BOXES"]

# Beyond these counts a file is broken or hostile, not a dataset (COCO's densest image has ~90 boxes).
MAX_BOXES_PER_IMAGE = 1000
MAX_BOXES = 500_000
MAX_IMAGE_SIDE = 65_535
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SPLITS = ("train", "val", "test")


@dataclass
class Sample:
    """One image and its boxes (pixels, ``xmin, ymin, xmax, ymax``, float32)."""

    path: str | None
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    image: np.ndarray | None = None  # in-memory images (from_arrays)

    @property
    def name(self) -> str:
        return Path(self.path).name if self.path else f"array-{id(self)}"


@dataclass
class DetectionData:
    """What a reader returns.

    Attributes:
        class_names: class names in label order.
        train, val, test: the splits (test may be empty).
        source: where the data came from.
        layout: ``voc``, ``csv``, ``coco``, ``yolo`` or ``arrays``.
        quirks: counts of what was repaired or skipped (``degenerate_boxes``, ``clipped_boxes``,
            ``negative_images``, ``difficult_boxes``).
        split_from: ``files`` (the source's own split) or ``seeded`` (split here with ``seed``).
        task: the detection task (the train stage asks data for its task).
    """

    class_names: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    source: str
    layout: str
    quirks: dict[str, int] = field(default_factory=dict)
    split_from: str = "files"
    task: Any = None

    def split(self, name: str) -> list[Sample]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "layout": self.layout, "classes": list(self.class_names),
                "train": len(self.train), "val": len(self.val), "test": len(self.test),
                "boxes": {s: int(sum(len(x.labels) for x in self.split(s))) for s in SPLITS},
                "quirks": dict(self.quirks), "split_from": self.split_from}


def layout_of(source: str | Path) -> str | None:
    """The detection layout of ``source`` (``voc``, ``csv``, ``coco``, ``yolo``) or None. Never raises."""
    try:
        p = Path(source)
        if p.is_file():
            if p.suffix.lower() == ".csv":
                with open(p, encoding="utf-8", errors="replace") as fh:
                    header = [h.strip().lower() for h in fh.readline().split(",")]
                return "csv" if {"path", "xmin", "ymin", "xmax", "ymax", "label"} <= set(header) else None
            if p.name in ("data.yaml", "data.yml"):
                return "yolo"
            return None
        if not p.is_dir():
            return None
        if (p / "Annotations").is_dir() and (p / "JPEGImages").is_dir():
            return "voc"
        if (p / "data.yaml").is_file() or (p / "data.yml").is_file():
            return "yolo"
        if _coco_files(p):
            return "coco"
    except (OSError, ValueError):
        return None
    return None


def _coco_files(root: Path) -> dict[str, Path]:
    folder = root / "annotations" if (root / "annotations").is_dir() else root
    found = {}
    for split, names in (("train", ("train",)), ("val", ("val", "valid", "validation")), ("test", ("test",))):
        for n in names:
            for pattern in (f"instances_{n}*.json", f"{n}.json", "_annotations.coco.json"):
                hits = sorted(folder.glob(pattern)) if pattern != "_annotations.coco.json" else (
                    [root / n / pattern] if (root / n / pattern).is_file() else [])
                if hits:
                    found.setdefault(split, hits[0])
    return found


# ---------------------------------------------------------------------------------------------
# Shared checks


class _Collector:
    """Builds Samples from raw boxes, counting quirks and refusing hostile values."""

    def __init__(self, root: Path, class_names: list[str] | None = None):
        self.root = root.resolve()
        self.fixed = class_names is not None
        self.class_names = list(class_names or [])
        self.index = {n: i for i, n in enumerate(self.class_names)}
        self.quirks = {"degenerate_boxes": 0, "clipped_boxes": 0, "negative_images": 0, "difficult_boxes": 0}
        self.total = 0

    def image_path(self, name: str, where: str, folder: Path | None = None) -> Path:
        text = str(name).strip()
        if not text or "\x00" in text:
            raise DataError(f"{where}: empty or invalid image file name; name the image file relative to the data folder")
        base = (folder or self.root)
        path = (base / text).resolve()
        try:
            path.relative_to(self.root)
        except ValueError:
            raise DataError(f"{where}: image {text!r} is outside the data folder {self.root}; "
                            f"keep images inside it and name them relative to it") from None
        if not path.is_file():
            raise DataError(f"{where}: image {text!r} does not exist ({path}); add the file or remove its entry")
        return path

    def label_of(self, name: Any, where: str) -> int:
        key = str(name).strip()
        if not key:
            raise DataError(f"{where}: a box has an empty class name; give every box a class")
        if key not in self.index:
            if self.fixed:
                raise DataError(f"{where}: class {key!r} is not one of {self.class_names}; fix the label or the class list")
            self.index[key] = len(self.class_names)
            self.class_names.append(key)
        return self.index[key]

    def sample(self, path: Path | None, width: Any, height: Any, raw: Sequence[tuple], where: str) -> Sample:
        """``raw``: (xmin, ymin, xmax, ymax, label index, difficult) tuples in pixels."""
        w, h = _size(width, where, "width"), _size(height, where, "height")
        if len(raw) > MAX_BOXES_PER_IMAGE:
            raise DataError(f"{where}: {len(raw)} boxes in one image (at most {MAX_BOXES_PER_IMAGE}); the annotation file is broken")
        self.total += len(raw)
        if self.total > MAX_BOXES:
            raise DataError(f"more than {MAX_BOXES} boxes in the data; split the set or check the annotation files")
        boxes, labels, difficult = [], [], []
        for x0, y0, x1, y1, label, diff in raw:
            try:
                x0, y0, x1, y1 = (float(v) for v in (x0, y0, x1, y1))
            except (TypeError, ValueError):
                raise DataError(f"{where}: a box coordinate is not a number ({x0}, {y0}, {x1}, {y1}); write pixel numbers") from None
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
                raise DataError(f"{where}: a box coordinate is NaN or infinite; write finite pixel numbers")
            c = [min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h)]
            if c[2] - c[0] < 1.0 or c[3] - c[1] < 1.0:
                self.quirks["degenerate_boxes"] += 1
                continue
            if c != [x0, y0, x1, y1]:
                self.quirks["clipped_boxes"] += 1
            boxes.append(c)
            labels.append(label)
            difficult.append(bool(diff))
        if not boxes:
            self.quirks["negative_images"] += 1
        self.quirks["difficult_boxes"] += sum(difficult)
        return Sample(str(path) if path else None, w, h, np.asarray(boxes, "float32").reshape(-1, 4),
                      np.asarray(labels, "int32"), np.asarray(difficult, bool))


def _size(value: Any, where: str, what: str) -> int:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: image {what} {value!r} is not a number; write the size in pixels") from None
    if not math.isfinite(v) or v < 1 or v > MAX_IMAGE_SIDE or v != int(v):
        raise DataError(f"{where}: image {what} {value!r} is not a positive whole number of pixels (1..{MAX_IMAGE_SIDE})")
    return int(v)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} is not a readable image ({type(exc).__name__}); replace or remove it") from None


def _seeded_split(samples: list[Sample], val_fraction: float, test_fraction: float, seed: int):
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(samples) * val_fraction)) if len(samples) > 2 else 0
    n_test = round(len(samples) * test_fraction)
    val = [samples[i] for i in order[:n_val]]
    test = [samples[i] for i in order[n_val:n_val + n_test]]
    train = [samples[i] for i in order[n_val + n_test:]]
    return train, val, test


def _finish(collector: _Collector, splits: dict[str, list[Sample]], source, layout, split_from) -> DetectionData:
    if not collector.class_names:
        raise DataError(f"{source}: no labelled boxes found; a detector needs at least one box of one class")
    if not splits["train"]:
        raise DataError(f"{source}: the training split is empty; add images or check the split files")
    if not splits["val"]:
        raise DataError(f"{source}: the validation split is empty; add a val split (or let tlkeras split: remove the split files)")
    return DetectionData(collector.class_names, splits["train"], splits["val"], splits["test"], str(source), layout,
                         dict(collector.quirks), split_from)


# ---------------------------------------------------------------------------------------------
# Pascal VOC


def _voc_file(collector: _Collector, xml: Path, images: Path) -> Sample:
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    where = str(xml)
    try:
        if xml.stat().st_size > 20_000_000:
            raise DataError(f"{where}: over 20 MB, not a Pascal VOC annotation; remove it")
        root = ElementTree.parse(str(xml)).getroot()
    except DefusedXmlException as exc:
        raise DataError(f"{where}: refused: the XML uses entities or a DTD ({type(exc).__name__}); VOC files need neither, "
                        f"re-export the annotation") from None
    except ElementTree.ParseError as exc:
        raise DataError(f"{where}: not well-formed XML ({exc}); fix or remove the file") from None
    if root.tag != "annotation":
        raise DataError(f"{where}: the root element is <{root.tag}>, not <annotation>; this is not a Pascal VOC file")
    filename = (root.findtext("filename") or f"{xml.stem}.jpg").strip()
    path = collector.image_path(filename, where, images)
    size = root.find("size")
    width = size.findtext("width") if size is not None else None
    height = size.findtext("height") if size is not None else None
    if width in (None, "", "0") or height in (None, "", "0"):
        width, height = _image_size(path)  # some tools write 0 for the size
    objects = root.findall("object")
    if len(objects) > MAX_BOXES_PER_IMAGE:
        raise DataError(f"{where}: {len(objects)} objects in one image (at most {MAX_BOXES_PER_IMAGE}); the annotation file is broken")
    raw = []
    for obj in objects:
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{where}: an <object> has no <bndbox>; add the box or remove the object")
        label = collector.label_of(obj.findtext("name"), where)
        diff = (obj.findtext("difficult") or "0").strip() in ("1", "true")
        raw.append((box.findtext("xmin"), box.findtext("ymin"), box.findtext("xmax"), box.findtext("ymax"), label, diff))
    return collector.sample(path, width, height, raw, where)


def read_voc(root: Path, val_fraction: float, test_fraction: float, seed: int) -> DetectionData:
    collector = _Collector(root)
    images = root / "JPEGImages"
    xmls = sorted((root / "Annotations").glob("*.xml"))
    if not xmls:
        raise DataError(f"{root}/Annotations holds no .xml files; put one Pascal VOC file per image there")
    by_stem = {x.stem: _voc_file(collector, x, images) for x in xmls}
    main = root / "ImageSets" / "Main"
    lists = {s: main / f"{s}.txt" for s in SPLITS}
    if lists["train"].is_file() and lists["val"].is_file():
        splits = {}
        for s, f in lists.items():
            ids = [line.split()[0] for line in f.read_text(encoding="utf-8").splitlines() if line.strip()] if f.is_file() else []
            missing = [i for i in ids if i not in by_stem]
            if missing:
                raise DataError(f"{f}: {len(missing)} ids without an annotation file (e.g. {missing[0]!r}); fix the list")
            splits[s] = [by_stem[i] for i in ids]
        return _finish(collector, splits, root, "voc", "files")
    train, val, test = _seeded_split(list(by_stem.values()), val_fraction, test_fraction, seed)
    return _finish(collector, {"train": train, "val": val, "test": test}, root, "voc", "seeded")


# ---------------------------------------------------------------------------------------------
# CSV


def read_csv(path: Path, val_fraction: float, test_fraction: float, seed: int) -> DetectionData:
    root = path.parent
    collector = _Collector(root)
    rows: dict[str, list] = {}
    split_of: dict[str, str] = {}
    count = 0
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = {f.strip().lower(): f for f in reader.fieldnames or []}
            need = ["path", "xmin", "ymin", "xmax", "ymax", "label"]
            if not set(need) <= set(fields):
                raise DataError(f"{path}: needs the columns {','.join(need)}[,split]; it has {','.join(fields) or 'none'}")
            for n, row in enumerate(reader, start=2):
                where = f"{path}:{n}"
                name = (row.get(fields["path"]) or "").strip()
                rows.setdefault(name, [])
                if "split" in fields:
                    split = (row.get(fields["split"]) or "").strip().lower()
                    split = {"valid": "val", "validation": "val"}.get(split, split)
                    if split not in SPLITS:
                        raise DataError(f"{where}: split {split!r} is not train, val or test")
                    split_of[name] = split
                coords = [(row.get(fields[k]) or "").strip() for k in need[1:5]]
                if all(c == "" for c in coords):
                    continue  # an image without boxes
                rows[name].append((*coords, collector.label_of(row.get(fields["label"]), where), False))
                count += 1
                if count > MAX_BOXES:
                    raise DataError(f"{path}: more than {MAX_BOXES} boxes; split the set or check the file")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    if not rows:
        raise DataError(f"{path} has no rows; write one row per box: path,xmin,ymin,xmax,ymax,label")
    samples = {}
    for name, raw in rows.items():
        image = collector.image_path(name, f"{path} ({name})")
        w, h = _image_size(image)
        samples[name] = collector.sample(image, w, h, raw, f"{path} ({name})")
    if split_of:
        if len(split_of) != len(samples):
            raise DataError(f"{path}: some rows have a split and others not; fill the split column on every row")
        splits = {s: [samples[n] for n in samples if split_of[n] == s] for s in SPLITS}
        return _finish(collector, splits, path, "csv", "files")
    train, val, test = _seeded_split(list(samples.values()), val_fraction, test_fraction, seed)
    return _finish(collector, {"train": train, "val": val, "test": test}, path, "csv", "seeded")


def from_arrays(images: Sequence[np.ndarray], boxes: Sequence[Any], labels: Sequence[Any], class_names: Sequence[str], *,
                val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 42) -> DetectionData:
    """Detection data from Python: uint8 RGB images ``[H, W, 3]``, per image an ``[n, 4]`` box list
    (``xmin, ymin, xmax, ymax`` pixels) and ``n`` class ids into ``class_names``.

    Raises:
        DataError: mismatched lengths, a class id out of range, NaN boxes, a wrong image shape.
    """
    if not (len(images) == len(boxes) == len(labels)):
        raise DataError(f"got {len(images)} images, {len(boxes)} box lists and {len(labels)} label lists; give one of each per image")
    collector = _Collector(Path.cwd(), list(class_names))
    samples = []
    for i, (image, b, y) in enumerate(zip(images, boxes, labels)):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"image {i} has shape {image.shape}; pass RGB arrays [H, W, 3]")
        b = np.asarray(b, "float64").reshape(-1, 4) if len(b) else np.zeros((0, 4))
        y = np.asarray(y).reshape(-1)
        if len(b) != len(y):
            raise DataError(f"image {i}: {len(b)} boxes but {len(y)} labels; give one class id per box")
        if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
            raise DataError(f"image {i}: class id {int(y.max() if y.max() >= len(class_names) else y.min())} is out of range 0..{len(class_names) - 1}")
        s = collector.sample(None, image.shape[1], image.shape[0], [(*box, int(c), False) for box, c in zip(b, y)], f"image {i}")
        s.image = image.astype("uint8")
        samples.append(s)
    train, val, test = _seeded_split(samples, val_fraction, test_fraction, seed)
    return _finish(collector, {"train": train, "val": val, "test": test}, "arrays", "arrays", "seeded")
