"""Magnitude pruning with tfmot (unstructured or 2:4), fine-tuned, then stripped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlkeras._backend import keras
from tlkeras._backend import tfmot as _tfmot
from tlkeras.config import RunConfig
from tlkeras.core.data import DataBundle
from tlkeras.errors import TLKerasError

# ---------------------------------------------------------------------------------------------
# Pruning
from tlkeras.optimize.finetune import _fine_tune, _recompile_fresh, _self_targets, _stage_settings, _steps_per_epoch
from tlkeras.optimize.options import FineTuneOptions, PruningOptions, StageResult
from tlkeras.optimize.scope import _check_hub, _prunable_weight_names, _set_trainable, compressible_layers


def _pruning_schedule(options: PruningOptions, steps: int):
    """Builds the tfmot schedule; returns (schedule, info) with the steps it uses.

    tfmot applies a mask update only every ``frequency`` steps from ``begin_step``; the end step is
    put on that grid, or the final sparsity would never be applied.
    """
    sk = _tfmot().sparsity.keras
    last = max(0, steps - 1)
    begin = min(int(round(options.begin_fraction * steps)), last)
    ramp_end = min(max(begin + 1, int(round(options.end_fraction * steps)) - 1), last)
    span = ramp_end - begin
    frequency = int(options.frequency or max(1, span // 8))
    if span >= 1:
        end = begin + frequency * max(1, span // frequency)
        if end > last:
            end = begin + frequency * ((last - begin) // frequency)
    else:
        end = begin
    if options.schedule == "constant" or end <= begin:
        schedule = sk.ConstantSparsity(float(options.target_sparsity), begin_step=begin, end_step=end if end > begin else -1, frequency=frequency)
        kind = "constant"
    else:
        schedule = sk.PolynomialDecay(initial_sparsity=float(options.initial_sparsity), final_sparsity=float(options.target_sparsity),
                                      begin_step=begin, end_step=end, power=3, frequency=frequency)
        kind = "polynomial"
    return schedule, {"schedule": kind, "begin_step": begin, "end_step": end, "frequency": frequency, "total_steps": steps}


def _m_by_n_ok(layer) -> bool:
    """Whether the 2:4 pattern fits the layer: groups of 4 along the input depth."""
    kernel = getattr(layer, "kernel", None)
    return kernel is not None and len(kernel.shape) in (2, 4) and int(kernel.shape[-2]) % 4 == 0


def _prune_targets(model, options: PruningOptions, head_only: bool) -> tuple[list[str], dict[str, str]]:
    targets, skipped = [], {}
    for layer, names in compressible_layers(model, _prunable_weight_names, options.skip_layers, "prune", head_only):
        size = sum(int(np.prod(w.shape)) for w in layer.weights if w.name.split("/")[-1].split(":")[0] in names)
        if layer.name in options.skip_layers:
            skipped[layer.name] = "skip_layers"
        elif size < options.min_weights:
            skipped[layer.name] = f"fewer than {options.min_weights} weights"
        elif options.structure == "2:4" and not _m_by_n_ok(layer):
            skipped[layer.name] = "input depth not a multiple of 4 (2:4 pattern)"
        else:
            targets.append(layer.name)
    return targets, skipped


def prune(model, data: DataBundle, config: RunConfig, options: PruningOptions | None = None, finetune: FineTuneOptions | None = None, *,
          callbacks: Sequence | None = None, log_dir: Path | None = None) -> StageResult:
    """Prunes ``model`` to a target sparsity while fine-tuning, then strips the pruning wrappers.

    Args:
        model: a trained tlkeras model (flat functional graph).
        data: the run's data; ``data.train`` is fitted, ``data.val`` drives early stopping.
        config: the run's config (phase-2 learning rate and epochs, loss, optimizer, seed).
        options: pruning settings (default: 50% with a polynomial schedule).
        finetune: fine-tuning overrides (default: the run's phase-2 settings).
        callbacks: extra Keras callbacks.
        log_dir: TensorBoard log folder (None: no logs).

    Returns:
        A StageResult whose model has sparse kernels and no wrappers (same layers as ``model``).

    Raises:
        TLKerasError: bad options, a TF-Hub backbone without head_only, layers tfmot cannot prune.

    Side effects: changes ``model``'s weights and ``trainable`` flags (the returned model shares
    its layers).
    """
    options = (options or PruningOptions()).validate()
    fto = (finetune or FineTuneOptions()).validate()
    ft = _stage_settings(fto, config, options.epochs, data)
    _check_hub(model, ft["head_only"], "prune")
    soft = _self_targets(model, data, ft)  # before tfmot wraps the model
    targets, skipped = _prune_targets(model, options, ft["head_only"])
    if not targets:
        raise TLKerasError("no layer left to prune (all skipped or unsupported); lower --prune-min-weights or --skip-layers")
    start = time.perf_counter()
    sk = _tfmot().sparsity.keras
    steps = _steps_per_epoch(data, ft["batch_size"]) * ft["epochs"]
    schedule, sched_info = _pruning_schedule(options, steps)
    params: dict[str, Any] = {"pruning_schedule": schedule}
    if options.structure == "2:4":
        params["sparsity_m_by_n"] = (2, 4)
    _set_trainable(model, ft["head_only"])
    chosen = set(targets)

    def wrap(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        if layer.name in chosen:
            return sk.prune_low_magnitude(layer, **params)
        return layer  # the same layer object: its weights are kept

    try:
        wrapped = keras.models.clone_model(model, clone_function=wrap)
    except ValueError as exc:
        raise TLKerasError(f"tfmot cannot prune this model: {str(exc).splitlines()[0][:200]}") from None
    # The target sparsity is reached at end_step; early stopping may only restore epochs after it.
    monitor_from = min(ft["epochs"], (sched_info["end_step"] // _steps_per_epoch(data, ft["batch_size"])) + 1)
    extra = [sk.UpdatePruningStep()]
    if log_dir is not None:
        extra.append(sk.PruningSummaries(log_dir=str(log_dir / "prune"), profile_batch=0, write_graph=False))
    history = _fine_tune(wrapped, data, config, ft, stage="prune", extra_callbacks=extra + list(callbacks or []),
                         log_dir=log_dir, monitor_from_epoch=monitor_from, targets=soft)
    stripped = sk.strip_pruning(wrapped)
    _recompile_fresh(stripped, config, data.num_outputs, ft)
    info = {
        "target_sparsity": float(options.target_sparsity),
        "structure": options.structure,
        "pruned_layers": targets,
        "dense_layers": skipped,
        **sched_info,
        "finetune": ft,
    }
    return StageResult(stripped, "prune", info, history, time.perf_counter() - start, wrapped)
