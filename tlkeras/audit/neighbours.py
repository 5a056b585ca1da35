"""Feature-space search: near-duplicate pairs by cosine similarity, nearest neighbours for the
report, and outliers that are far from every class.

Features are L2-normalised first, so a dot product is the cosine similarity. Nothing here writes a
file.
"""

from __future__ import annotations

import numpy as np

__all__ = ["normalise", "similar_pairs", "nearest_neighbours", "outlier_scores", "robust_outliers", "class_examples"]


def normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    from sklearn.preprocessing import normalize

    return normalize(np.asarray(features, dtype=np.float32))


def similar_pairs(unit: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs (i, j, cosine similarity) with i < j and similarity >= ``threshold``.

    Uses scikit-learn's radius search (cosine distance ``1 - similarity``), which never builds
    the full N x N matrix.
    """
    from sklearn.neighbors import NearestNeighbors

    if len(unit) < 2:
        return []
    search = NearestNeighbors(radius=max(1.0 - threshold, 1e-6), metric="cosine", algorithm="brute").fit(unit)
    distances, indices = search.radius_neighbors(unit, sort_results=True)
    pairs = []
    for i, (dist, idx) in enumerate(zip(distances, indices)):
        for d, j in zip(dist, idx):
            if i < int(j):
                pairs.append((i, int(j), float(1.0 - d)))
    return pairs


def nearest_neighbours(unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other items of each item: (indices N x k, cosine similarities N x k)."""
    from sklearn.neighbors import NearestNeighbors

    k = max(1, min(k, len(unit) - 1))
    search = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(unit)
    distances, indices = search.kneighbors(unit)
    # Drop each item itself (its own first neighbour, or tied with an exact copy).
    out_idx = np.zeros((len(unit), k), np.int64)
    out_sim = np.zeros((len(unit), k), np.float32)
    for i in range(len(unit)):
        keep = [(j, d) for j, d in zip(indices[i], distances[i]) if j != i][:k]
        out_idx[i] = [j for j, _ in keep]
        out_sim[i] = [1.0 - d for _, d in keep]
    return out_idx, out_sim


def outlier_scores(unit: np.ndarray, labels: np.ndarray, num_classes: int, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """How far each item is from every class: the cosine distance to the ``k`` nearest members of
    the closest class (the item itself excluded), and that class.

    Distance to a class's nearest members rather than to its mean tolerates classes with several
    looks (flowers from above and from the side). Returns (scores, nearest class index).
    """
    from sklearn.neighbors import NearestNeighbors

    scores = np.full((len(unit), num_classes), np.inf, np.float32)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        kk = min(k + 1, len(members))
        search = NearestNeighbors(n_neighbors=kk, metric="cosine", algorithm="brute").fit(unit[members])
        distances, indices = search.kneighbors(unit)
        own = members[indices] == np.arange(len(unit))[:, None]
        # Each item's own distance (0) is dropped; the k nearest others count for everyone.
        distances = np.sort(np.where(own, np.inf, distances), axis=1)[:, : kk - 1]
        scores[:, c] = distances.mean(axis=1)
    nearest = scores.argmin(axis=1)
    return scores[np.arange(len(unit)), nearest], nearest


def robust_outliers(scores: np.ndarray, z: float) -> np.ndarray:
    """Indices whose score is more than ``z`` robust standard deviations (1.4826 x MAD) above the
    median, most extreme first."""
    finite = np.isfinite(scores)
    if finite.sum() < 3:
        return np.zeros(0, np.int64)
    median = float(np.median(scores[finite]))
    spread = 1.4826 * float(np.median(np.abs(scores[finite] - median))) or 1e-6
    robust_z = (scores - median) / spread
    flagged = np.flatnonzero(finite & (robust_z > z))
    return flagged[np.argsort(-scores[flagged])]


def class_examples(unit: np.ndarray, labels: np.ndarray, num_classes: int, count: int) -> dict[int, list[int]]:
    """For each class, the ``count`` items closest to the class mean: its typical look, shown
    beside an outlier in the report."""
    examples = {}
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if not len(members):
            examples[c] = []
            continue
        centre = unit[members].mean(axis=0)
        order = np.argsort(-(unit[members] @ centre))
        examples[c] = [int(members[i]) for i in order[:count]]
    return examples
