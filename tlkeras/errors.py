"""Errors that mean "the user asked for something that cannot work" (as opposed to bugs)."""

from __future__ import annotations

__all__ = ["TLKerasError"]


class TLKerasError(Exception):
    """A bad input or environment problem, with a one-line message that says how to fix it.

    The CLIs print ``str(error)`` on one line and exit with ``exit_code`` (2 by default), without a
    traceback. Library callers catch it like any exception.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
