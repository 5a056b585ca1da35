"""Edge export: a trained model -> a verified TFLite bundle (``export/<name>/``).

A bundle holds one ``.tflite`` per variant, ``labels.txt``, ``metadata.json`` (input/output
contract, quantization parameters, class names, source run, measured accuracy of every variant),
a model card (``model_card.md``), optionally a SavedModel, and for the int8 variant a C array for
microcontrollers (``micro/``). ``export/README.md`` documents the format.

Every variant is converted (:mod:`tlkeras.export.convert`, from a bias-corrected copy for the
quantized ones, :mod:`tlkeras.export.bias`), run with the LiteRT interpreter on the evaluation
split (test, else val) and compared with the Keras model: accuracy, macro F1, top-1 agreement and
the drop in points. A drop over ``max_drop`` fails the export (:class:`ExportCheckError`, exit
code 3 in the CLI) unless allowed; for int8 variants that fail, TensorFlow's quantization debugger
writes a per-layer error report that names the layers responsible.

Variants: :mod:`tlkeras.export.variants`. C arrays: :mod:`tlkeras.export.micro`. Model card:
:mod:`tlkeras.export.card`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlkeras.core import litert
from tlkeras.core.data import DataBundle
from tlkeras.core.tasks import task_of_run
from tlkeras.core.versions import versions
from tlkeras.errors import TLKerasError
from tlkeras.export import onnx_export, tflite_metadata
from tlkeras.export.bias import bias_corrected
from tlkeras.export.convert import check_images, debugger_rows, quantization_debugger, representative_indices, save_serving_model
from tlkeras.export.guardrail import gate, guard_int8, latency_cost
from tlkeras.export.micro import micro_export
from tlkeras.export.options import ExportOptions
from tlkeras.export.pipeline import (
    Reference,
    convert_step,
    describe,
    has_classes,
    head_task,
    mediapipe_step,
    new_variant,
    output_entry,
    recommend,
    record_file,
    verify_step,
    write_bundle,
)
from tlkeras.export.result import ExportCheckError, ExportResult, finish_export, unknown_threshold
from tlkeras.export.text import export_text_model
from tlkeras.export.trainable import export_trainable
from tlkeras.export.variants import VARIANTS, Variant
from tlkeras.export.web import add_web_page, check_web_options, image_calls

__all__ = ["ExportOptions", "ExportResult", "ExportCheckError", "export_model", "export_run", "check_export_target",
           "load_run_for_export", "IMAGE_PREFERENCE"]

# ---------------------------------------------------------------------------------------------
# Bundle


def check_export_target(output_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """Raises TLKerasError when a bundle could not be written to ``output_dir`` (it exists, or
    its nearest existing parent is not a writable folder), before any work is done."""
    _check_writable(Path(output_dir), overwrite)


def _check_writable(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not overwrite:
        raise TLKerasError(f"{output_dir} already exists; pass --overwrite or choose another --output-dir")
    if output_dir.exists() and not output_dir.is_dir():
        raise TLKerasError(f"{output_dir} exists and is not a directory; choose another --output-dir")
    parent = output_dir.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise TLKerasError(f"cannot write the bundle under {output_dir.parent}: {parent} is not a writable directory; pass --output-dir")


def _io_meta(desc: dict[str, Any]) -> dict[str, Any]:
    return {k: desc[k] for k in ("name", "shape", "dtype", "scale", "zero_point")}


# Variants an app should pick first, in order, among those that passed (the bundle's "recommended").
IMAGE_PREFERENCE = ("int8_float_io", "float16", "dynamic_range", "float32", "int16x8")


@dataclass
class _ImageExport:
    """What the steps of one image export share: checked inputs, the Keras reference, the results."""

    model: Any
    options: ExportOptions
    output_dir: Path
    name: str
    size: int
    head: str
    class_names: list[str]
    threshold: float | None
    write_meta: bool
    source_run: dict[str, Any] | None
    representative: np.ndarray
    rep_what: str
    needs_data: bool
    eval_x: np.ndarray
    reference: Reference
    say: Callable[[str], None]
    saved: dict[str, Path] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    reports: dict[str, Path] = field(default_factory=dict)
    report_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    litert_outs: dict[str, np.ndarray] = field(default_factory=dict)


def export_model(
    model,
    data: DataBundle,
    output_dir: str | os.PathLike,
    options: ExportOptions | None = None,
    *,
    name: str | None = None,
    source_run: dict[str, Any] | None = None,
    representative: np.ndarray | None = None,
    calibration: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Converts ``model`` to every requested variant, verifies each with LiteRT, writes a bundle.

    The steps of :mod:`tlkeras.export.pipeline`: check the inputs and measure the Keras reference;
    save the serving models (bias-corrected copies for quantized variants); per variant convert
    (with TFLite metadata), verify on LiteRT (int8 guardrail, quantization report) and in
    MediaPipe; write the extras (ONNX, C array, SavedModel, trainable model, web page); describe
    the bundle in ``metadata.json`` (``bundle.schema.json``), ``labels.txt`` and ``model_card.md``.

    Args:
        model: a tlkeras model (one input of raw pixels, one output).
        data: its data; the representative set comes from ``data.train``, evaluation uses
            ``data.eval_split`` (test, else val).
        output_dir: the bundle directory (must not exist unless ``options.overwrite``).
        options: see :class:`ExportOptions`.
        name: the bundle's name in metadata (default: the directory's name).
        source_run: facts about the run the model came from, copied into metadata.json.
        representative: images to calibrate with instead of the stratified draw from
            ``data.train`` (N x S x S x 3, 0..255).
        calibration: the run's ``calibration.json`` (``unknown_threshold``, ``temperature``,
            ``target_recall``); its ``unknown_threshold`` becomes metadata.json's
            ``unknown_threshold`` and the TFLite metadata's default score threshold.
        progress: called with one line per step (the CLI prints them).

    Returns:
        An :class:`ExportResult`.

    Raises:
        TLKerasError: bad input (empty or wrongly shaped representative set, unconvertible op,
            unwritable directory); nothing is left behind.
        ExportCheckError: a variant dropped more than ``max_drop`` points or did not run on
            LiteRT, and ``allow_drop`` is off; the bundle was written and is in ``.result``.

    Side effects: writes ``output_dir`` atomically (assembled in a hidden temporary sibling and
    renamed when complete); every ``.tflite`` is itself written to a temporary name and renamed.
    """
    from tlkeras.runs import staged_directory

    options = (options or ExportOptions()).validate()
    job = _prepare(model, data, Path(output_dir), options, name=name, source_run=source_run, representative=representative,
                   calibration=calibration, say=progress or (lambda line: None))
    with tempfile.TemporaryDirectory(prefix="tlkeras-export-") as work, staged_directory(job.output_dir, overwrite=options.overwrite) as stage:
        job.saved = _serving_models(job, Path(work))
        for vname in options.variants:
            _export_variant(job, vname, stage)
        extras = _extras(job, stage, Path(work))
        meta = _describe_image(job, data, extras, calibration)
        write_bundle(stage, meta, {"labels.txt": job.class_names})
    return finish_export(ExportResult(job.output_dir, meta, job.failed, job.reports), options)


def _prepare(model, data: DataBundle, output_dir: Path, options: ExportOptions, *, name, source_run, representative, calibration,
             say) -> _ImageExport:
    """Checks everything that can be checked before converting; draws the representative set; runs Keras."""
    from tlkeras.core.metrics import predict

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise TLKerasError(f"the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; export needs one of each")
    size = int(model.inputs[0].shape[1])
    class_names = list(data.class_names)
    outputs = int(model.outputs[0].shape[-1])
    if outputs != len(class_names):
        raise TLKerasError(f"the labels name {len(class_names)} classes but the model outputs {outputs} values; "
                           f"export with the labels.txt the model was trained with")
    threshold = unknown_threshold(calibration)
    write_meta = options.metadata == "on" or (options.metadata == "auto" and tflite_metadata.available())
    if options.onnx and not onnx_export.available():
        raise TLKerasError(onnx_export._MISSING)
    if (options.metadata == "on" or options.web) and not tflite_metadata.available():
        raise TLKerasError(tflite_metadata._MISSING + (" (--web: MediaPipe Web reads the labels from it)" if options.web else ""))
    if options.web:
        check_web_options(options, data.head)  # fail before converting anything
    _check_writable(output_dir, options.overwrite)

    needs_data = any(VARIANTS[v].needs_data or _correction_mode(VARIANTS[v], options) != "none" for v in options.variants)
    if representative is None:
        idx = representative_indices(data.train.y, options.representative_size, options.seed, data.head)
        representative = data.train.x[idx]
        rep_what = f"{len(representative)} training images, stratified by class"
    else:
        rep_what = f"{len(representative)} images given by the caller"
    if needs_data:
        representative = check_images(representative, size, "representative dataset")
    split_name, split = data.eval_split
    if split is None or len(split) == 0:
        raise TLKerasError("the data has no test or validation images to verify the export on")
    eval_x = check_images(split.x, size, f"{split_name} split")

    say(f"Keras reference on {split_name} ({len(split)} images)")
    keras_out = predict(model, eval_x)
    task = head_task(data.head)
    reference = Reference(data.head, split_name, split.y, keras_out, class_names, task.metrics(split.y, keras_out, class_names), data.source)
    return _ImageExport(model, options, output_dir, name or output_dir.name, size, data.head, class_names, threshold, write_meta,
                        source_run, representative, rep_what, needs_data, eval_x, reference, say)


def _serving_models(job: _ImageExport, work: Path) -> dict[str, Path]:
    """The serving SavedModels the variants convert from: the model, and bias-corrected copies by mode."""
    saved = {"none": save_serving_model(job.model, work / "serving", job.head, batch=1)}
    modes = {_correction_mode(VARIANTS[v], job.options) for v in job.options.variants} - {"none"}
    if modes:
        job.say(f"bias correction ({', '.join(sorted(modes))}) on {len(job.representative)} representative images")
        copies = bias_corrected(job.model, job.representative, 32, [m == "weights+activations" for m in sorted(modes)])
        for mode in modes:
            clone, _ = copies[mode == "weights+activations"]
            saved[mode] = save_serving_model(clone, work / f"serving-{mode.replace('+', '-')}", job.head, batch=1)
    return saved


def _export_variant(job: _ImageExport, vname: str, stage: Path) -> None:
    """convert -> verify for one variant; writes its file and records its entry in ``job.variants``."""
    from tlkeras.runs import atomic_write_bytes

    variant, options = VARIANTS[vname], job.options
    mode = _correction_mode(variant, options)
    job.say(f"converting {vname}")
    entry = job.variants[vname] = new_variant(vname, variant.description)
    entry.update(tflite_metadata=_metadata_note(job.write_meta, job.threshold), bias_correction=None if mode == "none" else mode,
                 representative=job.rep_what if variant.needs_data else None)
    content = convert_step(job.saved[mode], variant, job.representative if variant.needs_data else None,
                           _metadata_writer(job, variant) if job.write_meta else None)
    try:
        interpreter = litert.load_interpreter(content, num_threads=os.cpu_count())
    except TLKerasError as exc:
        # A model LiteRT cannot prepare is useless to an app: record why, keep no file.
        entry.update(file=None, error=str(exc), within_threshold=False)
        job.failed[vname] = f"LiteRT cannot run it ({exc})"
        job.say(f"  {vname}: {exc}")
        return
    details = litert.io_details(interpreter)
    entry.update(input=_io_meta(details["inputs"][0]), output=_io_meta(details["outputs"][0]), ops=litert.inspect_model(content).op_names)
    out = litert.run_model(interpreter, job.eval_x)
    metrics = verify_step(entry, content, out, job.reference, options.max_drop, job.failed, vname)
    if vname == "int8_float_io" and options.int8_guardrail and has_classes(job.reference.task):
        content, out = _guardrail(job, vname, entry, content, out, mode)
        metrics = entry["metrics"]
    if job.write_meta and options.verify_mediapipe and has_classes(job.reference.task):
        check = tflite_metadata.verify_mediapipe(content, job.eval_x, out, job.class_names, job.head)
        mediapipe_step(entry, check, "mediapipe-tasks", tflite_metadata.MEDIAPIPE_MIN_AGREEMENT)
    atomic_write_bytes(stage / entry["file"], content)
    job.litert_outs[vname] = out
    agreement = metrics.get("agreement")
    job.say(f"  {vname}: {len(content) / 1024:.0f} KB, {job.reference.key} {metrics[job.reference.key]:.3f}, agreement "
            f"{'n/a' if agreement is None else f'{agreement:.3f}'}, drop {metrics['drop_points']:.2f} points")
    if variant.ops == "int8":
        _quantization_report(job, vname, entry, mode, stage)


def _guardrail(job: _ImageExport, vname: str, entry: dict[str, Any], content: bytes, out: np.ndarray, mode: str) -> tuple[bytes, np.ndarray]:
    """The int8 guardrail: when the variant misses the gate, keeps its worst layers in float until it passes.

    Returns the (possibly guarded) content and its LiteRT outputs; updates ``entry`` and ``job.failed``.
    """
    options, metrics = job.options, entry["metrics"]
    if gate(metrics, options.max_drop, options.min_agreement):
        entry["within_threshold"] = True
        return content, out
    job.say(f"  {vname}: misses the gate (drop {metrics['drop_points']:.2f} points, agreement {metrics.get('agreement')}); "
            f"int8 guardrail: keeping the worst layers in float")
    dbg = quantization_debugger(job.saved[mode], job.representative, job.eval_x[: options.debug_images])
    job.report_rows["int8"] = debugger_rows(dbg)
    float_bytes = job.variants.get("float32", {}).get("bytes") or 4 * int(job.model.count_params())

    def evaluate(candidate: bytes) -> dict[str, Any]:
        return job.reference.compare(litert.run_model(candidate, job.eval_x, num_threads=os.cpu_count()))

    budget = int(options.guardrail_budget * float_bytes)
    guard = guard_int8(dbg, job.report_rows["int8"], evaluate, max_drop=options.max_drop, min_agreement=options.min_agreement,
                       max_bytes=budget)
    entry["guardrail"] = {"passed": guard.passed, "attempts": guard.attempts, "reason": guard.reason or None,
                          "budget_bytes": budget, "before": metrics, "bytes_before": len(content)}
    if guard.passed:
        plain = content
        content = guard.content
        if job.write_meta:
            content = _metadata_writer(job, VARIANTS[vname])(content)
        out = litert.run_model(content, job.eval_x, num_threads=os.cpu_count())
        entry["metrics"] = metrics = job.reference.compare(out)
        entry["ops"] = litert.inspect_model(content).op_names
        record_file(entry, content)
        entry["guardrail"].update(float_layers=guard.float_layers, float_nodes=guard.float_nodes, bytes_after=len(content),
                                  size_cost_bytes=len(content) - len(plain), latency=latency_cost(plain, content))
        job.say(f"  {vname}: int8 guardrail kept {len(guard.float_layers)} layer(s) in float: {', '.join(guard.float_layers)}")
    entry["within_threshold"] = gate(metrics, options.max_drop, options.min_agreement)
    job.failed.pop(vname, None)
    if not entry["within_threshold"]:
        job.failed[vname] = (f"dropped {metrics['drop_points']:.1f} points of {job.reference.key} (agreement {metrics.get('agreement')}) "
                             f"and the int8 guardrail could not rescue it: {guard.reason}")
    return content, out


def _quantization_report(job: _ImageExport, vname: str, entry: dict[str, Any], mode: str, stage: Path) -> None:
    """The per-layer int8 error report: made once (every int8 variant shares weights and ranges), named in each entry."""
    options = job.options
    if (options.debug_quantization or not entry["within_threshold"]) and "int8" not in job.report_rows:
        job.say("  per-layer quantization error report (TensorFlow quantization debugger)")
        job.report_rows["int8"] = debugger_rows(quantization_debugger(job.saved[mode], job.representative, job.eval_x[: options.debug_images]))
    if "int8" not in job.report_rows:
        return
    path = stage / "quantization_report.csv"
    if not path.exists():
        _write_report(path, job.report_rows["int8"])
    job.reports[vname] = job.output_dir / path.name
    entry["quantization_report"] = path.name
    entry["worst_layers"] = [{"layer": r["layer"], "op": r["op"], "rmse_over_scale": r["rmse_over_scale"]}
                             for r in job.report_rows["int8"][: options.top_layers]]


def _extras(job: _ImageExport, stage: Path, work: Path) -> dict[str, Any]:
    """The optional parts beside the variants: ONNX, the C array, the SavedModel, the trainable model, the web page."""
    from tlkeras.runs import atomic_write_bytes

    options, say, extras = job.options, job.say, {}
    if options.onnx:
        say("ONNX (tf2onnx), verified with onnxruntime")
        content, extras["onnx"] = onnx_export.export_onnx(job.model, job.eval_x, job.reference.compare)
        atomic_write_bytes(stage / "model.onnx", content)
        if not extras["onnx"]["passed"]:
            job.failed["onnx"] = f"top-1 agreement with Keras {extras['onnx']['metrics']['agreement']:.4f} under {onnx_export.MIN_AGREEMENT}"
    if options.micro and "int8" in job.variants and job.variants["int8"]["error"] is None:
        say("micro: C array of the int8 variant")
        extras["micro"] = micro_export((stage / job.variants["int8"]["file"]).read_bytes(), stage / "micro", options.c_name, job.class_names)
        extras["micro"]["variant"] = "int8"
    if options.saved_model:
        say("SavedModel (dynamic batch)")
        save_serving_model(job.model, stage / "saved_model", job.head, batch=None)
        extras["saved_model"] = "saved_model"
    if options.trainable:
        say("trainable: infer / embed / train / get_weights / set_weights, builtin ops, verified on LiteRT")
        trainable = extras["trainable"] = export_trainable(
            job.model, stage, work, slots=options.trainable_classes, eval_x=job.eval_x, keras_out=job.reference.outputs,
            float32_bytes=(job.variants.get("float32") or {}).get("bytes"), say=say)
        if not trainable["verified_on"]:
            job.failed["trainable"] = (f"infer agrees with Keras on {trainable['infer_agreement_with_keras']} of the images, "
                                       f"train step off NumPy's by {trainable['train_step_max_error_vs_numpy']:.1e}")
    extras["recommended"] = recommend(job.variants, IMAGE_PREFERENCE)
    if options.web:
        extras["web"] = add_web_page(stage, name=job.name, class_names=job.class_names, variants_meta=job.variants,
                                     recommended=extras["recommended"], threshold=job.threshold, calls=image_calls(job.eval_x),
                                     litert_outs=job.litert_outs, verify=options.verify_web, say=say)
    return extras


def _describe_image(job: _ImageExport, data: DataBundle, extras: dict[str, Any], calibration: dict[str, Any] | None) -> dict[str, Any]:
    """metadata.json of an image bundle (:func:`tlkeras.export.pipeline.describe`)."""
    size, task, ref = job.size, job.reference.task, job.reference
    input_desc = next((v["input"] for v in job.variants.values() if v.get("input")), None) or {}
    recommended = extras.pop("recommended")
    return describe(
        name=job.name, modality="image", source_run=job.source_run, unknown_threshold=job.threshold, calibration=calibration,
        task={"name": task.name, "head": job.head, "num_outputs": len(job.class_names), "class_names": job.class_names,
              "labels_file": "labels.txt", "tasks": None},
        input={
            "name": "image", "shape": [1, size, size, 3], "layout": "NHWC", "color": "RGB", "dtype": "float32", "value_range": [0, 255],
            "tflite_name": input_desc.get("name"),
            "preprocessing": f"none outside the model: resize to {size}x{size} (bilinear, no crop), RGB, raw 0..255 values; normalization is inside the model",
            "quantized_inputs": "int8/uint8 variants: q = round(pixel / scale) + zero_point with the variant's input scale and zero_point",
        },
        outputs=[output_entry(task, task.output_name(), job.class_names,
                              quantized_outputs="int8/uint8 variants: value = (q - zero_point) * scale")],
        evaluation={"split": ref.split, "count": int(len(ref.y)), "data": data.source, "primary_metric": ref.key,
                    "max_drop_points": job.options.max_drop, "keras": {k: v for k, v in ref.keras_summary().items() if k != "count"},
                    "representative": job.rep_what if job.needs_data else None},
        variants=job.variants, failed=job.failed, recommended=recommended, extras=extras,
    )


def _correction_mode(variant: Variant, options: ExportOptions) -> str:
    """Which model a variant converts from: ``none``, ``weights`` or ``weights+activations``."""
    if not options.bias_correction or not variant.optimize or variant.float16:
        return "none"
    return "weights+activations" if variant.ops == "int8" else "weights"


def _write_report(path: Path, rows: list[dict[str, Any]]) -> None:
    from tlkeras.runs import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["layer", "op", "rmse_over_scale", "mean_error", "max_abs_error", "scale", "tensor"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# From a run directory


def load_run_for_export(run_dir: str | os.PathLike, data_source: str | None = None):
    """Loads a run's model, config, labels and data for export.

    The data is ``data_source`` (or the run's own ``config.data.source``) at the model's input
    size; runs of the embedded demo (``source: null``) regenerate the demo's images.

    Returns:
        ``(model, config, bundle)``.

    Raises:
        TLKerasError: no model.keras, data whose classes differ from the run's labels.
    """
    from tlkeras.config import load_config
    from tlkeras.core.data import load_data
    from tlkeras.core.loading import load_run_model
    from tlkeras.runs import read_labels

    run_dir = Path(run_dir)
    model = load_run_model(run_dir)
    config = load_config(run_dir / "config.yaml")
    labels = read_labels(run_dir)
    text = model.inputs[0].dtype == "string"
    size = None if text else int(model.inputs[0].shape[1])
    if data_source is not None:
        config.data.source = data_source
    if config.data.source is None and not text:
        bundle = _demo_bundle(config, size, run_dir)
    else:
        bundle = load_data(config.data, size, config.model.head, config.seed)
    if list(bundle.class_names) != labels:
        raise TLKerasError(f"the data's classes {bundle.class_names} differ from the run's {labels}; pass --data with the run's classes")
    return model, config, bundle


def _demo_bundle(config, size: int, run_dir: Path) -> DataBundle:
    try:
        from tlkeras.core.demo_data import make_demo_task
    except ImportError:
        raise TLKerasError(f"{run_dir} was trained on the embedded demo and this tlkeras has no demo data; pass --data <folder>") from None
    from tlkeras.core.data import from_arrays

    task = make_demo_task(config.seed)
    (xt, yt), (xv, yv), (xs, ys) = task["train"], task["val"], task["test"]
    return from_arrays(xt, yt, class_names=task["class_names"], val=(xv, yv), test=(xs, ys),
                       image_size=size, config=config.data, seed=config.seed, source="tlkeras demo (generated shapes)")


def export_run(
    run_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    options: ExportOptions | None = None,
    *,
    data_source: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Exports a run directory to a bundle (default ``export/<run name>/``).

    See :func:`export_model` for what is written, raised and checked.
    """
    run_dir = Path(run_dir)
    options = (options or ExportOptions()).validate()
    target = Path(output_dir) if output_dir is not None else Path("export") / run_dir.resolve().name
    task = task_of_run(run_dir) if (run_dir / "config.yaml").is_file() else None
    if task is not None and task.owns_pipeline:
        # Detection and segmentation convert with their own serving signature and MediaPipe metadata.
        return task.export_run(run_dir, target, options=options, data_source=data_source, progress=progress)
    # Fail on the cheap checks before loading TensorFlow models and data.
    if not (run_dir / "model.keras").is_file():
        if not run_dir.is_dir():
            raise TLKerasError(f"run directory {run_dir} does not exist; pass a folder written by python -m tlkeras.train (runs/<name>)")
        raise TLKerasError(f"{run_dir} has no model.keras; pass a directory written by tlkeras.train")
    _check_writable(target, options.overwrite)
    model, config, bundle = load_run_for_export(run_dir, data_source)
    source = {
        "path": str(run_dir),
        "name": config.name or run_dir.name,
        "backbone": config.model.backbone,
        "alpha": config.model.alpha,
        "weights": config.model.weights,
        "head": config.model.head,
        "data": bundle.source,
        "seed": config.seed,
    }
    calibration = None
    if (run_dir / "calibration.json").is_file():
        try:
            calibration = json.loads((run_dir / "calibration.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TLKerasError(f"{run_dir / 'calibration.json'} is not readable JSON ({exc}); recalibrate the run or remove the file") from None
    if bundle.modality == "text":
        return export_text_model(model, bundle, target, options, name=run_dir.resolve().name, source_run=source, calibration=calibration,
                                 progress=progress)
    return export_model(model, bundle, target, options, name=run_dir.resolve().name, source_run=source, calibration=calibration,
                        progress=progress)


def _metadata_writer(job: _ImageExport, variant: Variant) -> Callable[[bytes], bytes]:
    """The image modality's TFLite metadata writer for one variant (MediaPipe's ImageClassifier reads it)."""
    source = job.source_run or {}

    def write(content: bytes) -> bytes:
        return tflite_metadata.add_metadata(
            content, name=f"{job.name} ({variant.name})", class_names=job.class_names, head=job.head, score_threshold=job.threshold,
            description=(f"{job.reference.task.name} image model over {len(job.class_names)} classes exported by tlkeras; {variant.description}. "
                         f"Input: RGB pixels 0..255, preprocessing inside the model."),
            version=f"tlkeras {versions().get('tlkeras', '?')}, {_dt.date.today().isoformat()}",
            author=f"tlkeras run {source.get('name') or job.name}" + (f" ({source['path']})" if source.get("path") else ""),
        )

    return write


def _metadata_note(written: bool, threshold: float | None) -> dict[str, Any] | None:
    if not written:
        return None
    return {"writer": f"mediapipe {tflite_metadata.mediapipe_version()}", "labels": "labels.txt (packed in the .tflite)",
            "normalization": {"mean": [0.0], "std": [1.0]}, "score_threshold": threshold}
