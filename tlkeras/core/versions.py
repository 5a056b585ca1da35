"""The one record of the Python, platform and package versions a run or bundle was made with."""

from __future__ import annotations

import contextlib
import platform
from importlib import metadata as md

__all__ = ["versions"]

_DISTRIBUTIONS = (
    "tlkeras", "tensorflow", "tf-keras", "tensorflow-hub", "keras-tuner",
    "tensorflow-model-optimization", "ai-edge-litert",
)


def versions() -> dict[str, str]:
    """Python, platform and the installed versions of tlkeras' main dependencies (no side effects)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in _DISTRIBUTIONS:
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out
