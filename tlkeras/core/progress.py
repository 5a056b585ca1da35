"""A one-line progress display (count, rate, ETA) for long loops such as decoding and features.

It draws on a terminal only: when the stream is not a TTY (a log file, CI, a pipe, pytest's
capture) it writes nothing, so logs do not fill with carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts work done and redraws ``label: done/total unit, rate/s, ETA`` on one line.

    Use as a context manager; :meth:`update` adds finished items. Side effect: writes to
    ``stream`` (default stderr) at most every ``interval`` seconds, and only when
    ``stream.isatty()`` is true; the final line stays on screen with the total time.
    """

    def __init__(self, total: int, label: str, *, unit: str = "images", stream: TextIO | None = None, interval: float = 0.25):
        self.total = int(total)
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        isatty = getattr(self.stream, "isatty", None)
        try:
            self.active = bool(isatty and isatty()) and self.total > 0
        except (OSError, ValueError):  # a closed stream
            self.active = False
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def line(self) -> str:
        """The text of the display now (also useful for logs)."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done:,}/{self.total:,} {self.unit}, {rate:,.0f}/s"
        if self.done >= self.total:
            return text + f", done in {_duration(elapsed)}"
        if rate > 0:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        return text

    def update(self, count: int = 1) -> None:
        self.done += int(count)
        if not self.active:
            return
        now = time.perf_counter()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()

    def close(self) -> None:
        if self.active and self._last:
            self.stream.write("\r\x1b[K" + self.line() + "\n")
            self.stream.flush()
            self.active = False
