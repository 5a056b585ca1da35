"""The bundle format: the keys of ``metadata.json`` and the steps that describe a bundle in them.

Every bundle — image, text and multi-task ones from :mod:`tlkeras.export.pipeline`, and those a
task writes in its own ``export_run`` (detection, segmentation) — has the same top-level keys
(:data:`TOP_LEVEL_KEYS`) and the same keys per variant (:data:`VARIANT_KEYS`; :func:`new_variant`
makes such an entry), ``<variant>.tflite`` files (:func:`variant_file`) and one ``format_version``;
:func:`describe` assembles the metadata and :func:`validate_metadata` checks it against the JSON
Schema shipped as ``tlkeras/export/bundle.schema.json``.

Side effects: none at import (no TensorFlow).
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

from tlkeras.errors import TLKerasError

__all__ = ["BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "VARIANT_KEYS", "TOP_LEVEL_KEYS", "variant_file", "new_variant", "record_file",
           "describe", "load_schema", "validate_metadata"]

BUNDLE_FORMAT = "tlkeras-bundle"
# 2: one schema for image, text and multi-task bundles (text files were model_<variant>.tflite in 1).
BUNDLE_FORMAT_VERSION = 2
# The schema ships beside the export stage that writes bundles (package data of tlkeras.export); it is
# read as a file here so a task's own export in core can describe its bundle by the same rules.
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "export" / "bundle.schema.json"

# Every variant entry has all of these (None where a check does not apply), in every kind of bundle.
VARIANT_KEYS = (
    "file", "description", "bytes", "gzip_bytes", "sha256", "size_vs_float32", "input", "output", "ops", "metrics",
    "within_threshold", "verified_on", "tflite_metadata", "mediapipe", "latency", "representative", "bias_correction",
    "guardrail", "quantization_report", "worst_layers", "error",
)
# Every metadata.json has all of these (None where a part was not written).
TOP_LEVEL_KEYS = (
    "format", "format_version", "name", "created", "modality", "versions", "source_run", "task", "input", "outputs",
    "evaluation", "variants", "recommended", "unknown_threshold", "calibration", "micro", "saved_model", "onnx",
    "trainable", "web", "passed", "failed",
)
def variant_file(variant: str) -> str:
    """The one file-naming rule of bundles: ``<variant>.tflite``."""
    return f"{variant}.tflite"


def new_variant(variant: str, description: str) -> dict[str, Any]:
    """A variant entry with every key of the schema (None until a step fills it)."""
    entry: dict[str, Any] = dict.fromkeys(VARIANT_KEYS)
    entry.update(file=variant_file(variant), description=description, verified_on=[])
    return entry


def record_file(entry: dict[str, Any], content: bytes) -> None:
    """Sets the entry's ``bytes``, ``gzip_bytes`` and ``sha256`` from the file's content."""
    entry.update(bytes=len(content), gzip_bytes=len(gzip.compress(content, 9)), sha256=hashlib.sha256(content).hexdigest())


def describe(*, name: str, modality: str, task: dict[str, Any], input: dict[str, Any], outputs: list[dict[str, Any]],
             evaluation: dict[str, Any], variants: dict[str, dict[str, Any]], failed: dict[str, str],
             recommended: str | None = None, source_run: dict[str, Any] | None = None, unknown_threshold: float | None = None,
             calibration: dict[str, Any] | None = None, extras: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's ``metadata.json`` content, with every top-level key of the schema.

    Args:
        task: ``{"name", "head", "num_outputs", "class_names", "labels_file"}`` (``tasks`` too for
            multi-task bundles).
        extras: the optional parts (``micro``, ``saved_model``, ``onnx``, ``trainable``, ``web``).

    Side effects: sets each variant's ``size_vs_float32`` (when float32 was exported).
    """
    from tlkeras.core.versions import versions

    unknown = sorted(set(extras or {}) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise TLKerasError(f"internal error: bundle metadata has no keys {unknown}")
    base = (variants.get("float32") or {}).get("bytes")
    for entry in variants.values():
        entry["size_vs_float32"] = entry["bytes"] / base if base and entry.get("bytes") else None
    meta: dict[str, Any] = dict.fromkeys(TOP_LEVEL_KEYS)
    meta.update(extras or {})
    meta.update(
        format=BUNDLE_FORMAT, format_version=BUNDLE_FORMAT_VERSION, name=name,
        created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(), modality=modality,
        versions=versions(), source_run=source_run or {}, task=task, input=input, outputs=outputs, evaluation=evaluation,
        variants=variants, recommended=recommended, unknown_threshold=unknown_threshold, calibration=calibration,
        passed=not failed, failed=dict(failed),
    )
    return meta


def load_schema() -> dict[str, Any]:
    """The JSON Schema of ``metadata.json`` shipped with the package (``bundle.schema.json``)."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validate_metadata(meta: dict[str, Any]) -> None:
    """Checks bundle metadata against :func:`load_schema`.

    Uses the ``jsonschema`` package when installed, else a small validator of the keywords the
    schema uses (type, required, properties, additionalProperties, items, enum, const, minimum).

    Raises:
        TLKerasError: naming the first place where ``meta`` breaks the schema.
    """
    schema = load_schema()
    try:
        import jsonschema
    except ImportError:
        problem = _first_problem(meta, schema, "metadata")
        if problem:
            raise TLKerasError(f"bundle metadata breaks bundle.schema.json: {problem}") from None
        return
    try:
        jsonschema.validate(meta, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "metadata"
        raise TLKerasError(f"bundle metadata breaks bundle.schema.json at {where}: {exc.message}") from None


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is_type(value, name: str) -> bool:
    if name in ("number", "integer"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok and (name == "number" or float(value).is_integer())
    return isinstance(value, _TYPES[name])


def _first_problem(value, schema: dict[str, Any], where: str) -> str | None:
    types = schema.get("type")
    if types is not None and not any(_is_type(value, t) for t in ([types] if isinstance(types, str) else types)):
        return f"{where} is {type(value).__name__}, not {types}"
    if "const" in schema and value != schema["const"]:
        return f"{where} is {value!r}, not {schema['const']!r}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} is {value!r}, not one of {schema['enum']}"
    if "minimum" in schema and _is_type(value, "number") and value < schema["minimum"]:
        return f"{where} is {value}, under {schema['minimum']}"
    if isinstance(value, dict):
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            return f"{where} lacks {missing}"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is None and extra is False:
                return f"{where} has the unknown key {key!r}"
            problem = _first_problem(item, sub, f"{where}/{key}") if isinstance(sub, dict) else None
            if problem:
                return problem
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problem = _first_problem(item, schema["items"], f"{where}/{i}")
            if problem:
                return problem
    return None
