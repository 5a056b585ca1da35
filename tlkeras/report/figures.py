"""Figures of the HTML report, drawn with matplotlib's object API and returned as PNG bytes.

Nothing here writes files: the report inlines every figure as a ``data:`` URI. Figures come from
:func:`tlkeras.core.plots.figure`, which leaves a notebook's pyplot state alone.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np

from tlkeras.core.plots import figure

__all__ = ["png_bytes", "image_png", "kept_epochs", "training_curves", "reliability_diagram"]


def png_bytes(fig, dpi: int = 90) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def image_png(image: np.ndarray, max_side: int = 128) -> bytes:
    """A uint8 H x W x 3 image as PNG bytes, shrunk so its longer side is at most ``max_side``."""
    from PIL import Image

    img = Image.fromarray(np.asarray(image, np.uint8))
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.BILINEAR)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _best(values: list, idx: list[int], monitor: str) -> int | None:
    idx = [i for i in idx if i < len(values) and values[i] is not None]
    if not idx:
        return None
    lower = any(w in monitor for w in ("loss", "error", "mae", "mse"))  # else a score: higher is better
    return (min if lower else max)(idx, key=lambda i: values[i]) + 1


def kept_epochs(history: dict[str, list], selection: dict | None = None) -> tuple[dict[int, int], int | None]:
    """Each phase's best epoch and the epoch the saved model holds, 1-based over the whole history.

    The engine restores, per phase, the best epoch on its monitored value (``val_loss`` unless
    ``run.json``'s ``selection`` names another); in phase 2 the phase-1 model competes, and
    ``selection["kept"]`` says which won (``selection["epoch"]`` is the phase-2 epoch).

    Returns:
        ``({phase: epoch}, final epoch or None)``.
    """
    phases = history.get("phase") or []
    monitor = (selection or {}).get("monitor") or ("val_loss" if history.get("val_loss") else "loss")
    kept: dict[int, int] = {}
    for phase in sorted(set(p for p in phases if p is not None)):
        idx = [i for i, p in enumerate(phases) if p == phase]
        # Phase 1 always selects on val loss; later phases on the run's monitor.
        key = "val_loss" if phase == 1 and history.get("val_loss") else monitor
        best = _best(history.get(key) or history.get("loss") or [], idx, key)
        if best is not None:
            kept[int(phase)] = best
    final = kept.get(max(kept)) if kept else None
    if selection and selection.get("kept") == "phase 1":
        final = kept.get(1)
    elif selection and str(selection.get("kept", "")).startswith("phase ") and selection.get("epoch"):
        phase = int(str(selection["kept"]).split()[-1])
        first = next((i for i, p in enumerate(phases) if p == phase), None)
        if first is not None:
            final = kept[phase] = first + int(selection["epoch"])
    return kept, final


def training_curves(history: dict[str, list], selection: dict | None = None) -> bytes | None:
    """Loss and the first metric (train and val) over both phases, the phase boundary dashed, and
    each phase's kept epoch circled; None without a history."""
    from matplotlib.ticker import MaxNLocator

    if not history or not history.get("loss"):
        return None
    metric = next((k for k in history if not k.startswith("val_") and k not in ("loss", "lr", "phase")), None)
    keys = ["loss"] + ([metric] if metric else [])
    n = len(history["loss"])
    epochs = np.arange(1, n + 1)
    phases = history.get("phase") or [1] * n
    boundary = next((i for i, p in enumerate(phases) if p == 2), None)
    kept, final = kept_epochs(history, selection)
    fig = figure(figsize=(5.2 * len(keys), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(keys)))

    def series(key):
        return np.array([np.nan if v is None else float(v) for v in history.get(key, [])] + [np.nan] * (n - len(history.get(key, []))))

    for ax, key in zip(axes, keys):
        ax.plot(epochs, series(key), marker=".", label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, series(f"val_{key}"), marker=".", label=f"val {key}")
        if boundary:
            ax.axvline(boundary + 0.5, color="grey", linestyle="--", label="phase 1 | phase 2")
        shown = series(f"val_{key}") if f"val_{key}" in history else series(key)
        for phase, epoch in kept.items():
            y = shown[epoch - 1]
            if np.isfinite(y):
                is_final = epoch == final
                ax.plot([epoch], [y], marker="o", markersize=11, markerfacecolor="none",
                        markeredgecolor="crimson" if is_final else "grey", markeredgewidth=2,
                        linestyle="none", label="kept epoch (saved model)" if is_final else f"phase {phase} best")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (both phases)")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


def reliability_diagram(curves: Sequence[tuple[str, dict[str, Any]]], title: str = "Reliability") -> bytes | None:
    """Accuracy against confidence per bin for each ``(label, reliability_bins(...))`` pair, with
    the diagonal of perfect calibration and, below, how many images fall in each bin."""
    curves = [(label, r) for label, r in curves if r and sum(r.get("count", [])) > 0]
    if not curves:
        return None
    fig = figure(figsize=(5.0, 5.2))
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    edges = np.asarray(curves[0][1]["edges"])
    width = (edges[1] - edges[0]) / (len(curves) + 0.5)
    for k, (label, r) in enumerate(curves):
        conf = [c for c, n in zip(r["confidence"], r["count"]) if n]
        acc = [a for a, n in zip(r["accuracy"], r["count"]) if n]
        ax.plot(conf, acc, marker="o", label=label)
        hist.bar(np.asarray(r["edges"][:-1]) + width * (k + 0.25), r["count"], width=width, align="edge", label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    hist.set_xlabel("confidence (top softmax score)")
    hist.set_ylabel("images")
    fig.tight_layout()
    return png_bytes(fig)
