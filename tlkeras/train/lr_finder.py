"""A learning-rate finder: a short sweep of exponentially growing learning rates.

The model trains for a few dozen steps while the learning rate grows from ``min_lr`` to ``max_lr``;
the smoothed training loss per step, plotted against the learning rate, shows where learning starts
and where it diverges. The suggestion is the rate where the smoothed loss falls fastest before its
minimum (fastai's "steepest" rule), or a tenth of the minimum's rate when the loss never falls:
a rate that learns, well short of divergence. The model's weights are restored afterwards.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.config import RunConfig
from tlkeras.errors import TLKerasError
from tlkeras.runs import atomic_path, write_json

__all__ = ["find_learning_rate", "LR_FINDER_PLOT", "LR_FINDER_FILE"]

LR_FINDER_PLOT = "lr_finder.png"
LR_FINDER_FILE = "lr_finder.json"


class _ExponentialRate(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, min_lr: float, max_lr: float, steps: int):
        self.min_lr, self.max_lr, self.steps = float(min_lr), float(max_lr), max(1, int(steps) - 1)

    def __call__(self, step):
        ratio = tf.cast(step, tf.float32) / float(self.steps)
        return self.min_lr * tf.pow(self.max_lr / self.min_lr, ratio)

    def get_config(self):
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "steps": self.steps + 1}


class _Recorder(keras.callbacks.Callback):
    def __init__(self, schedule: _ExponentialRate, beta: float = 0.8):
        super().__init__()
        self.schedule, self.beta = schedule, beta
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.avg, self.best = 0.0, math.inf

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", math.nan))
        step = len(self.lrs)
        sched = self.schedule
        self.lrs.append(sched.min_lr * (sched.max_lr / sched.min_lr) ** (min(step, sched.steps) / sched.steps))
        if not math.isfinite(loss):
            self.losses.append(math.nan)
            self.model.stop_training = True
            return
        # Bias-corrected exponential moving average, so the first steps are not dragged to 0.
        self.avg = self.beta * self.avg + (1 - self.beta) * loss
        smooth = self.avg / (1 - self.beta ** (step + 1))
        self.losses.append(smooth)
        self.best = min(self.best, smooth)
        if step > 5 and smooth > 4 * self.best:
            self.model.stop_training = True  # diverged: the rest of the sweep says nothing


def find_learning_rate(
    model,
    dataset,
    config: RunConfig,
    num_outputs: int,
    *,
    out_dir: str | Path | None = None,
    compile: Callable[[Any], None] | None = None,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    steps: int = 60,
) -> dict[str, Any]:
    """Sweeps the learning rate over ``steps`` training steps and suggests one.

    Args:
        model: the model as it would be trained (e.g. after phase 1, with the backbone's top
            unfrozen for phase 2).
        dataset: training batches ``(x, y)``; repeated if shorter than ``steps``.
        config: supplies the optimizer and loss (``train.optimizer``, ``model.head``).
        num_outputs: classes or targets of the head.
        out_dir: where to write ``lr_finder.png`` and ``lr_finder.json`` (None: nothing written).
        compile: ``compile(learning_rate_or_schedule)`` for the model (default:
            :func:`tlkeras.train.optim.compile_model`).
        min_lr: the first rate of the sweep.
        max_lr: the last rate.
        steps: the sweep's length in optimizer steps.

    Returns:
        ``{"suggestion": lr, "min_loss_lr": lr, "lrs": [...], "losses": [...], "plot": path or None}``
        (``losses`` smoothed; ``suggestion`` is finite and at most ``min_loss_lr``).

    Raises:
        TLKerasError: if ``min_lr``/``max_lr`` are not positive and increasing, or no step gave a
            finite loss.

    Side effects: trains ``model`` for up to ``steps`` steps, then restores its weights; leaves it
    compiled with the sweep's optimizer (compile it again before training); writes the files.
    """
    from tlkeras.train.optim import compile_model

    if not (0 < min_lr < max_lr and math.isfinite(max_lr)):
        raise TLKerasError(f"the learning-rate sweep needs 0 < min_lr < max_lr, got {min_lr} and {max_lr}")
    steps = max(8, int(steps))
    schedule = _ExponentialRate(min_lr, max_lr, steps)
    saved = model.get_weights()
    (compile or (lambda lr: compile_model(model, config, num_outputs, lr, jit=False)))(schedule)
    recorder = _Recorder(schedule)
    try:
        model.fit(dataset.repeat(), steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[recorder])
    finally:
        model.set_weights(saved)
    lrs, losses = np.array(recorder.lrs), np.array(recorder.losses)
    finite = np.isfinite(losses)
    if not finite.any():
        raise TLKerasError("the learning-rate sweep gave no finite loss; lower min_lr")
    # The first steps' average rests on a handful of batches: leave them out of the choice.
    skip = min(max(2, len(losses) // 10), int(np.flatnonzero(finite)[-1]))
    best = skip + int(np.nanargmin(np.where(finite, losses, np.inf)[skip:]))
    suggestion = _suggest(lrs, losses, best, min_lr, skip)
    result: dict[str, Any] = {
        "suggestion": suggestion, "min_loss_lr": float(lrs[best]),
        "lrs": [float(v) for v in lrs], "losses": [float(v) if np.isfinite(v) else None for v in losses], "plot": None,
    }
    if out_dir is not None:
        out = Path(out_dir)
        result["plot"] = str(_plot(out / LR_FINDER_PLOT, lrs, losses, suggestion))
        write_json(out / LR_FINDER_FILE, result)
    if config.train.verbose:
        print(f"learning-rate finder: suggested phase-2 learning rate {suggestion:.3g} (lowest loss at {lrs[best]:.3g}); "
              f"the run uses its configured rate", flush=True)
    return result


def _suggest(lrs: np.ndarray, losses: np.ndarray, best: int, min_lr: float, skip: int) -> float:
    """The rate where the smoothed loss falls fastest before its minimum (fastai's "steepest"),
    or a tenth of the minimum's rate when the loss never falls; always finite and >= ``min_lr``."""
    if best - skip >= 2:
        segment = slice(skip, best + 1)
        slopes = np.gradient(losses[segment], np.log(lrs[segment]))
        slopes[~np.isfinite(slopes)] = np.inf
        steepest = int(np.argmin(slopes))
        if slopes[steepest] < 0:
            return float(max(min_lr, lrs[skip + steepest]))
    return float(max(min_lr, lrs[best] / 10.0))


def _plot(path: Path, lrs: np.ndarray, losses: np.ndarray, suggestion: float) -> Path:
    from tlkeras.core.plots import figure

    fig = figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("learning-rate finder")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
