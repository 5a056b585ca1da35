"""Reporting a search: one row per trial, ``trials.csv``/``trials.md``, the objective plot and,
with device measurements, the Pareto front (``pareto.png``)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkeras.config import RunConfig
from tlkeras.runs import atomic_path, atomic_write_text
from tlkeras.tune.device import INFEASIBLE, DeviceMeter
from tlkeras.tune.hypermodel import clean_value
from tlkeras.tune.limits import DeviceLimits, format_bytes, pareto_front
from tlkeras.tune.space import HYPERPARAMETERS
from tlkeras.tune.tuner import is_infeasible

__all__ = [
    "SearchResult", "trial_rows", "write_tables", "plot_objective", "plot_front", "mark_front",
    "device_preamble", "last_line",
]


@dataclass
class SearchResult:
    """What :func:`run_search` did.

    Attributes:
        directory: the search directory.
        role: ``single``, ``chief`` or ``worker``.
        objective: the objective's name; ``direction`` is ``min`` or ``max``.
        trials: one row per trial, best first (what trials.csv holds).
        best_values: the best trial's hyperparameter values (None if no trial completed).
        best_score: its objective value.
        best_config: the RunConfig written to ``best.yaml`` (full epochs).
        info: stop reason, counts, timings and feature-cache statistics (``search.json``).
    """

    directory: Path
    role: str
    objective: str
    direction: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    best_values: dict[str, Any] | None = None
    best_score: float | None = None
    best_config: RunConfig | None = None
    info: dict[str, Any] = field(default_factory=dict)


def last_line(message: str | None) -> str:
    lines = [l.strip() for l in (message or "").splitlines() if l.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= 160 else text[:157] + "..."


def trial_rows(oracle, objective: str, direction: str, meter: DeviceMeter | None = None) -> list[dict[str, Any]]:
    """One row per trial, best first: status (``INFEASIBLE`` for a trial skipped before training),
    objective, hyperparameters, epochs, seconds, validation metrics, and with a ``meter`` the
    trial's shape measurement (``tflite_bytes``, ``latency_ms``, ``arena_bytes``) and ``feasible``."""
    order = {tid: i for i, tid in enumerate(oracle.start_order)}
    rows = []
    for tid, trial in oracle.trials.items():
        values = trial.hyperparameters.values
        status = "INFEASIBLE" if is_infeasible(trial) else trial.status
        row: dict[str, Any] = {"trial": tid, "number": order.get(tid, len(order)) + 1, "status": status}
        metrics = {name: _float(trial.metrics.get_last_value(name)) for name in trial.metrics.metrics}
        row[objective] = metrics.get(objective) if trial.status == "COMPLETED" else None
        for name in HYPERPARAMETERS:
            row[name] = clean_value(values.get(name))
        row["phase1_epochs"] = _as_int(metrics.get("phase1_epochs"))
        row["phase2_epochs"] = _as_int(metrics.get("phase2_epochs"))
        row["seconds"] = round(metrics["seconds"], 1) if metrics.get("seconds") is not None else None
        for name, value in sorted(metrics.items()):
            if name.startswith("val_") and name != objective:
                row[name] = value if trial.status == "COMPLETED" else None
        if meter is not None:
            found = meter.for_trial(tid)
            row["tflite_bytes"] = found.size if found else None
            row["latency_ms"] = found.latency_ms if found else None
            row["arena_bytes"] = found.arena if found else None
            row["feasible"] = "" if found is None else "no" if status == "INFEASIBLE" else "yes"
            row["front"] = ""
        note = last_line(trial.message) or trial.status.lower()
        row["note"] = "" if trial.status == "COMPLETED" else note.removeprefix(INFEASIBLE)
        rows.append(row)
    sign = -1.0 if direction == "max" else 1.0
    rows.sort(key=lambda r: (r[objective] is None or r["status"] != "COMPLETED", sign * (r[objective] or 0.0), r["number"]))
    return rows


def _float(value) -> float | None:
    return None if value is None else float(value)


def _as_int(value):
    return None if value is None else int(round(value))


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def _cost(row: dict[str, Any], axis: str) -> float | None:
    return row.get("tflite_bytes") if axis == "size" else row.get("latency_ms")


def mark_front(rows: list[dict[str, Any]], objective: str, direction: str, axis: str) -> list[str]:
    """Marks ``front = "yes"`` on the completed trials no other completed trial dominates on
    (objective, ``axis`` cost); returns their ids by increasing cost."""
    points = [(r["trial"], r[objective], _cost(r, axis)) for r in rows
              if r["status"] == "COMPLETED" and r[objective] is not None and _cost(r, axis) is not None]
    front = pareto_front(points, direction)
    for row in rows:
        if row["trial"] in front:
            row["front"] = "yes"
    return front


def device_preamble(rows: list[dict[str, Any]], meter: DeviceMeter, pareto: bool, axis: str) -> list[str]:
    """The lines above the trial table of a search with device measurements."""
    infeasible = sum(r["status"] == "INFEASIBLE" for r in rows)
    completed = sum(r["status"] == "COMPLETED" for r in rows)
    goal = f"the Pareto front of the objective against {axis}" if pareto else "the best objective within the limits"
    return [
        f"Device: every trial's shape converted to the {meter.variant} TFLite variant (untrained copy, before "
        f"training) and run with LiteRT: file size, p50 latency with {meter.threads} thread(s)"
        + (", TFLite Micro arena estimate" if any(m.arena is not None for m in meter.shapes.values()) else "") + ".",
        f"Limits: {meter.limits.describe()}. Goal: {goal}.",
        f"{completed} trained, {infeasible} infeasible (never trained); `front` marks the Pareto front "
        f"(objective vs {axis}) among the trained trials. {len(meter.shapes)} shape(s) measured.",
        "",
    ]


_BYTES = ("tflite_bytes", "arena_bytes")
_DEVICE_COLUMNS = ("tflite_bytes", "latency_ms", "arena_bytes", "front")


def write_tables(directory: Path, rows: list[dict[str, Any]], objective: str, searched: list[str], preamble: list[str] | None = None) -> None:
    """Writes ``trials.csv`` (every column) and ``trials.md`` (what differs between trials)."""
    columns = _columns(rows) or ["trial", "number", "status", objective]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_text(directory / "trials.csv", buffer.getvalue())

    # The Markdown table shows what differs between trials; the CSV has every column.
    shown = ["trial", "status", objective, *searched, *_DEVICE_COLUMNS, "phase1_epochs", "phase2_epochs", "seconds", "note"]
    shown = [c for c in shown if c in columns] if rows else shown
    lines = [
        f"# Trials, best {objective} first",
        "",
        *(preamble or []),
        "| rank | " + " | ".join(shown) + " |",
        "|" + "---|" * (len(shown) + 1),
    ]
    for rank, row in enumerate(rows, 1):
        cells = [(format_bytes(row.get(c)) if c in _BYTES else _fmt(row.get(c))).replace("|", "/") for c in shown]
        lines.append(f"| {rank if row['status'] == 'COMPLETED' else ''} | " + " | ".join(cells) + " |")
    atomic_write_text(directory / "trials.md", "\n".join(lines) + "\n")


def plot_objective(directory: Path, rows: list[dict[str, Any]], objective: str, direction: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    done = sorted((r["number"], r[objective]) for r in rows if r["status"] == "COMPLETED" and r[objective] is not None)
    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if done:
        xs, ys = zip(*done)
        best = np.maximum.accumulate(ys) if direction == "max" else np.minimum.accumulate(ys)
        ax.scatter(xs, ys, s=18, label="trial")
        ax.step(xs, best, where="post", color="tab:orange", label="best so far")
        ax.legend(loc="best")
    ax.set_xlabel("trial (start order)")
    ax.set_ylabel(objective)
    ax.set_title(f"{objective} per trial ({direction})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(directory / "objective.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def plot_front(directory: Path, rows: list[dict[str, Any]], objective: str, axis: str, limits: DeviceLimits, meter: DeviceMeter) -> None:
    """Writes ``pareto.png``: the objective of every trained trial against its size or latency,
    the Pareto front, the limit, and the infeasible trials' costs along the bottom."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scale, unit = (1000.0, "KB") if axis == "size" else (1.0, "ms")
    limit = limits.max_size if axis == "size" else limits.max_latency_ms

    def x_of(row):
        cost = _cost(row, axis)
        return None if cost is None else cost / scale

    done = [(x_of(r), r[objective], r) for r in rows if r["status"] == "COMPLETED" and r[objective] is not None and x_of(r) is not None]
    skipped = [x_of(r) for r in rows if r["status"] == "INFEASIBLE" and x_of(r) is not None]
    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if done:
        ax.scatter([d[0] for d in done], [d[1] for d in done], s=22, color="tab:blue", label="trained (feasible)")
        front = sorted((d[0], d[1]) for d in done if d[2].get("front") == "yes")
        if front:
            ax.step([f[0] for f in front], [f[1] for f in front], where="post", color="tab:orange", marker="o", label="Pareto front")
    if skipped:
        y0 = min([d[1] for d in done], default=0.0)
        ax.scatter(skipped, [y0] * len(skipped), marker="x", color="tab:gray", label="infeasible (not trained)")
    if limit is not None:
        ax.axvline(limit / scale, color="tab:red", linestyle="--", label=f"limit {limit / scale:g} {unit}")
    ax.set_xlabel(f"{'.tflite size' if axis == 'size' else 'p50 latency'} ({unit}, {meter.variant}"
                  + (f", {meter.threads} thread(s)" if axis == "latency" else "") + ")")
    ax.set_ylabel(objective)
    ax.set_title(f"{objective} vs {axis}: every trial")
    ax.grid(alpha=0.3)
    if done or skipped:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_path(directory / "pareto.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
