"""MediaPipe's side of a detector: its metadata writer, and its Python ObjectDetector as a verifier.

The metadata is written by MediaPipe's own writer,
``metadata_writers.object_detector.MetadataWriter.create_for_models_without_nms``: the image input
(mean 0, std 1: the model takes raw 0..255 pixels), the two raw outputs with the labels on the score
tensor, and the ``DETECTOR_METADATA`` custom metadata (fixed anchors and the YXHW decoding options).

Packaging note: ``mediapipe``'s metadata module imports a compiled helper
(``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version``) its wheel does not ship. The helper
only computes the minimum metadata parser version; :mod:`tlkeras.core.mediapipe_metadata` provides a
stand-in that, while the detector metadata is written, answers from the fields used: custom metadata
(schema 1.5.0).
"""

from __future__ import annotations

import contextlib

import numpy as np

from tlkeras.errors import TLKerasError

__all__ = ["write_detector_metadata", "mediapipe_detect", "mediapipe_available"]

_MISSING = "the detector's TFLite metadata needs the mediapipe package (pip install mediapipe)"


@contextlib.contextmanager
def _writers():
    """MediaPipe's writer modules, with a stand-in parser-version helper (where the wheel lacks it)
    answering from the fields written: custom metadata, 1.5.0."""
    from tlkeras.core.mediapipe_metadata import answering, minimum_parser_version, writer_modules

    modules = writer_modules(_MISSING, "object_detector", "metadata_writer", "metadata_info")
    with answering(minimum_parser_version):
        yield modules


def mediapipe_available() -> bool:
    try:
        import mediapipe.tasks.python.vision  # noqa: F401
    except ImportError:
        return False
    return True


def write_detector_metadata(content: bytes, *, anchors: np.ndarray, box_scales, class_names, location_first: bool) -> bytes:
    """``content`` with MediaPipe ObjectDetector metadata (anchors ``[N, 4]`` y, x, h, w normalized).

    Raises:
        TLKerasError: mediapipe missing, or the writer rejects the model.
    """
    with _writers() as (od, mw, mi):
        fixed = [od.FixedAnchor(x_center=float(a[1]), y_center=float(a[0]), width=float(a[3]), height=float(a[2])) for a in anchors]
        sy, sx, sh, sw = (float(v) for v in box_scales)
        decoding = od.TensorsDecodingOptions(
            num_classes=len(class_names), num_boxes=len(anchors), num_coords=4, keypoint_coord_offset=0, num_keypoints=0,
            num_values_per_keypoint=2, x_scale=sx, y_scale=sy, w_scale=sw, h_scale=sh, apply_exponential_on_box_size=True,
            sigmoid_score=True)
        order = mi.RawDetectionOutputTensorsOrder.LOCATION_SCORE if location_first else mi.RawDetectionOutputTensorsOrder.SCORE_LOCATION
        try:
            writer = od.MetadataWriter.create_for_models_without_nms(
                bytearray(content), [0.0], [1.0], mw.Labels().add(list(class_names)), od.SsdAnchorsOptions(od.FixedAnchorsSchema(fixed)),
                decoding, order)
            out, _ = writer.populate()
        except Exception as exc:  # noqa: BLE001 - the writer raises ValueError and flatbuffer errors
            raise TLKerasError(f"MediaPipe's detector metadata writer refused the model ({type(exc).__name__}: {exc})") from None
    return bytes(out)


def mediapipe_detect(model_path, samples, *, score_threshold: float, max_results: int, load_rgb, class_names) -> list:
    """Runs MediaPipe Tasks' Python ObjectDetector on each sample's original image.

    Returns:
        Per sample ``(boxes [k, 4] pixels xmin, ymin, xmax, ymax; scores [k]; class ids [k])``.
    """
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import ObjectDetector, ObjectDetectorOptions

    options = ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=str(model_path)), score_threshold=score_threshold,
                                    max_results=max_results)
    out = []
    with ObjectDetector.create_from_options(options) as detector:
        for s in samples:
            rgb = np.ascontiguousarray(load_rgb(s))
            result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
            boxes, scores, classes = [], [], []
            for d in result.detections:
                b, c = d.bounding_box, d.categories[0]
                boxes.append([b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height])
                scores.append(c.score)
                # The detector names the category; its index may be left empty.
                classes.append(c.index if c.index is not None and c.index >= 0 else list(class_names).index(c.category_name))
            out.append((np.asarray(boxes, "float64").reshape(-1, 4), np.asarray(scores), np.asarray(classes, "int64")))
    return out
