"""tf.data pipelines that read a split's images by index, one batch at a time.

``split.x`` is an in-memory array or a disk store (a read-only ``np.memmap``, see
:mod:`tlkeras.core.cache`). Either way the pipeline shuffles and batches *indices* and gathers
each batch's rows in a ``tf.numpy_function``; a disk store is read with ``pread``, so memory holds
a few batches, never the whole split (``from_tensor_slices`` would copy it into a tensor). The
same seed gives the same batches from either store, since only indices are shuffled.
"""

from __future__ import annotations

import os

import numpy as np

from tlkeras.core.bundle import is_text
from tlkeras.core.cache import is_disk_backed, read_rows
from tlkeras.core.pending import PendingRows, pending_rows
from tlkeras.core.tasks import task_of_head
from tlkeras.errors import TLKerasError

__all__ = [
    "encode_labels", "make_dataset", "image_batches", "indexed_batches", "pending_batches", "row_reader", "keep_worker_shard",
    "shard_count",
]

_FDS: dict[tuple[str, int], int] = {}  # one read-only descriptor per store file and process


def encode_labels(y: np.ndarray, head: str, num_outputs: int) -> np.ndarray:
    """Model targets as the task of ``head`` encodes them (one-hot for classification, floats otherwise)."""
    return task_of_head(head).encode_labels(y, num_outputs)


def row_reader(x: np.ndarray):
    """A function ``index array -> x[index]`` (a new uint8 array) for ``tf.numpy_function``."""
    if is_disk_backed(x):
        key = (str(x.filename), os.stat(x.filename).st_ino)
        fd = _FDS.get(key)
        if fd is None:
            fd = _FDS[key] = os.open(x.filename, os.O_RDONLY)
        return lambda index: read_rows(x, index, fd)
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    return lambda index: np.asarray(x[np.asarray(index, dtype=np.int64)])


def _loader(x: np.ndarray):
    """A TensorFlow function: a batch of indices -> the float32 images of ``x`` at them."""
    from tlkeras._backend import tf

    if is_text(x):  # texts: a string tensor gathered by index (the model tokenizes them)
        texts = tf.constant([str(t) for t in x], dtype=tf.string)
        return lambda index: tf.gather(texts, index)
    rows = row_reader(x)
    shape = tuple(int(s) for s in x.shape[1:])

    def load(index):
        images = tf.numpy_function(rows, [index], tf.uint8, stateful=False)
        images.set_shape((None,) + shape)
        return tf.cast(images, tf.float32)

    return load


def image_batches(x: np.ndarray, batch_size: int):
    """A tf.data pipeline of float32 batches of the uint8 images ``x``, in order, prefetched
    (of string batches when ``x`` holds texts).

    Use it instead of ``from_tensor_slices(x)`` wherever ``x`` may be a disk store (prediction,
    feature extraction): memory holds a few batches, not a float copy of ``x``.
    """
    from tlkeras._backend import tf

    if isinstance(x, PendingRows):
        if not x.done:  # still decoding: read each batch as its rows arrive
            ds = pending_batches(x, batch_size).map(lambda images, _: tf.cast(images, tf.float32), num_parallel_calls=tf.data.AUTOTUNE)
            return ds.prefetch(tf.data.AUTOTUNE)
        x = x.result()[0]
    if is_text(x):
        return tf.data.Dataset.from_tensor_slices(tf.constant([str(t) for t in x], dtype=tf.string)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if not is_disk_backed(x):
        x = np.asarray(x)
        ds = tf.data.Dataset.from_tensor_slices(x).batch(batch_size)
        return ds.map(lambda b: tf.cast(b, tf.float32), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return indexed_batches(x, batch_size).prefetch(tf.data.AUTOTUNE)


def indexed_batches(
    x: np.ndarray,
    batch_size: int,
    *,
    extras: tuple = (),
    shuffle: bool = False,
    seed: int = 42,
    repeat: bool = False,
    drop_remainder: bool = False,
):
    """Batches of the float32 images of ``x`` (and the matching rows of each array in ``extras``).

    Only indices are shuffled (from ``seed``, anew every epoch) and batched; each batch's image
    rows are then read from ``x`` in memory or on disk, so the images are never copied into a
    tensor whole. Gives ``images`` alone without extras, else ``(images, *extras)``. The order
    equals ``from_tensor_slices((x, *extras)).shuffle(len(x), seed)`` with the same seed.
    """
    from tlkeras._backend import tf

    n = len(x)
    for extra in extras:
        if len(extra) != n:
            raise TLKerasError(f"{len(extra)} rows for {n} images")
    tensors = [tf.constant(np.asarray(extra)) for extra in extras]
    index = tf.data.Dataset.range(n)
    if shuffle:
        index = index.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        index = index.repeat()
    load = _loader(x)

    def batch(i):  # one map for images and extras: both follow the same shuffled indices
        images = load(i)
        return (images, *(tf.gather(t, i) for t in tensors)) if tensors else images

    return index.batch(batch_size, drop_remainder=drop_remainder).map(batch, num_parallel_calls=tf.data.AUTOTUNE)


def pending_batches(rows: PendingRows, batch_size: int, *, shuffle: bool = False, seed: int = 42):
    """Batches ``(uint8 images, file indices)`` of a store that may still be decoding.

    While the store is decoding, a pass reads it in store order, each batch as soon as its rows
    are written (the training split decodes in a random order, so this order is shuffled
    already). A pass that starts after the store is complete reads it in a fresh permutation
    per pass (``shuffle``, from ``seed``) or in order. Only row indices come from Python (where
    the waiting happens); the rows are read in a parallel map. The file indices pick each row's
    label out of the labels of every file given (unreadable files have no row).
    """
    from tlkeras._backend import tf

    passes = iter(range(1 << 62))

    def generate():
        number = next(passes)
        if not rows.done:
            start = 0
            while True:
                stop = min(rows.wait(start + batch_size), start + batch_size)
                if stop <= start:
                    return
                yield np.arange(start, stop, dtype=np.int64)
                start = stop
        count = len(rows.result()[1])
        order = np.random.default_rng([seed, number]).permutation(count) if shuffle else np.arange(count)
        for begin in range(0, count, batch_size):
            yield order[begin:begin + batch_size]

    def load(index):
        images, files = tf.numpy_function(rows.read, [index], (tf.as_dtype(rows.dtype), tf.int64), stateful=False)
        images.set_shape((None,) + rows.row_shape)
        files.set_shape((None,))
        return images, files

    index = tf.data.Dataset.from_generator(generate, output_signature=tf.TensorSpec((None,), tf.int64))
    return index.map(load, num_parallel_calls=tf.data.AUTOTUNE)


def make_dataset(
    split,
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

    Shuffling reshuffles the indices every epoch from ``seed``; each batch's rows are gathered
    from ``split.x`` (memory or disk store) and become float32 only per batch; augmentation runs
    on batches in parallel; the pipeline ends with ``prefetch``. ``targets`` (one row per image,
    e.g. soft labels) replaces the encoded ``split.y``. A split that holds one worker's shard
    (``split.shard``) is not sharded again by tf.distribute.
    """
    from tlkeras._backend import tf

    rows = pending_rows(split) if targets is None else None
    if rows is not None:
        # Still decoding: the first pass runs at the decoder's pace instead of waiting for it.
        every = tf.constant(encode_labels(split.labels_all, head, num_outputs))
        ds = pending_batches(rows, batch_size, shuffle=shuffle, seed=seed).map(
            lambda images, index: (tf.cast(images, tf.float32), tf.gather(every, index)), num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        if targets is None:
            targets = encode_labels(split.y, head, num_outputs)
        elif len(targets) != len(split):
            raise TLKerasError(f"{len(targets)} targets for {len(split)} images")
        ds = indexed_batches(split.x, batch_size, extras=(targets,), shuffle=shuffle, seed=seed)
    from tlkeras.core.augment import augmenter

    # Augmentation presets are image transforms (a split still decoding holds images: no wait here).
    aug = None if rows is None and is_text(split.x) else augmenter(augment, seed)
    if aug is not None:
        ds = ds.map(lambda x, y: (tf.clip_by_value(aug(x, training=True), 0.0, 255.0), y), num_parallel_calls=tf.data.AUTOTUNE)
    if shard_count(split) > 1:
        ds = keep_worker_shard(ds)
    return ds.prefetch(tf.data.AUTOTUNE)


def shard_count(split) -> int:
    """How many workers share ``split`` (1 unless it holds one worker's shard)."""
    shard = getattr(split, "shard", None)
    return int(shard[1]) if shard is not None else 1


def keep_worker_shard(ds):
    """Turns tf.distribute's auto-sharding off for ``ds``: it already holds this worker's shard.

    Under MultiWorkerMirroredStrategy each worker then reads all of its own dataset, in
    per-replica batches of ``batch_size / replicas`` (tf.distribute rebatches the global batch),
    so one epoch is about ``len(full split) / batch_size`` optimizer steps on every worker.
    """
    from tlkeras._backend import tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)
