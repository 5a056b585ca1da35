"""The detection data entry point: picks the reader for a source's layout."""

from __future__ import annotations

from pathlib import Path

from tlkeras.core.detection.data import DetectionData, layout_of, read_csv, read_voc
from tlkeras.core.detection.formats import read_coco, read_yolo
from tlkeras.errors import DataError

__all__ = ["read_detection_data"]


def read_detection_data(source: str | Path, *, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 42) -> DetectionData:
    """Reads a detection data source in any supported layout (see the module docstring).

    Raises:
        DataError: an unknown layout or bad content (one line, with the fix).
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"--data {source} does not exist; pass a Pascal VOC folder, a COCO or YOLO folder, or a detection CSV")
    layout = layout_of(path)
    if layout == "voc":
        return read_voc(path, val_fraction, test_fraction, seed)
    if layout == "csv":
        return read_csv(path, val_fraction, test_fraction, seed)
    if layout in ("coco", "yolo"):
        reader = read_coco if layout == "coco" else read_yolo
        return reader(path, val_fraction, test_fraction, seed)
    raise DataError(f"--data {source} is not a detection layout; pass a Pascal VOC folder (Annotations/ + JPEGImages/), "
                    f"a CSV path,xmin,ymin,xmax,ymax,label, a COCO JSON folder or a YOLO data.yaml")
