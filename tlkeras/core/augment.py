"""Image augmentation: the stateless presets of training (off, light, strong) and the per-image ops
of the unlabelled-data techniques.
"""

from __future__ import annotations

import numpy as np

from tlkeras._backend import tf
from tlkeras.errors import TLKerasError


def augmenter(preset: str, seed: int = 42):
    """Returns the random augmentation of ``preset`` as a callable ``aug(x, training=True)``, or None for off.

    ``light`` flips horizontally, rotates by up to 0.05 turn and zooms by up to 10%; ``strong``
    rotates by up to 0.15 turn, zooms by up to 20%, shifts by up to 10% and changes contrast by up
    to 20%. The randomness is stateless: each image's draw is a hash of ``seed`` and the image's
    own pixels, so the result does not depend on the order in which a parallel ``tf.data`` map
    runs its batches, and the same seed gives the same augmented images on every run (pass a new
    seed per epoch, as the training engine does, to vary them). The augmentation lives in the input
    pipeline, not in the model, so exported models carry no augmentation ops.
    """
    if preset == "off":
        return None
    if preset not in _PRESETS:
        raise TLKerasError(f"augment={preset!r} is not valid; choose off, light or strong")
    return StatelessAugment(preset, seed)


# rotation (turns), zoom, translation (fraction of the size), contrast
_PRESETS = {"light": (0.05, 0.1, 0.0, 0.0), "strong": (0.15, 0.2, 0.1, 0.2)}


class StatelessAugment:
    """A batched, stateless random flip/rotation/zoom(/shift/contrast) keyed by seed and image.

    Called as ``aug(x, training=True)`` on float32 batches of raw pixels ``[n, h, w, c]``;
    ``training=False`` returns ``x`` unchanged.
    """

    def __init__(self, preset: str, seed: int):
        self.preset, self.seed = preset, int(seed)
        self.rotation, self.zoom, self.shift, self.contrast = _PRESETS[preset]

    def __call__(self, x, training: bool = True):
        if not training:
            return x
        x = tf.convert_to_tensor(x, tf.float32)
        n = tf.shape(x)[0]
        h, w = tf.cast(tf.shape(x)[1], tf.float32), tf.cast(tf.shape(x)[2], tf.float32)
        keys = _image_keys(x, self.seed)
        flip = _uniform(keys, 0) < 0.5
        x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
        angle = (2.0 * _uniform(keys, 1) - 1.0) * self.rotation * 2.0 * np.pi
        zoom = 1.0 + (2.0 * _uniform(keys, 2) - 1.0) * self.zoom
        tx = (2.0 * _uniform(keys, 3) - 1.0) * self.shift * w
        ty = (2.0 * _uniform(keys, 4) - 1.0) * self.shift * h
        cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
        # Output pixel (x, y) samples input C + zoom * R(angle) (p - C) + t.
        transform = tf.stack([
            cos, -sin, cx - cos * cx + sin * cy + tx,
            sin, cos, cy - sin * cx - cos * cy + ty,
            tf.zeros([n]), tf.zeros([n]),
        ], axis=1)
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=transform, output_shape=tf.shape(x)[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="REFLECT",
        )
        if self.contrast:
            factor = 1.0 + (2.0 * _uniform(keys, 5) - 1.0) * self.contrast
            mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
            x = (x - mean) * factor[:, None, None, None] + mean
        return x


def _image_keys(x, seed: int):
    """One int64 key per image: a fingerprint of its pixels and ``seed``."""
    pixels = tf.bitcast(tf.fingerprint(x), tf.int64)
    seeds = tf.fill(tf.shape(pixels), tf.constant(seed, tf.int64))
    return tf.bitcast(tf.fingerprint(tf.stack([pixels, seeds], axis=1)), tf.int64)


def _uniform(keys, stream: int):
    """A uniform [0, 1) float32 per key, independent across ``stream`` numbers."""
    streams = tf.fill(tf.shape(keys), tf.constant(stream, tf.int64))
    bits = tf.bitcast(tf.fingerprint(tf.stack([keys, streams], axis=1))[:, :4], tf.uint32)
    return tf.cast(tf.cast(bits, tf.float64) / 4294967296.0, tf.float32)


def augment_batches(ds, preset: str, seed: int, view: int = 0):
    """Maps ``preset``'s augmentation over a dataset of float32 image batches, clipped to [0, 255].

    ``view`` selects an independent draw (for several augmented copies of the same images).
    """
    aug = augmenter(preset, seed * 7919 + view)
    if aug is None:
        return ds
    return ds.map(lambda b: tf.clip_by_value(aug(b, training=True), 0.0, 255.0), num_parallel_calls=tf.data.AUTOTUNE)


def random_flip(x):
    """Flips each image left-right with probability 0.5."""
    flip = tf.random.uniform([_batch(x), 1, 1, 1]) < 0.5
    return tf.where(flip, tf.reverse(x, axis=[2]), x)


def random_resized_crop(x, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """Crops a random box (area ``scale``, aspect ``ratio``) of each image, resized back (SimCLR)."""
    size = int(x.shape[1])
    n = _batch(x)
    area = tf.random.uniform([n], scale[0], scale[1])
    log_ratio = tf.random.uniform([n], float(np.log(ratio[0])), float(np.log(ratio[1])))
    aspect = tf.exp(log_ratio)
    h = tf.minimum(tf.sqrt(area / aspect), 1.0)
    w = tf.minimum(tf.sqrt(area * aspect), 1.0)
    y0 = tf.random.uniform([n]) * (1.0 - h)
    x0 = tf.random.uniform([n]) * (1.0 - w)
    boxes = tf.stack([y0, x0, y0 + h, x0 + w], axis=1)
    return tf.image.crop_and_resize(x, boxes, tf.range(n), [size, size])


def color_jitter(x, strength: float = 0.5, p: float = 0.8):
    """SimCLR colour distortion: brightness, contrast, saturation and hue, each by ``strength``.

    Brightness, contrast and saturation factors are drawn from [1 - 0.8s, 1 + 0.8s], the hue shift
    from [-0.2s, 0.2s]; the whole distortion is applied to each image with probability ``p``.
    """
    if strength <= 0:
        return x
    n = _batch(x)

    def factor(spread):
        return tf.random.uniform([n, 1, 1, 1], 1.0 - spread, 1.0 + spread)

    s = 0.8 * strength
    y = x * factor(s)  # brightness
    mean = tf.reduce_mean(_gray(y), axis=[1, 2, 3], keepdims=True)
    y = (y - mean) * factor(s) + mean  # contrast
    gray = _gray(y)
    y = (y - gray) * factor(s) + gray  # saturation
    y = tf.clip_by_value(y, 0.0, 255.0)
    hsv = tf.image.rgb_to_hsv(y / 255.0)
    shift = tf.random.uniform([n, 1, 1], -0.2 * strength, 0.2 * strength)
    hue = tf.math.floormod(hsv[..., 0] + shift, 1.0)
    y = tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1)) * 255.0
    return _apply_with_probability(x, tf.clip_by_value(y, 0.0, 255.0), p)


def random_grayscale(x, p: float = 0.2):
    """Turns each image gray with probability ``p``."""
    if p <= 0:
        return x
    return _apply_with_probability(x, tf.broadcast_to(_gray(x), tf.shape(x)), p)


# Batched augmentations (float pixels in [0, 255], per-image randomness)


def _batch(x):
    return tf.shape(x)[0]


def random_translate(x, fraction: float = 0.125):
    """Shifts each image by up to ``fraction`` of its size in x and y (reflect-padded)."""
    size = int(x.shape[1])
    pad = int(round(fraction * size))
    if pad < 1:
        return x
    pad = min(pad, size - 1)  # reflect padding needs pad < size
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    n = _batch(x)
    offsets = tf.cast(tf.random.uniform([n, 2], 0, 2 * pad + 1, dtype=tf.int32), tf.float32)
    span = float(size + 2 * pad - 1)
    # crop_and_resize at integer-aligned boxes of the original size copies pixels exactly.
    boxes = tf.concat([offsets / span, (offsets + size - 1) / span], axis=1)
    return tf.image.crop_and_resize(padded, boxes, tf.range(n), [size, size])


def _gray(x):
    return tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114], x.dtype), axis=-1, keepdims=True)


def _apply_with_probability(x, y, p: float):
    keep = tf.random.uniform([_batch(x), 1, 1, 1]) < p
    return tf.where(keep, y, x)


def cutout(x, max_fraction: float = 0.5, fill: float = 127.5):
    """Fills one random square (side up to ``max_fraction`` of the image) of each image with gray."""
    if max_fraction <= 0:
        return x
    size = int(x.shape[1])
    n = _batch(x)
    side = tf.random.uniform([n, 1, 1], 0.1, max_fraction) * size
    cy = tf.random.uniform([n, 1, 1], 0.0, float(size))
    cx = tf.random.uniform([n, 1, 1], 0.0, float(size))
    grid = tf.range(size, dtype=tf.float32)
    inside_y = tf.abs(grid[None, :, None] - cy) < side / 2
    inside_x = tf.abs(grid[None, None, :] - cx) < side / 2
    mask = tf.logical_and(inside_y, inside_x)[..., None]
    return tf.where(mask, tf.cast(fill, x.dtype), x)


def weak_augment(x, translate: float = 0.125):
    """FixMatch's weak view: random horizontal flip and translation."""
    return random_translate(random_flip(x), translate)


def strong_augment(x, translate: float = 0.125, strength: float = 0.5, grayscale: float = 0.2, cutout_fraction: float = 0.5):
    """FixMatch's strong view: the weak view, colour jitter (p=0.8), random grayscale and cutout."""
    y = weak_augment(x, translate)
    y = color_jitter(y, strength, p=0.8)
    y = random_grayscale(y, grayscale)
    return cutout(y, cutout_fraction)
