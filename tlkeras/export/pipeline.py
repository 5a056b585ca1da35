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
- **describe** (:func:`describe`, :func:`output_entry`, :func:`write_bundle`): one
  ``metadata.json`` schema for every bundle (``bundle.schema.json`` in this package: the same
  top-level keys, the same per-variant keys, ``<variant>.tflite`` files, one ``format_version``),
  ``labels.txt`` and the model card.

The format itself (keys, :func:`new_variant`, :func:`describe`, :func:`validate_metadata`) lives in
:mod:`tlkeras.core.bundle_format`, below the stages, so a task that exports through its own
``export_run`` in core (detection, segmentation) builds its variant entries and metadata with the
same functions (its own ``input``, ``outputs`` and ``extras``) and its bundles validate against the
same schema.

Side effects: none at import (no TensorFlow).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlkeras.core.bundle_format import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    TOP_LEVEL_KEYS,
    VARIANT_KEYS,
    describe,
    load_schema,
    new_variant,
    record_file,
    validate_metadata,
    variant_file,
)
from tlkeras.core.tasks import Task
from tlkeras.export.result import OUTPUT_MEANING, compare_outputs, has_classes, head_task

__all__ = [
    "BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "OUTPUT_MEANING", "VARIANT_KEYS", "TOP_LEVEL_KEYS", "Reference", "head_task", "has_classes",
    "variant_file", "new_variant", "record_file", "convert_step", "verify_step", "mediapipe_step", "recommend", "output_entry", "describe",
    "write_bundle", "load_schema", "validate_metadata",
]

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
