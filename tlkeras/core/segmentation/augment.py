"""Augmentation that moves an image and its mask together (stateless, so a seed repeats a run).

Geometry (flips, a zoom-in crop) is applied to both with the same random numbers: bilinear on the
image, nearest neighbour on the mask, so ids never blend. Colour changes touch the image only.
"""

from __future__ import annotations

from tlkeras._backend import tf

__all__ = ["augment_pair", "PRESETS"]

# preset -> (flip, largest zoom factor, colour strength)
PRESETS = {"off": (False, 1.0, 0.0), "light": (True, 1.5, 0.15), "strong": (True, 2.0, 0.3)}


def _seed(seed, k: int):
    return tf.cast(seed, tf.int64) + tf.constant([0, 7919], tf.int64) * k + tf.constant([k, 0], tf.int64)


def augment_pair(image, mask, seed, preset: str = "light", geometry: bool = True, colour: bool = True):
    """Augments one pair.

    Args:
        image: H x W x 3 float32 pixels 0..255.
        mask: H x W int32 ids.
        seed: a length-2 integer tensor (e.g. ``[run seed, example counter]``).
        preset: ``off``, ``light`` or ``strong``.
        geometry, colour: turn either part off (the alignment test checks geometry alone).

    Returns:
        (image, mask) of the same shapes and dtypes.
    """
    flip, zoom, strength = PRESETS[preset]
    shape = tf.shape(image)[:2]
    m = tf.cast(mask, tf.float32)[..., None]
    if geometry and flip:
        lr = tf.random.stateless_uniform([], _seed(seed, 1)) < 0.5
        ud = tf.random.stateless_uniform([], _seed(seed, 2)) < 0.5
        image = tf.where(lr, tf.reverse(image, [1]), image)
        m = tf.where(lr, tf.reverse(m, [1]), m)
        image = tf.where(ud, tf.reverse(image, [0]), image)
        m = tf.where(ud, tf.reverse(m, [0]), m)
    if geometry and zoom > 1.0:
        scale = tf.random.stateless_uniform([], _seed(seed, 3), 1.0, zoom)
        use = tf.random.stateless_uniform([], _seed(seed, 4)) < 0.5
        side = tf.where(use, 1.0 / scale, 1.0)
        y0 = tf.random.stateless_uniform([], _seed(seed, 5)) * (1.0 - side)
        x0 = tf.random.stateless_uniform([], _seed(seed, 6)) * (1.0 - side)
        box = tf.stack([y0, x0, y0 + side, x0 + side])[None]
        image = tf.image.crop_and_resize(image[None], box, [0], shape, method="bilinear")[0]
        m = tf.image.crop_and_resize(m[None], box, [0], shape, method="nearest")[0]
    if colour and strength > 0:
        image = tf.image.stateless_random_brightness(image, 255.0 * strength, _seed(seed, 7))
        image = tf.image.stateless_random_contrast(image, 1.0 - strength, 1.0 + strength, _seed(seed, 8))
        image = tf.image.stateless_random_saturation(image, 1.0 - strength, 1.0 + strength, _seed(seed, 9))
        image = tf.clip_by_value(image, 0.0, 255.0)
    return image, tf.cast(tf.round(m[..., 0]), tf.int32)
