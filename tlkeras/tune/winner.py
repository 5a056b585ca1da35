"""The winner of a search with device limits: its bundle exported, verified and measured again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tlkeras.config import RunConfig
from tlkeras.core import litert
from tlkeras.core.loading import load_model
from tlkeras.errors import TLKerasError
from tlkeras.tune.device import DeviceMeter, full_integer
from tlkeras.tune.hypermodel import TransferHyperModel
from tlkeras.tune.limits import DeviceLimits

__all__ = ["BUNDLE_DIR", "export_winner"]

BUNDLE_DIR = "bundle"


def _drop_other_models(directory: Path, keep: str) -> None:
    """Deletes the trial models kept for the export, except the winner's (they are large)."""
    for path in directory.glob("trial_*/model.keras"):
        if path.parent.name != f"trial_{keep}":
            path.unlink(missing_ok=True)


def export_winner(
    directory: Path, trial_id: str, hypermodel: TransferHyperModel, config: RunConfig | None,
    meter: DeviceMeter, limits: DeviceLimits,
) -> dict[str, Any]:
    """Exports the winning trial's trained model as a bundle of the search's variant and checks it.

    The bundle (``<directory>/bundle/``) is written by :func:`tlkeras.export.bundle.export_model`,
    which runs it with LiteRT on the evaluation split and compares it with the Keras model; the
    ``.tflite`` is then measured again (size, p50 latency with the search's threads, arena) and
    checked against the limits.

    Returns:
        ``{"trial", "bundle", "verified", "why", "size", "latency_ms", "arena", "meets_limits",
        "problems", "export_seconds"}`` (``bundle`` None and ``why`` set when it could not export).

    Side effects: writes ``<directory>/bundle/`` (replacing an older one) and deletes the other
    trials' ``model.keras`` files.
    """
    from tlkeras.export.bundle import ExportCheckError, ExportOptions, export_model

    start = time.perf_counter()
    out: dict[str, Any] = {"trial": trial_id, "bundle": None, "verified": False, "why": None}
    model_path = directory / f"trial_{trial_id}" / "model.keras"
    if not model_path.is_file():
        out["why"] = f"{model_path} is missing (trial models are kept only when export_winner is on); retrain best.yaml and export it"
        return out
    size = int(config.data.image_size) if config is not None else None
    try:
        model = load_model(model_path)
        size = int(model.inputs[0].shape[1])
        data = hypermodel.data.get(size)
        # micro=False: the arena is estimated above; the C array is for a chosen model, not a search.
        options = ExportOptions(variants=(meter.variant,), overwrite=True, seed=hypermodel.base.seed, micro=False)
        try:
            result = export_model(model, data, directory / BUNDLE_DIR, options, name=f"{directory.name}-trial-{trial_id}",
                                  source_run={"search": str(directory), "trial": trial_id})
            out["verified"] = True
        except ExportCheckError as exc:
            result = exc.result
            out["why"] = str(exc)
        tflite = result.variant_path(meter.variant)
        out["bundle"] = str(result.bundle_dir)
        metrics = result.metadata.get("variants", {}).get(meter.variant, {}).get("metrics") or {}
        out["tflite_metrics"] = {k: metrics[k] for k in ("accuracy", "f1_macro", "drop_points", "count") if k in metrics}
    except TLKerasError as exc:
        out["why"] = f"export failed: {exc}"
        out["export_seconds"] = round(time.perf_counter() - start, 1)
        return out
    content = tflite.read_bytes()
    out["size"] = len(content)
    out["latency_ms"] = round(litert.measure_latency(content, num_threads=meter.threads, iterations=meter.iterations, warmup=5)["p50_ms"], 4)
    out["arena"] = litert.estimate_arena(litert.inspect_model(content)).total if full_integer(meter.variant) else None
    out["problems"] = limits.violations(out["size"], out["latency_ms"], out["arena"])
    out["meets_limits"] = not out["problems"]
    out["export_seconds"] = round(time.perf_counter() - start, 1)
    _drop_other_models(directory, trial_id)
    return out
