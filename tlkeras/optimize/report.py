"""The optimization report: ``optimization.json`` content and its Markdown form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlkeras.config import TASK_OF_HEAD
from tlkeras.core.data import DataBundle
from tlkeras.core.tasks import get_task
from tlkeras.optimize.measure import unique_weights, weight_sparsity
from tlkeras.optimize.options import REPORT_JSON, StageResult

# The report's headline metric where it is not the task's primary one (multi-label reports F1).
_REPORT_METRIC = {"multilabel": "f1_macro"}


def metric_name(head: str) -> str:
    """The metric the optimization report leads with for the task of ``head``."""
    task = get_task(TASK_OF_HEAD.get(head, head))
    return _REPORT_METRIC.get(task.name, task.primary_metric)


def _pipeline_name(plan: list[str]) -> str:
    if plan == ["prune", "qat"]:
        return "PQAT (pruning, then prune-preserving QAT)"
    if plan == ["cluster", "qat"]:
        return "CQAT (clustering, then cluster-preserving QAT)"
    if plan == ["prune", "cluster", "qat"]:
        return "PCQAT (pruning, sparsity-preserving clustering, then sparsity- and cluster-preserving QAT)"
    if plan == ["prune", "cluster"]:
        return "pruning, then sparsity-preserving clustering"
    return {"prune": "pruning", "cluster": "weight clustering", "qat": "quantization-aware training"}["".join(plan)] if len(plan) == 1 else " + ".join(plan)


def _merge_histories(stages: list[StageResult]) -> dict[str, list]:
    merged: dict[str, list] = {"stage": []}
    for result in stages:
        epochs = len(next(iter(result.history.values()))) if result.history else 0
        for key, series in result.history.items():
            merged.setdefault(key, [None] * len(merged["stage"]))
            merged[key].extend(series)
        merged["stage"].extend([result.stage] * epochs)
        for series in merged.values():
            series.extend([None] * (len(merged["stage"]) - len(series)))
    return merged


def _run_info(source: Path, data: DataBundle, report: dict) -> dict[str, Any]:
    from tlkeras.core.versions import versions  # the same version table as training runs

    return {
        "versions": versions(),
        "data": {"source": data.source, "train": len(data.train), "val": len(data.val), "test": len(data.test) if data.test is not None else 0},
        "optimization": {"source_run": str(source), "stages": report["stages"], "qat": "qat" in [s["stage"] for s in report["stages"]],
                         "report": REPORT_JSON},
        "timings": {"total": report["seconds"]},
    }


def _report(source, run_dir, plan, stages, before, after, tfl, metric, split_name, model, prune_opts, cluster_opts, ft, seconds) -> dict[str, Any]:
    report: dict[str, Any] = {
        "source_run": str(source),
        "run_dir": str(run_dir) if run_dir is not None else None,
        "pipeline": _pipeline_name(plan),
        "stages": [{"stage": s.stage, "seconds": round(s.seconds, 2), "epochs": s.info["finetune"]["epochs"], "epochs_run": len(s.history.get("loss", [])),
                    **{k: v for k, v in s.info.items() if k != "finetune"}} for s in stages],
        "finetune": ft,
        "metric": metric,
        "split": split_name,
        "accuracy": {
            "before": {"float": before["metrics"].get(metric), "int8_ptq": before.get("int8", {}).get("metrics", {}).get(metric)},
            "after": {"float": after["metrics"].get(metric), "int8": after.get("int8", {}).get("metrics", {}).get(metric),
                      "int8_method": after.get("int8", {}).get("method")},
        },
        "size": {
            "before": {"keras_bytes": before["keras_bytes"], "keras_gzip_bytes": before["keras_gzip_bytes"],
                       "int8_tflite_bytes": before.get("int8", {}).get("bytes"), "int8_tflite_gzip_bytes": before.get("int8", {}).get("gzip_bytes")},
            "after": {"keras_bytes": after["keras_bytes"], "keras_gzip_bytes": after["keras_gzip_bytes"],
                      "int8_tflite_bytes": after.get("int8", {}).get("bytes"), "int8_tflite_gzip_bytes": after.get("int8", {}).get("gzip_bytes")},
        },
        "seconds": round(seconds, 1),
    }
    if "int8_ptq_same_model" in after:
        report["accuracy"]["after"]["int8_ptq_same_model"] = after["int8_ptq_same_model"]["metrics"].get(metric)
    b, a = report["size"]["before"], report["size"]["after"]
    report["size"]["keras_gzip_ratio"] = b["keras_gzip_bytes"] / a["keras_gzip_bytes"]
    if a["int8_tflite_gzip_bytes"]:
        report["size"]["int8_gzip_ratio"] = b["int8_tflite_gzip_bytes"] / a["int8_tflite_gzip_bytes"]
        report["full_integer"] = after["int8"]["full_integer"]
    pruned = next((s for s in stages if s.stage == "prune"), None)
    if pruned is not None:
        sp = weight_sparsity(model, pruned.info["pruned_layers"])
        allsp = weight_sparsity(model)
        report["sparsity"] = {
            "target": prune_opts.target_sparsity,
            "structure": prune_opts.structure,
            "pruned_layers_overall": sp["overall"],
            "all_kernels_overall": allsp["overall"],
            "all_parameters_overall": allsp["overall_all_weights"],
            "before_all_kernels": before["sparsity"],
            "layers": {n: {**row, "pruned": n in pruned.info["pruned_layers"]} for n, row in allsp["layers"].items()},
        }
        if tfl:
            report["sparsity"]["int8_tflite_overall"] = tfl["overall"]
            report["sparsity"]["int8_tflite_layers"] = tfl["layers"]
    clustered = next((s for s in stages if s.stage == "cluster"), None)
    if clustered is not None:
        names = clustered.info["clustered_layers"]
        whole = unique_weights(model, names)
        channel = unique_weights(model, names, per_channel=True)
        # CQAT keeps N values per output channel of Conv2D kernels (tfmot matches its per-channel
        # int8 quantization), so after QAT the per-channel count is the one bounded by N.
        per_channel = clustered.info["per_channel"] or "qat" in plan
        bounded = channel if per_channel else whole
        report["clustering"] = {
            "clusters": cluster_opts.clusters, "init": cluster_opts.init, "per_channel": clustered.info["per_channel"],
            "bound": "per output channel" if per_channel else "per kernel",
            "unique_weights": {n: {"kernel": whole[n], "max_per_channel": channel[n]} for n in names},
            "max_unique": max(bounded.values()) if bounded else None,
        }
    q = next((s for s in stages if s.stage == "qat"), None)
    if q is not None:
        report["qat"] = {k: v for k, v in q.info.items() if k != "finetune"}
    return report


def _fmt(value, kind: str = "acc") -> str:
    if value is None:
        return "—"
    if kind == "acc":
        return f"{value:.3f}"
    if kind == "bytes":
        return f"{value / 1024:.1f} KiB"
    return f"{value:.1%}"


def report_markdown(report: dict[str, Any]) -> str:
    """The human-readable form of an optimization report (``optimization.md``)."""
    acc, size = report["accuracy"], report["size"]
    m = report["metric"]
    lines = [
        f"# Optimization report: {report['pipeline']}",
        "",
        f"Source run: `{report['source_run']}`  ",
        "Fine-tuning: " + ", ".join(f"{s['stage']} {s['epochs_run']}/{s['epochs']} epochs" for s in report["stages"])
        + f" at learning rate {report['finetune']['learning_rate']:g} "
        f"({report['finetune']['schedule']}), batch {report['finetune']['batch_size']}, augment {report['finetune']['augment']}"
        + (", head only" if report["finetune"]["head_only"] else "") + f"; total {report['seconds']} s.",
        "",
        f"## {m} on the {report['split']} split",
        "",
        "| model | float | int8 TFLite |",
        "|---|---|---|",
        f"| before (source run, post-training int8) | {_fmt(acc['before']['float'])} | {_fmt(acc['before']['int8_ptq'])} |",
        f"| after ({acc['after'].get('int8_method') or 'no'} int8) | {_fmt(acc['after']['float'])} | {_fmt(acc['after']['int8'])} |",
    ]
    if "int8_ptq_same_model" in acc["after"]:
        lines.append(f"| post-training int8 of the model QAT started from | — | {_fmt(acc['after']['int8_ptq_same_model'])} |")
    lines += [
        "",
        "## Size (gzip -9)",
        "",
        "| model | Keras model.keras | gzipped | int8 TFLite | gzipped |",
        "|---|---|---|---|---|",
    ]
    for key in ("before", "after"):
        s = size[key]
        lines.append(f"| {key} | {_fmt(s['keras_bytes'], 'bytes')} | {_fmt(s['keras_gzip_bytes'], 'bytes')} | "
                     f"{_fmt(s['int8_tflite_bytes'], 'bytes')} | {_fmt(s['int8_tflite_gzip_bytes'], 'bytes')} |")
    ratio = f"gzipped Keras model {size['keras_gzip_ratio']:.2f}x smaller"
    if "int8_gzip_ratio" in size:
        ratio += f", gzipped int8 TFLite {size['int8_gzip_ratio']:.2f}x smaller than the source's post-training int8"
    lines += ["", ratio + "."]
    if "sparsity" in report:
        sp = report["sparsity"]
        lines += ["", "## Sparsity", "",
                  f"Target {sp['target']:.0%} ({sp['structure']}); pruned layers {_fmt(sp['pruned_layers_overall'], 'pct')}, "
                  f"all kernels {_fmt(sp['all_kernels_overall'], 'pct')}, all parameters {_fmt(sp['all_parameters_overall'], 'pct')}"
                  + (f"; in the int8 TFLite (conv/dense weights) {_fmt(sp['int8_tflite_overall'], 'pct')}" if "int8_tflite_overall" in sp else "")
                  + ".", "", "| layer | weights | sparsity | pruned |", "|---|---|---|---|"]
        for name, row in sp["layers"].items():
            lines.append(f"| {name} | {row['weights']} | {_fmt(row['sparsity'], 'pct')} | {'yes' if row['pruned'] else 'no'} |")
    if "clustering" in report:
        cl = report["clustering"]
        lines += ["", "## Clustering", "",
                  f"{cl['clusters']} clusters, {cl['init']} initialization" + (", per channel" if cl["per_channel"] else "")
                  + f"; at most {cl['max_unique']} unique weights {cl['bound']} in the clustered layers.", "",
                  "| layer | unique weights in the kernel | max unique per output channel |", "|---|---|---|"]
        for name, row in cl["unique_weights"].items():
            lines.append(f"| {name} | {row['kernel']} | {row['max_per_channel']} |")
    if "qat" in report:
        q = report["qat"]
        lines += ["", "## Quantization-aware training", "", f"Scheme: {q['scheme']}; {q['quantized_layers']} layers quantized."]
        floats = q["unsupported_layers"]
        lines.append("Layers left in float (unsupported by QAT): " + (", ".join(floats) if floats else "none") + ".")
        if q["backbone_float"]:
            lines.append("Head only: the backbone was not quantization-aware trained (it is calibrated post-training in the int8 model).")
    if report.get("full_integer") is False:
        lines += ["", "Note: some ops have no int8 kernel and stay float in the TFLite model."]
    return "\n".join(lines) + "\n"
