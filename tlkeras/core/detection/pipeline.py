"""Decoded images and the tf.data pipeline whose augmentation moves the boxes with the pixels.

Images are decoded once and stretched to the model's square input (as MediaPipe's ObjectDetector
stretches a frame to its input), boxes kept normalized ``ymin, xmin, ymax, xmax``. Augmentation
(training only): horizontal flip, scale jitter / random crop (zoom in and out, with aspect jitter)
and colour jitter, all stateless-random from a per-epoch seed, so a run is reproducible.
A box cut below ``VISIBLE_MIN`` of its area by a crop becomes an ignored region, not background;
a box cut away entirely is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tlkeras._backend import tf
from tlkeras.core.detection.anchors import tf_targets
from tlkeras.core.detection.data import Sample
from tlkeras.errors import DataError

__all__ = ["Decoded", "decode_samples", "augment", "geometric", "colour", "train_dataset", "VISIBLE_MIN"]

VISIBLE_MIN = 0.4
PAD_LABEL = -3


@dataclass
class Decoded:
    """A split decoded at the model size: images ``[n, s, s, 3]`` uint8, padded boxes ``[n, m, 4]``
    (normalized ymin, xmin, ymax, xmax), labels ``[n, m]`` (class id, -1 ignored, -3 padding)."""

    images: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    samples: list


def load_rgb(sample: Sample) -> np.ndarray:
    """The sample's pixels as uint8 RGB ``[H, W, 3]`` (its size must match the annotation)."""
    if sample.image is not None:
        return sample.image
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(sample.path) as im:
            im.draft("RGB", (sample.width, sample.height))
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{sample.path} is not a readable image ({type(exc).__name__}); replace or remove it") from None
    if rgb.shape[:2] != (sample.height, sample.width):
        raise DataError(f"{sample.path} is {rgb.shape[1]}x{rgb.shape[0]} but its annotation says {sample.width}x{sample.height}; "
                        f"fix the annotation's size")
    return rgb


def resize(rgb: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))


def decode_samples(samples: list[Sample], size: int) -> Decoded:
    """Decodes and stretches ``samples`` to ``size`` px. Difficult boxes get label -1 (ignored)."""
    m = max([len(s.labels) for s in samples] + [1])
    images = np.zeros((len(samples), size, size, 3), "uint8")
    boxes = np.zeros((len(samples), m, 4), "float32")
    labels = np.full((len(samples), m), PAD_LABEL, "int32")
    for i, s in enumerate(samples):
        images[i] = resize(load_rgb(s), size)
        n = len(s.labels)
        if n:
            b = s.boxes
            boxes[i, :n] = np.stack([b[:, 1] / s.height, b[:, 0] / s.width, b[:, 3] / s.height, b[:, 2] / s.width], 1)
            labels[i, :n] = np.where(s.difficult, -1, s.labels)
    return Decoded(images, boxes, labels, samples)


def geometric(image, boxes, labels, seeds, size: int):
    """Flip and scale jitter / crop of ``image`` (float32 ``[s, s, 3]``) moving ``boxes`` (normalized
    ``[m, 4]``) with the pixels; ``seeds``: at least 5 stateless seeds. Boxes that left the view are
    removed, boxes mostly hidden get label -1 (ignored)."""
    flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
    image = tf.cond(flip, lambda: image[:, ::-1, :], lambda: image)
    boxes = tf.cond(flip, lambda: tf.stack([boxes[:, 0], 1 - boxes[:, 3], boxes[:, 2], 1 - boxes[:, 1]], 1), lambda: boxes)
    # A window of side 0.55..1.25 of the image (aspect 0.8..1.25) resized to the input: zoom in and out.
    scale = tf.random.stateless_uniform([], seeds[1], 0.55, 1.25)
    aspect = tf.exp(tf.random.stateless_uniform([], seeds[2], -0.22, 0.22))
    h, w = scale / tf.sqrt(aspect), scale * tf.sqrt(aspect)
    y0 = tf.random.stateless_uniform([], seeds[3]) * (1 - h)
    x0 = tf.random.stateless_uniform([], seeds[4]) * (1 - w)
    window = tf.stack([y0, x0, y0 + h, x0 + w])
    image = tf.image.crop_and_resize(image[None], window[None], [0], [size, size], extrapolation_value=114.0)[0]
    moved = (boxes - tf.stack([y0, x0, y0, x0])) / tf.stack([h, w, h, w])
    clipped = tf.clip_by_value(moved, 0.0, 1.0)
    area = lambda b: tf.maximum(b[:, 2] - b[:, 0], 0.0) * tf.maximum(b[:, 3] - b[:, 1], 0.0)  # noqa: E731
    visible = area(clipped) / tf.maximum(area(moved), 1e-9)
    keep = (clipped[:, 2] - clipped[:, 0] > 1.0 / size) & (clipped[:, 3] - clipped[:, 1] > 1.0 / size)
    labels = tf.where(visible < VISIBLE_MIN, -1, labels)
    return image, tf.boolean_mask(clipped, keep), tf.boolean_mask(labels, keep)


def colour(image, seeds):
    """Brightness, contrast and saturation jitter of a float32 0..255 image (boxes do not move)."""
    image = tf.image.stateless_random_brightness(image / 255.0, 0.15, seeds[0])
    image = tf.image.stateless_random_contrast(image, 0.75, 1.25, seeds[1])
    image = tf.image.stateless_random_saturation(image, 0.7, 1.3, seeds[2])
    return tf.clip_by_value(image * 255.0, 0.0, 255.0)


def augment(image, boxes, labels, seed, size: int):
    """One random training view (:func:`geometric` then :func:`colour`) from a stateless ``seed`` ``[2]``."""
    seeds = tf.random.experimental.stateless_split(seed, 8)
    image, boxes, labels = geometric(image, boxes, labels, seeds[:5], size)
    return colour(image, seeds[5:]), boxes, labels


def train_dataset(decoded: Decoded, anchors: np.ndarray, box_scales, num_classes: int, batch_size: int, *, seed: int,
                  epoch: int, augmented: bool) -> "tf.data.Dataset":
    """One epoch of (images, (box targets, class targets)) batches, shuffled and augmented from
    ``(seed, epoch)`` alone."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(decoded.images)).astype("int32")
    seeds = rng.integers(0, 2**31 - 1, size=(len(order), 2), dtype="int64")
    size = decoded.images.shape[1]
    images, boxes, labels = (tf.constant(a) for a in (decoded.images, decoded.boxes, decoded.labels))

    def one(i, s):
        image = tf.cast(tf.gather(images, i), tf.float32)
        lab = tf.gather(labels, i)
        real = lab != PAD_LABEL
        b, lab = tf.boolean_mask(tf.gather(boxes, i), real), tf.boolean_mask(lab, real)
        if augmented:
            image, b, lab = augment(image, b, lab, s, size)
        box_t, cls_t = tf_targets(b, lab, anchors, box_scales, num_classes)
        return image, (box_t, cls_t)

    ds = tf.data.Dataset.from_tensor_slices((order, seeds))
    ds = ds.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=len(order) > batch_size).prefetch(2)
