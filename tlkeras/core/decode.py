"""Decoding image files with TensorFlow's image ops in a parallel tf.data pipeline, into a store.

One pass over the files: each is read, decoded (JPEG, PNG, GIF's first frame, BMP, WebP),
turned upright by its EXIF orientation, made RGB (gray repeated, transparency composited on
white), resized to a square with antialiased bilinear filtering and rounded to uint8. Files that
fail to decode (corrupt, truncated, empty, missing) are dropped by ``ignore_errors`` in the same
pass; the indices that never arrive name them, so nothing is decoded twice.

The decoded rows stream in batches into a :class:`tlkeras.core.cache.StoreWriter` (an array in
memory, or a file on disk), so memory never holds a list of images plus a stacked copy.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from tlkeras.core.cache import StoreWriter, open_store
from tlkeras.core.progress import Progress
from tlkeras.errors import TLKerasError

__all__ = ["decode_files", "decode_image_fn"]

_EXIF_HEAD = 1 << 17  # JPEG's EXIF segment (APP1) is at most 64 KiB and comes first


def _exif_orientation(head: bytes) -> np.int32:
    """EXIF orientation (1-8) of a JPEG from its first bytes; 1 when absent or unreadable."""
    if b"Exif\x00\x00" not in head:  # most files: no EXIF, no Python parsing
        return np.int32(1)
    try:
        from PIL import Image

        with Image.open(io.BytesIO(head)) as img:
            value = int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block leaves the image as stored
        value = 1
    return np.int32(value if 1 <= value <= 8 else 1)


def decode_image_fn(size: int, *, from_bytes: bool = False):
    """A TensorFlow function: file path (string scalar) -> ``size x size x 3`` uint8 RGB image.

    With ``from_bytes`` it takes the encoded file content instead of a path. It raises inside
    the pipeline for unreadable files (the caller drops them).
    """
    from tlkeras._backend import tf

    def orient(img, code):
        t = lambda: tf.transpose(img, [1, 0, 2])  # noqa: E731
        # The same transforms as PIL's ImageOps.exif_transpose, for orientations 1..8.
        branches = [
            lambda: img,
            lambda: tf.reverse(img, [1]),
            lambda: tf.reverse(img, [0, 1]),
            lambda: tf.reverse(img, [0]),
            t,
            lambda: tf.reverse(t(), [1]),
            lambda: tf.reverse(t(), [0, 1]),
            lambda: tf.reverse(t(), [0]),
        ]
        return tf.switch_case(tf.clip_by_value(code - 1, 0, 7), branches)

    def read_orientation(data):
        head = tf.strings.substr(data, 0, _EXIF_HEAD)
        code = tf.numpy_function(_exif_orientation, [head], tf.int32, stateful=False)
        return tf.reshape(code, [])

    def decode(path_or_data):
        data = path_or_data if from_bytes else tf.io.read_file(path_or_data)
        img = tf.io.decode_image(data, channels=0, expand_animations=False)
        img.set_shape([None, None, None])
        is_jpeg = tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8")
        code = tf.cond(is_jpeg, lambda: read_orientation(data), lambda: tf.constant(1, tf.int32))
        img = orient(img, code)
        f = tf.cast(img, tf.float32)
        channels = tf.shape(f)[2]
        color = tf.cond(channels < 3, lambda: tf.tile(f[..., :1], [1, 1, 3]), lambda: f[..., :3])
        # 2 channels (gray + alpha) or 4 (RGBA): composite on white, as load_image does.
        alpha = tf.cond(tf.equal(channels % 2, 0), lambda: f[..., -1:] / 255.0, lambda: tf.ones_like(f[..., :1]))
        rgb = color * alpha + 255.0 * (1.0 - alpha)
        out = tf.image.resize(rgb, (size, size), method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

    return decode


def decode_files(
    paths: Sequence[str],
    size: int,
    *,
    on_corrupt: str = "skip",
    folder: Path | None = None,
    label: str = "decoding",
    batch_size: int = 64,
    encoded=None,
) -> tuple[np.ndarray, list[int], list[str]]:
    """Decodes ``paths`` in parallel into a store; returns (images, indices kept, paths skipped).

    Args:
        paths: image files, in the order the rows should have.
        size: output side in pixels.
        on_corrupt: ``skip`` drops unreadable files; ``error`` raises TLKerasError naming the
            first one as soon as it is found.
        folder: None decodes into memory; a folder makes (or reuses, when it holds a complete
            store) a disk store there, returned as a read-only ``np.memmap``.
        label: the progress display's label.
        encoded: a tf.data.Dataset of the encoded images (bytes), one per entry of ``paths``,
            which then only name them (e.g. a TFDS set read from its prepared files).

    Side effects: draws a progress line on a terminal's stderr; writes the disk store.
    """
    from tlkeras._backend import tf

    if folder is not None:
        found = open_store(folder)
        if found is not None and found[1].get("size") == size and "kept" in found[1]:
            rows, meta = found
            skipped = list(meta.get("skipped", []))
            if skipped and on_corrupt == "error":
                _corrupt_error(skipped[0])
            return rows, list(meta["kept"]), skipped
    n = len(paths)
    writer = StoreWriter(n, (size, size, 3), np.uint8, folder)
    kept: list[int] = []
    skipped: list[str] = []
    expected = 0
    try:
        if n:
            decode = decode_image_fn(size, from_bytes=encoded is not None)

            def one(i, item):
                return i, decode(item)

            items = encoded if encoded is not None else tf.data.Dataset.from_tensor_slices(tf.constant([str(p) for p in paths]))
            ds = tf.data.Dataset.zip((tf.data.Dataset.range(n), items))
            ds = ds.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            # A file that fails to decode raises inside the map; dropping it here is the skip.
            ds = ds.ignore_errors().batch(batch_size).prefetch(2)
            with Progress(n, label) as progress:
                for index, images in ds:
                    index = index.numpy()
                    for i in index:
                        if i != expected:  # the files between were dropped: unreadable
                            if on_corrupt == "error":
                                _corrupt_error(paths[expected])
                            skipped.extend(str(paths[j]) for j in range(expected, int(i)))
                        expected = int(i) + 1
                    writer.write(images.numpy())
                    kept.extend(int(i) for i in index)
                    progress.update(int(index[-1]) + 1 - progress.done)
                progress.update(n - progress.done)
        if expected < n:
            if on_corrupt == "error":
                _corrupt_error(paths[expected])
            skipped.extend(str(paths[j]) for j in range(expected, n))
    except BaseException:
        writer.abort()
        raise
    rows = writer.finish({"size": size, "kept": kept, "skipped": skipped})
    return rows, kept, skipped


def _corrupt_error(path) -> None:
    raise TLKerasError(
        f"cannot read image {path} (not a readable image: corrupt, truncated, empty or missing); "
        f"remove or replace it, or pass --on-corrupt skip"
    )
