"""Anchors and the box coder, in the form MediaPipe's SSD decoder expresses.

Anchors are fixed boxes (normalized centre and size) on feature maps of strides 8, 16, 32, 64;
MediaPipe's ObjectDetector reads them from the model's metadata (``FixedAnchorsSchema``) and decodes
the ``location`` output as ``YXHW`` encodings: ``y = ty / y_scale * ha + ya``, ``x = tx / x_scale *
wa + xa``, ``h = exp(th / h_scale) * ha``, ``w = exp(tw / w_scale) * wa``. :func:`encode` is its
inverse; :func:`decode` is the same formula, so Keras, LiteRT and MediaPipe boxes agree by
construction. Scores are logits; the decoder applies the sigmoid (``sigmoid_score``).

NumPy only (the training targets are built with :func:`tf_targets` inside tf.data, which imports
TensorFlow when called).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["AnchorConfig", "make_anchors", "encode", "decode", "iou_matrix", "tf_targets", "nms", "postprocess"]


@dataclass(frozen=True)
class AnchorConfig:
    """How anchors are laid out (stored in the run's ``detection.json``).

    Attributes:
        image_size: the square model input.
        strides: the feature-map strides, one per level.
        base: anchor side at scale 1 = ``base * stride`` pixels.
        scales: anchor sizes per location, relative to ``base * stride``.
        ratios: aspect ratios (width / height) per location.
        box_scales: y, x, h, w scales of the box coder.
    """

    image_size: int = 320
    strides: tuple[int, ...] = (8, 16, 32, 64)
    base: float = 2.5
    scales: tuple[float, ...] = (1.0, 1.6)
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    box_scales: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)

    @property
    def per_location(self) -> int:
        return len(self.scales) * len(self.ratios)

    def grid(self, stride: int) -> int:
        return -(-self.image_size // stride)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "AnchorConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def make_anchors(config: AnchorConfig) -> np.ndarray:
    """``[N, 4]`` anchors ``(y_center, x_center, h, w)``, normalized to [0, 1]; the order of the
    model's outputs (level, row, column, scale, ratio)."""
    out = []
    size = float(config.image_size)
    for stride in config.strides:
        g = config.grid(stride)
        centers = (np.arange(g, dtype="float64") + 0.5) * stride / size
        shapes = []
        for s in config.scales:
            side = config.base * stride * s / size
            for r in config.ratios:
                shapes.append((side / np.sqrt(r), side * np.sqrt(r)))  # (h, w)
        yy, xx = np.meshgrid(centers, centers, indexing="ij")
        level = np.zeros((g, g, len(shapes), 4))
        level[..., 0] = yy[..., None]
        level[..., 1] = xx[..., None]
        level[..., 2] = np.array([h for h, _ in shapes])
        level[..., 3] = np.array([w for _, w in shapes])
        out.append(level.reshape(-1, 4))
    return np.concatenate(out).astype("float32")


def _to_cyxhw(boxes: np.ndarray) -> np.ndarray:
    """Normalized ``ymin, xmin, ymax, xmax`` -> centre and size."""
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                     boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


def encode(boxes: np.ndarray, anchors: np.ndarray, box_scales) -> np.ndarray:
    """Box encodings of normalized ``ymin, xmin, ymax, xmax`` boxes against matched anchors."""
    b = _to_cyxhw(boxes)
    sy, sx, sh, sw = box_scales
    return np.stack([(b[:, 0] - anchors[:, 0]) / anchors[:, 2] * sy, (b[:, 1] - anchors[:, 1]) / anchors[:, 3] * sx,
                     np.log(np.maximum(b[:, 2], 1e-6) / anchors[:, 2]) * sh,
                     np.log(np.maximum(b[:, 3], 1e-6) / anchors[:, 3]) * sw], axis=1)


def decode(encodings: np.ndarray, anchors: np.ndarray, box_scales) -> np.ndarray:
    """Normalized ``ymin, xmin, ymax, xmax`` from encodings (MediaPipe's YXHW decoding)."""
    sy, sx, sh, sw = box_scales
    e = encodings.astype("float64")
    y = e[:, 0] / sy * anchors[:, 2] + anchors[:, 0]
    x = e[:, 1] / sx * anchors[:, 3] + anchors[:, 1]
    h = np.exp(np.clip(e[:, 2] / sh, -10, 10)) * anchors[:, 2]
    w = np.exp(np.clip(e[:, 3] / sw, -10, 10)) * anchors[:, 3]
    return np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], axis=1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``[n, 4]`` and ``[m, 4]`` corner boxes (any consistent corner order)."""
    y0 = np.maximum(a[:, None, 0], b[None, :, 0])
    x0 = np.maximum(a[:, None, 1], b[None, :, 1])
    y1 = np.minimum(a[:, None, 2], b[None, :, 2])
    x1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def tf_targets(boxes, labels, anchors: np.ndarray, box_scales, num_classes: int, positive: float = 0.5, negative: float = 0.4):
    """Training targets in TensorFlow (for a tf.data map).

    Args:
        boxes: ``[m, 4]`` normalized ``ymin, xmin, ymax, xmax``; labels: ``[m]`` int32 (-1 on a box
            to ignore, e.g. ``difficult``).

    Returns:
        ``(box_targets [N, 4], class_targets [N])``: class ids for positives, -1 for background,
        -2 for anchors to ignore (IoU between the thresholds). Every box keeps its best anchor.
    """
    from tlkeras._backend import tf

    a = tf.constant(anchors)
    corners = tf.stack([a[:, 0] - a[:, 2] / 2, a[:, 1] - a[:, 3] / 2, a[:, 0] + a[:, 2] / 2, a[:, 1] + a[:, 3] / 2], axis=1)
    m = tf.shape(boxes)[0]

    def matched():
        y0 = tf.maximum(corners[:, None, 0], boxes[None, :, 0])
        x0 = tf.maximum(corners[:, None, 1], boxes[None, :, 1])
        y1 = tf.minimum(corners[:, None, 2], boxes[None, :, 2])
        x1 = tf.minimum(corners[:, None, 3], boxes[None, :, 3])
        inter = tf.maximum(y1 - y0, 0.0) * tf.maximum(x1 - x0, 0.0)
        area_a = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])
        area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        iou = inter / tf.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
        best_box = tf.argmax(iou, axis=1, output_type=tf.int32)
        best_iou = tf.reduce_max(iou, axis=1)
        # Every box keeps its best anchor, however low the IoU (small objects).
        best_anchor = tf.argmax(iou, axis=0, output_type=tf.int32)
        forced = tf.tensor_scatter_nd_max(tf.zeros_like(best_box), best_anchor[:, None], tf.range(m) + 1)  # two boxes, one anchor: one wins
        best_box = tf.where(forced > 0, forced - 1, best_box)
        best_iou = tf.where(forced > 0, 1.0, best_iou)
        lab = tf.gather(labels, best_box)
        # An anchor on an ignored box (difficult: label -1) is neither positive nor background.
        cls = tf.where(best_iou >= positive, tf.where(lab >= 0, lab, -2), tf.where(best_iou < negative, -1, -2))
        g = tf.gather(boxes, best_box)
        cy, cx = (g[:, 0] + g[:, 2]) / 2, (g[:, 1] + g[:, 3]) / 2
        h, w = tf.maximum(g[:, 2] - g[:, 0], 1e-6), tf.maximum(g[:, 3] - g[:, 1], 1e-6)
        sy, sx, sh, sw = box_scales
        enc = tf.stack([(cy - a[:, 0]) / a[:, 2] * sy, (cx - a[:, 1]) / a[:, 3] * sx,
                        tf.math.log(h / a[:, 2]) * sh, tf.math.log(w / a[:, 3]) * sw], axis=1)
        return enc, cls

    def empty():
        return tf.zeros_like(a), -tf.ones(tf.shape(a)[:1], tf.int32)

    return tf.cond(m > 0, matched, empty)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int) -> np.ndarray:
    """Greedy non-maximum suppression (indices kept, best first)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size and len(keep) < limit:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        overlap = iou_matrix(boxes[i:i + 1], boxes[order[1:]])[0]
        order = order[1:][overlap <= iou]
    return np.asarray(keep, dtype="int64")


def postprocess(location: np.ndarray, logits: np.ndarray, anchors: np.ndarray, box_scales, *, score_threshold: float = 0.05,
                iou: float = 0.3, max_results: int = 100, pre_nms: int = 5000):
    """Detections of one image the way MediaPipe's ObjectDetector makes them (measured against it):
    every (anchor, class) pair whose sigmoid score reaches ``score_threshold`` is a candidate, then
    class-agnostic greedy NMS at IoU ``iou`` keeps at most ``max_results``.

    Returns:
        ``(boxes [k, 4] normalized ymin, xmin, ymax, xmax; scores [k]; classes [k])``.
    """
    scores = 1.0 / (1.0 + np.exp(-logits.astype("float64")))
    anchor_ids, classes = np.nonzero(scores >= score_threshold)
    values = scores[anchor_ids, classes]
    order = np.argsort(-values, kind="stable")[:pre_nms]
    anchor_ids, classes, values = anchor_ids[order], classes[order], values[order]
    boxes = decode(location[anchor_ids], anchors[anchor_ids], box_scales)
    keep = nms(boxes, values, iou, max_results)
    return boxes[keep], values[keep], classes[keep]
