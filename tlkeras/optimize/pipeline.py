"""A whole optimized run: a trained run directory in, a NEW run directory with a compressed model out.

Stages run in a fixed order, each in its own module and each fine-tuning with the run's own
phase-2 settings (:mod:`tlkeras.optimize.finetune`):

1. **prune** (:mod:`tlkeras.optimize.prune`): magnitude pruning to a target sparsity, then stripped.
2. **cluster** (:mod:`tlkeras.optimize.cluster`): N shared values per layer; after pruning it keeps
   the zeros (sparsity-preserving clustering).
3. **QAT** (:mod:`tlkeras.optimize.qat`): quantization-aware training; after pruning and/or
   clustering the preserving schemes (PQAT, CQAT, PCQAT), so sparsity and clusters survive.

Every optimized run gets a report (:mod:`tlkeras.optimize.report`, ``optimization.json`` and
``optimization.md``) built from the measurements of :mod:`tlkeras.optimize.measure`: sparsity,
unique weights, gzipped sizes, and the int8 TFLite accuracy (QAT vs. post-training int8), the int8
model coming from the export's one converter and running on the one LiteRT runner.

Our models are flat functional graphs (see :mod:`tlkeras.core.models`), which is what tfmot needs.
A TF-Hub backbone is one opaque layer: it can only be compressed with ``head_only=True``.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlkeras.config import RunConfig, load_config, save_config
from tlkeras.core.data import DataBundle, load_data
from tlkeras.core.loading import load_model
from tlkeras.core.metrics import compute_metrics, predict
from tlkeras.core.plots import write_reports
from tlkeras.errors import TLKerasError
from tlkeras.optimize.cluster import _cluster_targets, cluster
from tlkeras.optimize.measure import _int8_block, _keras_bytes, gzipped_size, tflite_weight_sparsity, weight_sparsity
from tlkeras.optimize.options import (
    INT8_TFLITE,
    REPORT_JSON,
    REPORT_MD,
    ClusteringOptions,
    FineTuneOptions,
    OptimizeResult,
    PruningOptions,
    QATOptions,
    StageResult,
)
from tlkeras.optimize.prune import _prune_targets, prune
from tlkeras.optimize.qat import quantize_aware, save_model
from tlkeras.optimize.report import _merge_histories, _report, _run_info, metric_name, report_markdown
from tlkeras.optimize.scope import _check_hub
from tlkeras.runs import atomic_path, atomic_write_text, read_labels, staged_directory, write_json

# ---------------------------------------------------------------------------------------------
# A whole optimized run


def _stage_plan(prune_opts, cluster_opts, qat_opts) -> list[str]:
    plan = [s for s, o in (("prune", prune_opts), ("cluster", cluster_opts), ("qat", qat_opts)) if o is not None]
    if not plan:
        raise TLKerasError("nothing to do: choose at least one of --prune SPARSITY, --cluster N, --qat")
    return plan


def _default_name(source: str, plan: list[str], prune_opts: PruningOptions | None, cluster_opts: ClusteringOptions | None) -> str:
    parts = []
    if prune_opts is not None:
        parts.append("prune24" if prune_opts.structure == "2:4" else f"prune{int(round(prune_opts.target_sparsity * 100))}")
    if cluster_opts is not None:
        parts.append(f"cluster{cluster_opts.clusters}")
    if "qat" in plan:
        parts.append("qat")
    return f"{source}-{'-'.join(parts)}"


def _load_source(run_dir: Path):
    if not (run_dir / "config.yaml").is_file() and run_dir.is_dir():
        raise TLKerasError(f"{run_dir} has no config.yaml; pass a run directory written by tlkeras.train")
    model = load_model(run_dir)
    config = load_config(run_dir / "config.yaml")
    labels = read_labels(run_dir)
    return model, config, labels


def _load_source_data(run_dir: Path, model, config: RunConfig, labels: list[str], data: DataBundle | None, data_source: str | None) -> DataBundle:
    size = int(model.inputs[0].shape[1])
    if data is None:
        if data_source is not None:
            config.data.source = data_source
        if config.data.source is None:
            raise TLKerasError(f"{run_dir} was trained on the embedded demo; pass --data (or data=) with the images to fine-tune on")
        data = load_data(config.data, size, config.model.head, config.seed)
    if list(data.class_names) != labels:
        raise TLKerasError(f"the data's classes {data.class_names} differ from the run's {labels}; optimize on data with the same classes")
    if data.image_size != size:
        raise TLKerasError(f"the data is {data.image_size}px but the model takes {size}px; load it at {size}px")
    return data


def optimize_run(
    run_dir: str | os.PathLike,
    *,
    pruning: PruningOptions | None = None,
    clustering: ClusteringOptions | None = None,
    qat: QATOptions | None = None,
    finetune: FineTuneOptions | None = None,
    output_dir: str | os.PathLike | None = None,
    name: str | None = None,
    data: DataBundle | None = None,
    data_source: str | None = None,
    tflite: bool = True,
    representative_count: int = 100,
    callbacks: Sequence | None = None,
    write: bool = True,
) -> OptimizeResult:
    """Compresses the model of a trained run into a new run directory, with a report.

    Stages run in the order prune -> cluster -> QAT, each fine-tuning with the run's phase-2
    settings. With QAT after pruning and/or clustering the preserving schemes are used (PQAT,
    CQAT, PCQAT); clustering after pruning preserves sparsity.

    Args:
        run_dir: a run directory written by ``tlkeras.train`` (or by this function).
        pruning: pruning options (None: no pruning).
        clustering: clustering options (None: no clustering).
        qat: QAT options (None: no QAT).
        finetune: fine-tuning overrides (epochs, learning rate, head_only...).
        output_dir: parent of the new run directory (default: the source run's parent).
        name: the new run's name (default: ``<source>-<stages>``, e.g. ``base-prune50-qat``).
        data: a ready DataBundle with the run's classes (default: load the run's data source).
        data_source: another path to the run's data (when it moved).
        tflite: also convert to int8 TFLite, evaluate it with LiteRT and measure sizes (the
            report's int8 columns; ``model_int8.tflite`` is written).
        representative_count: training images used to calibrate post-training int8.
        callbacks: extra Keras callbacks for every fine-tuning stage.
        write: write the run directory (False: only return the result).

    Returns:
        An OptimizeResult with the new run directory, the model and the report.

    Raises:
        TLKerasError: bad options, a bad run directory, a TF-Hub backbone without head_only,
            layers tfmot does not support, an existing target directory. Nothing is left behind
            on error: the directory is assembled aside and renamed at the end.

    Side effects: writes ``<output_dir>/<name>/`` (config.yaml, model.keras, labels.txt,
    history.json, metrics.json, confusion_matrix.png, run.json, optimization.json,
    optimization.md, model_int8.tflite, logs/).
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    prune_opts = pruning.validate() if pruning is not None else None
    cluster_opts = clustering.validate() if clustering is not None else None
    qat_opts = qat.validate() if qat is not None else None
    fto = (finetune or FineTuneOptions()).validate()
    plan = _stage_plan(prune_opts, cluster_opts, qat_opts)
    model, config, labels = _load_source(run_dir)
    ft = fto.resolve(config)
    for stage in plan:  # fail before loading data or training anything
        _check_hub(model, ft["head_only"], {"prune": "prune", "cluster": "cluster", "qat": "quantize"}[stage])
    if prune_opts is not None:
        _prune_targets(model, prune_opts, ft["head_only"])
    if cluster_opts is not None:
        _cluster_targets(model, cluster_opts, ft["head_only"])
    target_name = name or _default_name(run_dir.name, plan, prune_opts, cluster_opts)
    final_dir = Path(output_dir) / target_name if output_dir is not None else run_dir.parent / target_name
    if write and final_dir.exists():
        raise TLKerasError(f"{final_dir} already exists; choose another --name or remove it")
    data = _load_source_data(run_dir, model, config, labels, data, data_source)
    ft = fto.resolve(config, len(data.train), data.num_outputs)  # recipe defaults as training filled them
    split_name, split = data.eval_split
    metric = metric_name(data.head)
    rng = np.random.default_rng(config.seed)
    count = min(representative_count, len(data.train))
    representative = data.train.x[np.sort(rng.choice(len(data.train), size=count, replace=False))]
    before = _measure_before(run_dir, model, data, representative, tflite)

    stage_ctx = staged_directory(final_dir) if write else contextlib.nullcontext(None)
    with stage_ctx as out_dir:
        log_dir = Path(out_dir) / "logs" if out_dir is not None else None
        stages, optimized, pre_qat = _run_stages(model, data, config, plan, prune_opts, cluster_opts, qat_opts, fto, callbacks, log_dir)
        after, flat, report_tflite = _measure_after(model, optimized, pre_qat, data, representative, before, plan, tflite, out_dir)
        report = _report(run_dir, final_dir if write else None, plan, stages, before, after, report_tflite, metric, split_name, optimized,
                         prune_opts, cluster_opts, ft, time.perf_counter() - t0)
        if out_dir is not None:
            _write_optimized_run(Path(out_dir), run_dir, final_dir, data, optimized, stages, after, report, flat, t0)
    return OptimizeResult(final_dir if write else None, optimized, report, stages, flat)


def _measure_before(run_dir: Path, model, data: DataBundle, representative: np.ndarray, tflite: bool) -> dict[str, Any]:
    """The source model's metrics, file sizes, int8 TFLite block and sparsity."""
    split_name, split = data.eval_split
    before: dict[str, Any] = {"metrics": compute_metrics(split.y, predict(model, split.x), data.class_names, data.head)}
    before["keras_bytes"] = (run_dir / "model.keras").stat().st_size
    before["keras_gzip_bytes"] = gzipped_size(run_dir / "model.keras")
    if tflite:
        _, before["int8"] = _int8_block(model, data, representative, split)
    before["sparsity"] = weight_sparsity(model)["overall"]
    return before


def _run_stages(model, data: DataBundle, config, plan, prune_opts, cluster_opts, qat_opts, fto, callbacks, log_dir):
    """prune -> cluster -> QAT as planned. Returns (stage results, the optimized model, the model QAT started from)."""
    stages: list[StageResult] = []
    current = model
    pre_qat = model
    for stage in plan:
        if stage == "prune":
            result = prune(current, data, config, prune_opts, fto, callbacks=callbacks, log_dir=log_dir)
        elif stage == "cluster":
            result = cluster(current, data, config, cluster_opts, fto, preserve_sparsity=prune_opts is not None,
                             callbacks=callbacks, log_dir=log_dir)
        else:
            preserve = "+".join(p for p, o in (("sparsity", prune_opts), ("clusters", cluster_opts)) if o is not None) or "none"
            pre_qat = current
            result = quantize_aware(current, data, config, qat_opts, fto, preserve=preserve, callbacks=callbacks, log_dir=log_dir)
        stages.append(result)
        current = result.model
    return stages, current, pre_qat


def _measure_after(model, optimized, pre_qat, data: DataBundle, representative: np.ndarray, before: dict[str, Any], plan, tflite: bool,
                   out_dir) -> tuple[dict[str, Any], bytes | None, dict[str, Any]]:
    """The optimized model's metrics, sizes and int8 block (saving model.keras when writing).

    Returns ``(after, int8 TFLite bytes or None, the TFLite file's weight sparsity)``.
    """
    split_name, split = data.eval_split
    after: dict[str, Any] = {"metrics": compute_metrics(split.y, predict(optimized, split.x), data.class_names, data.head)}
    if out_dir is not None:
        save_model(optimized, Path(out_dir) / "model.keras")
        keras_file = (Path(out_dir) / "model.keras").read_bytes()
    else:
        keras_file = _keras_bytes(optimized)
    after["keras_bytes"] = len(keras_file)
    after["keras_gzip_bytes"] = gzipped_size(keras_file)
    flat = None
    report_tflite: dict[str, Any] = {}
    if tflite:
        flat, after["int8"] = _int8_block(optimized, data, representative, split)
        after["int8"]["method"] = "qat" if "qat" in plan else "post-training"
        report_tflite = tflite_weight_sparsity(flat)
        if "qat" in plan:
            if pre_qat is model:
                after["int8_ptq_same_model"] = before["int8"]
            else:
                _, after["int8_ptq_same_model"] = _int8_block(pre_qat, data, representative, split)
    return after, flat, report_tflite


def _write_optimized_run(out: Path, run_dir: Path, final_dir: Path, data: DataBundle, optimized, stages, after: dict[str, Any],
                         report: dict[str, Any], flat: bytes | None, t0: float) -> None:
    """Writes the new run's config, labels, history, metrics, plots, run.json, int8 model and report into ``out``."""
    split_name, _ = data.eval_split
    new_config = load_config(run_dir / "config.yaml")
    new_config.output_dir = str(final_dir.parent)
    new_config.name = final_dir.name
    save_config(new_config, out / "config.yaml")
    atomic_write_text(out / "labels.txt", "\n".join(data.class_names) + "\n")
    history = _merge_histories(stages)
    write_json(out / "history.json", history)
    metrics = {
        "val": compute_metrics(data.val.y, predict(optimized, data.val.x), data.class_names, data.head),
        "final_split": split_name,
        "final": after["metrics"],
        "timings": {s.stage: s.seconds for s in stages} | {"total": time.perf_counter() - t0},
    }
    write_reports(out, metrics, data.class_names, data.head, history if history.get("loss") else None)
    write_json(out / "run.json", _run_info(run_dir, data, report))
    if flat is not None:
        with atomic_path(out / INT8_TFLITE) as tmp:
            Path(tmp).write_bytes(flat)
    write_json(out / REPORT_JSON, report)
    atomic_write_text(out / REPORT_MD, report_markdown(report))
