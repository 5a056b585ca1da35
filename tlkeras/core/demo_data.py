"""The embedded demo task: generated shape images (no download), a source and a target task.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["DEMO_IMAGE_SIZE", "SOURCE_CLASSES", "TARGET_CLASSES", "render_shape", "make_demo_task"]


#: Side of the square demo images. 32 is the cheapest size MobileNet accepts (its last feature map
#: is 1x1 here); 48 was measured ~2x slower per image without learning faster.
DEMO_IMAGE_SIZE: int = 32


#: Pretraining classes.
SOURCE_CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "plus", "ring", "crescent", "arrow",
)


#: Few-shot target classes: new outlines, related to (but disjoint from) the source ones.
TARGET_CLASSES: tuple[str, ...] = ("heart", "frame", "tee", "hexagram", "half_disk")


# Images per class in each split (the target train split is the "few labels" one).
_SOURCE_PER_CLASS = 600


_TRAIN_PER_CLASS = 5


_VAL_PER_CLASS = 30


_TEST_PER_CLASS = 50


# Render at 2x and box-downsample: gives anti-aliased outlines, so thin parts (ring, frame) do not
# turn into staircase patterns that a network could latch on to.
_SUPERSAMPLE = 2


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], 1)


def _star(n: int, r_out: float = 1.0, r_in: float = 0.45) -> np.ndarray:
    a = -np.pi / 2 + np.pi * np.arange(2 * n) / n
    r = np.where(np.arange(2 * n) % 2 == 0, r_out, r_in)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    p = np.stack(
        [16 * np.sin(t) ** 3,
         -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))], 1)
    p -= p.mean(0)
    return p / np.abs(p).max()


def _half_disk() -> np.ndarray:
    p = _regular(48)[:25]  # the upper half of a circle, closed by its diameter
    return p - [0.0, 4 / (3 * np.pi)]  # centre on the centroid so placement keeps it in frame


# Each shape is a list of (polygon in unit coordinates, fill): fill 1 adds area, 0 cuts a hole.
_SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_regular(48), 1)],
    "square": [(_regular(4, 1.0, np.pi / 4), 1)],
    "triangle": [(_regular(3, 1.0, -np.pi / 2), 1)],
    "star": [(_star(5), 1)],
    "plus": [(_rect(-1, -0.33, 1, 0.33), 1), (_rect(-0.33, -1, 0.33, 1), 1)],
    "ring": [(_regular(48), 1), (_regular(48, 0.55), 0)],
    "crescent": [(_regular(48), 1), (_regular(48, 0.85) + [0.45, 0.0], 0)],
    "arrow": [(np.array([[-1, -.3], [.2, -.3], [.2, -.75], [1, 0], [.2, .75], [.2, .3], [-1, .3]],
                        float), 1)],
    "heart": [(_heart(), 1)],
    "frame": [(_regular(4, 1.0, np.pi / 4), 1), (_regular(4, 0.6, np.pi / 4), 0)],
    "tee": [(_rect(-1, -1, 1, -0.4), 1), (_rect(-0.3, -1, 0.3, 1), 1)],
    "hexagram": [(_star(6, 1.0, 0.58), 1)],
    "half_disk": [(_half_disk(), 1)],
}


_LUMA = np.array([0.299, 0.587, 0.114])


def render_shape(name: str, rng: np.random.Generator, size: int = DEMO_IMAGE_SIZE) -> np.ndarray:
    """Draws one demo image.

    Args:
        name: a key of the shape table (any of ``SOURCE_CLASSES`` or ``TARGET_CLASSES``).
        rng: the generator every random choice is drawn from (so a seeded rng gives the same image).
        size: output side in pixels.

    Returns:
        A ``[size, size, 3]`` uint8 RGB image.
    """
    # Background: linear gradient between two random colours in a random direction, so the
    # network cannot segment by "the one background colour".
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = ((t - t.min()) / (np.ptp(t) + 1e-6))[..., None]
    background = c0 * (1 - t) + c1 * t
    # Foreground: any colour, either brighter or darker than the background, but visibly so.
    bg_luma = float(background.reshape(-1, 3).mean(0) @ _LUMA)
    while True:
        fill = rng.uniform(0, 255, 3)
        if abs(float(fill @ _LUMA) - bg_luma) > 60:
            break
    # Shape mask, drawn supersampled then box-filtered to an anti-aliased alpha mask.
    big = size * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    scale = rng.uniform(0.28, 0.42) * big
    cx, cy = rng.uniform(scale, big - scale, 2)
    rot = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
    for polygon, solid in _SHAPES[name]:
        points = polygon @ rotation.T * scale + [cx, cy]
        draw.polygon([tuple(p) for p in points], fill=255 * solid)
    alpha = np.asarray(mask.resize((size, size), Image.BOX), np.float32)[..., None] / 255
    image = background * (1 - alpha) + fill * alpha + rng.normal(0, 12, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _render_split(names, per_class: int, rng: np.random.Generator, size: int):
    x = np.stack([render_shape(n, rng, size) for n in names for _ in range(per_class)])
    y = np.repeat(np.arange(len(names), dtype=np.int64), per_class)
    order = rng.permutation(len(y))  # shuffled, so any prefix is class-balanced on average
    return x[order], y[order]


def make_demo_task(seed: int = 0) -> dict:
    """Generates the demo's source (pretraining) and few-shot target datasets.

    Each split uses its own child generator of ``seed``, so splits never share images and changing
    the number of images in one split does not change the others. Takes ~4-8 s on a loaded 2-core
    machine (the 4,800 source images dominate).

    Args:
        seed: base seed; the same seed gives byte-identical arrays.

    Returns:
        A dict with ``"source": (x, y, class_names)`` (4,800 images of the 8 ``SOURCE_CLASSES``),
        ``"train"``, ``"val"``, ``"test"``: ``(x, y)`` for the 5 ``TARGET_CLASSES`` (5, 30 and 50
        images per class), and ``"class_names"`` (the target class names). ``x`` is uint8
        ``[N, S, S, 3]`` with ``S = DEMO_IMAGE_SIZE``; ``y`` is int64 class indices.
    """
    s = DEMO_IMAGE_SIZE
    rng_source, rng_train, rng_val, rng_test = (
        np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(4))
    xs, ys = _render_split(SOURCE_CLASSES, _SOURCE_PER_CLASS, rng_source, s)
    return {
        "source": (xs, ys, list(SOURCE_CLASSES)),
        "train": _render_split(TARGET_CLASSES, _TRAIN_PER_CLASS, rng_train, s),
        "val": _render_split(TARGET_CLASSES, _VAL_PER_CLASS, rng_val, s),
        "test": _render_split(TARGET_CLASSES, _TEST_PER_CLASS, rng_test, s),
        "class_names": list(TARGET_CLASSES),
    }
