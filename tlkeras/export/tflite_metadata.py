"""TFLite metadata inside a ``.tflite`` file, written with MediaPipe's metadata writers.

MediaPipe Tasks (``ImageClassifier`` on Android, iOS, web and Python) reads a model's TFLite
metadata: a float-input model without ``NormalizationOptions`` does not load, and a model without
a label file returns nameless categories. :func:`add_metadata` writes, per variant: name,
description, version, author; the image input (RGB, and normalization mean 0 / std 1, because
preprocessing is inside the model and float inputs take raw 0..255 values); the output (class
scores, ``labels.txt`` as an associated file, the default score threshold); quantization
parameters come from the model's own tensors, which MediaPipe reads directly.

:func:`verify_mediapipe` then loads the variant in the real runtime and compares its top-1 with
LiteRT's.

Packaging note: ``mediapipe`` 1.2.3's ``metadata`` module imports a compiled helper
(``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version``) that its wheel does not ship, so
``import mediapipe.tasks.python.metadata.metadata_writers`` fails with ModuleNotFoundError. That
helper only computes the metadata's minimum parser version. tlkeras writes only fields of metadata
schema 1.0.0 (checked in :func:`_minimum_parser_version`) and provides that one function when the
wheel lacks it (:mod:`tlkeras.core.mediapipe_metadata`, shared with the segmentation and detection exports).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tlkeras.core.mediapipe_metadata import mediapipe_version  # noqa: F401  (public here)
from tlkeras.errors import TLKerasError

__all__ = ["available", "add_metadata", "populate_metadata", "verify_mediapipe", "mediapipe_agreement", "open_classifier", "MEDIAPIPE_MIN_AGREEMENT", "mediapipe_version"]

# Variants MediaPipe Tasks' ImageClassifier must agree with LiteRT on (top-1 share).
MEDIAPIPE_MIN_AGREEMENT = 0.99
# Expected scores this close to a row's maximum count as a top-1 tie: an int8 model's softmax has
# 256 levels, so two classes often share the top score and either order is the same answer.
TOP1_TIE = 1e-6
_MISSING = ("the TFLite metadata writer needs the mediapipe package (pip install mediapipe, or "
            "pip install 'tlkeras[mobile]'); or export without it: --metadata off")


def _minimum_parser_version(buffer: bytes) -> str:
    """The metadata parser version able to read ``buffer``: 1.0.0 for what tlkeras writes.

    Raises if the metadata uses a field added after schema 1.0.0 (subgraph process units, tensor
    groups, custom metadata, versioned associated files), so the declared version cannot be wrong.
    """
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema

    meta = schema.ModelMetadata.GetRootAsModelMetadata(bytes(buffer), 0)
    newer = []
    for i in range(meta.SubgraphMetadataLength()):
        sub = meta.SubgraphMetadata(i)
        if sub.InputProcessUnitsLength() or sub.OutputProcessUnitsLength():
            newer.append("subgraph process units (1.1.0)")
        if sub.InputTensorGroupsLength() or sub.OutputTensorGroupsLength():
            newer.append("tensor groups (1.2.0)")
        if sub.CustomMetadataLength():
            newer.append("custom metadata (1.5.0)")
        for t in range(sub.OutputTensorMetadataLength()):
            tensor = sub.OutputTensorMetadata(t)
            for f in range(tensor.AssociatedFilesLength()):
                if tensor.AssociatedFiles(f).Version():
                    newer.append("associated file version (1.4.1)")
    if newer:
        raise TLKerasError(f"internal error: the TFLite metadata uses {', '.join(sorted(set(newer)))}, newer than the declared parser version 1.0.0")
    return "1.0.0"


def _import_writers():
    """MediaPipe's metadata writer modules, with the parser-version helper its wheel may lack
    (:mod:`tlkeras.core.mediapipe_metadata`; a stand-in answers with :func:`_minimum_parser_version`)."""
    from tlkeras.core.mediapipe_metadata import writer_modules

    return writer_modules(_MISSING, "metadata_writer", "metadata_info", default=_minimum_parser_version)


def available() -> bool:
    """Whether the metadata writers (the ``mediapipe`` package) can be imported."""
    try:
        _import_writers()
    except (TLKerasError, ImportError):
        return False
    return True


def add_metadata(
    content: bytes,
    *,
    name: str,
    description: str,
    version: str,
    author: str,
    class_names: Sequence[str],
    head: str = "softmax",
    score_threshold: float | None = None,
) -> bytes:
    """Returns ``content`` with TFLite metadata (and ``labels.txt`` packed inside the file).

    Args:
        content: the ``.tflite`` flatbuffer.
        name, description, version, author: the model's general information.
        class_names: the labels, in output order (written as the associated ``labels.txt``).
        head: the task's ``head`` value: a task with classes (classification, multi-label) gets a
            classification output with labels, the others (regression) a plain feature output
            (MediaPipe Tasks has no regression task).
        score_threshold: the default score threshold apps (MediaPipe) apply; None writes none.

    Raises:
        TLKerasError: mediapipe is not installed, or the writer rejects the model (the message
            names why).
    """
    from tlkeras.export.result import OUTPUT_MEANING, has_classes, head_task

    writer_mod, info = _import_writers()
    task = head_task(head)

    def tensors(writer):
        writer.add_image_input(norm_mean=[0.0], norm_std=[1.0], color_space_type=writer_mod.MetadataWriter.color_space_types.RGB,
                               name="image", description="RGB image, raw pixel values 0..255 (preprocessing is inside the model)")
        meaning = OUTPUT_MEANING.get(task.name, task.name).replace("task.class_names", "labels.txt")
        if has_classes(task):
            thresholding = writer_mod.ScoreThresholding(float(score_threshold)) if score_threshold is not None else None
            writer.add_classification_output(writer_mod.Labels().add(list(class_names)), score_thresholding=thresholding,
                                             name=task.output_name(), description=meaning)
        else:
            writer.add_feature_output(name=task.output_name(), description=f"{meaning}: {', '.join(class_names)}")

    return populate_metadata(content, writer_mod, info, tensors, name=name, description=description, version=version, author=author)


def populate_metadata(content: bytes, writer_mod, info, tensors, *, name: str, description: str, version: str, author: str,
                      what: str = "TFLite metadata") -> bytes:
    """Writes general info and what ``tensors(writer)`` adds into ``content`` with MediaPipe's
    generic writer; the one place image and text metadata are populated.

    Raises:
        TLKerasError: the writer rejects the model (its first line).
    """
    writer = writer_mod.MetadataWriter.create(bytearray(content))
    # GeneralMd carries version and author, which add_general_info() does not take.
    writer._general_md = info.GeneralMd(name=name, version=version, description=description, author=author)
    try:
        tensors(writer)
        out, _ = writer.populate()
    except (ValueError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TLKerasError(f"writing {what} failed: {first}") from None
    finally:
        del writer  # its __del__ removes a temporary folder; at interpreter exit that fails noisily
    return bytes(out)


def open_classifier(task, options_cls, base_options_cls, content: bytes, classes: int):
    """A MediaPipe Tasks classifier (image or text) on ``content`` returning every class, or the
    failure record a verification returns when MediaPipe refuses the model: ``(classifier, None)``
    or ``(None, {"loaded": False, "error": first line, ...})``."""
    try:
        # A tiny positive threshold: mediapipe 1.2.3 passes 0.0 (and None) as "unset", and then
        # returned no category at all for flowers5 images whose top score was under 0.5.
        options = options_cls(base_options=base_options_cls(model_asset_buffer=bytes(content)), max_results=classes, score_threshold=1e-9)
        return task.create_from_options(options), None
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, {"loaded": False, "error": first[:300], "agreement": None, "names_match": None, "max_score_diff": None, "count": 0}


def verify_mediapipe(content: bytes, images: np.ndarray, litert_out: np.ndarray, class_names: Sequence[str],
                     head: str = "softmax") -> dict[str, Any]:
    """Runs a model with metadata in MediaPipe Tasks' ImageClassifier and compares with LiteRT.

    Images are given at the model's input size, so MediaPipe does not resize them. The comparison
    is :func:`mediapipe_agreement` (the task's agreement rule, top-1 ties count as agreement).
    """
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    classifier, failure = open_classifier(vision.ImageClassifier, vision.ImageClassifierOptions, BaseOptions, content, len(class_names))
    if failure is not None:
        return failure

    def frame(image):
        return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(np.asarray(image, np.uint8)))

    return mediapipe_agreement(classifier, images, litert_out, class_names, head, to_input=frame)


def mediapipe_agreement(classifier, samples, expected: np.ndarray, class_names: Sequence[str], head: str = "softmax",
                        to_input=lambda sample: sample) -> dict[str, Any]:
    """THE MediaPipe comparison of image and text bundles: a classifier's categories against expected scores.

    Every sample's categories (all classes are asked for) become a score row, compared with the
    expected row by the task's agreement rule (:meth:`tlkeras.core.tasks.Task.agreement`: the same
    top class for classification, the same label set at 0.5 for multi-label). Expected scores
    within :data:`TOP1_TIE` of their row's maximum tie: MediaPipe may list any of them first. A
    sample MediaPipe returns no category for disagrees.

    Args:
        classifier: an open MediaPipe Tasks classifier (closed here).
        samples: what it classifies (``to_input`` turns one into MediaPipe's input).
        expected: ``[len(samples), len(class_names)]`` scores (LiteRT's or Keras').
        head: names the task whose agreement rule applies.

    Returns:
        ``{"loaded": True, "error": None, "agreement": share of samples that agree, "names_match":
        every returned category's name is ``class_names`` of its index, "max_score_diff": largest
        |MediaPipe score - expected score| over the returned categories, "count": samples}``.
    """
    from tlkeras.export.result import head_task

    names = [str(n) for n in class_names]
    expected = np.array(expected, np.float64).reshape(len(samples), len(names))
    scores = np.zeros_like(expected)
    answered = np.zeros(len(samples), bool)
    names_ok, diff = True, 0.0
    with classifier:
        for i, sample in enumerate(samples):
            categories = classifier.classify(to_input(sample)).classifications[0].categories
            if not categories:
                continue
            answered[i] = True
            for category in categories:
                scores[i, category.index] = float(category.score)
                names_ok &= category.category_name == names[category.index]
                diff = max(diff, abs(float(category.score) - float(expected[i, category.index])))
            top = categories[0].index
            # MediaPipe's first category is its answer; an expected score tied with the maximum is the same answer.
            scores[i, top] += TOP1_TIE
            if expected[i, top] >= expected[i].max() - TOP1_TIE:
                expected[i, top] = expected[i].max() + TOP1_TIE
    agreement = head_task(head).agreement(scores[answered], expected[answered]) if answered.any() else 0.0
    share = (agreement or 0.0) * answered.sum() / max(1, len(samples))
    return {"loaded": True, "error": None, "agreement": float(share), "names_match": bool(names_ok), "max_score_diff": diff,
            "count": len(samples)}
