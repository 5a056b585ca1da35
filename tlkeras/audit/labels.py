"""Likely label errors: out-of-fold class probabilities from a cross-validated linear probe on the
backbone's features, ranked by cleanlab's confident learning.

Every item's probabilities come from a probe that never saw it, so a wrong label cannot vouch for
itself; cleanlab then estimates how many labels are wrong per class pair and flags the items that
its estimate selects, least self-confident first. Nothing here writes a file.
"""

from __future__ import annotations

import warnings

import numpy as np

from tlkeras.errors import TLKerasError

__all__ = ["check_cross_validation", "out_of_fold_probabilities", "label_issues"]

# Inverse L2 strengths the probe chooses from (by inner cross-validated log-loss).
PROBE_CS = (0.001, 0.01, 0.1, 1.0)


def check_cross_validation(labels: np.ndarray, class_names: list[str], folds: int) -> None:
    """Raises TLKerasError when a class has fewer images than ``folds`` (the minimum for
    stratified ``folds``-fold cross-validation), naming the class and the minimum."""
    if folds < 2:
        raise TLKerasError(f"folds must be >= 2 for cross-validation, got {folds}")
    counts = np.bincount(labels, minlength=len(class_names))
    small = [(class_names[c], int(n)) for c, n in enumerate(counts) if n < folds]
    if small:
        shown = ", ".join(f"{name!r} has {n}" for name, n in small[:3])
        fewest = min(n for _, n in small)
        hint = f"add images or pass --folds {fewest}" if fewest >= 2 else "add images to that class"
        raise TLKerasError(
            f"too few images per class for the label audit's {folds}-fold cross-validation ({shown}; "
            f"the minimum is {folds} per class, 2 with --folds 2); {hint}"
        )


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int, seed: int) -> np.ndarray:
    """Class probabilities of every item from a logistic-regression probe trained on the other
    folds (stratified, seeded). Features are standardised inside each fold; the L2 strength is
    chosen per fold by an inner 3-fold cross-validated log-loss over :data:`PROBE_CS`.

    Returns an N x ``num_classes`` float array whose rows sum to 1.
    """
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels, minlength=num_classes)
    smallest = int(counts[counts > 0].min())
    inner = min(3, smallest - -(-smallest // folds))  # the smallest class's images in a training fold
    if inner >= 2:
        probe = LogisticRegressionCV(Cs=list(PROBE_CS), cv=StratifiedKFold(inner, shuffle=True, random_state=seed),
                                     scoring="neg_log_loss", max_iter=2000)
    else:  # a class too small for an inner split: a fixed, fairly strong L2
        probe = LogisticRegression(C=0.1, max_iter=2000)
    model = make_pipeline(StandardScaler(), probe)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # scikit-learn 1.9 announces LogisticRegressionCV API changes
        warnings.simplefilter("ignore", FutureWarning)
        probs = cross_val_predict(model, features, labels, cv=cv, method="predict_proba")
    if probs.shape[1] != num_classes:  # classes absent from the data (not possible after the check)
        full = np.zeros((len(labels), num_classes))
        full[:, np.unique(labels)] = probs
        probs = full
    return probs.astype(np.float64)


def label_issues(labels: np.ndarray, probs: np.ndarray) -> list[dict]:
    """cleanlab's likely label errors, most likely first.

    Each entry: ``index``, ``given`` and ``suggested`` class indices, ``quality`` (cleanlab's
    self-confidence label-quality score: the probability of the given label), and the
    out-of-fold probabilities of the given and suggested classes.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    ranked = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    out = []
    for i in ranked:
        i = int(i)
        order = np.argsort(-probs[i])
        suggested = int(order[0]) if order[0] != labels[i] else int(order[1])
        out.append({
            "index": i,
            "given": int(labels[i]),
            "suggested": suggested,
            "quality": float(quality[i]),
            "given_probability": float(probs[i, labels[i]]),
            "suggested_probability": float(probs[i, suggested]),
        })
    return out
