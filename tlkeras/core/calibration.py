"""Calibrated scores and an "unknown" answer: temperature scaling and a score threshold.

Temperature scaling (Guo et al., ICML 2017) divides a softmax classifier's logits by one scalar
``T`` fitted on the validation split by minimizing its negative log-likelihood. It never changes
the predicted class, only how confident the scores are. tlkeras stores ``T`` *inside* the model:
the final softmax Dense layer's kernel and bias are multiplied by ``1 / T``, so
``softmax((x W + b) / T) = softmax(x (W / T) + b / T)`` and a saved ``.keras`` file or an exported
``.tflite`` is calibrated with no extra layer.

The "unknown" threshold is a cut-off on the top softmax score chosen on val so that at least
``target_recall`` of the (known-class) val images score at or above it; a deployed model answers
"unknown" below it. :func:`unknown_rejection` measures how well that separates images of other
classes (AUROC, false-accept rate at the threshold).

Side effects: :func:`apply_temperature` and :func:`calibrate_model` change the model's weights in
place; nothing here writes files.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tlkeras.core.data import Split
from tlkeras.core.tasks import task_of_head
from tlkeras.errors import TLKerasError

__all__ = [
    "TEMPERATURE_BOUNDS",
    "final_softmax_dense",
    "model_logits",
    "fit_temperature",
    "negative_log_likelihood",
    "expected_calibration_error",
    "reliability_bins",
    "apply_temperature",
    "unknown_threshold",
    "unknown_rejection",
    "calibrate_model",
]

# T outside this range means the fit is degenerate (a val split the model gets 100% right pushes
# T towards 0, which would make every later answer certain), so the search stops at the bounds.
TEMPERATURE_BOUNDS = (0.1, 10.0)


def _softmax(logits: np.ndarray) -> np.ndarray:
    from scipy.special import softmax

    return softmax(np.asarray(logits, np.float64), axis=1)


def final_softmax_dense(model):
    """The Dense layer whose output the model's softmax turns into its output.

    Accepts both shapes tlkeras and users build: ``Dense -> Activation("softmax")`` as the last two
    layers (tlkeras' ``head_dense`` / ``head_output``), or a last ``Dense(activation="softmax")``.

    Raises:
        TLKerasError: a model with several outputs or without such a layer (a sigmoid or
            regression head, a wrapped or quantized Dense).
    """
    from tlkeras._backend import keras

    if len(model.outputs) != 1:
        raise TLKerasError("temperature scaling needs a model with one softmax output")
    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    if type(last) is keras.layers.Dense and activation == "softmax":
        return last
    if isinstance(last, keras.layers.Activation) and activation == "softmax":
        producer = last.inbound_nodes[0].inbound_layers  # node 0: the call inside ``model``
        if type(producer) is keras.layers.Dense and getattr(producer.activation, "__name__", "") == "linear":
            return producer
    raise TLKerasError(
        f"model {model.name} does not end in a Dense layer followed by softmax; temperature scaling "
        "applies to single-label (softmax) classifiers only"
    )


def model_logits(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The logits (the final Dense layer's output before softmax) of uint8 images ``x``.

    They are computed from the Dense layer's input and weights in float64, so they are exact even
    where float32 probabilities round to 0 or 1.
    """
    from tlkeras._backend import keras
    from tlkeras.core.metrics import predict

    dense = final_softmax_dense(model)
    probe = keras.Model(model.inputs, dense.get_input_at(0))
    features = predict(probe, x, batch_size).astype(np.float64)
    kernel, *bias = (np.asarray(w, np.float64) for w in dense.get_weights())
    return features @ kernel + (bias[0] if bias else 0.0)


def negative_log_likelihood(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer labels ``y`` under ``softmax(logits / T)``."""
    from scipy.special import log_softmax

    logp = log_softmax(np.asarray(logits, np.float64) / float(temperature), axis=1)
    return float(-np.mean(logp[np.arange(len(y)), np.asarray(y, np.int64)]))


def fit_temperature(logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature minimizing the NLL of ``y`` under ``softmax(logits / T)`` (bounded search).

    The NLL is convex in ``1 / T``; the search runs over ``log T`` within ``bounds`` with SciPy's
    bounded Brent method, to a tight tolerance so that two runs with (nearly) the same logits,
    e.g. a resumed and an uninterrupted one, store (nearly) the same weights.

    Raises:
        TLKerasError: no examples, or labels outside the logits' classes.
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, np.float64)
    y = np.asarray(y, np.int64)
    if len(y) == 0 or logits.ndim != 2 or len(logits) != len(y):
        raise TLKerasError(f"temperature scaling needs labelled val images; got {len(y)} labels for logits of shape {logits.shape}")
    if y.min() < 0 or y.max() >= logits.shape[1]:
        raise TLKerasError(f"labels must be in [0, {logits.shape[1] - 1}]")
    lo, hi = (math.log(b) for b in bounds)
    result = minimize_scalar(lambda t: negative_log_likelihood(logits, y, math.exp(t)), bounds=(lo, hi), method="bounded",
                             options={"xatol": 1e-9})
    best = float(math.exp(result.x))
    # Brent's method may stop just inside a bound when the optimum lies beyond it; T = 1 (no
    # change) is kept unless the fit is actually better.
    if negative_log_likelihood(logits, y, 1.0) <= negative_log_likelihood(logits, y, best):
        return 1.0
    return best


def reliability_bins(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> dict[str, list]:
    """Top-label reliability: per equal-width confidence bin, the mean confidence, accuracy and count.

    Returns:
        ``{"edges": [bins + 1], "confidence": [bins], "accuracy": [bins], "count": [bins]}``;
        empty bins have ``None`` confidence and accuracy.
    """
    probs = np.asarray(probs, np.float64)
    y = np.asarray(y, np.int64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i + 1]]; a confidence of exactly 0 goes to the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out: dict[str, list] = {"edges": edges.tolist(), "confidence": [], "accuracy": [], "count": []}
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        out["count"].append(n)
        out["confidence"].append(float(confidence[mask].mean()) if n else None)
        out["accuracy"].append(float(correct[mask].mean()) if n else None)
    return out


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Top-label expected calibration error: ``sum_b (n_b / N) |accuracy_b - confidence_b|``.

    Equal-width bins over the top softmax score (15 by default, as in Guo et al.).
    """
    r = reliability_bins(probs, y, bins)
    total = sum(r["count"])
    if total == 0:
        return float("nan")
    return float(sum(n * abs(a - c) for n, a, c in zip(r["count"], r["accuracy"], r["confidence"]) if n) / total)


def apply_temperature(model, temperature: float) -> None:
    """Divides the final softmax Dense layer's kernel and bias by ``temperature``, in place.

    Side effects: changes the model's weights; saving or exporting it afterwards keeps the
    calibration.

    Raises:
        TLKerasError: a temperature that is not a positive finite number; see
            :func:`final_softmax_dense`.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise TLKerasError(f"the temperature must be a positive number, got {temperature}")
    dense = final_softmax_dense(model)
    dense.set_weights([np.asarray(w, np.float64) / temperature for w in dense.get_weights()])


def unknown_threshold(scores: np.ndarray, target_recall: float = 0.95) -> float:
    """The highest score threshold that keeps at least ``target_recall`` of ``scores`` at or above it.

    ``scores`` are the top softmax scores of known-class (val) images; the model answers "unknown"
    below the threshold, so the fraction of known images it still answers is >= ``target_recall``.

    Raises:
        TLKerasError: a target outside (0, 1] or no scores.
    """
    if not 0.0 < target_recall <= 1.0:
        raise TLKerasError(f"the target recall must be in (0, 1], got {target_recall}")
    scores = np.sort(np.asarray(scores, np.float64))[::-1]
    if len(scores) == 0:
        raise TLKerasError("choosing an unknown threshold needs val images")
    keep = math.ceil(target_recall * len(scores) - 1e-9)  # images that must stay accepted
    return float(scores[max(keep, 1) - 1])


def unknown_rejection(known_scores: np.ndarray, unknown_scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """How well the top softmax score separates known-class images from images of other classes.

    Returns:
        ``{"auroc", "false_accept_rate", "known_recall", "threshold", "known", "unknown"}``: the
        area under the ROC curve of known (positive) versus unknown by score (scikit-learn), the
        fraction of unknown images scoring at or above ``threshold`` (answered as a known class),
        and the fraction of known images that do.

    Raises:
        TLKerasError: either set empty.
    """
    from sklearn.metrics import roc_auc_score

    known = np.asarray(known_scores, np.float64)
    unknown = np.asarray(unknown_scores, np.float64)
    if len(known) == 0 or len(unknown) == 0:
        raise TLKerasError("measuring unknown rejection needs images of the known classes and of other classes")
    truth = np.concatenate([np.ones(len(known)), np.zeros(len(unknown))])
    return {
        "auroc": float(roc_auc_score(truth, np.concatenate([known, unknown]))),
        "false_accept_rate": float(np.mean(unknown >= threshold)),
        "known_recall": float(np.mean(known >= threshold)),
        "threshold": float(threshold),
        "known": int(len(known)),
        "unknown": int(len(unknown)),
    }


def calibrate_model(model, val_split: Split, head: str = "softmax", *, target_recall: float = 0.95, bins: int = 15,
                    batch_size: int = 64, eval_split: Split | None = None) -> dict[str, Any]:
    """Fits a temperature on ``val_split``, stores it in ``model``, and picks the unknown threshold.

    Args:
        model: a softmax classifier taking raw pixels (see :func:`final_softmax_dense`).
        val_split: the labelled val split the temperature and the threshold are fitted on.
        head: the run's head; only ``softmax`` can be calibrated.
        target_recall: fraction of known-class val images the threshold must keep.
        bins: confidence bins of the expected calibration error.
        batch_size: prediction batch size.
        eval_split: optionally a held-out split (test) on which ECE before/after is reported too
            (val ECE after fitting on val is optimistic).

    Returns:
        ``{"temperature", "ece_before", "ece_after", "nll_before", "nll_after",
        "unknown_threshold", "target_recall", "val_recall_at_threshold", "val_count", "bins",
        "reliability": {"before", "after"}}`` (val), plus ``"eval": {"ece_before", "ece_after",
        "count"}`` with ``eval_split``. JSON-serializable: write it as ``calibration.json``.

    Side effects: divides the final Dense layer's kernel and bias by the temperature.

    Raises:
        TLKerasError: a head other than softmax, an empty val split, a model without a final
            softmax Dense layer.
    """
    if not task_of_head(head).exclusive_classes:
        raise TLKerasError(f"calibration applies to softmax heads; this run's head is {head}")
    if val_split is None or len(val_split) == 0:
        raise TLKerasError("calibration needs a non-empty val split")
    y = np.asarray(val_split.y, np.int64)
    logits = model_logits(model, val_split.x, batch_size)
    temperature = fit_temperature(logits, y)
    before, after = _softmax(logits), _softmax(logits / temperature)
    threshold = unknown_threshold(after.max(axis=1), target_recall)
    result: dict[str, Any] = {
        "temperature": temperature,
        "ece_before": expected_calibration_error(before, y, bins),
        "ece_after": expected_calibration_error(after, y, bins),
        "nll_before": negative_log_likelihood(logits, y),
        "nll_after": negative_log_likelihood(logits, y, temperature),
        "unknown_threshold": threshold,
        "target_recall": float(target_recall),
        "val_recall_at_threshold": float(np.mean(after.max(axis=1) >= threshold)),
        "val_count": int(len(y)),
        "bins": int(bins),
        "reliability": {"before": reliability_bins(before, y, bins), "after": reliability_bins(after, y, bins)},
    }
    if eval_split is not None and len(eval_split):
        test_logits = model_logits(model, eval_split.x, batch_size)
        ty = np.asarray(eval_split.y, np.int64)
        result["eval"] = {
            "ece_before": expected_calibration_error(_softmax(test_logits), ty, bins),
            "ece_after": expected_calibration_error(_softmax(test_logits / temperature), ty, bins),
            "count": int(len(ty)),
        }
    apply_temperature(model, temperature)
    return result
