"""MediaPipe's side of a segmentation bundle: its ImageSegmenter metadata writer and its Python runtime.

Packaging note (as in the classification export): ``mediapipe`` 1.2.3's ``metadata`` module imports a
compiled helper (``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version``) that its wheel
does not ship; it only computes the metadata's minimum parser version. When the wheel lacks it,
:mod:`tlkeras.core.mediapipe_metadata` provides a stand-in; while the segmenter's metadata is written
it answers from the fields used: custom metadata (``SEGMENTER_METADATA``, schema 1.5.0).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tlkeras.core.mediapipe_metadata import mediapipe_version  # noqa: F401  (public here)
from tlkeras.errors import TLKerasError

__all__ = ["available", "mediapipe_version", "add_segmenter_metadata", "mediapipe_masks"]

_MISSING = ("the ImageSegmenter metadata writer needs the mediapipe package (pip install mediapipe); "
            "without it a segmentation bundle cannot be read by MediaPipe Tasks")


def _import_writer():
    from tlkeras.core.mediapipe_metadata import writer_modules

    return writer_modules(_MISSING, "image_segmenter", "metadata_writer")


def available() -> bool:
    """Whether MediaPipe's writer and runtime can be imported."""
    try:
        _import_writer()
        from mediapipe.tasks.python import vision  # noqa: F401
    except (TLKerasError, ImportError):
        return False
    return True


def add_segmenter_metadata(content: bytes, class_names: Sequence[str]) -> bytes:
    """``content`` with MediaPipe ImageSegmenter metadata: RGB input with mean 0 / std 1 (the
    model takes raw 0..255 pixels; preprocessing is inside), labels packed in, activation NONE
    (the output already holds softmax probabilities).

    Raises:
        TLKerasError: mediapipe missing, or the writer refuses the model (its first line).
    """
    from tlkeras.core.mediapipe_metadata import answering, minimum_parser_version

    image_segmenter, metadata_writer = _import_writer()
    try:
        with answering(minimum_parser_version):  # SEGMENTER_METADATA is custom metadata: 1.5.0
            writer = image_segmenter.MetadataWriter.create(
                bytearray(content), input_norm_mean=[0.0], input_norm_std=[1.0],
                labels=metadata_writer.Labels().add(list(class_names)), activation=image_segmenter.Activation.NONE)
            # The subclass's populate() also renders JSON from a schema file the wheel may lack; the
            # model bytes come from the base class either way.
            out, _ = metadata_writer.MetadataWriterBase.populate(writer)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TLKerasError(f"writing the ImageSegmenter metadata failed: {first}") from None
    return bytes(out)


def mediapipe_masks(content: bytes, images: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Category masks of ``images`` (N x H x W x 3 uint8) from MediaPipe Tasks' ImageSegmenter.

    Returns:
        (N x H x W uint8 masks, None), or (None, the first line of why MediaPipe refused the model).
    """
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    try:
        options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_buffer=bytes(content)),
                                               output_category_mask=True, output_confidence_masks=False)
        segmenter = vision.ImageSegmenter.create_from_options(options)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, first[:300]
    masks = []
    with segmenter:
        for image in images:
            frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(np.asarray(image, np.uint8)))
            result = segmenter.segment(frame)
            masks.append(np.array(result.category_mask.numpy_view(), dtype=np.int32).reshape(image.shape[:2]))
    return np.stack(masks), None


def describe(result: dict[str, Any]) -> str:
    return "ok" if result.get("loaded") else f"not loaded: {result.get('error')}"
