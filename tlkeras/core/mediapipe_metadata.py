"""MediaPipe's metadata writers, importable although the ``mediapipe`` wheel lacks one compiled helper.

``mediapipe``'s ``metadata`` module imports ``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version``,
a compiled helper its wheel (1.2.3 at least) does not ship, so importing
``mediapipe.tasks.python.metadata.metadata_writers`` fails with ModuleNotFoundError. The helper only
computes the metadata's minimum parser version. When it is missing, :func:`ensure_helper` puts a
stand-in module in its place whose one function is given by the caller (or
:func:`minimum_parser_version`, which derives the version from the schema fields used), and
:func:`answering` lets a writer put its own version rule in place while it writes. A wheel that ships
the compiled helper is left alone. The classification, segmentation and detection exports all go
through here.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from typing import Callable, Iterator

from tlkeras.errors import TLKerasError

__all__ = ["HELPER", "ensure_helper", "is_stand_in", "answering", "minimum_parser_version", "writer_modules", "mediapipe_version"]

HELPER = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
_WRITERS = "mediapipe.tasks.python.metadata.metadata_writers"


def minimum_parser_version(buffer: bytes) -> str:
    """The metadata parser version able to read ``buffer``, from the newest schema field it uses
    (custom metadata 1.5.0, versioned associated files 1.4.1, tensor groups 1.2.0, process units 1.1.0)."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema

    meta = schema.ModelMetadata.GetRootAsModelMetadata(bytes(buffer), 0)
    found = ["1.0.0"]
    for i in range(meta.SubgraphMetadataLength()):
        sub = meta.SubgraphMetadata(i)
        if sub.InputProcessUnitsLength() or sub.OutputProcessUnitsLength():
            found.append("1.1.0")
        if sub.InputTensorGroupsLength() or sub.OutputTensorGroupsLength():
            found.append("1.2.0")
        if sub.CustomMetadataLength():
            found.append("1.5.0")
        for t in range(sub.OutputTensorMetadataLength()):
            tensor = sub.OutputTensorMetadata(t)
            if any(tensor.AssociatedFiles(f).Version() for f in range(tensor.AssociatedFilesLength())):
                found.append("1.4.1")
    return max(found, key=lambda v: tuple(int(p) for p in v.split(".")))


def is_stand_in() -> bool:
    """Whether the helper in place is a stand-in (no compiled module behind it)."""
    helper = sys.modules.get(HELPER)
    return helper is not None and getattr(helper, "__file__", None) is None


def ensure_helper(missing: str, default: Callable[[bytes], str] | None = None) -> None:
    """Makes MediaPipe's metadata writers importable; puts a stand-in helper in place if the wheel lacks it.

    Args:
        missing: the TLKerasError message when ``mediapipe`` itself is not installed.
        default: the stand-in's version rule; it replaces the generic :func:`minimum_parser_version`
            of an earlier stand-in, never another caller's rule.

    Raises:
        TLKerasError: ``mediapipe`` is not installed (``missing``).

    Side effects: may add the stand-in (and empty parent packages) to ``sys.modules``.
    """
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        raise TLKerasError(missing) from None
    try:
        __import__(HELPER)
    except ImportError:
        # Parent packages the wheel lacks are created empty, top down; then the one function.
        parts = HELPER.split(".")
        for i in range(3, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in sys.modules:
                try:
                    __import__(parent)
                except ImportError:
                    sys.modules[parent] = types.ModuleType(parent)
                    setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[parent])
        module = types.ModuleType(HELPER)
        module.GetMinimumMetadataParserVersion = minimum_parser_version
        sys.modules[HELPER] = module
        setattr(sys.modules[".".join(parts[:-1])], parts[-1], module)
    helper = sys.modules[HELPER]
    if default is not None and is_stand_in() and helper.GetMinimumMetadataParserVersion is minimum_parser_version:
        helper.GetMinimumMetadataParserVersion = default


@contextlib.contextmanager
def answering(rule: Callable[[bytes], str]) -> Iterator[None]:
    """While inside, a stand-in helper answers with ``rule`` (restored on exit); a compiled helper is kept."""
    helper = sys.modules.get(HELPER)
    if not is_stand_in():
        yield
        return
    previous = helper.GetMinimumMetadataParserVersion
    helper.GetMinimumMetadataParserVersion = rule
    try:
        yield
    finally:
        helper.GetMinimumMetadataParserVersion = previous


def writer_modules(missing: str, *names: str, default: Callable[[bytes], str] | None = None) -> tuple:
    """``mediapipe.tasks.python.metadata.metadata_writers.<name>`` for each name, after :func:`ensure_helper`.

    Raises:
        TLKerasError: ``mediapipe`` is not installed (``missing``).
    """
    ensure_helper(missing, default)
    return tuple(importlib.import_module(f"{_WRITERS}.{name}") for name in names)


def mediapipe_version() -> str | None:
    """The installed ``mediapipe`` wheel's version (None when it is not installed)."""
    try:
        from importlib.metadata import version

        return version("mediapipe")
    except Exception:  # noqa: BLE001 - not installed
        return None
