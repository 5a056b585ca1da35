"""What can be learnt from the files themselves: content hashes, formats, sizes, colour modes, and
perceptual hashes for near-duplicate search when no pretrained backbone is available.

Nothing here writes a file or changes an image.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

__all__ = ["file_facts", "exact_duplicate_groups", "perceptual_hashes", "phash_pairs", "image_statistics"]

# PIL modes without colour, and modes that carry transparency.
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def _facts(path: str) -> dict:
    from PIL import Image

    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    with Image.open(path) as img:  # reads the header only
        mode = img.mode
        alpha = mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info)
        return {
            "sha256": digest.hexdigest(),
            "bytes": size,
            "format": (img.format or "unknown").upper(),
            "width": int(img.width),
            "height": int(img.height),
            "mode": mode,
            "grayscale": mode in _GRAY_MODES,
            "alpha": bool(alpha),
            "frames": int(getattr(img, "n_frames", 1)),
        }


def file_facts(paths: Sequence[str]) -> list[dict]:
    """SHA-256 of the bytes, format, pixel size, colour mode, alpha and frame count of each file.

    Files are read in threads (hashing is I/O bound). The decode itself was already done by the
    data loader, so only headers are parsed here.
    """
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(_facts, paths))


def exact_duplicate_groups(digests: Sequence[str]) -> list[list[int]]:
    """Indices of items whose files have identical bytes, one list per group of two or more."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(digests):
        groups[digest].append(i)
    return [g for g in groups.values() if len(g) > 1]


def perceptual_hashes(images) -> np.ndarray:
    """64-bit DCT perceptual hashes (``imagehash.phash``) of uint8 RGB images (an iterable of
    H x W x 3 arrays), as N x 64 booleans.

    Re-encoded, resized and lightly cropped copies of an image land within a few bits of it.
    """
    import imagehash
    from PIL import Image

    return np.stack([imagehash.phash(Image.fromarray(img)).hash.reshape(-1) for img in images]).astype(bool)


def phash_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int, float]]:
    """Pairs (i, j, similarity) with i < j whose hashes differ in at most ``max_distance`` bits.

    The similarity is ``1 - distance / 64``, on the same 0..1 scale as the embedding similarity.
    """
    from sklearn.metrics import pairwise_distances

    bits = hashes.shape[1]
    pairs = []
    for start in range(0, len(hashes), 2048):  # blocks keep the N x N matrix out of memory
        block = pairwise_distances(hashes[start : start + 2048], hashes, metric="hamming") * bits
        for i, j in zip(*np.nonzero(np.round(block) <= max_distance)):
            a = start + int(i)
            if a < int(j):
                pairs.append((a, int(j), 1.0 - float(block[i, j]) / bits))
    return pairs


def image_statistics(facts: list[dict]) -> dict:
    """Counts of formats and colour modes, size ranges, and the grayscale/alpha/animated items."""
    if not facts:
        return {"count": 0}
    widths = np.array([f["width"] for f in facts])
    heights = np.array([f["height"] for f in facts])
    shorter = np.minimum(widths, heights)
    aspect = np.maximum(widths, heights) / np.maximum(shorter, 1)
    return {
        "count": len(facts),
        "formats": dict(Counter(f["format"] for f in facts).most_common()),
        "modes": dict(Counter(f["mode"] for f in facts).most_common()),
        "width": {"min": int(widths.min()), "median": float(np.median(widths)), "max": int(widths.max())},
        "height": {"min": int(heights.min()), "median": float(np.median(heights)), "max": int(heights.max())},
        "shorter_side": {"min": int(shorter.min()), "median": float(np.median(shorter)), "max": int(shorter.max())},
        "aspect_ratio_max": float(aspect.max()),
        "total_bytes": int(sum(f["bytes"] for f in facts)),
        "grayscale": [i for i, f in enumerate(facts) if f["grayscale"]],
        "alpha": [i for i, f in enumerate(facts) if f["alpha"]],
        "animated": [i for i, f in enumerate(facts) if f["frames"] > 1],
    }
