"""Paths that come from user files: CSV rows and class folder names, checked before use.

A CSV's relative paths must stay inside the CSV's folder once resolved (``..`` and symbolic links
followed), so a data file handed around cannot make tlkeras read, or copy into a run or bundle,
files from elsewhere. ``~`` is not expanded: it would turn a relative path into an absolute one
after the check. Absolute paths are taken as the user's intent (README, "Safe loading").

Class names become lines of ``labels.txt`` and folder names of bundles, so they must be
printable UTF-8 without line breaks.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from tlkeras.errors import DataError

__all__ = ["resolve_inside", "read_csv_rows", "check_class_names"]

MAX_CSV_BYTES = 256 << 20  # a CSV of a million rows is well under this


def resolve_inside(base: str | os.PathLike, value: str, *, source: str | os.PathLike | None = None) -> Path:
    """Resolves a path read from a file against ``base``, refusing paths that climb out of it.

    Args:
        base: the folder relative paths are relative to (the CSV's folder).
        value: the path as written in the file.
        source: the file it came from, for the message (default: ``base``).

    Returns:
        The resolved absolute path (symbolic links followed) for a relative ``value``; an absolute
        ``value`` as given.

    Raises:
        DataError: an empty path, a ``~`` path, a NUL byte, or a relative path that resolves
            (through ``..`` or a symbolic link) outside ``base``.
    """
    where = f"in {source}" if source is not None else f"in the CSV under {base}"
    text = str(value).strip()
    if not text:
        raise DataError(f"an empty path {where}; fill in the path column or drop the row")
    if "\0" in text:
        raise DataError(f"path {text!r} {where} contains a NUL byte; fix the row")
    if text.startswith("~"):
        raise DataError(
            f"path {text!r} {where} starts with '~', which tlkeras does not expand; write it relative to the "
            f"CSV's folder, or as an absolute path"
        )
    candidate = Path(text)
    if candidate.is_absolute():
        return candidate  # the user asked for this file on purpose (documented)
    root = Path(base).resolve()
    resolved = (root / candidate).resolve()
    if resolved != root and root not in resolved.parents:
        raise DataError(
            f"path {text!r} {where} points outside {base} (after following '..' and links); use a path inside the "
            f"CSV's folder, or an absolute path"
        )
    return resolved


def read_csv_rows(path: str | os.PathLike, required: tuple[str, ...], what: str = "CSV") -> list[dict[str, str]]:
    """Reads a UTF-8 CSV into dict rows, with one-line errors for the ways a CSV goes wrong.

    Raises:
        DataError: not UTF-8, larger than 256 MiB, malformed, no rows, or a missing column.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror}; check the path") from None
    if size > MAX_CSV_BYTES:
        raise DataError(f"{what} {path} is larger than {MAX_CSV_BYTES >> 20} MiB; split it or pass a folder of images")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{what} {path} is not a valid CSV ({exc}); fix the quoting or re-export it") from None
    if not rows:
        raise DataError(f"{what} {path} has no rows; expected a header ({','.join(required)}) and one row per image")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        found = ", ".join(sorted(c for c in rows[0] if c))
        needed = " and ".join(f"'{c}'" for c in required)
        raise DataError(f"{what} {path} needs column{'s' if len(required) > 1 else ''} {needed} (found: {found or 'none'}); add a header row naming them")
    return rows


def check_class_names(names: list[str], where: str | os.PathLike) -> None:
    """Refuses class names that cannot be written as lines of UTF-8 ``labels.txt``.

    Raises:
        DataError: a name with a line break or control character, or one that is not valid UTF-8
            (a folder name in another encoding), or an empty name.
    """
    for name in names:
        text = str(name)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            shown = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            raise DataError(
                f"class name {shown!r} in {where} is not valid UTF-8 (a folder name in another encoding); "
                f"rename the folder"
            ) from None
        if not text.strip() or any(ord(c) < 32 or ord(c) == 127 or c in "\u2028\u2029\x85" for c in text):
            raise DataError(
                f"class name {text!r} in {where} is empty or holds a line break or control character; rename it "
                f"(class names become lines of labels.txt)"
            )
