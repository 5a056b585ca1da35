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
import gzip
import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlkeras.core import litert
from tlkeras.core.data import DataBundle
from tlkeras.core.tasks import task_of_run
from tlkeras.core.versions import versions
from tlkeras.errors import TLKerasError
from tlkeras.export import onnx_export, tflite_metadata
from tlkeras.export.bias import _bias_corrected
from tlkeras.export.card import _model_card
from tlkeras.export.convert import (
    _check_images,
    _output_name,
    convert_variant,
    debugger_rows,
    quantization_debugger,
    representative_indices,
    save_serving_model,
)
from tlkeras.export.guardrail import gate, guard_int8, latency_cost
from tlkeras.export.micro import micro_export
from tlkeras.export.result import ExportCheckError, ExportResult, compare_outputs, primary_metric, unknown_threshold
from tlkeras.export.text import export_text_model
from tlkeras.export.trainable import export_trainable
from tlkeras.export.variants import DEFAULT_VARIANTS, VARIANTS, Variant, parse_variants
from tlkeras.export.web import add_web_page, check_web_options, image_calls

BUNDLE_FORMAT_VERSION = 1


@dataclass
class ExportOptions:
    """How to export and verify a bundle.

    Attributes:
        variants: variant names (see :data:`VARIANTS`).
        representative_size: images drawn from the training split, stratified by class, to
            calibrate int8/int16x8 activations.
        max_drop: the largest allowed drop of the primary metric from the Keras model, in points
            (accuracy for softmax heads, subset accuracy for sigmoid, relative MAE increase in
            percent for regression).
        allow_drop: write the bundle and return even when a variant drops more than
            ``max_drop`` (the CLI's ``--allow-drop``).
        debug_quantization: write the per-layer quantization error report for every int8
            variant, not only for those over ``max_drop``.
        debug_images: evaluation images the quantization debugger runs.
        top_layers: layers named in the report summary and in the error message.
        saved_model: also write a SavedModel (dynamic batch) into ``saved_model/``.
        micro: write the C array (``micro/``) when the ``int8`` variant is exported.
        c_name: C identifier prefix of the micro files and symbols.
        overwrite: replace an existing bundle directory.
        seed: seeds the representative-set draw.
        bias_correction: convert the quantized variants from a bias-corrected copy of the
            model (:func:`bias_correct`), which cancels the mean error of int8 rounding.
        metadata: TFLite metadata (MediaPipe's writers) in every variant: ``on`` requires the
            ``mediapipe`` package (bad input without it), ``auto`` writes it when installed,
            ``off`` never.
        verify_mediapipe: load every variant with metadata in MediaPipe Tasks' ImageClassifier
            and compare its top-1 with LiteRT's (softmax and sigmoid heads).
        int8_guardrail: when ``int8_float_io`` misses the gate (drop over ``max_drop`` or top-1
            agreement under ``min_agreement``), keep its worst layers in float until it passes
            (:mod:`tlkeras.export.guardrail`).
        min_agreement: the guardrail's top-1 agreement gate.
        guardrail_budget: the guarded file may be at most this share of the float32 model's bytes.
        onnx: also write ``model.onnx`` (tf2onnx), verified with onnxruntime.
        trainable: also write ``trainable.tflite``, a model that keeps learning on the device
            (infer / embed / train / get_weights / set_weights signatures, builtin ops only;
            softmax image heads; :mod:`tlkeras.export.trainable`).
        trainable_classes: the trainable head's class slots (None: the run's classes and 5 free
            slots for an app's own classes).
        web: also write ``web/``, a page that classifies a dropped, picked or camera image with
            MediaPipe Tasks for Web (needs the npm package ``@mediapipe/tasks-vision`` and the
            metadata; :mod:`tlkeras.export.web`).
        verify_web: with ``web``, classify the evaluation images through the page in headless
            Chromium and compare with LiteRT (skipped, and said, without a browser).
    """

    variants: tuple[str, ...] = DEFAULT_VARIANTS
    representative_size: int = 200
    max_drop: float = 2.0
    allow_drop: bool = False
    debug_quantization: bool = False
    debug_images: int = 32
    top_layers: int = 5
    saved_model: bool = False
    micro: bool = True
    c_name: str = "tlkeras_model"
    overwrite: bool = False
    seed: int = 42
    bias_correction: bool = True
    metadata: str = "auto"
    verify_mediapipe: bool = True
    int8_guardrail: bool = True
    min_agreement: float = 0.97
    guardrail_budget: float = 0.5
    onnx: bool = False
    trainable: bool = False
    trainable_classes: int | None = None
    web: bool = False
    verify_web: bool = True

    def validate(self) -> "ExportOptions":
        self.variants = parse_variants(self.variants)
        if self.representative_size < 1 and any(VARIANTS[v].needs_data for v in self.variants):
            raise TLKerasError(f"representative_size must be >= 1 for {', '.join(v for v in self.variants if VARIANTS[v].needs_data)}, got {self.representative_size}")
        if self.max_drop < 0:
            raise TLKerasError(f"max_drop must be >= 0 points, got {self.max_drop}")
        if self.metadata not in ("auto", "on", "off"):
            raise TLKerasError(f"metadata must be auto, on or off, got {self.metadata!r}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise TLKerasError(f"min_agreement must be in [0, 1], got {self.min_agreement}")
        if not 0.0 < self.guardrail_budget <= 1.0:
            raise TLKerasError(f"guardrail_budget must be in (0, 1] (a share of the float32 size), got {self.guardrail_budget}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.c_name or ""):
            raise TLKerasError(f"c_name {self.c_name!r} is not a C identifier; use letters, digits and _")
        if self.trainable_classes is not None and not 2 <= self.trainable_classes <= 4096:
            raise TLKerasError(f"trainable_classes must be in [2, 4096], got {self.trainable_classes}")
        if self.debug_images < 1 or self.top_layers < 1:
            raise TLKerasError("debug_images and top_layers must be >= 1")
        return self


# ---------------------------------------------------------------------------------------------
# Evaluation


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
    from tlkeras.core.metrics import compute_metrics, predict
    from tlkeras.runs import atomic_write_bytes, atomic_write_text, staged_directory, write_json

    options = (options or ExportOptions()).validate()
    say = progress or (lambda line: None)
    output_dir = Path(output_dir)
    name = name or output_dir.name
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise TLKerasError(f"the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; export needs one of each")
    text = model.inputs[0].dtype == "string"
    size = None if text else int(model.inputs[0].shape[1])
    head = data.head
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
        check_web_options(options, head)  # fail before converting anything
    _check_writable(output_dir, options.overwrite)

    needs_data = any(VARIANTS[v].needs_data or _correction_mode(VARIANTS[v], options) != "none" for v in options.variants)
    if representative is None:
        idx = representative_indices(data.train.y, options.representative_size, options.seed, head)
        representative = data.train.x[idx]
        rep_what = f"{len(representative)} training images, stratified by class"
    else:
        rep_what = f"{len(representative)} images given by the caller"
    if needs_data:
        representative = _check_images(representative, size, "representative dataset")
    split_name, split = data.eval_split
    if split is None or len(split) == 0:
        raise TLKerasError("the data has no test or validation images to verify the export on")
    eval_x = _check_images(split.x, size, f"{split_name} split")

    say(f"Keras reference on {split_name} ({len(split)} images)")
    keras_out = predict(model, eval_x)
    keras_metrics = compute_metrics(split.y, keras_out, class_names, head)
    key = primary_metric(head)

    failed: dict[str, str] = {}
    reports: dict[str, Path] = {}
    variants_meta: dict[str, Any] = {}
    report_rows: dict[str, list[dict[str, Any]]] = {}
    litert_outs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="tlkeras-export-") as work, staged_directory(output_dir, overwrite=options.overwrite) as stage:
        work = Path(work)
        saved = {"none": save_serving_model(model, work / "serving", head, batch=1)}
        modes = {_correction_mode(VARIANTS[v], options) for v in options.variants} - {"none"}
        if modes:
            say(f"bias correction ({', '.join(sorted(modes))}) on {len(representative)} representative images")
            copies = _bias_corrected(model, representative, 32, [m == "weights+activations" for m in sorted(modes)])
            for mode in modes:
                clone, _ = copies[mode == "weights+activations"]
                saved[mode] = save_serving_model(clone, work / f"serving-{mode.replace('+', '-')}", head, batch=1)
        for vname in options.variants:
            variant = VARIANTS[vname]
            mode = _correction_mode(variant, options)
            say(f"converting {vname}")
            content = convert_variant(saved[mode], variant, representative if variant.needs_data else None)
            entry: dict[str, Any] = {"file": f"{vname}.tflite", "description": variant.description}
            if write_meta:
                content = _with_metadata(content, name, variant, class_names, head, threshold, source_run)
            entry["tflite_metadata"] = _metadata_note(write_meta, threshold)
            if variant.needs_data:
                entry["representative"] = rep_what
            entry["bias_correction"] = None if mode == "none" else mode
            try:
                interpreter = litert.load_interpreter(content, num_threads=os.cpu_count())
            except TLKerasError as exc:
                # A model LiteRT cannot prepare is useless to an app: record why, keep no file.
                entry.update(file=None, error=str(exc), within_threshold=False)
                failed[vname] = f"LiteRT cannot run it ({exc})"
                variants_meta[vname] = entry
                say(f"  {vname}: {exc}")
                continue
            details = litert.io_details(interpreter)
            entry["input"] = _io_meta(details["inputs"][0])
            entry["output"] = _io_meta(details["outputs"][0])
            out = litert_outs[vname] = litert.run_model(interpreter, eval_x)
            metrics = compare_outputs(split.y, keras_out, out, class_names, head, keras_metrics)
            entry["metrics"] = metrics
            entry["ops"] = litert.inspect_model(content).op_names
            entry["within_threshold"] = metrics["drop_points"] <= options.max_drop + 1e-9
            guarded = vname == "int8_float_io" and options.int8_guardrail and head != "regression"
            if guarded and not gate(metrics, options.max_drop, options.min_agreement):
                say(f"  {vname}: misses the gate (drop {metrics['drop_points']:.2f} points, agreement {metrics.get('agreement')}); "
                    f"int8 guardrail: keeping the worst layers in float")
                dbg = quantization_debugger(saved[mode], representative, eval_x[: options.debug_images])
                report_rows["int8"] = debugger_rows(dbg)
                float_bytes = variants_meta.get("float32", {}).get("bytes") or 4 * int(model.count_params())

                def evaluate(candidate: bytes) -> dict[str, Any]:
                    return compare_outputs(split.y, keras_out, litert.run_model(candidate, eval_x, num_threads=os.cpu_count()),
                                    class_names, head, keras_metrics)

                guard = guard_int8(dbg, report_rows["int8"], evaluate, max_drop=options.max_drop, min_agreement=options.min_agreement,
                                   max_bytes=int(options.guardrail_budget * float_bytes))
                entry["guardrail"] = {"passed": guard.passed, "attempts": guard.attempts, "reason": guard.reason or None,
                                      "budget_bytes": int(options.guardrail_budget * float_bytes), "before": metrics,
                                      "bytes_before": len(content)}
                if guard.passed:
                    plain = content
                    content = guard.content
                    if write_meta:
                        content = _with_metadata(content, name, variant, class_names, head, threshold, source_run)
                    out = litert.run_model(content, eval_x, num_threads=os.cpu_count())
                    metrics = compare_outputs(split.y, keras_out, out, class_names, head, keras_metrics)
                    entry["metrics"] = metrics
                    entry["ops"] = litert.inspect_model(content).op_names
                    entry["guardrail"].update(float_layers=guard.float_layers, float_nodes=guard.float_nodes,
                                              bytes_after=len(content), size_cost_bytes=len(content) - len(plain),
                                              latency=latency_cost(plain, content))
                    say(f"  {vname}: int8 guardrail kept {len(guard.float_layers)} layer(s) in float: {', '.join(guard.float_layers)}")
                entry["within_threshold"] = gate(metrics, options.max_drop, options.min_agreement)
                if not entry["within_threshold"]:
                    failed[vname] = (f"dropped {metrics['drop_points']:.1f} points of {key} (agreement {metrics.get('agreement')}) "
                                     f"and the int8 guardrail could not rescue it: {guard.reason}")
            elif guarded:
                entry["within_threshold"] = True
            if not entry["within_threshold"] and vname not in failed:
                failed[vname] = f"dropped {metrics['drop_points']:.1f} points of {key}"
            entry.update(bytes=len(content), gzip_bytes=len(gzip.compress(content, 9)), sha256=hashlib.sha256(content).hexdigest())
            entry["verified_on"] = ["litert"]
            if write_meta and options.verify_mediapipe and head != "regression":
                entry["mediapipe"] = tflite_metadata.verify_mediapipe(content, eval_x, out, class_names)
                mp = entry["mediapipe"]
                if mp["loaded"] and mp["names_match"] and mp["agreement"] >= tflite_metadata.MEDIAPIPE_MIN_AGREEMENT:
                    entry["verified_on"].append("mediapipe-tasks")
            atomic_write_bytes(stage / entry["file"], content)
            variants_meta[vname] = entry
            agreement = metrics.get("agreement")
            say(f"  {vname}: {len(content) / 1024:.0f} KB, {key} {metrics[key]:.3f}, agreement "
                f"{'n/a' if agreement is None else f'{agreement:.3f}'}, drop {metrics['drop_points']:.2f} points")
            if variant.ops == "int8" and (options.debug_quantization or not entry["within_threshold"]) and "int8" not in report_rows:
                # One report serves every int8 variant: they share weights and activation ranges.
                say("  per-layer quantization error report (TensorFlow quantization debugger)")
                report_rows["int8"] = debugger_rows(quantization_debugger(saved[mode], representative, eval_x[: options.debug_images]))
            if variant.ops == "int8" and "int8" in report_rows:
                path = stage / "quantization_report.csv"
                if not path.exists():
                    _write_report(path, report_rows["int8"])
                reports[vname] = output_dir / path.name
                entry["quantization_report"] = path.name
                entry["worst_layers"] = [
                    {"layer": r["layer"], "op": r["op"], "rmse_over_scale": r["rmse_over_scale"]}
                    for r in report_rows["int8"][: options.top_layers]
                ]
        onnx_meta = None
        if options.onnx:
            say("ONNX (tf2onnx), verified with onnxruntime")
            content, onnx_meta = onnx_export.export_onnx(
                model, eval_x, lambda out: compare_outputs(split.y, keras_out, out, class_names, head, keras_metrics))
            atomic_write_bytes(stage / "model.onnx", content)
            if not onnx_meta["passed"]:
                failed["onnx"] = f"top-1 agreement with Keras {onnx_meta['metrics']['agreement']:.4f} under {onnx_export.MIN_AGREEMENT}"
        micro = None
        if options.micro and "int8" in variants_meta and "error" not in variants_meta["int8"]:
            say("micro: C array of the int8 variant")
            content = (stage / "int8.tflite").read_bytes()
            micro = micro_export(content, stage / "micro", options.c_name, class_names)
            micro["variant"] = "int8"
        if options.saved_model:
            say("SavedModel (dynamic batch)")
            save_serving_model(model, stage / "saved_model", head, batch=None)
        trainable = None
        if options.trainable:
            say("trainable: infer / embed / train / get_weights / set_weights, builtin ops, verified on LiteRT")
            trainable = export_trainable(model, stage, work, slots=options.trainable_classes, eval_x=eval_x, keras_out=keras_out,
                                         float32_bytes=(variants_meta.get("float32") or {}).get("bytes"), say=say)
            if not trainable["verified_on"]:
                failed["trainable"] = (f"infer agrees with Keras on {trainable['infer_agreement_with_keras']} of the images, "
                                       f"train step off NumPy's by {trainable['train_step_max_error_vs_numpy']:.1e}")
        recommended = next(
            (v for v in ("int8_float_io", "float16", "dynamic_range", "float32", "int16x8")
             if v in variants_meta and variants_meta[v].get("within_threshold")), None)
        web = None
        if options.web:
            web = add_web_page(stage, name=name, class_names=class_names, variants_meta=variants_meta, recommended=recommended,
                               threshold=threshold, calls=image_calls(eval_x), litert_outs=litert_outs, verify=options.verify_web, say=say)
        input_desc = (next(iter(variants_meta.values())).get("input") or {}) if variants_meta else {}
        meta = {
            "format": "tlkeras-bundle",
            "format_version": BUNDLE_FORMAT_VERSION,
            "name": name,
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "versions": versions(),
            "source_run": source_run or {},
            "task": {"head": head, "num_outputs": len(class_names), "class_names": class_names, "labels_file": "labels.txt"},
            "input": {
                "name": "image",
                "shape": [1, size, size, 3],
                "layout": "NHWC",
                "color": "RGB",
                "dtype": "float32",
                "value_range": [0, 255],
                "tflite_name": input_desc.get("name"),
                "preprocessing": f"none outside the model: resize to {size}x{size} (bilinear, no crop), RGB, raw 0..255 values; normalization is inside the model",
                "quantized_inputs": "int8/uint8 variants: q = round(pixel / scale) + zero_point with the variant's input scale and zero_point",
            },
            "output": {
                "name": _output_name(head),
                "shape": [1, len(class_names)],
                "meaning": {
                    "softmax": "softmax probabilities over task.class_names (sum to 1); argmax is the label",
                    "sigmoid": "independent sigmoid probabilities per class in task.class_names; >= 0.5 means present",
                    "regression": "regression values, one per target in task.class_names",
                }[head],
                "quantized_outputs": "int8/uint8 variants: value = (q - zero_point) * scale",
            },
            "evaluation": {
                "split": split_name,
                "count": int(len(split)),
                "data": data.source,
                "primary_metric": key,
                "max_drop_points": options.max_drop,
                "keras": {k: keras_metrics[k] for k in ("accuracy", "subset_accuracy", "f1_macro", "f1_micro", "mae", "rmse") if k in keras_metrics},
                "representative": rep_what if needs_data else None,
            },
            "variants": variants_meta,
            "recommended": recommended,
            "micro": micro,
            "saved_model": "saved_model" if options.saved_model else None,
            "onnx": onnx_meta,
            "trainable": trainable,
            "web": web,
            "unknown_threshold": threshold,
            "calibration": calibration,
            "passed": not failed,
            "failed": failed,
        }
        atomic_write_text(stage / "labels.txt", "\n".join(class_names) + "\n")
        write_json(stage / "metadata.json", meta)
        atomic_write_text(stage / "model_card.md", _model_card(meta))
    result = ExportResult(output_dir, meta, failed, reports)
    if failed and not options.allow_drop:
        raise ExportCheckError(_failure_message(result, options), result)
    return result


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


def _failure_message(result: ExportResult, options: ExportOptions) -> str:
    parts = "; ".join(f"{v} {why}" for v, why in result.failed.items())
    message = f"{parts} (limit {options.max_drop:g})"
    worst = next((result.metadata["variants"][v].get("worst_layers") for v in result.failed
                  if result.metadata["variants"][v].get("worst_layers")), None)
    if worst:
        layers = ", ".join(f"{w['layer']} ({w['rmse_over_scale']:.1f})" for w in worst[:3])
        report = next(p.name for v, p in result.reports.items() if v in result.failed)
        message += (f"; largest int8 errors (RMSE in quantization steps): {layers}, see {result.bundle_dir / report}; "
                    f"try a larger --representative-size, quantization-aware training, or a float variant")
    return message + f"; bundle written to {result.bundle_dir}; pass --allow-drop to accept"


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


def _with_metadata(content: bytes, name: str, variant: Variant, class_names: list[str], head: str, threshold: float | None,
                   source_run: dict[str, Any] | None) -> bytes:
    source = source_run or {}
    return tflite_metadata.add_metadata(
        content, name=f"{name} ({variant.name})", class_names=class_names, head=head, score_threshold=threshold,
        description=(f"{head} image classifier over {len(class_names)} classes exported by tlkeras; {variant.description}. "
                     f"Input: RGB pixels 0..255, preprocessing inside the model."),
        version=f"tlkeras {versions().get('tlkeras', '?')}, {_dt.date.today().isoformat()}",
        author=f"tlkeras run {source.get('name') or name}" + (f" ({source['path']})" if source.get("path") else ""),
    )


def _metadata_note(written: bool, threshold: float | None) -> dict[str, Any] | None:
    if not written:
        return None
    return {"writer": f"mediapipe {tflite_metadata.mediapipe_version()}", "labels": "labels.txt (packed in the .tflite)",
            "normalization": {"mean": [0.0], "std": [1.0]}, "score_threshold": threshold}
