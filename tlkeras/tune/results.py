"""Reporting a search: one row per trial, ``trials.csv``/``trials.md`` and the objective plot."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkeras.config import RunConfig
from tlkeras.runs import atomic_path, atomic_write_text
from tlkeras.tune.hypermodel import clean_value
from tlkeras.tune.space import HYPERPARAMETERS

__all__ = ["SearchResult", "trial_rows", "write_tables", "plot_objective", "last_line"]


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


def trial_rows(oracle, objective: str, direction: str) -> list[dict[str, Any]]:
    order = {tid: i for i, tid in enumerate(oracle.start_order)}
    rows = []
    for tid, trial in oracle.trials.items():
        values = trial.hyperparameters.values
        row: dict[str, Any] = {"trial": tid, "number": order.get(tid, len(order)) + 1, "status": trial.status}
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
        row["note"] = "" if trial.status == "COMPLETED" else last_line(trial.message) or trial.status.lower()
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


def write_tables(directory: Path, rows: list[dict[str, Any]], objective: str, searched: list[str]) -> None:
    columns = _columns(rows) or ["trial", "number", "status", objective]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_text(directory / "trials.csv", buffer.getvalue())

    # The Markdown table shows what differs between trials; the CSV has every column.
    shown = ["trial", "status", objective, *searched, "phase1_epochs", "phase2_epochs", "seconds", "note"]
    shown = [c for c in shown if c in columns] if rows else shown
    lines = [
        f"# Trials, best {objective} first",
        "",
        "| rank | " + " | ".join(shown) + " |",
        "|" + "---|" * (len(shown) + 1),
    ]
    for rank, row in enumerate(rows, 1):
        cells = [_fmt(row.get(c)).replace("|", "/") for c in shown]
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
