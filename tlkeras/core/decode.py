"""Decoding image files with TensorFlow's image ops in a parallel tf.data pipeline, into a store.

One pass over the files: each is read, decoded (JPEG, PNG, GIF's first frame, BMP, WebP;
large JPEGs at a reduced scale in libjpeg's inverse DCT), turned upright by its EXIF
orientation, made RGB (gray repeated, transparency composited on white), resized to a square
(area averaging when shrinking, bilinear when enlarging) and rounded to uint8. Files that
fail to decode (corrupt, truncated, empty, missing) are dropped by ``ignore_errors`` in the same
pass; the indices that never arrive name them, so nothing is decoded twice.

The decoded rows stream in batches into a :class:`tlkeras.core.cache.StoreWriter` (an array in
memory, or a file on disk), so memory never holds a list of images plus a stacked copy.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from tlkeras.core.cache import StoreWriter, open_store
from tlkeras.core.progress import Progress
from tlkeras.errors import TLKerasError

__all__ = ["decode_files", "decode_groups", "decode_image_fn"]

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

    def has_exif(data):
        # A JPEG's EXIF block (APP1 "Exif") comes right after the start marker, or after a JFIF
        # APP0 segment; checking those two places in the graph keeps Python (and its lock) out
        # of the pipeline for the many files without EXIF.
        length = tf.strings.length(data)

        def at(offset):
            offset = tf.minimum(offset, length)
            return tf.equal(tf.strings.substr(data, offset, 4), b"Exif")

        def after_app0():
            size_bytes = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 4, 2), tf.uint8), tf.int32)
            return at(4 + size_bytes[0] * 256 + size_bytes[1] + 4)  # next marker, its length, "Exif"

        app0 = tf.equal(tf.strings.substr(data, 2, 2), b"\xff\xe0")
        return tf.logical_or(at(6), tf.cond(app0, after_app0, lambda: tf.constant(False)))

    def orientation(data):
        is_jpeg = tf.logical_and(tf.strings.length(data) > 32, tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8"))
        return tf.cond(
            is_jpeg,
            lambda: tf.cond(has_exif(data), lambda: read_orientation(data), lambda: tf.constant(1, tf.int32)),
            lambda: tf.constant(1, tf.int32),
        )

    def to_rgb(img):
        channels = tf.shape(img)[2]

        def composite():  # 2 channels (gray + alpha) or 4 (RGBA): on white, as load_image does
            f = tf.cast(img, tf.float32)
            color = tf.cond(channels < 3, lambda: tf.tile(f[..., :1], [1, 1, 3]), lambda: f[..., :3])
            alpha = f[..., -1:] / 255.0
            return tf.cast(tf.round(color * alpha + 255.0 * (1.0 - alpha)), tf.uint8)

        def opaque():
            return tf.cond(channels < 3, lambda: tf.tile(img[..., :1], [1, 1, 3]), lambda: img[..., :3])

        return tf.cond(tf.equal(channels % 2, 0), composite, opaque)

    def resize(img):
        shape = tf.shape(img)
        # Shrinking: area averaging (antialiased like PIL's bilinear, about twice as fast as
        # antialiased bilinear here); enlarging: bilinear.
        shrink = tf.logical_and(shape[0] >= size, shape[1] >= size)
        return tf.cond(
            shrink,
            lambda: tf.image.resize(img, (size, size), method="area"),
            lambda: tf.image.resize(img, (size, size), method="bilinear", antialias=True),
        )

    def decode_jpeg_scaled(data):
        # libjpeg can decode at 1/2, 1/4 or 1/8 scale in the inverse DCT instead of decoding
        # every pixel and averaging them away: about twice as fast for a 12 MP phone photo and a
        # 224 px model (BENCHMARKS.md; the entropy decoding of every coefficient remains). The largest scale that still leaves both sides >= size keeps the final resize
        # a shrink, so the result stays an area average of the photo.
        shape = tf.io.extract_jpeg_shape(data)
        short = tf.minimum(shape[0], shape[1])
        index = tf.reduce_sum(tf.cast(short >= size * tf.constant([2, 4, 8]), tf.int32))
        return tf.switch_case(index, [lambda r=r: tf.io.decode_jpeg(data, channels=0, ratio=r) for r in (1, 2, 4, 8)])

    def decode_any(data):
        is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff")  # as decode_image tells
        return tf.cond(
            is_jpeg, lambda: decode_jpeg_scaled(data), lambda: tf.io.decode_image(data, channels=0, expand_animations=False)
        )

    def decode(path_or_data):
        data = path_or_data if from_bytes else tf.io.read_file(path_or_data)
        img = decode_any(data)
        img.set_shape([None, None, None])
        img = to_rgb(orient(img, orientation(data)))
        img.set_shape([None, None, 3])
        return tf.cast(tf.clip_by_value(tf.round(resize(img)), 0.0, 255.0), tf.uint8)

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
    return decode_groups([(paths, folder, encoded)], size, on_corrupt=on_corrupt, label=label, batch_size=batch_size)[0]


def decode_groups(
    groups: Sequence[tuple[Sequence[str], Path | None, object]],
    size: int,
    *,
    on_corrupt: str = "skip",
    label: str | None = "decoding",
    batch_size: int = 64,
    listener=None,
) -> list[tuple[np.ndarray, list[int], list[str]]]:
    """:func:`decode_files` for several ``(paths, folder, encoded)`` groups (e.g. the splits)
    in ONE pipeline, so its start-up cost is paid once; groups with a complete disk store
    are reused, not decoded. Returns one (images, kept, skipped) per group.

    ``label`` None draws no progress line. ``listener`` (for decoding in the background, see
    :mod:`tlkeras.core.pending`) is told as rows arrive: ``started(group, writer)`` once per
    group that is decoded, ``wrote(group, kept)`` after each write of that group's rows (``kept``:
    the group's file indices written so far) and ``finished(group, result)`` as soon as every
    file of the group has been seen, before later groups end; its ``stop`` (a
    ``threading.Event``) ends the decoding early with KeyboardInterrupt, dropping partial stores.
    """
    results: list = [None] * len(groups)
    pending = _reuse_stores(groups, size, on_corrupt, results)
    if not pending:
        return results
    names = [str(p) for g in pending for p in groups[g][0]]
    starts = np.cumsum([0] + [len(groups[g][0]) for g in pending])
    owner = np.repeat(np.arange(len(pending)), np.diff(starts))  # global index -> pending group
    writers = [StoreWriter(len(groups[g][0]), (size, size, 3), np.uint8, groups[g][1]) for g in pending]
    kept: list[list[int]] = [[] for _ in pending]
    skipped: list[list[str]] = [[] for _ in pending]
    n = len(names)
    expected = 0

    def drop(stop: int) -> None:  # the files expected..stop-1 never arrived: unreadable
        if stop > expected and on_corrupt == "error":
            _corrupt_error(names[expected])
        for j in range(expected, stop):
            skipped[owner[j]].append(names[j])

    done_groups = 0

    def finish_ready(upto: int) -> None:  # groups whose every file has been seen are complete
        nonlocal done_groups
        while done_groups < len(pending) and starts[done_groups + 1] <= upto:
            k = done_groups
            rows = writers[k].finish({"size": size, "kept": kept[k], "skipped": skipped[k]})
            results[pending[k]] = (rows, kept[k], skipped[k])
            if listener is not None:
                listener.finished(pending[k], results[pending[k]])
            done_groups += 1

    if listener is not None:
        for k, g in enumerate(pending):
            listener.started(g, writers[k])
        for g, result in enumerate(results):
            if result is not None:  # reused stores are complete before anything is decoded
                listener.finished(g, result)
    try:
        if n:
            ds = _decode_pipeline(groups, pending, names, size, batch_size, private_threads=listener is not None)
            with Progress(n if label else 0, label or "") as progress:
                for index, images in ds:
                    if listener is not None and listener.stop.is_set():
                        raise KeyboardInterrupt("decoding stopped")
                    # np.asarray shares the tensor's buffer (.numpy() would copy every batch);
                    # the writer copies the rows once, into its array or file.
                    index, images = np.asarray(index), np.asarray(images)
                    for i in index:
                        drop(int(i))
                        expected = int(i) + 1
                    who = owner[index]
                    # Indices ascend, so most batches belong to one group: take them whole (a
                    # view) instead of through a boolean mask (a copy).
                    whole = who[0] == who[-1]
                    for k in np.unique(who):
                        mine = slice(None) if whole else who == k
                        writers[k].write(images[mine])
                        kept[k].extend((index[mine] - starts[k]).tolist())
                        if listener is not None:
                            listener.wrote(pending[k], kept[k])
                    finish_ready(expected)
                    progress.update(expected - progress.done)
                progress.update(n - progress.done)
        drop(n)
        finish_ready(n)
    except BaseException:
        for writer in writers[done_groups:]:
            writer.abort()
        raise
    return results


def _reuse_stores(groups, size: int, on_corrupt: str, results: list) -> list[int]:
    """Fills ``results`` for the groups whose complete disk store is at ``size``; returns the others' indices."""
    pending = []
    for g, (paths, folder, encoded) in enumerate(groups):
        found = open_store(folder) if folder is not None else None
        if found is not None and found[1].get("size") == size and "kept" in found[1]:
            rows, meta = found
            skipped = list(meta.get("skipped", []))
            if skipped and on_corrupt == "error":
                _corrupt_error(skipped[0])
            results[g] = (rows, list(meta["kept"]), skipped)
        else:
            pending.append(g)
    return pending


def _decode_pipeline(groups, pending: list[int], names: list[str], size: int, batch_size: int, private_threads: bool):
    """One tf.data pipeline of ``(index, image)`` batches over every pending group's files (or encoded bytes).

    A file that fails to decode is dropped (its index never arrives): that is the skip.
    """
    from tlkeras._backend import tf

    from_bytes = groups[pending[0]][2] is not None
    decode = decode_image_fn(size, from_bytes=from_bytes)

    def one(i, item):
        return i, decode(item)

    if from_bytes:
        items = groups[pending[0]][2]
        for g in pending[1:]:
            items = items.concatenate(groups[g][2])
    else:
        # Bytes, not str: a file name that is not valid UTF-8 (latin-1 names from old
        # archives) arrives as surrogate escapes, which a string tensor refuses.
        items = tf.data.Dataset.from_tensor_slices(tf.constant([os.fsencode(p) for p in names], dtype=tf.string))
    ds = tf.data.Dataset.zip((tf.data.Dataset.range(len(names)), items))
    ds = ds.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().batch(batch_size).prefetch(2)
    if private_threads:
        # Its own threads: training pipelines that wait for these rows block threads of
        # TensorFlow's shared pool, which must not be the ones that decode them.
        options = tf.data.Options()
        options.threading.private_threadpool_size = max(2, os.cpu_count() or 2)
        ds = ds.with_options(options)
    return ds


def _corrupt_error(path) -> None:
    raise TLKerasError(
        f"cannot read image {path} (not a readable image: corrupt, truncated, empty or missing); "
        f"remove or replace it, or pass --on-corrupt skip"
    )
