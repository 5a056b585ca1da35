"""Backbone features computed in streaming batches, kept in memory or memory-mapped on disk.

The frozen-backbone phase (and the search's feature cache) needs pooled features of every
training image, possibly of several augmented views. :func:`feature_store` streams the images a
batch at a time (from memory or a disk store) and writes the features into the cheapest store that
fits the memory budget, as :mod:`tlkeras.core.cache` does for images.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from tlkeras.core.cache import StoreWriter, check_disk_space, default_cache_dir, format_bytes, memory_budget
from tlkeras.core.pending import PendingRows
from tlkeras.core.progress import Progress
from tlkeras.core.stream import image_batches

__all__ = ["feature_store"]


def feature_store(
    extractor,
    x: "np.ndarray | PendingRows",
    batch_size: int,
    *,
    augment: str = "off",
    views: int = 1,
    seed: int = 42,
    cache_memory: str | int | None = "auto",
    cache_dir: str | os.PathLike | None = None,
    label: str = "features",
) -> np.ndarray:
    """Backbone features of ``x`` (and of ``views - 1`` augmented copies), computed in batches.

    The images stream from ``x`` (in memory or a disk store) one batch at a time, so memory
    holds the features and one batch, never a float copy of the images. The features (float32,
    ``len(x) * views`` rows) go to memory when they fit the budget, else to a memory-mapped
    file under ``cache_dir`` (default :func:`default_cache_dir`) that is unlinked as soon as it
    is mapped, so it frees its disk space when the array is dropped. Rows are ordered view by view, as ``np.concatenate`` of the
    per-view outputs would be. A progress line (count, rate, ETA) is drawn on a terminal.

    Side effects: writes to stderr on a terminal; may write a file under ``cache_dir``.
    """
    from tlkeras.core.augment import augment_batches

    # A store still decoding (PendingRows) streams in as it decodes; its file count bounds its rows.
    n = x.capacity if isinstance(x, PendingRows) else len(x)
    base = image_batches(x, batch_size)
    # Each extra view is its own stateless draw (seed, view), so a run's features do not depend
    # on which store the images came from or on the order tf.data maps the batches in.
    streams = [base] + [augment_batches(base, augment, seed, view) for view in range(1, views if augment != "off" else 1)]
    total = n * len(streams)
    budget, _ = memory_budget(cache_memory)
    writer: StoreWriter | None = None
    try:
        with Progress(total, label) as progress:
            for stream in streams:
                for batch in stream:
                    out = np.asarray(extractor.predict_on_batch(batch), dtype=np.float32)
                    out = out.reshape(len(out), -1)
                    if writer is None:
                        nbytes = total * out.shape[1] * 4
                        folder = None
                        if nbytes > budget:
                            root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
                            check_disk_space(root, nbytes)
                            folder = Path(tempfile.mkdtemp(prefix="features-", dir=root))
                            print(f"tlkeras: {label} ({format_bytes(nbytes)}) go to disk under {folder}", file=sys.stderr)
                        writer = StoreWriter(total, out.shape[1:], np.float32, folder)
                    writer.write(out)
                    progress.update(len(out))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        return np.zeros((0, 0), np.float32)
    features = writer.finish({"label": label})
    if writer.folder is not None:
        # The mapping keeps the data readable; unlinking now frees the disk when it is dropped,
        # so no feature file outlives the process.
        shutil.rmtree(writer.folder, ignore_errors=True)
    return features
