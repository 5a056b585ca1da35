"""Image augmentation: Keras preprocessing presets and the per-image ops of the unlabelled-data techniques.
"""

from __future__ import annotations

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.errors import TLKerasError


def augmenter(preset: str, seed: int = 42):
    """Returns a Keras Sequential of random augmentation layers for ``preset``, or None for off.

    The layers act only when called with ``training=True``, and live in the input pipeline, not in
    the model, so exported models carry no augmentation ops.
    """

    if preset == "off":
        return None
    L = keras.layers
    if preset == "light":
        layers = [L.RandomFlip("horizontal", seed=seed), L.RandomRotation(0.05, seed=seed + 1),
                  L.RandomZoom(0.1, seed=seed + 2)]
    elif preset == "strong":
        layers = [L.RandomFlip("horizontal", seed=seed), L.RandomRotation(0.15, seed=seed + 1),
                  L.RandomZoom(0.2, seed=seed + 2), L.RandomTranslation(0.1, 0.1, seed=seed + 3),
                  L.RandomContrast(0.2, seed=seed + 4)]
    else:
        raise TLKerasError(f"augment={preset!r} is not valid; choose off, light or strong")
    return keras.Sequential(layers, name=f"augment_{preset}")


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
