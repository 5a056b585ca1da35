"""The closed-form linear probe: an L2-regularized logistic regression with its strength chosen
on validation, as softmax weights a Keras ``Dense`` layer can hold.

Phase 1 of the two-phase recipe fits the head this way on cached backbone features
(:func:`tlkeras.train.recipe.fit_linear_probe`); the word model fits it on its bag of words too
(:mod:`tlkeras.core.text.probe`). Both share this one fit.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["fit_logistic"]


def fit_logistic(x_train, y_train, x_val, y_val, num_classes: int, class_weight, grid: Sequence[float], max_iter: int = 2000):
    """Fits a logistic regression for each C in ``grid`` and keeps the lowest validation log-loss.

    Args:
        x_train, x_val: features (dense arrays or scipy sparse matrices).

    Returns:
        ``(coef, intercept, logs)``: softmax weights (``num_classes x features`` and
        ``num_classes``; for two classes sklearn's one logit z becomes (-z/2, z/2), whose softmax
        is sigmoid(z)) and phase-1 logs (loss, accuracy, val_loss, val_accuracy, probe_C).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    labels = list(range(num_classes))
    best = None
    for c in grid:
        clf = LogisticRegression(C=c, max_iter=max_iter, class_weight=class_weight).fit(x_train, y_train)
        loss = log_loss(y_val, clf.predict_proba(x_val), labels=labels)
        if best is None or loss < best[0]:
            best = (loss, c, clf)
    loss, c, clf = best
    coef, intercept = clf.coef_, clf.intercept_
    if num_classes == 2:
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    logs = {
        "loss": [float(log_loss(y_train, clf.predict_proba(x_train), labels=labels))],
        "accuracy": [float(clf.score(x_train, y_train))],
        "val_loss": [float(loss)],
        "val_accuracy": [float(clf.score(x_val, y_val))],
        "probe_C": [float(c)],
    }
    return coef, intercept, logs
