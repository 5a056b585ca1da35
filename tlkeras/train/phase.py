"""The one phase runner: epochs with early stopping, restore-best, checkpoints and resume.

:func:`run_phase` trains a compiled model one epoch per ``fit`` call. After every epoch it
checkpoints the weights, the optimizer state (whose step counter drives the learning-rate
schedule), the early-stopping state and the history, so a killed run continues after its last
completed epoch. At the end it restores the best weights on the monitored value; a *candidate*
(for phase 2: the model at the end of phase 1) competes like an epoch, so a phase never ends
worse than the model it started from. Every technique that fine-tunes (train, multi-task,
distillation, the unlabelled-data techniques) runs its phases through here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.runs import atomic_path, read_json, write_json

__all__ = ["PhaseHistory", "PhaseResult", "Candidate", "run_phase", "monitor_mode", "evaluate_candidate", "tensorboard"]


class PhaseHistory:
    """Accumulates per-epoch logs of several phases into one dict with a ``phase`` column.

    Every column keeps the same length (missing values are None), which is ``history.json``'s
    format. ``add`` takes a dict of series or a Keras ``History``.
    """

    def __init__(self, values: dict[str, list] | None = None):
        self.values: dict[str, list] = values if values is not None else {"phase": []}
        self.values.setdefault("phase", [])

    def add(self, logs: dict[str, list] | Any, phase: int, **columns) -> None:
        """Appends ``logs`` as rows of ``phase``; ``columns`` (e.g. ``round=2``) are constant."""
        logs = dict(logs.history if hasattr(logs, "history") else (logs or {}))
        phases = logs.pop("phase", None)
        start = len(self.values["phase"])
        rows = len(next(iter(logs.values()))) if logs else 0
        for key, series in logs.items():
            if key == "lr":
                continue
            self.values.setdefault(key, [None] * start)
            self.values[key].extend(None if v is None else float(v) for v in series)
        self.values["phase"].extend(phases if phases is not None else [phase] * rows)
        for key, value in columns.items():
            self.values.setdefault(key, [None] * start)
            self.values[key].extend([value] * rows)
        for series in self.values.values():
            series.extend([None] * (len(self.values["phase"]) - len(series)))


def monitor_mode(monitor: str) -> str:
    """``min`` for losses and errors, ``max`` for scores (accuracy, AUC, ...)."""
    name = monitor.lower()
    return "min" if any(word in name for word in ("loss", "error", "mae", "mse")) else "max"


@dataclass
class Candidate:
    """A model a phase must beat: its monitored value and its weights (``fit_model.get_weights()``)."""

    value: float
    weights: list
    label: str = "phase 1"
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class PhaseResult:
    """What :func:`run_phase` did.

    Attributes:
        history: per-epoch logs.
        monitor: the monitored log key.
        best_value: the monitored value of the kept weights.
        best_epoch: 1-based epoch whose weights were kept; 0 when the candidate was kept.
        candidate_value: the candidate's value (None without a candidate).
        phase_best: the best value reached by the phase's own epochs (None if none ran).
    """

    history: dict[str, list]
    monitor: str
    best_value: float | None
    best_epoch: int
    candidate_value: float | None = None
    phase_best: float | None = None

    @property
    def kept_candidate(self) -> bool:
        return self.candidate_value is not None and self.best_epoch == 0


def evaluate_candidate(fit_model, val_ds, monitor: str, *, steps: int | None = None, label: str = "phase 1") -> Candidate | None:
    """The current weights of a compiled ``fit_model`` as a :class:`Candidate`, scored on ``val_ds``.

    Returns None when the monitored value is not among the model's validation logs.
    """
    logs = fit_model.evaluate(val_ds, steps=steps, verbose=0, return_dict=True)
    logs = {f"val_{k}": float(v) for k, v in logs.items()}
    if monitor not in logs or not np.isfinite(logs[monitor]):
        return None
    return Candidate(logs[monitor], fit_model.get_weights(), label, logs)


def _better(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    if not np.isfinite(value):
        return False
    return value < best if mode == "min" else value > best


def run_phase(
    fit_model,
    make_train_ds: Callable[[int], Any],
    val_ds,
    *,
    phase: int,
    epochs: int,
    patience: int,
    verbose: int,
    class_weight=None,
    callbacks: list | None = None,
    checkpoint_dir: Path | None = None,
    monitor: str = "val_loss",
    candidate: Candidate | None = None,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    restore_best: bool = True,
    select_from_epoch: int = 0,
) -> PhaseResult:
    """Trains a compiled ``fit_model`` one epoch per ``fit`` call, keeping the best weights.

    Args:
        fit_model: a compiled model (or a custom-``train_step`` trainer wrapping one).
        make_train_ds: ``epoch -> dataset`` (its shuffle/augmentation seeded by the epoch, so a
            resumed run sees the same batches).
        val_ds: the validation dataset (None: monitor the training logs' value).
        phase: the phase number shown in progress and history.
        epochs: the most epochs to run.
        patience: epochs without improvement of ``monitor`` before stopping (0: never stop early).
        verbose: 0 silent, 1 Keras progress bar, 2 one line per epoch.
        class_weight: Keras ``class_weight``.
        callbacks: extra Keras callbacks.
        checkpoint_dir: where to checkpoint after every epoch; if it holds checkpoints of an
            interrupted call, training continues after the last completed epoch.
        monitor: the log key that selects the best weights (``val_loss`` by default; a ``loss``,
            ``error``, ``mae`` or ``mse`` key is minimized, any other maximized).
        candidate: weights to beat (e.g. the model at the end of phase 1); kept when no epoch
            improves on it.
        steps_per_epoch: steps of one epoch (for endless datasets).
        validation_steps: steps of one validation pass (for endless datasets).
        restore_best: end with the best weights (default); False keeps the last epoch's.
        select_from_epoch: epochs before this (0-based) neither become the best nor count for
            early stopping (pruning: only models at the target sparsity compete).

    Returns:
        A :class:`PhaseResult`.

    Side effects: trains ``fit_model`` and leaves the kept weights in it; writes checkpoints under
    ``checkpoint_dir``.
    """
    mode = monitor_mode(monitor)
    fresh = {"epoch": 0, "best": None, "best_epoch": 0, "phase_best": None, "wait": 0, "history": {}, "done": False,
             "checkpoint": None, "best_saved": False, "candidate": None}
    state: dict[str, Any] = dict(fresh)
    checkpoint = tf.train.Checkpoint(model=fit_model, optimizer=fit_model.optimizer)
    best_weights = None
    if checkpoint_dir is not None and (checkpoint_dir / "state.json").is_file():
        state = {**fresh, **read_json(checkpoint_dir / "state.json")}
        if state["done"]:
            fit_model.set_weights(_load_weights(checkpoint_dir / "final.npz"))
            return _result(state, monitor)
        if state["checkpoint"]:
            checkpoint.read(str(checkpoint_dir / state["checkpoint"])).expect_partial()
        if (checkpoint_dir / "best.npz").is_file():
            best_weights = _load_weights(checkpoint_dir / "best.npz")
    else:
        if checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if candidate is not None:
            state["best"], state["candidate"], best_weights = candidate.value, candidate.value, candidate.weights

    for epoch in range(state["epoch"], epochs):
        started = time.perf_counter()
        result = fit_model.fit(
            make_train_ds(epoch), validation_data=val_ds, initial_epoch=epoch, epochs=epoch + 1,
            steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
            class_weight=class_weight, callbacks=list(callbacks or []), verbose=1 if verbose == 1 else 0,
        )
        logs = {k: float(v[-1]) for k, v in result.history.items()}
        for key, value in logs.items():
            state["history"].setdefault(key, []).append(value)
        if verbose == 2:
            shown = " - ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "lr")
            print(f"phase {phase} epoch {epoch + 1}/{epochs} - {shown} - {time.perf_counter() - started:.1f}s", flush=True)
        if monitor not in logs and monitor != "val_loss":
            # A value this model does not log (e.g. val_accuracy of a regression head): val loss.
            monitor, mode = "val_loss", "min"
        value = logs.get(monitor, logs.get("loss"))
        selectable = epoch >= select_from_epoch
        if selectable and _better(value, state["phase_best"], mode):
            state["phase_best"] = value
        improved = selectable and _better(value, state["best"], mode)
        if improved:
            state["best"], state["best_epoch"], state["wait"] = value, epoch + 1, 0
            best_weights = fit_model.get_weights()
        elif selectable:
            state["wait"] += 1
        state["epoch"] = epoch + 1
        if checkpoint_dir is not None:
            # The candidate's weights are written with the first epoch, so a resume keeps them.
            save_best = improved or (not state["best_saved"] and best_weights is not None)
            _checkpoint_epoch(checkpoint_dir, checkpoint, state, best_weights if save_best else None)
        if patience > 0 and state["wait"] >= patience:
            break
        if getattr(fit_model, "stop_training", False):
            break  # a user callback asked to stop
    if not restore_best:
        state["best"], state["best_epoch"] = state["history"].get(monitor, [None])[-1] if state["history"] else None, state["epoch"]
    elif best_weights is not None:
        fit_model.set_weights(best_weights)
    if checkpoint_dir is not None:
        # NumPy arrays, not a Keras weights file: the format does not depend on the file name.
        _save_weights(checkpoint_dir / "final.npz", fit_model.get_weights())
        state["done"] = True
        write_json(checkpoint_dir / "state.json", state)
    return _result(state, monitor)


def _result(state: dict, monitor: str) -> PhaseResult:
    return PhaseResult(state["history"], monitor, state["best"], int(state.get("best_epoch") or 0), state.get("candidate"), state.get("phase_best"))


def _save_weights(path: Path, weights: list) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{f"w{i}": w for i, w in enumerate(weights)})


def _load_weights(path: Path) -> list:
    with np.load(path) as saved:
        return [saved[f"w{i}"] for i in range(len(saved.files))]


def _checkpoint_epoch(checkpoint_dir: Path, checkpoint, state: dict, best_weights) -> None:
    """Writes one epoch's checkpoint; ``state.json`` is written last, as the commit point."""
    if best_weights is not None:
        _save_weights(checkpoint_dir / "best.npz", best_weights)
        state["best_saved"] = True
    previous = state["checkpoint"]
    state["checkpoint"] = f"epoch-{state['epoch']}"
    checkpoint.write(str(checkpoint_dir / state["checkpoint"]))
    write_json(checkpoint_dir / "state.json", state)
    if previous and previous != state["checkpoint"]:
        for stale in checkpoint_dir.glob(f"{previous}.*"):
            stale.unlink()


def tensorboard(log_dir: Path | None) -> list:
    """A TensorBoard callback writing to ``log_dir`` (none when ``log_dir`` is None)."""
    if log_dir is None:
        return []
    return [keras.callbacks.TensorBoard(log_dir=str(log_dir), profile_batch=0, write_graph=False)]
