"""Run directories and atomic file writes.

A run directory (``runs/<name>/``) holds everything a run used and made: ``config.yaml``,
``model.keras``, ``labels.txt``, ``history.json``, ``metrics.json`` and plots. It is assembled in a
hidden temporary sibling (``.<name>.partial-*``) and renamed into place only when complete, so a
crash never leaves a half-written run directory behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from tlkeras.errors import TLKerasError

__all__ = [
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_path",
    "write_json",
    "read_json",
    "staged_directory",
    "default_run_name",
    "read_labels",
]


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
        raise TLKerasError(f"{run_dir} has no labels.txt; is it a tlkeras run directory?")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


def default_run_name(prefix: str) -> str:
    """``<prefix>-YYYYmmdd-HHMMSS``, safe as a folder name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in prefix).strip("-") or "run"
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


@contextlib.contextmanager
def staged_directory(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary directory that becomes ``final`` when the block succeeds.

    Raises:
        TLKerasError: if ``final`` exists (and ``overwrite`` is False) or its parent is not
            writable.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise TLKerasError(f"{final} already exists; choose another --name or remove it")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    except OSError as exc:
        raise TLKerasError(f"cannot create a run directory under {final.parent}: {exc.strerror}") from None
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
