"""Plots and report files of a run: confusion matrix, training curves, metrics.json.

Every file goes to a temporary name and is renamed into place (:func:`tlkeras.runs.atomic_path`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ['pyplot', 'figure', 'plot_confusion_matrix', 'plot_history', 'write_reports']


def pyplot():
    """pyplot, for callers that need it; matplotlib picks a headless backend without a display."""
    import matplotlib.pyplot as plt

    return plt


def figure(**kwargs):
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
    fig = figure(figsize=(size, size))
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
    fig = figure(figsize=(5 * len(keys), 3.5))
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
    if "confusion_matrix" in final:  # only tasks with exclusive classes compute one
        plot_confusion_matrix(final["confusion_matrix"], class_names, run_dir / f"{prefix}confusion_matrix.png")
    if history:
        plot_history(history, run_dir / f"{prefix}training_curves.png")
