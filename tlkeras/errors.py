"""Errors that mean "the user asked for something that cannot work" (as opposed to bugs).

Every error is a :class:`TLKerasError`, typed by meaning so library callers can catch one kind
(``except DataError``) and the CLIs can map each to its exit code:

- :class:`UsageError`: a flag the parser rejects (unknown flag, a word where a number goes).
- :class:`ConfigError`: a config value or YAML file that cannot work.
- :class:`DataError`: a data source (folder, CSV, labels) that cannot be read or is unsafe.
- :class:`WeightsError`: backbone weights that cannot be found or do not fit.
- :class:`ModelFileError`: a model file that is missing, corrupt or refused;
  :class:`UnsafeModelError` when its config names code outside the allowlist.
- :class:`RunDirectoryError`: a run or bundle directory that is missing, taken or in use.
- :class:`DiskFullError`: the disk (or quota) filled up while writing; nothing half-written stays.
- :class:`ExportCheckFailed`: an exported variant failed its accuracy gate (exit code 3).

All of them print as one line (``<prog>: error: <message>``) and exit with ``exit_code``.
"""

from __future__ import annotations

__all__ = [
    "TLKerasError",
    "UsageError",
    "ConfigError",
    "DataError",
    "WeightsError",
    "ModelFileError",
    "UnsafeModelError",
    "RunDirectoryError",
    "DiskFullError",
    "ExportCheckFailed",
]


class TLKerasError(Exception):
    """A bad input or environment problem, with a one-line message that says how to fix it.

    The CLIs print ``str(error)`` on one line and exit with ``exit_code`` (2 by default), without a
    traceback. Library callers catch it like any exception.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        # One line, always: a message built from user input (a file name with a newline, an
        # exception text) must not spill onto a second stderr line.
        message = " ".join(str(message).split("\n"))
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(TLKerasError):
    """A command line the parser rejects (unknown flag, bad value); exit code 2."""


class ConfigError(TLKerasError):
    """A config key, value or YAML file that cannot work."""


class DataError(TLKerasError):
    """Images, CSVs or labels that cannot be read, or paths that escape their folder."""


class WeightsError(TLKerasError):
    """Backbone weights that are missing, need a download offline, or do not fit the backbone."""


class ModelFileError(TLKerasError):
    """A model file (``model.keras``, ``.tflite``) that is missing, corrupt or not a model."""


class UnsafeModelError(ModelFileError):
    """A ``.keras`` file whose config names a module or function outside the allowlist."""


class RunDirectoryError(TLKerasError):
    """A run or bundle directory that does not exist, already exists, or another process owns."""


class DiskFullError(TLKerasError):
    """The disk or quota filled up while writing; the half-written output was removed."""


class ExportCheckFailed(TLKerasError):
    """An exported variant lost more accuracy than allowed (the bundle was written); exit code 3."""

    exit_code = 3
