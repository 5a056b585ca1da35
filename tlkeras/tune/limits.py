"""Budgets and device limits written with units: durations, sizes, latencies."""

from __future__ import annotations

import re

from tlkeras.errors import TLKerasError

__all__ = ["parse_duration"]


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
