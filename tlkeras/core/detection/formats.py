"""COCO JSON and YOLO / Roboflow readers (Pascal VOC and CSV live in :mod:`.data`).

COCO: ``annotations/instances_<split>*.json`` (or ``<split>.json``, or Roboflow's
``<split>/_annotations.coco.json``) beside the images (``<split>*/``, ``images/`` or the JSON's own
folder); ``bbox`` is ``[x, y, width, height]`` in pixels; ``iscrowd`` regions are kept as ignored
(``difficult``) boxes. YOLO: ``data.yaml`` with ``names``; ``<split>/images/*`` with
``<split>/labels/<stem>.txt`` rows ``class cx cy w h`` normalized to [0, 1].
"""

from __future__ import annotations

import json
from pathlib import Path

from tlkeras.core.detection.data import (
    IMAGE_SUFFIXES,
    MAX_BOXES_PER_IMAGE,
    SPLITS,
    DetectionData,
    _coco_files,
    _Collector,
    _finish,
    _image_size,
    _seeded_split,
)
from tlkeras.errors import DataError

__all__ = ["read_coco", "read_yolo"]

MAX_JSON_BYTES = 1_000_000_000


def _load_json(path: Path):
    if path.stat().st_size > MAX_JSON_BYTES:
        raise DataError(f"{path} is over 1 GB; split the annotation file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid UTF-8 JSON ({type(exc).__name__}: {str(exc)[:80]}); re-export the COCO file") from None


def _coco_split(collector: _Collector, root: Path, path: Path, split: str, categories: dict[int, int]) -> list:
    doc = _load_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(doc.get("annotations", []), list):
        raise DataError(f"{path}: not a COCO detection file (needs 'images' and 'annotations' lists)")
    for c in doc.get("categories", []):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DataError(f"{path}: a category lacks 'id' or 'name'")
        if c["id"] not in categories:
            categories[c["id"]] = collector.label_of(c["name"], str(path))
    folders = [path.parent, root / split, root / "images" / split, root / "images", root]
    folders += sorted(p for p in root.glob(f"{split}*") if p.is_dir())
    boxes: dict = {}
    for a in doc.get("annotations", []):
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
            image_id, category = a["image_id"], a["category_id"]
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: an annotation lacks a numeric bbox [x, y, w, h], image_id or category_id") from None
        if category not in categories:
            raise DataError(f"{path}: category_id {category} is not among the file's categories; fix the annotation")
        boxes.setdefault(image_id, []).append((x, y, x + w, y + h, categories[category], bool(a.get("iscrowd", 0))))
    samples = []
    for image in doc["images"]:
        if not isinstance(image, dict) or "file_name" not in image:
            raise DataError(f"{path}: an image entry lacks 'file_name'")
        name = str(image["file_name"])
        where = f"{path} ({name})"
        found = next((f for f in folders if (f / name).is_file()), folders[0])
        file = collector.image_path(name, where, found)
        raw = boxes.get(image.get("id"), [])
        if len(raw) > MAX_BOXES_PER_IMAGE:
            raise DataError(f"{where}: {len(raw)} boxes in one image (at most {MAX_BOXES_PER_IMAGE}); the annotation file is broken")
        samples.append(collector.sample(file, image.get("width"), image.get("height"), raw, where))
    return samples


def read_coco(root: Path, val_fraction: float, test_fraction: float, seed: int) -> DetectionData:
    collector = _Collector(root)
    files = _coco_files(root)
    categories: dict[int, int] = {}
    splits = {s: _coco_split(collector, root, files[s], s, categories) if s in files else [] for s in SPLITS}
    if "val" not in files:
        pool = splits["train"] + splits["test"] if "test" not in files else splits["train"]
        train, val, test = _seeded_split(pool, val_fraction, 0.0 if "test" in files else test_fraction, seed)
        splits = {"train": train, "val": val, "test": splits["test"] if "test" in files else test}
        return _finish(collector, splits, root, "coco", "seeded")
    return _finish(collector, splits, root, "coco", "files")


def read_yolo(source: Path, val_fraction: float, test_fraction: float, seed: int) -> DetectionData:
    from tlkeras.config import read_yaml

    yaml_path = source if source.is_file() else next(p for p in (source / "data.yaml", source / "data.yml") if p.is_file())
    root = yaml_path.parent
    doc = read_yaml(yaml_path, "YOLO data.yaml")
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) for n in names):
        raise DataError(f"{yaml_path}: needs 'names', the class names in id order (a list or an id -> name mapping)")
    collector = _Collector(root, [str(n) for n in names])
    splits: dict[str, list] = {s: [] for s in SPLITS}
    for split, folders in (("train", ("train",)), ("val", ("valid", "val")), ("test", ("test",))):
        folder = next((root / f for f in folders if (root / f / "images").is_dir()), None)
        if folder is None:
            continue
        for image in sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            file = collector.image_path(str(image.relative_to(root)), str(image))
            w, h = _image_size(file)
            label = folder / "labels" / f"{image.stem}.txt"
            raw = []
            if label.is_file():
                lines = [line.split() for line in label.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
                if len(lines) > MAX_BOXES_PER_IMAGE:
                    raise DataError(f"{label}: {len(lines)} boxes in one image (at most {MAX_BOXES_PER_IMAGE}); the label file is broken")
                for n, row in enumerate(lines, start=1):
                    try:
                        cls, cx, cy, bw, bh = int(row[0]), *(float(v) for v in row[1:5])
                    except (ValueError, IndexError):
                        raise DataError(f"{label}:{n}: expected 'class cx cy w h' (numbers), got {' '.join(row)[:60]!r}") from None
                    if not 0 <= cls < len(names):
                        raise DataError(f"{label}:{n}: class id {cls} is out of range 0..{len(names) - 1} ({yaml_path} names {len(names)} classes)")
                    raw.append(((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h, cls, False))
            splits[split].append(collector.sample(file, w, h, raw, str(label)))
    if not splits["val"]:
        train, val, test = _seeded_split(splits["train"], val_fraction, 0.0 if splits["test"] else test_fraction, seed)
        splits = {"train": train, "val": val, "test": splits["test"] or test}
        return _finish(collector, splits, root, "yolo", "seeded")
    return _finish(collector, splits, root, "yolo", "files")
