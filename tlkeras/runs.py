"""Run directories and atomic file writes.

A run directory (``runs/<name>/``) holds everything a run used and made: ``config.yaml``,
``model.keras``, ``labels.txt``, ``history.json``, ``metrics.json`` and plots. It is assembled in a
hidden temporary sibling (``.<name>.partial-*``) and renamed into place only when complete, so a
crash never leaves a half-written run directory behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from tlkeras.errors import DataError, DiskFullError, RunDirectoryError

__all__ = [
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_path",
    "write_json",
    "read_json",
    "staged_directory",
    "default_run_name",
    "read_labels",
    "check_run_name",
    "directory_lock",
    "ensure_unlocked",
    "disk_full_message",
]

# errno values (and the texts TensorFlow's C++ file layer uses) that mean "the disk is full".
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "File too large")


def disk_full_message(exc: BaseException) -> str | None:
    """One line saying what to do when ``exc`` means a full disk or quota, else None.

    Recognizes ``OSError`` (ENOSPC, EDQUOT, EFBIG: a file-size limit) and TensorFlow's errors,
    which carry only the C library's text.
    """
    where = getattr(exc, "filename", None)
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        reason = exc.strerror or "no space left"
    else:
        text = str(exc)
        reason = next((t for t in _FULL_TEXTS if t in text), None)
        if reason is None:
            return None
    place = f" writing {where}" if where else ""
    return (f"the disk is full ({reason}{place}); nothing half-written was kept: free some space "
            f"(or pick another --output-dir) and run the command again")


def check_run_name(name: str | None, flag: str = "--name") -> None:
    """Refuses a run name that is not exactly one path component.

    Raises:
        RunDirectoryError: ``..``, ``.``, a name with ``/`` or ``\\``, a leading dot (hidden
            names are the partial directories'), control characters, bytes that are not UTF-8
            (the surrogates Python decodes them to: the name would break every file that quotes
            it), or over 200 characters.
    """
    if name is None:
        return
    text = str(name)
    if (not text.strip() or text in (".", "..") or "/" in text or "\\" in text or text.startswith(".")
            or any(ord(c) < 32 or ord(c) == 127 or 0xDC80 <= ord(c) <= 0xDCFF for c in text) or len(text) > 200):
        raise RunDirectoryError(
            f"{flag} {text!r} is not a plain folder name; use letters, digits, '-', '_' or '.' in UTF-8 "
            f"without '/', leading dots or '..' (the run goes under --output-dir)"
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; renames it onto ``path`` if the block succeeds.

    Anything written to the yielded path (by any library) becomes visible under ``path`` all at
    once. On error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # some writers (Keras) refuse to overwrite or append to an existing file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except Exception as exc:
        full = disk_full_message(exc)
        if full:
            raise DiskFullError(full) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(tmp):
                shutil.rmtree(tmp)
            else:
                os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Writes ``value`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(value, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    # NumPy scalars and arrays show up in metrics and histories.
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_labels(run_dir: str | os.PathLike) -> list[str]:
    """Returns the class names stored in ``<run_dir>/labels.txt`` (one per line)."""
    path = Path(run_dir) / "labels.txt"
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir} has no labels.txt; pass a run directory written by tlkeras.train")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8, one class name per line") from None
    # "\n" only: str.splitlines() would also split on \x1c, \u2028 ..., which a class name may hold.
    return [line.rstrip("\r") for line in text.split("\n") if line.rstrip("\r")]


def default_run_name(prefix: str) -> str:
    """``<prefix>-YYYYmmdd-HHMMSS``, safe as a folder name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in prefix).strip("-") or "run"
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


@contextlib.contextmanager
def staged_directory(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary directory that becomes ``final`` when the block succeeds.

    Raises:
        RunDirectoryError: if ``final`` exists (and ``overwrite`` is False) or its parent is not
            writable.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise RunDirectoryError(f"{final} is a file, not a folder; pass a folder path (or remove the file)")
    if final.exists() and not overwrite:
        raise RunDirectoryError(f"{final} already exists; choose another --name or remove it")
    # Parents created here are removed again on failure, so a failed write leaves no empty folder.
    created = [p for p in [final.parent, *final.parent.parents] if not p.exists()]
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    except OSError as exc:
        _remove_empty(created)
        raise RunDirectoryError(f"cannot create a directory under {final.parent}: {exc.strerror}; choose a writable folder") from None
    try:
        with directory_lock(tmp):
            yield tmp
            if final.exists():
                ensure_unlocked(final)
                shutil.rmtree(final)
            os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        full = disk_full_message(exc) if isinstance(exc, Exception) else None
        if full:
            raise DiskFullError(full) from None
        raise


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def directory_lock(path: str | os.PathLike) -> Iterator[None]:
    """Holds an exclusive advisory lock on the directory ``path`` while the block runs.

    The lock (``flock`` on the directory itself, so no lock file is left behind) is released when
    the block ends or the process dies, even by ``kill -9``. It survives renaming the directory.

    Raises:
        RunDirectoryError: another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, no protection
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirectoryError(
                f"{path} is in use by another tlkeras process; wait for it to finish (or stop it) "
                f"before resuming, or choose another --name"
            ) from None
        yield
    finally:
        os.close(fd)


def ensure_unlocked(path: str | os.PathLike) -> None:
    """Raises RunDirectoryError if another process holds :func:`directory_lock` on ``path``."""
    if Path(path).is_dir():
        with directory_lock(path):
            pass
