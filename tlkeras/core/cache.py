"""Where decoded images (and, via core.features, backbone features) live: memory or disk.

A decoded image set costs ``N x S x S x 3`` bytes (150 KB per image at 224 px): 20,000 images
are 3 GB. tlkeras keeps such arrays in memory while they fit a memory budget (by default a
quarter of the available RAM, at most :data:`AUTO_CAP`) and otherwise writes them once to a
file under a cache folder and hands out a read-only ``np.memmap`` of the same shape and dtype,
so every consumer that indexes ``split.x`` keeps working. Pipelines read a disk store with
``pread`` (:func:`read_rows`) rather than through the mapping, so the rows they read sit in the
operating system's page cache, shared and reclaimable, instead of growing the process'
resident memory.

A disk store is keyed by what it was made from (the file list with sizes and modification
times, the image size, the shard), so a second run over the same files reuses it instead of
decoding again. Cache folders are never deleted automatically: remove ``~/.cache/tlkeras``
(or the ``--cache-dir`` folder) to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import weakref
from pathlib import Path
from typing import Sequence

import numpy as np

from tlkeras.errors import TLKerasError

__all__ = [
    "AUTO_CAP",
    "available_memory",
    "parse_size",
    "memory_budget",
    "default_cache_dir",
    "StoreWriter",
    "open_store",
    "store_key",
    "read_rows",
    "is_disk_backed",
    "format_bytes",
    "check_disk_space",
]

# The automatic budget stops here: beyond about 7,000 images at 224 px a disk store read through
# the page cache is about as fast as an in-memory array, and it keeps the process small enough for
# a 12 GB notebook runtime. A larger --cache-memory lifts it.
AUTO_CAP = 1 << 30
AUTO_FRACTION = 0.25
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_VERSION = "tlkeras-image-store-2"  # bump when the decoder's output changes, so old caches are not reused


def format_bytes(count: float) -> str:
    """``1.5 GB`` style (decimal units, as disks and ``--cache-memory`` use)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} B"


def available_memory() -> int:
    """Bytes of memory available to new allocations (psutil, else /proc/meminfo, else 4 GB)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 10**9


def parse_size(text: str | int | float | None) -> int | None:
    """Parses ``2GB``, ``512 MiB``, ``1.5g``, ``0`` or a byte count; ``auto``/None gives None.

    Raises:
        TLKerasError: for anything else, with the accepted forms.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return int(text)
    value = str(text).strip().lower()
    if value in ("", "auto"):
        return None
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([a-z]*)", value)
    if not match or match.group(2) not in _UNITS:
        raise TLKerasError(
            f"cache_memory={text!r} is not a size; use auto, 0 (always on disk) or a size such as "
            f"512MB, 2GB, 1.5GiB"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def memory_budget(setting: str | int | None = "auto") -> tuple[int, str]:
    """The bytes of decoded data to keep in memory, and a phrase saying where the number came from."""
    explicit = parse_size(setting)
    if explicit is not None:
        return explicit, f"--cache-memory {setting}"
    available = available_memory()
    budget = min(int(available * AUTO_FRACTION), AUTO_CAP)
    return budget, (
        f"automatic budget {format_bytes(budget)}: {AUTO_FRACTION:.0%} of {format_bytes(available)} "
        f"available, at most {format_bytes(AUTO_CAP)}; --cache-memory sets it"
    )


def default_cache_dir() -> Path:
    """``$TLKERAS_CACHE``, else ``$XDG_CACHE_HOME/tlkeras``, else ``~/.cache/tlkeras``."""
    if os.environ.get("TLKERAS_CACHE"):
        return Path(os.environ["TLKERAS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tlkeras"


def store_key(paths: Sequence[str], *parts) -> str:
    """A digest of the files (path, size, modification time) and ``parts`` (size, options)."""
    digest = hashlib.sha256(_VERSION.encode())
    for part in parts:
        digest.update(repr(part).encode("utf-8", "surrogateescape"))
    for path in paths:
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"\0{path}\0{stamp}".encode("utf-8", "surrogateescape"))  # names need not be UTF-8
    return digest.hexdigest()[:24]


class StoreWriter:
    """Receives rows in order and ends as an array: in memory, or a file mapped read-only.

    Args:
        capacity: the most rows that will be written (unreadable inputs may leave fewer).
        row_shape, dtype: shape and type of one row.
        folder: None for an in-memory store; else the folder of a disk store, which gets
            ``data.bin`` (raw rows) and ``meta.json``. Both are written under temporary names
            and renamed when :meth:`finish` runs, so an interrupted run leaves no half store.
    """

    def __init__(self, capacity: int, row_shape: tuple[int, ...], dtype, folder: Path | None = None):
        self.row_shape = tuple(int(s) for s in row_shape)
        self.dtype = np.dtype(dtype)
        self.count = 0
        self.capacity = int(capacity)
        self.folder = Path(folder) if folder is not None else None
        if self.folder is None:
            self._array = np.empty((self.capacity,) + self.row_shape, self.dtype)
            self._fh = None
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._tmp = self.folder / f".data.bin.{os.getpid()}.partial"
            # Unbuffered: every write reaches the page cache at once, so a reader (row_reader)
            # sees the rows while later ones are still being decoded.
            self._fh = open(self._tmp, "wb", buffering=0)

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        n = len(rows)
        if self.count + n > self.capacity:
            raise ValueError(f"store of {self.capacity} rows got {self.count + n}")
        if self._fh is None:
            self._array[self.count:self.count + n] = rows
        else:
            data = memoryview(rows).cast("B")
            while len(data):  # a raw (unbuffered) write may take part of the bytes
                data = data[self._fh.write(data):]
        self.count += n

    def row_reader(self):
        """A function ``index array -> copies of those rows`` for rows already written, safe while
        another thread writes more and still valid after :meth:`finish` (it reads the same array,
        or the same file through its own descriptor, which a rename does not disturb).

        Side effects: a disk store opens one read-only descriptor, closed when the function is
        garbage-collected.
        """
        if self._fh is None:
            array = self._array
            return lambda index: array[np.asarray(index, dtype=np.int64).reshape(-1)]
        fd = os.open(self._tmp, os.O_RDONLY)
        shape, dtype = self.row_shape, self.dtype

        def read(index):
            return pread_rows(fd, index, shape, dtype, self._tmp)

        weakref.finalize(read, os.close, fd)
        return read

    def finish(self, meta: dict | None = None) -> np.ndarray:
        """Closes the store; returns its rows (a view, or a read-only ``np.memmap``)."""
        if self._fh is None:
            return self._array[: self.count]
        self._fh.close()
        meta = dict(meta or {}, count=self.count, row_shape=list(self.row_shape), dtype=self.dtype.str)
        os.replace(self._tmp, self.folder / "data.bin")
        tmp_meta = self.folder / f".meta.json.{os.getpid()}.partial"
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, self.folder / "meta.json")  # last: its presence marks a complete store
        return _map(self.folder / "data.bin", self.count, self.row_shape, self.dtype)

    def abort(self) -> None:
        """Drops a disk store's partial file (after an error)."""
        if self._fh is not None:
            self._fh.close()
            self._tmp.unlink(missing_ok=True)


def _map(path: Path, count: int, row_shape: tuple[int, ...], dtype) -> np.ndarray:
    if count == 0:  # mmap refuses empty files
        return np.zeros((0,) + tuple(row_shape), dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,) + tuple(row_shape))


def open_store(folder: Path) -> tuple[np.ndarray, dict] | None:
    """A complete disk store made earlier (rows, meta), or None."""
    try:
        meta = json.loads((Path(folder) / "meta.json").read_text())
        rows = _map(Path(folder) / "data.bin", int(meta["count"]), tuple(meta["row_shape"]), np.dtype(meta["dtype"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return rows, meta


def check_disk_space(folder: Path, needed: int) -> None:
    """Raises TLKerasError when ``folder``'s disk lacks ``needed`` bytes (with 5% to spare)."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed * 1.05:
        raise TLKerasError(
            f"the decoded images need {format_bytes(needed)} on disk but {folder} has "
            f"{format_bytes(free)} free; pass --cache-dir on a larger disk, a smaller --image-size, "
            f"or a larger --cache-memory if the memory has room"
        )


def is_disk_backed(x) -> bool:
    """Whether ``x`` is a whole disk store that :func:`read_rows` reads with ``pread``."""
    return (
        isinstance(x, np.memmap) and getattr(x, "filename", None) is not None and x.offset == 0
        and x.flags.c_contiguous and x.base is not None and os.path.isfile(x.filename)
        and os.path.getsize(x.filename) == x.nbytes
    )


def read_rows(x: np.ndarray, index: np.ndarray, fd: int | None = None) -> np.ndarray:
    """``x[index]`` as a new array; rows of a disk store are read with ``pread``.

    Reading through the file rather than the mapping keeps the pages in the shared page cache,
    not in this process' resident memory (see the module docstring).
    """
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    if fd is None or not is_disk_backed(x):
        return np.asarray(x[index])
    return pread_rows(fd, index, x.shape[1:], x.dtype, x.filename)


def pread_rows(fd: int, index: np.ndarray, row_shape: tuple[int, ...], dtype, name="store") -> np.ndarray:
    """Rows ``index`` of a raw row file open as ``fd``, read with ``pread`` into a new array."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    out = np.empty((len(index),) + tuple(row_shape), dtype)
    row = out.itemsize * int(np.prod(row_shape, dtype=np.int64))
    for j, i in enumerate(index):
        view = memoryview(out[j]).cast("B")
        got = os.preadv(fd, [view], int(i) * row)
        if got != row:
            raise OSError(f"short read from {name}: row {i}")
    return out
