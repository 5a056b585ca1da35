"""The photo sample and backbone weights shipped inside the package, checked before use.

``data/`` holds ``flowers/{train,val,test}/<class>/*.jpg`` (300 photos of 5 flower classes at
192x192, CC BY 2.0, credited in ``data/ATTRIBUTION.md``), MobileNetV2-1.0's ImageNet weights without
the top (``mobilenet_v2_1.0_224_imagenet_no_top.h5``), and ``manifest.csv`` with every file's size
and sha256. ``tools/make_quickstart_sample.py`` builds them from the shared fixtures.

A partial or damaged install (a missing photo, a truncated weights file) is found by the manifest
check and reported as one line that says to reinstall, before TensorFlow sees a file.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from tlkeras.errors import TLKerasError

__all__ = ["DATA_DIR", "WEIGHTS_FILE", "IMAGE_SIZE", "Sample", "load_sample"]

DATA_DIR = Path(__file__).resolve().parent / "data"
WEIGHTS_FILE = "mobilenet_v2_1.0_224_imagenet_no_top.h5"
IMAGE_SIZE = 192  # the photos' stored size; MobileNetV2's ImageNet weights work at any size >= 32

_REINSTALL = ("reinstall tlkeras (python -m pip install --force-reinstall tlkeras; from a clone: "
              "python -m pip install -e .)")


@dataclass(frozen=True)
class Sample:
    """Where the checked sample lies.

    Attributes:
        photos: the ``flowers`` folder (``train/ val/ test/`` with one folder per class).
        weights: the backbone's ImageNet weights (HDF5, tf_keras ``MobileNetV2(alpha=1.0,
            include_top=False)``).
        attribution: the licence and credits file.
        counts: ``{split: number of photos}``.
        class_names: the classes, sorted.
        weights_bytes: the weights file's size.
    """

    photos: Path
    weights: Path
    attribution: Path
    counts: dict[str, int]
    class_names: tuple[str, ...]
    weights_bytes: int


def load_sample(data_dir: str | Path | None = None) -> Sample:
    """Checks the shipped sample against its manifest and returns where it lies.

    Args:
        data_dir: the sample's folder (default: the package's ``data/``).

    Returns:
        A :class:`Sample`.

    Raises:
        TLKerasError: one line naming the first missing or changed file and saying to reinstall.
    """
    root = Path(data_dir) if data_dir is not None else DATA_DIR
    manifest = root / "manifest.csv"
    try:
        with open(manifest, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        entries = [(row["file"], int(row["bytes"]), row["sha256"]) for row in rows]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as exc:
        raise TLKerasError(f"the quickstart sample's manifest {manifest} is missing or unreadable "
                           f"({type(exc).__name__}); {_REINSTALL}") from None
    if not entries:
        raise TLKerasError(f"the quickstart sample's manifest {manifest} lists no files; {_REINSTALL}")
    counts: dict[str, int] = {}
    classes: set[str] = set()
    for rel, size, digest in entries:
        path = root / rel
        # Names come from our own manifest, but a tampered one must not point outside the folder.
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise TLKerasError(f"the quickstart sample's manifest names {rel!r}, outside its folder; {_REINSTALL}")
        try:
            ok = path.stat().st_size == size and hashlib.sha256(path.read_bytes()).hexdigest() == digest
        except OSError:
            raise TLKerasError(f"the quickstart sample file {path} is missing or unreadable (a partial install?); {_REINSTALL}") from None
        if not ok:
            raise TLKerasError(f"the quickstart sample file {path} is damaged (its size or sha256 differs from the manifest); {_REINSTALL}")
        parts = Path(rel).parts
        if parts[0] == "flowers" and len(parts) == 4:
            counts[parts[1]] = counts.get(parts[1], 0) + 1
            classes.add(parts[2])
    weights = root / WEIGHTS_FILE
    if not any(rel == WEIGHTS_FILE for rel, _, _ in entries) or set(counts) != {"train", "val", "test"}:
        raise TLKerasError(f"the quickstart sample's manifest {manifest} lacks the weights or a split; {_REINSTALL}")
    return Sample(photos=root / "flowers", weights=weights, attribution=root / "ATTRIBUTION.md", counts=counts,
                  class_names=tuple(sorted(classes)), weights_bytes=weights.stat().st_size)
