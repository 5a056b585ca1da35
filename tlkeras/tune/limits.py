"""Budgets and device limits written with units (durations, sizes, latencies), and the Pareto front.

Sizes: a bare number is bytes; ``B``, ``KB``/``MB``/``GB`` are decimal (1 KB = 1000 bytes, as file
sizes are shown), ``KiB``/``MiB``/``GiB`` binary (1 KiB = 1024 bytes, as RAM is usually counted).
Latencies: a bare number is milliseconds; ``us``/``µs``, ``ms`` and ``s`` are accepted.

Nothing here imports TensorFlow or writes files.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

from tlkeras.errors import TLKerasError

__all__ = [
    "DeviceLimits",
    "format_bytes",
    "parse_duration",
    "parse_latency",
    "parse_size",
    "pareto_front",
]


def parse_duration(text: str | float | int | None) -> float | None:
    """Seconds from ``600``, ``90s``, ``10m`` or ``1.5h``; None stays None.

    Raises:
        TLKerasError: for unreadable text or a value that is not > 0.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([smh]?)\s*", str(text).lower())
        if not match:
            raise TLKerasError(f"time_budget {text!r} is not a duration; write e.g. 600, 90s, 10m or 1.5h")
        seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if not seconds > 0:
        raise TLKerasError(f"time_budget must be > 0 seconds, got {text!r}; leave it out for no time limit")
    return seconds


_NUMBER = r"([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)"
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
_TIME_UNITS = {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}


def _number_and_unit(text: Any, what: str, example: str) -> tuple[float, str]:
    if isinstance(text, bool) or text is None:
        raise TLKerasError(f"{what} {text!r} is not a value; write e.g. {example}")
    if isinstance(text, (int, float)):
        return float(text), ""
    match = re.fullmatch(rf"\s*{_NUMBER}\s*([a-zµ]*)\s*", str(text).lower())
    if not match:
        raise TLKerasError(f"{what} {text!r} cannot be read; write e.g. {example}")
    return float(match.group(1)), match.group(2)


def parse_size(text: str | int | float | None, what: str = "max_size") -> int | None:
    """Bytes from ``300KB``, ``1.5MB``, ``256KiB`` or ``300000``; None stays None.

    Raises:
        TLKerasError: an unknown unit, unreadable text or a value that is not > 0; the message
            names ``what`` and shows valid forms.
    """
    if text is None:
        return None
    example = "300KB, 1.5MB, 256KiB or 300000 (bytes)"
    value, unit = _number_and_unit(text, what, example)
    if unit not in _SIZE_UNITS:
        raise TLKerasError(f"{what} {text!r} has an unknown unit {unit!r}; use B, KB, MB, GB (x1000) or KiB, MiB, GiB (x1024), e.g. {example}")
    size = value * _SIZE_UNITS[unit]
    if not (math.isfinite(size) and size >= 1):
        raise TLKerasError(f"{what} must be at least 1 byte, got {text!r}; write e.g. {example}, or leave it out for no limit")
    return int(round(size))


def parse_latency(text: str | int | float | None, what: str = "max_latency") -> float | None:
    """Milliseconds from ``5ms``, ``0.005s``, ``500us`` or ``5``; None stays None.

    Raises:
        TLKerasError: an unknown unit, unreadable text or a value that is not > 0.
    """
    if text is None:
        return None
    example = "5ms, 0.5s, 800us or 5 (milliseconds)"
    value, unit = _number_and_unit(text, what, example)
    if unit not in _TIME_UNITS:
        raise TLKerasError(f"{what} {text!r} has an unknown unit {unit!r}; use us, ms or s, e.g. {example}")
    ms = value * _TIME_UNITS[unit]
    if not (math.isfinite(ms) and ms > 0):
        raise TLKerasError(f"{what} must be > 0, got {text!r}; write e.g. {example}, or leave it out for no limit")
    return ms


def format_bytes(n: float | None) -> str:
    """``312.4 KB`` (decimal units, like :func:`parse_size`'s KB), or ``256 KiB`` for a whole
    number of KiB/MiB that is not a round decimal one (a limit given in binary units); empty for None."""
    if n is None:
        return ""
    for unit, scale in (("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale and n % scale == 0 and n % 1000 != 0:
            return f"{n // scale:.0f} {unit}"
    for unit, scale in (("MB", 1000**2), ("KB", 1000)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


@dataclass
class DeviceLimits:
    """What a deployed model may cost (None: no limit).

    Attributes:
        max_size: ``.tflite`` file size in bytes.
        max_latency_ms: p50 latency of one ``invoke()`` in milliseconds.
        max_arena: TFLite Micro tensor arena in bytes (full-integer variants only).
    """

    max_size: int | None = None
    max_latency_ms: float | None = None
    max_arena: int | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_size, self.max_latency_ms, self.max_arena))

    def violations(self, size: int | None, latency_ms: float | None, arena: int | None) -> list[str]:
        """One phrase per limit the measurement breaks, e.g. ``size 412.0 KB > 300.0 KB``."""
        out = []
        if self.max_size is not None and size is not None and size > self.max_size:
            out.append(f"size {format_bytes(size)} > {format_bytes(self.max_size)}")
        if self.max_latency_ms is not None and latency_ms is not None and latency_ms > self.max_latency_ms:
            out.append(f"latency {latency_ms:.2f} ms > {self.max_latency_ms:g} ms")
        if self.max_arena is not None and arena is not None and arena > self.max_arena:
            out.append(f"arena {format_bytes(arena)} > {format_bytes(self.max_arena)}")
        return out

    def describe(self) -> str:
        parts = []
        if self.max_size is not None:
            parts.append(f"size <= {format_bytes(self.max_size)}")
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms")
        if self.max_arena is not None:
            parts.append(f"arena <= {format_bytes(self.max_arena)}")
        return ", ".join(parts) or "no limits"


def pareto_front(points: Sequence[tuple[Hashable, float, float]], direction: str = "max") -> list[Hashable]:
    """The keys of the non-dominated points among ``(key, score, cost)``.

    A point is dominated when another is at least as good on both axes (score by ``direction``,
    cost lower) and strictly better on one. Equal points do not dominate each other, so both stay.

    Returns:
        The front's keys, by increasing cost.
    """
    sign = 1.0 if direction == "max" else -1.0
    front = []
    for key, score, cost in points:
        dominated = any(
            sign * s >= sign * score and c <= cost and (sign * s > sign * score or c < cost)
            for k, s, c in points if k != key
        )
        if not dominated:
            front.append((cost, -sign * score, key))
    return [key for _, _, key in sorted(front, key=lambda t: (t[0], t[1]))]
