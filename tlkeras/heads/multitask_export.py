"""Multi-task TFLite export: one model, one named signature output per task, verified with LiteRT.

:func:`export_multitask` writes a bundle whose ``metadata.json`` names each output tensor after its
task; :func:`run_signature` runs such a model by signature names.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tlkeras._backend import tf
from tlkeras.core.tasks import get_task
from tlkeras.errors import TLKerasError
from tlkeras.heads.multitask import evaluate_multitask, predict_multitask
from tlkeras.heads.multitask_data import MultiTaskData, TaskSpec, check_tasks, labelled_mask, task_of_spec

__all__ = ["save_multitask_serving", "run_signature", "export_multitask"]




def save_multitask_serving(model, directory: str | os.PathLike, tasks: Sequence[TaskSpec], batch: int | None = 1) -> Path:
    """Saves a SavedModel whose ``serving_default`` maps ``image`` to ``{task: output}``.

    Like :func:`tlkeras.export.convert.save_serving_model` (a ``tf.Module`` holding the variables
    and one traced function), but with one named signature output per task.

    Side effects: writes ``directory``.
    """
    shape = [batch] + [int(d) for d in model.inputs[0].shape[1:]]
    names = [t.name for t in tasks]
    module = tf.Module()
    module.variables_ = list(model.variables)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="image")])
    def serve(image):
        out = model(image, training=False)
        return {n: out[n] for n in names}

    module.serve = serve
    tf.saved_model.save(module, str(directory), signatures={"serving_default": serve})
    return Path(directory)


def _signature_map(interpreter) -> dict[str, dict[str, int]]:
    """``{"inputs": {name: tensor index}, "outputs": {name: tensor index}}`` of serving_default."""
    full = interpreter._get_full_signature_list()  # noqa: SLF001 - LiteRT exposes no public mapping
    sig = full.get("serving_default") or next(iter(full.values()))
    return {"inputs": dict(sig["inputs"]), "outputs": dict(sig["outputs"])}


def run_signature(model, images: np.ndarray, num_threads: int | None = None) -> dict[str, np.ndarray]:
    """Runs a multi-output ``.tflite`` model on images one at a time, by signature names.

    Args:
        model: an allocated LiteRT interpreter, model bytes or a ``.tflite`` path.
        images: N x S x S x 3 raw pixels (0..255); quantized when the input is an integer tensor.

    Returns:
        ``{output name: N x K float32}``, dequantized where the output is an integer tensor.
    """
    from tlkeras.core import litert

    interpreter = model if hasattr(model, "invoke") else litert.load_interpreter(model, num_threads)
    sig = _signature_map(interpreter)
    by_index = {d["index"]: d for d in interpreter.get_input_details() + interpreter.get_output_details()}
    (in_name, in_index), = sig["inputs"].items()
    i_desc = litert.describe_tensor(by_index[in_index])
    expected = tuple(i_desc["shape"][1:])
    images = np.asarray(images)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise TLKerasError(f"images have shape {tuple(images.shape)}, the model takes N x {' x '.join(map(str, expected))}")
    outs: dict[str, list] = {name: [] for name in sig["outputs"]}
    for image in images:
        interpreter.set_tensor(in_index, litert.quantize(image[None].astype(np.float32), i_desc["dtype"], i_desc["scale"], i_desc["zero_point"]))
        interpreter.invoke()
        for name, index in sig["outputs"].items():
            d = litert.describe_tensor(by_index[index])
            outs[name].append(litert.dequantize(interpreter.get_tensor(index), d["scale"], d["zero_point"])[0])
    return {k: np.stack(v) for k, v in outs.items()}


def export_multitask(
    model,
    data: MultiTaskData,
    output_dir: str | os.PathLike,
    *,
    variants: Sequence[str] = ("float32", "int8_float_io"),
    representative_size: int = 100,
    max_drop: float = 2.0,
    overwrite: bool = False,
    name: str | None = None,
    source_run: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Converts a multi-task model to TFLite variants, verifies each with LiteRT, writes a bundle.

    The steps of :mod:`tlkeras.export.pipeline` (the same ``metadata.json`` schema as image and
    text bundles). The bundle holds ``<variant>.tflite`` (one input ``image``, one signature output
    per task), ``labels_<task>.txt`` per task and ``metadata.json`` whose ``outputs`` list names
    every output (task, kind, labels, shape, its tensor index and position in the interpreter's
    outputs, and its signature name). Each variant runs on the evaluation split with LiteRT and is
    compared with Keras per task (metrics, the task's agreement rule, largest difference);
    ``passed`` is false when a task's primary metric drops by more than ``max_drop`` points.

    Args:
        variants: names from :data:`tlkeras.export.variants.VARIANTS` with float input/output
            (``float32``, ``dynamic_range``, ``float16``, ``int8_float_io``, ``int16x8``).
        representative_size: training images that calibrate int8/int16x8 activations.

    Returns:
        The metadata dict (also written to ``metadata.json``).

    Raises:
        TLKerasError: an unknown or integer-I/O variant, an existing ``output_dir`` (without
            ``overwrite``), a conversion failure.

    Side effects: writes ``output_dir`` atomically.
    """
    from tlkeras.export.bundle import IMAGE_PREFERENCE
    from tlkeras.export.pipeline import describe, recommend, write_bundle
    from tlkeras.runs import staged_directory

    say = progress or (lambda line: None)
    tasks, names = _check_multitask_export(model, data, variants, Path(output_dir), overwrite)
    output_dir = Path(output_dir)
    split_name, split = data.eval_split
    size = int(model.inputs[0].shape[1])
    rep = _representative(data, tasks, representative_size)
    keras_out = predict_multitask(model, split.x)
    keras_metrics = evaluate_multitask(model, split, tasks, outputs=keras_out)
    entries: dict[str, Any] = {}
    outputs_meta: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="tlkeras-mt-export-") as work, staged_directory(output_dir, overwrite=overwrite) as stage:
        saved = save_multitask_serving(model, Path(work) / "serving", tasks)
        for vname in names:
            entries[vname], interpreter = _export_variant(model, vname, saved, rep, split, tasks, keras_out, keras_metrics, max_drop,
                                                          failed, stage, say)
            outputs_meta = outputs_meta or _outputs_meta(interpreter, tasks)
        meta = describe(
            name=name or output_dir.name, modality="image", source_run=source_run,
            task={"name": "multitask", "head": "multitask", "num_outputs": len(tasks), "class_names": [t.name for t in tasks],
                  "labels_file": None, "tasks": [asdict(t) for t in tasks]},
            input={"name": "image", "shape": [1, size, size, 3], "layout": "NHWC", "color": "RGB", "dtype": "float32",
                   "value_range": [0, 255], "preprocessing": f"resize to {size}x{size}; raw 0..255 values, normalization is inside the model"},
            outputs=outputs_meta,
            evaluation={"split": split_name, "count": int(len(split)), "data": data.source, "primary_metric": "agreement",
                        "max_drop_points": max_drop, "representative": f"{len(rep)} training images, stratified by the first single-label task",
                        "keras": {t.name: {k: v for k, v in keras_metrics[t.name].items() if isinstance(v, (int, float))} for t in tasks}},
            variants=entries, failed=failed, recommended=recommend(entries, IMAGE_PREFERENCE),
        )
        write_bundle(stage, meta, {f"labels_{t.name}.txt": list(t.labels) for t in tasks}, card=False)
    return meta


def _check_multitask_export(model, data: MultiTaskData, variants: Sequence[str], output_dir: Path, overwrite: bool):
    """Refuses what a multi-task bundle cannot hold, before any work; returns (tasks, variant names)."""
    from tlkeras.export.variants import VARIANTS, parse_variants

    tasks = check_tasks(data.tasks)
    names = parse_variants(list(variants))
    bad = [v for v in names if VARIANTS[v].io != "float32"]
    if bad:
        raise TLKerasError(f"multi-task export supports float input/output variants; drop {', '.join(bad)} (use int8_float_io)")
    if output_dir.exists() and not overwrite:
        raise TLKerasError(f"{output_dir} already exists; pass overwrite=True or choose another directory")
    if not isinstance(model.output, dict) or sorted(model.output) != sorted(t.name for t in tasks):
        raise TLKerasError(f"the model's outputs do not match the tasks {[t.name for t in tasks]}")
    return tasks, names


def _representative(data: MultiTaskData, tasks: Sequence[TaskSpec], size: int) -> np.ndarray:
    """Calibration images: stratified by the first single-label task's classes (unlabelled rows count
    as one more group), else a seeded random draw."""
    from tlkeras.export.convert import representative_indices

    first = next((t for t in tasks if task_of_spec(t) is get_task("classification")), None)
    groups = data.train.labels[first.name] + 1 if first is not None else np.zeros(len(data.train), np.int64)
    return data.train.x[representative_indices(groups, size, 42, get_task("classification").head)]


def _export_variant(model, vname: str, saved: Path, rep: np.ndarray, split, tasks: Sequence[TaskSpec], keras_out, keras_metrics,
                    max_drop: float, failed: dict[str, str], stage: Path, say):
    """convert -> verify for one variant; writes its file. Returns its entry and its interpreter."""
    from tlkeras.core import litert
    from tlkeras.export.pipeline import convert_step, new_variant, record_file
    from tlkeras.export.variants import VARIANTS
    from tlkeras.runs import atomic_write_bytes

    variant = VARIANTS[vname]
    say(f"converting {vname}")
    content = convert_step(saved, variant, rep if variant.needs_data else None)
    interpreter = litert.load_interpreter(content, num_threads=os.cpu_count())
    out = run_signature(interpreter, split.x)
    missing = sorted({t.name for t in tasks} - set(out))
    if missing:
        raise TLKerasError(f"the {vname} model lacks outputs {missing}; the converter renamed them")
    lite_metrics = evaluate_multitask(model, split, tasks, outputs=out)
    per_task = {t.name: _compare_task(t, lite_metrics[t.name], out[t.name], keras_out[t.name], keras_metrics[t.name],
                                      split.labels[t.name], max_drop, failed, vname) for t in tasks}
    agreements = [m["agreement"] for m in per_task.values() if m.get("agreement") is not None]
    details = litert.io_details(interpreter)
    entry = new_variant(vname, variant.description)
    record_file(entry, content)
    entry.update(metrics={"agreement": min(agreements) if agreements else None, "tasks": per_task},
                 ops=litert.inspect_model(content).op_names, within_threshold=not any(k.startswith(vname + "/") for k in failed),
                 verified_on=["litert"], representative=f"{len(rep)} training images" if variant.needs_data else None,
                 input={k: details["inputs"][0][k] for k in ("name", "shape", "dtype", "scale", "zero_point")},
                 output={k: details["outputs"][0][k] for k in ("name", "shape", "dtype", "scale", "zero_point")})
    atomic_write_bytes(stage / entry["file"], content)
    say(f"  {vname}: {len(content) / 1024:.0f} KB, agreement {entry['metrics']['agreement']}")
    return entry, interpreter


def _compare_task(spec: TaskSpec, lite: dict[str, Any], a: np.ndarray, b: np.ndarray, keras: dict[str, Any], labels, max_drop: float,
                  failed: dict[str, str], vname: str) -> dict[str, Any]:
    """One task's metrics on a variant, its agreement with Keras (the task's rule) and its drop in points."""
    task = task_of_spec(spec)
    m = {k: v for k, v in lite.items() if k not in ("per_class", "per_class_f1", "confusion_matrix")}
    m["max_abs_diff"] = float(np.max(np.abs(a - b))) if len(a) else 0.0
    agreement = task.agreement(a, b)
    if agreement is not None:
        m["agreement"] = agreement
    key = task.primary_metric
    if labelled_mask(labels, spec.kind).any() and key in m:
        ref = keras[key]
        m["drop_points"] = 100.0 * (ref - m[key]) if task.higher_is_better else 100.0 * (m[key] - ref) / max(ref, 1e-12)
        if m["drop_points"] > max_drop + 1e-9:
            failed[f"{vname}/{spec.name}"] = f"dropped {m['drop_points']:.1f} points of {key}"
    return m


def _outputs_meta(interpreter, tasks: Sequence[TaskSpec]) -> list[dict[str, Any]]:
    """``outputs`` of the metadata: each task's output with its signature name, tensor index and position."""
    from tlkeras.core import litert
    from tlkeras.export.pipeline import output_entry

    sig = _signature_map(interpreter)
    order = [d["index"] for d in interpreter.get_output_details()]
    details = {d["index"]: litert.describe_tensor(d) for d in interpreter.get_output_details()}
    outputs = []
    for t in tasks:
        index = sig["outputs"][t.name]
        outputs.append(output_entry(task_of_spec(t), t.name, list(t.labels), f"labels_{t.name}.txt", kind=t.kind, labels=list(t.labels),
                                    shape=details[index]["shape"], signature_output=t.name, tensor_index=index,
                                    tensor_name=details[index]["name"], position=order.index(index)))
    return outputs
