"""Decoding in the background, so training starts on the first rows while the rest decode.

A large image set takes minutes to decode into its store (:mod:`tlkeras.core.decode`), and a
run that waits for all of it starts its first epoch late. With ``DataConfig.stream`` the splits'
files decode in one background thread instead, the training split first (its files in a seeded
random order, so a pass in store order is already shuffled), and :func:`tlkeras.load_data`
returns at once with :class:`PendingSplit` objects:

- the pipelines (:func:`tlkeras.core.stream.make_dataset`, ``image_batches``) read a split that
  is still decoding in store order, each batch as soon as its rows are written, so the first
  epoch runs at the decoder's pace; once the store is complete they read it as any other;
- everything else that asks for ``split.x``, ``split.y`` or ``split.paths`` waits until that
  split is complete, then gets exactly what a plain load would have given (a compact store of
  the readable files, their labels and paths).

The thread stops at the next batch when the process exits or the caller interrupts it (a stop
event checked by the decoder), and the partial store is removed, as a failed load removes it.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from typing import Sequence

import numpy as np

from tlkeras.core.bundle import Split
from tlkeras.core.cache import StoreWriter, is_disk_backed, read_rows

__all__ = ["PendingRows", "PendingSplit", "BackgroundDecode", "pending_rows", "images_of", "wait_for_decoding"]

_LIVE: "weakref.WeakSet[BackgroundDecode]" = weakref.WeakSet()


class PendingRows:
    """The rows of one store that a background decoder appends in order; readers wait for them.

    ``capacity`` is how many files were given: the finished store holds that many rows or fewer
    (unreadable files get no row).
    """

    def __init__(self, capacity: int, row_shape: tuple[int, ...], dtype=np.uint8):
        self.capacity = int(capacity)
        self.row_shape = tuple(int(s) for s in row_shape)
        self.dtype = np.dtype(dtype)
        self.decoder: BackgroundDecode | None = None
        self._cond = threading.Condition()
        self._reader = None  # index array -> rows, the same before and after the store completes
        self._kept: list[int] = []
        self._count = 0
        self._result: tuple[np.ndarray, list[int], list[str]] | None = None
        self._error: BaseException | None = None

    # The decoder's side ------------------------------------------------------------------------

    def started(self, writer: StoreWriter) -> None:
        with self._cond:
            self._reader = writer.row_reader()

    def wrote(self, kept: list[int]) -> None:
        with self._cond:
            self._kept, self._count = kept, len(kept)
            self._cond.notify_all()

    def finished(self, result: tuple[np.ndarray, list[int], list[str]]) -> None:
        with self._cond:
            if self._reader is None:  # a store made earlier and reused: nothing was written here
                x = result[0]
                fd = os.open(x.filename, os.O_RDONLY) if is_disk_backed(x) else None
                self._reader = lambda index: read_rows(x, index, fd)
            self._result, self._kept, self._count = result, list(result[1]), len(result[1])
            self._cond.notify_all()

    def failed(self, error: BaseException) -> None:
        with self._cond:
            if self._result is None:
                self._error = error
                self._cond.notify_all()

    # The readers' side -------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Whether the store is complete (reading it no longer waits)."""
        return self._result is not None

    def _check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"decoding in the background failed: {self._error}") from self._error

    def wait(self, stop: int) -> int:
        """Blocks until ``stop`` rows are written or the store is complete; returns the row count.

        Raises:
            RuntimeError: the background decoding failed (its error is the cause).
        """
        with self._cond:
            while self._result is None and self._error is None and self._count < stop:
                self._cond.wait(0.5)
            self._check()
            return self._count

    def read(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows at ``index`` (all already written: see :meth:`wait`) and the file indices they
        came from. Safe from several threads at once."""
        index = np.asarray(index, np.int64).reshape(-1)
        with self._cond:
            self._check()
            reader, kept = self._reader, self._kept
        return reader(index), np.asarray([kept[i] for i in index], np.int64)

    def result(self) -> tuple[np.ndarray, list[int], list[str]]:
        """(rows, file indices kept, paths skipped) once the store is complete (waits for it)."""
        with self._cond:
            while self._result is None and self._error is None:
                self._cond.wait(0.5)
            self._check()
            return self._result


class PendingSplit(Split):
    """A :class:`Split` whose images are still decoding in the background.

    ``x``, ``y`` and ``paths`` wait for the split's store to be complete, then hold the readable
    files only, as a plain load would. ``count_hint`` and ``labels_hint`` answer at once (every
    file given, before unreadable ones are known) for what only needs an estimate: the number of
    optimizer steps of an epoch, class weights.
    """

    def __init__(self, rows: PendingRows, labels: np.ndarray, paths: Sequence[str], shard: tuple[int, int] | None = None):
        self.rows = rows
        self.labels_all = np.asarray(labels)
        self.paths_all = list(paths)
        self.shard = shard

    @property
    def x(self) -> np.ndarray:
        return self.rows.result()[0]

    @property
    def y(self) -> np.ndarray:
        return self.labels_all[np.asarray(self.rows.result()[1], np.int64)]

    @property
    def paths(self) -> list[str]:
        return [self.paths_all[i] for i in self.rows.result()[1]]

    @property
    def count_hint(self) -> int:
        return len(self.x) if self.rows.done else self.rows.capacity

    @property
    def labels_hint(self) -> np.ndarray:
        return self.y if self.rows.done else self.labels_all

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        state = "complete" if self.rows.done else f"decoding, {self.rows.capacity} files"
        return f"PendingSplit({state})"


def pending_rows(split_or_x) -> PendingRows | None:
    """The rows still decoding behind a split (or a split's ``x``), or None when there is
    nothing to wait for: pass the result to the streaming readers instead of ``split.x``."""
    rows = getattr(split_or_x, "rows", split_or_x)
    return rows if isinstance(rows, PendingRows) and not rows.done else None


def images_of(split):
    """``split.x``, or the rows still decoding behind it (for :func:`tlkeras.core.features.feature_store`
    and ``image_batches``, which read them as they arrive instead of waiting)."""
    rows = pending_rows(split)
    return rows if rows is not None else split.x


class BackgroundDecode:
    """Decodes ``(paths, folder, None)`` groups in a background thread into :class:`PendingRows`.

    Args:
        groups: as :func:`tlkeras.core.decode.decode_groups` takes them, the first decoded first.
        size: output side in pixels.
        on_corrupt: ``skip`` (``error`` is refused by the caller: an error raised in a thread
            would reach the training loop as a pipeline error, not as one clear line).
        skipped: a list that gets each group's unreadable paths before that group is marked
            complete (so a reader who got a split's rows also finds its skipped files there).
        on_done: called in the thread with (seconds, skipped paths) when every group is complete.

    Side effects: starts a daemon thread; writes disk stores; at interpreter exit stops the
    thread at its next batch and removes its partial stores.
    """

    def __init__(self, groups, size: int, *, on_corrupt: str = "skip", skipped: list | None = None, on_done=None):
        self.groups = list(groups)
        self.size = int(size)
        self.on_corrupt = on_corrupt
        self.skipped = skipped
        self.on_done = on_done
        self.rows = [PendingRows(len(paths), (size, size, 3), np.uint8) for paths, _, _ in self.groups]
        for rows in self.rows:
            rows.decoder = self  # so a split's readers can wait for the whole decoding (join)
        _register_exit_handler()
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tlkeras-decode", daemon=True)
        _LIVE.add(self)
        self._thread.start()

    # decode_groups' listener
    def started(self, group: int, writer: StoreWriter) -> None:
        self.rows[group].started(writer)

    def wrote(self, group: int, kept: list[int]) -> None:
        self.rows[group].wrote(kept)

    def finished(self, group: int, result) -> None:
        if self.skipped is not None:
            self.skipped.extend(result[2])
        self.rows[group].finished(result)

    def _run(self) -> None:
        from tlkeras.core.decode import decode_groups

        started = time.perf_counter()
        try:
            results = decode_groups(self.groups, self.size, on_corrupt=self.on_corrupt, label=None, listener=self)
        except BaseException as exc:  # noqa: BLE001 - handed to the readers, who raise it
            for rows in self.rows:
                rows.failed(exc)
            return
        if self.on_done is not None:
            self.on_done(time.perf_counter() - started, [p for _, _, bad in results for p in bad])

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the thread; returns whether it ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self, timeout: float = 30.0) -> None:
        """Stops decoding at the next batch (partial stores removed) and waits for the thread."""
        self.stop.set()
        self.join(timeout)


def wait_for_decoding(bundle) -> None:
    """Waits until every split of ``bundle`` decoding in the background is complete and the
    decoding has reported its end (its line and the skipped files' warning)."""
    for split in (bundle.train, bundle.val, bundle.test):
        decoder = getattr(getattr(split, "rows", None), "decoder", None)
        if decoder is not None:
            split.rows.result()  # raises the decoding's error, if any
            decoder.join()


_EXIT_HANDLER: list = []


def _register_exit_handler() -> None:
    # Daemon threads die at exit without their cleanup; stopping them first removes their partial
    # stores. Registered once TensorFlow is imported, so it runs before TensorFlow's own exit
    # handlers (last registered, first run): a decoder still running TensorFlow ops while those
    # tear the runtime down crashes the interpreter.
    if not _EXIT_HANDLER:
        import tlkeras._backend  # noqa: F401 - imports TensorFlow

        atexit.register(_stop_all)
        _EXIT_HANDLER.append(_stop_all)


def _stop_all() -> None:
    for decoder in list(_LIVE):
        decoder.close(timeout=30.0)

