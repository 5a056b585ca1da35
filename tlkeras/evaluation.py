"""Evaluation: predictions to metrics (scikit-learn), reports and plots.

Side effects are limited to the files :func:`write_reports` writes into a run directory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from tlkeras.data import Split
from tlkeras.errors import TLKerasError

__all__ = ["predict", "compute_metrics", "evaluate_model", "write_reports", "plot_confusion_matrix", "plot_history", "load_run_model", "evaluate_run"]


def predict(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Runs ``model`` on uint8 images in batches; returns the output as float32 NumPy."""
    from tlkeras._backend import tf

    ds = tf.data.Dataset.from_tensor_slices(x).batch(batch_size).map(lambda b: tf.cast(b, tf.float32))
    return np.asarray(model.predict(ds, verbose=0), dtype=np.float32)


def compute_metrics(y_true: np.ndarray, outputs: np.ndarray, class_names: list[str], head: str = "softmax") -> dict[str, Any]:
    """Metrics of model outputs against labels.

    softmax: accuracy, macro precision/recall/F1, per-class report, top-k accuracy, confusion
    matrix. sigmoid: micro/macro F1 at 0.5, subset accuracy, per-class F1. regression: MAE, RMSE,
    R^2.
    """
    from sklearn import metrics as skm

    if head == "regression":
        y_true = y_true.reshape(outputs.shape)
        return {
            "mae": float(skm.mean_absolute_error(y_true, outputs)),
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, outputs))),
            "r2": float(skm.r2_score(y_true, outputs)) if len(y_true) > 1 else float("nan"),
            "count": int(len(y_true)),
        }
    if head == "sigmoid":
        pred = (outputs >= 0.5).astype(int)
        truth = y_true.astype(int)
        per = skm.f1_score(truth, pred, average=None, zero_division=0)
        return {
            "subset_accuracy": float(skm.accuracy_score(truth, pred)),
            "f1_micro": float(skm.f1_score(truth, pred, average="micro", zero_division=0)),
            "f1_macro": float(skm.f1_score(truth, pred, average="macro", zero_division=0)),
            "per_class_f1": {c: float(v) for c, v in zip(class_names, per)},
            "count": int(len(truth)),
        }
    labels = list(range(len(class_names)))
    pred = outputs.argmax(axis=1)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    k = min(5, len(class_names) - 1) if len(class_names) > 2 else 1
    result = {
        "accuracy": float(skm.accuracy_score(y_true, pred)),
        "precision_macro": float(np.mean(p)),
        "recall_macro": float(np.mean(r)),
        "f1_macro": float(np.mean(f)),
        f"top{k}_accuracy": float(skm.top_k_accuracy_score(y_true, outputs, k=k, labels=labels)) if len(class_names) > 2 else float(skm.accuracy_score(y_true, pred)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(class_names)
        },
        "confusion_matrix": skm.confusion_matrix(y_true, pred, labels=labels).tolist(),
        "count": int(len(y_true)),
    }
    return result


def evaluate_model(model, split: Split, class_names: list[str], head: str, batch_size: int = 64) -> dict[str, Any]:
    """Predicts ``split`` with ``model`` and returns :func:`compute_metrics` of it."""
    return compute_metrics(split.y, predict(model, split.x, batch_size), class_names, head)


def _pyplot():
    """pyplot, for callers that need it; matplotlib picks a headless backend without a display."""
    import matplotlib.pyplot as plt

    return plt


def _figure(**kwargs):
    """A matplotlib Figure that is not registered with pyplot.

    Using the object API (no ``matplotlib.use("Agg")``, no ``plt.figure``) writes PNGs on servers
    without a display and leaves a notebook's inline backend alone.
    """
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def plot_confusion_matrix(matrix, class_names: list[str], path: str | os.PathLike, title: str = "Confusion matrix") -> None:
    """Writes a confusion-matrix PNG (rows: true class, columns: predicted), atomically."""
    from tlkeras.runs import atomic_path

    matrix = np.asarray(matrix)
    size = max(4.0, 0.5 * len(class_names) + 2)
    fig = _figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color="white" if matrix[i, j] > threshold else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def plot_history(history: dict[str, list[float]], path: str | os.PathLike) -> None:
    """Writes training curves (loss and the first metric, train and val, both phases) as PNG."""
    from tlkeras.runs import atomic_path

    metric = next((k for k in history if not k.startswith("val_") and k not in ("loss", "lr", "phase")), None)
    keys = ["loss"] + ([metric] if metric else [])
    fig = _figure(figsize=(5 * len(keys), 3.5))
    axes = fig.subplots(1, len(keys))
    axes = np.atleast_1d(axes)
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    phases = history.get("phase", [])
    boundary = next((i for i, p in enumerate(phases) if p == 2), None)
    for ax, key in zip(axes, keys):
        ax.plot(epochs, history.get(key, []), label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label=f"val {key}")
        if boundary:
            ax.axvline(boundary + 0.5, color="grey", linestyle="--", label="phase 2")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_reports(run_dir: str | os.PathLike, metrics: dict[str, Any], class_names: list[str], head: str, history: dict | None = None, prefix: str = "") -> None:
    """Writes ``<prefix>metrics.json``, the confusion-matrix PNG and (with history) the curves."""
    from tlkeras.runs import write_json

    run_dir = Path(run_dir)
    write_json(run_dir / f"{prefix}metrics.json", metrics)
    final = metrics.get("final", metrics)
    if head == "softmax" and "confusion_matrix" in final:
        plot_confusion_matrix(final["confusion_matrix"], class_names, run_dir / f"{prefix}confusion_matrix.png")
    if history:
        plot_history(history, run_dir / f"{prefix}training_curves.png")


def load_run_model(run_dir: str | os.PathLike):
    """Loads ``<run_dir>/model.keras`` with Keras' safe mode on.

    Raises:
        TLKerasError: if the directory or model is missing or unreadable.
    """
    from tlkeras._backend import keras
    from tlkeras import backbones  # noqa: F401  (registers HubBackbone for deserialization)

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TLKerasError(f"run directory {run_dir} does not exist")
    path = run_dir / "model.keras"
    if not path.is_file():
        raise TLKerasError(f"{run_dir} has no model.keras; pass a directory written by tlkeras.train")
    scope = contextlib.nullcontext()
    if (run_dir / "optimization.json").is_file():
        # Runs written by tlkeras.optimize may hold tfmot's QAT layers, which Keras can only
        # deserialize inside tfmot's custom-object scope.
        from tlkeras.optimization import keras_load_scope

        scope = keras_load_scope()
    try:
        # compile=False: evaluation only predicts, and the saved optimizer has no state to load.
        with scope:
            return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001
        raise TLKerasError(f"cannot load {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:150]}") from None


def evaluate_run(run_dir: str | os.PathLike, data_source: str | None = None, split: str = "test", write: bool = True) -> dict[str, Any]:
    """Re-evaluates a saved run on its own data (or ``data_source`` with the same classes).

    Args:
        run_dir: a run directory written by ``tlkeras.train``.
        data_source: an image folder, CSV or ``tfds:`` name; default: the run's own data source.
        split: ``test``, ``val`` or ``train``; falls back to ``val`` when there is no test split.
        write: write ``eval_metrics.json`` and ``eval_confusion_matrix.png`` into the run.

    Raises:
        TLKerasError: a bad run directory, a data source whose classes differ from the run's.
    """
    from tlkeras.config import load_config
    from tlkeras.data import load_data
    from tlkeras.runs import read_labels

    run_dir = Path(run_dir)
    model = load_run_model(run_dir)
    config = load_config(run_dir / "config.yaml")
    labels = read_labels(run_dir)
    if data_source is not None:
        config.data.source = data_source
    if config.data.source is None:
        raise TLKerasError(f"{run_dir} was trained on the embedded demo; pass --data to evaluate on your images")
    size = int(model.inputs[0].shape[1])
    bundle = load_data(config.data, size, config.model.head, config.seed)
    if bundle.class_names != labels:
        raise TLKerasError(
            f"the data's classes {bundle.class_names} differ from the run's {labels}; evaluate on data with the same classes"
        )
    chosen = {"train": bundle.train, "val": bundle.val, "test": bundle.test}.get(split)
    if chosen is None or len(chosen) == 0:
        split, chosen = "val", bundle.val
    metrics = evaluate_model(model, chosen, labels, config.model.head, config.data.batch_size)
    metrics = {"split": split, "data": bundle.source, "final": metrics}
    if write:
        write_reports(run_dir, metrics, labels, config.model.head, prefix="eval_")
    return metrics
