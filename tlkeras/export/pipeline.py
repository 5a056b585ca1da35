"""The export pipeline every bundle goes through: convert -> verify -> describe, as named steps.

Image (:func:`tlkeras.export.bundle.export_model`), text (:func:`tlkeras.export.text.export_text_model`)
and multi-task (:func:`tlkeras.heads.multitask_export.export_multitask`) bundles differ only in what
the modality and the task plug in: the serving signature, the TFLite metadata writer, how a variant
is run, which MediaPipe task checks it. The steps here are shared:

- **convert** (:func:`convert_step`): a serving SavedModel -> ``.tflite`` bytes of one variant, with
  the modality's TFLite metadata written in;
- **verify** (:func:`verify_step`, :func:`mediapipe_step`): the variant's outputs against the Keras
  model's (the task's primary metric, its drop in points, the task's agreement rule), then the
  MediaPipe check; each runtime a variant agreed on is listed in its ``verified_on``;
- **describe** (:func:`describe`, :func:`write_bundle`): one ``metadata.json`` schema for every
  bundle (``bundle.schema.json`` in this package: the same top-level keys, the same per-variant
  keys, ``<variant>.tflite`` files, one ``format_version``), ``labels.txt`` and the model card.

A task that exports through its own ``export_run`` (detection, segmentation) builds its variant
entries with :func:`new_variant` and its metadata with :func:`describe` (its own ``input``,
``outputs`` and ``extras``), so its bundles validate against the same schema.

Side effects: none at import (no TensorFlow).
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlkeras.core.tasks import Task
from tlkeras.errors import TLKerasError
from tlkeras.export.result import OUTPUT_MEANING, compare_outputs, has_classes, head_task

__all__ = [
    "BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "OUTPUT_MEANING", "VARIANT_KEYS", "TOP_LEVEL_KEYS", "Reference", "head_task", "has_classes", "variant_file",
    "new_variant", "record_file", "convert_step", "verify_step", "mediapipe_step", "recommend", "output_entry", "describe",
    "write_bundle", "load_schema", "validate_metadata",
]

BUNDLE_FORMAT = "tlkeras-bundle"
# 2: one schema for image, text and multi-task bundles (text files were model_<variant>.tflite in 1).
BUNDLE_FORMAT_VERSION = 2
SCHEMA_FILE = Path(__file__).with_name("bundle.schema.json")

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


# ---------------------------------------------------------------------------------------------
# convert


def convert_step(saved_model: str | Path, variant, representative: np.ndarray | None = None,
                 describe_tflite: Callable[[bytes], bytes] | None = None) -> bytes:
    """Converts a serving SavedModel to one variant and writes the modality's TFLite metadata into it.

    Args:
        saved_model: a batch-1 serving SavedModel (the modality's signature).
        variant: a :class:`tlkeras.export.variants.Variant` or its name.
        representative: calibration inputs for variants that need data.
        describe_tflite: the metadata writer (``bytes -> bytes``), or None for a file without metadata.

    Raises:
        TLKerasError: an op the variant cannot convert.
    """
    from tlkeras.export.convert import convert_variant

    content = convert_variant(saved_model, variant, representative)
    return describe_tflite(content) if describe_tflite is not None else content


# ---------------------------------------------------------------------------------------------
# verify


@dataclass
class Reference:
    """The Keras model's answers on the evaluation split, which every variant is compared with.

    Attributes:
        head: the task's ``head`` value; ``task`` is the task object it names.
        split: the split's name (test, else val).
        y: its labels.
        outputs: the Keras model's outputs on it.
        class_names: the output's labels.
        metrics: the task's metrics of ``outputs``.
        data: where the data came from (for metadata).
    """

    head: str
    split: str
    y: np.ndarray
    outputs: np.ndarray
    class_names: list[str]
    metrics: dict[str, Any]
    data: str | None = None

    @property
    def task(self) -> Task:
        return head_task(self.head)

    @property
    def key(self) -> str:
        return self.task.primary_metric

    def compare(self, outputs: np.ndarray) -> dict[str, Any]:
        """A variant's metrics, agreement with Keras and drop in points of the primary metric."""
        return compare_outputs(self.y, self.outputs, outputs, self.class_names, self.head, self.metrics)

    def keras_summary(self) -> dict[str, Any]:
        """The Keras model's headline metrics for ``evaluation.keras``."""
        keys = ("accuracy", "subset_accuracy", "f1_macro", "f1_micro", "mae", "rmse", "count")
        return {k: self.metrics[k] for k in keys if k in self.metrics}


def verify_step(entry: dict[str, Any], content: bytes, outputs: np.ndarray, reference: Reference, max_drop: float,
                failed: dict[str, str], name: str) -> dict[str, Any]:
    """Compares a variant's LiteRT outputs with Keras; records the file facts and the verdict in ``entry``.

    Side effects: sets ``bytes``/``gzip_bytes``/``sha256``, ``metrics``, ``within_threshold``
    and ``verified_on = ["litert"]`` in ``entry``; adds ``failed[name]`` when the primary metric
    drops more than ``max_drop`` points. Returns the metrics.
    """
    metrics = reference.compare(outputs)
    record_file(entry, content)
    entry["metrics"] = metrics
    entry["within_threshold"] = metrics["drop_points"] <= max_drop + 1e-9
    entry["verified_on"] = ["litert"]
    if not entry["within_threshold"]:
        failed[name] = f"dropped {metrics['drop_points']:.1f} points of {reference.key}"
    return metrics


def mediapipe_step(entry: dict[str, Any], check: dict[str, Any], runtime: str, min_agreement: float) -> bool:
    """Records a MediaPipe check in ``entry``; adds ``runtime`` to ``verified_on`` when it passed.

    A check passes when MediaPipe loaded the file from its metadata alone, named every category as
    labels.txt does, and agreed with the reference by the task's rule on at least ``min_agreement``
    of the examples (:func:`tlkeras.export.tflite_metadata.mediapipe_agreement`).
    """
    entry["mediapipe"] = check
    passed = bool(check.get("loaded") and check.get("names_match") and (check.get("agreement") or 0.0) >= min_agreement)
    if passed:
        entry["verified_on"].append(runtime)
    return passed


def recommend(variants: dict[str, dict[str, Any]], preference: tuple[str, ...]) -> str | None:
    """The first variant of the modality's ``preference`` order that passed its checks (None: none did)."""
    return next((v for v in preference if v in variants and variants[v].get("within_threshold")), None)


# ---------------------------------------------------------------------------------------------
# describe


def output_entry(task: Task, name: str, class_names: list[str], labels_file: str | None = "labels.txt", **extra) -> dict[str, Any]:
    """One served output in ``outputs``: its name, task, shape, labels and meaning (plus ``extra``)."""
    meaning = OUTPUT_MEANING.get(task.name, f"{task.name} outputs")
    return {"name": name, "task": task.name, "shape": [1, len(class_names)], "class_names": list(class_names),
            "labels_file": labels_file, "meaning": meaning, **extra}


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


def write_bundle(stage: Path, meta: dict[str, Any], labels: dict[str, list[str]], card: bool = True) -> None:
    """Writes the label files, ``metadata.json`` and (with ``card``) ``model_card.md`` into ``stage``.

    Side effects: writes those files atomically.
    """
    from tlkeras.export.card import model_card
    from tlkeras.runs import atomic_write_text, write_json

    for file_name, names in labels.items():
        atomic_write_text(stage / file_name, "\n".join(names) + "\n")
    write_json(stage / "metadata.json", meta)
    if card:
        atomic_write_text(stage / "model_card.md", model_card(meta))


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
