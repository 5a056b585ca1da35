"""Exporting a segmentation run: float32, float16 and int8 (uint8 input) ``.tflite`` files that
MediaPipe's ImageSegmenter runs, each verified before the bundle exists.

Every variant has one input ``[1,H,W,3]`` (raw RGB 0..255; float32, or uint8 for int8) and one
output ``[1,H,W,C]`` of class probabilities with class 0 the background, TFLite builtins only,
and MediaPipe's ImageSegmenter metadata (labels, mean 0 / std 1: normalization is in the model).
Checks per variant, on the evaluation split (test, else val):

- LiteRT against Keras: pixel agreement of the argmax masks, mIoU and its drop in points;
- MediaPipe Tasks' Python ImageSegmenter: its category mask scored against the true masks, which
  must be within ``max_drop_mediapipe`` (1 point) of Keras' mIoU (``verified_on`` then lists
  ``mediapipe-tasks``);
- the int8 gate: its mIoU drop at most ``options.max_drop`` points.

The bundle folder is assembled under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlkeras._backend import tf
from tlkeras.core import litert
from tlkeras.core.bundle_format import describe, new_variant, record_file, validate_metadata
from tlkeras.core.results import ExportCheckError, ExportResult
from tlkeras.core.segmentation import mediapipe_io
from tlkeras.core.segmentation.fit import predict_masks
from tlkeras.core.segmentation.metrics import agreement, mask_metrics
from tlkeras.core.segmentation.run import load_segmentation_run, run_data
from tlkeras.errors import RunDirectoryError, TLKerasError
from tlkeras.runs import atomic_write_bytes, atomic_write_text, staged_directory, write_json

__all__ = ["export_segmentation_run", "convert", "SEG_VARIANTS", "MEDIAPIPE_MAX_DROP"]

SEG_VARIANTS = ("float32", "float16", "int8")
# How the export options' variant names map onto the three segmentation files.
_FROM_OPTIONS = {"float32": "float32", "float16": "float16", "int8": "int8", "uint8_io": "int8", "int8_float_io": "int8"}
_DESCRIPTIONS = {"float32": "float32 weights and activations; the reference conversion",
                 "float16": "float16 weights, float32 compute",
                 "int8": "full-integer int8 with uint8 input and output (raw uint8 pixels in)"}
MEDIAPIPE_MAX_DROP = 1.0  # points of mIoU MediaPipe's mask may lose against Keras
REPRESENTATIVE_MAX = 100


def _chosen_variants(options) -> tuple[str, ...]:
    names = getattr(options, "variants", None) or SEG_VARIANTS
    chosen = {_FROM_OPTIONS[n] for n in names if n in _FROM_OPTIONS}
    if not chosen:
        raise TLKerasError(f"segmentation bundles hold {', '.join(SEG_VARIANTS)}; pass --quantize float32,float16,int8 (or all)")
    return tuple(v for v in SEG_VARIANTS if v in chosen)


def convert(model, variant: str, representative: np.ndarray | None = None) -> bytes:
    """Converts the Keras model at batch 1 into one variant (TFLite builtins only).

    Raises:
        TLKerasError: the converter's first error line.
    """
    size = int(model.inputs[0].shape[1])

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])
    def serve(image):
        return {"segmentation_scores": model(image, training=False)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        images = np.asarray(representative if representative is not None else [], np.float32)
        if not len(images):
            raise TLKerasError("the int8 variant needs training images to calibrate on; none were found")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    try:
        return bytes(converter.convert())
    except Exception as exc:  # noqa: BLE001 - ConverterError and friends
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TLKerasError(f"converting the {variant} variant failed: {first[:300]}") from None


def _litert_masks(content: bytes, x: np.ndarray) -> np.ndarray:
    interpreter = litert.load_interpreter(content)
    out = []
    for i in range(len(x)):  # one image at a time keeps N x H x W x C floats out of memory
        out.append(np.argmax(litert.run_model(interpreter, x[i:i + 1]), axis=-1)[0].astype(np.int32))
    return np.stack(out)


def _check_target(target: Path, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise RunDirectoryError(f"{target} is a file, not a folder; pass a folder path for the bundle")
    if target.exists() and not overwrite:
        raise RunDirectoryError(f"{target} already exists; pass --overwrite or another --output-dir")


def export_segmentation_run(run_dir, target, options=None, data_source: str | None = None,
                            progress: Callable[[str], None] | None = None) -> ExportResult:
    """Exports and verifies a segmentation run into the bundle folder ``target``.

    Writes ``<variant>.tflite`` per variant, ``labels.txt``, ``metadata.json`` (variants with file,
    size, ``verified_on`` and metrics; the Keras reference) and ``README.md``.

    Raises:
        TLKerasError: a bad run folder or data, mediapipe missing, a conversion that fails.
        ExportCheckError: a variant missed its gate (the bundle is written; exit code 3),
            unless ``options.allow_drop``.
    """
    say = progress or (lambda _line: None)
    run_dir, target = Path(run_dir), Path(target)
    overwrite = bool(getattr(options, "overwrite", False))
    max_drop = float(getattr(options, "max_drop", 2.0))
    _check_target(target, overwrite)
    variants = _chosen_variants(options)
    if str(getattr(options, "metadata", "auto")) == "off":
        raise TLKerasError("a segmentation bundle always carries MediaPipe's ImageSegmenter metadata; drop --metadata off")
    if not mediapipe_io.available():
        raise TLKerasError(mediapipe_io._MISSING)
    model, config, labels = load_segmentation_run(run_dir)
    data = run_data(run_dir, config, labels, data_source)
    split_name, split = data.eval_split
    keras_masks = predict_masks(model, split.x, 8)
    keras_metrics = mask_metrics(split.y, keras_masks, labels, data.ignore_index)
    rng = np.random.default_rng(int(getattr(options, "seed", 42)))
    count = min(len(data.train), int(getattr(options, "representative_size", REPRESENTATIVE_MAX)), REPRESENTATIVE_MAX)
    representative = data.train.x[np.sort(rng.choice(len(data.train), count, replace=False))]
    entries: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for name in variants:
        say(f"converting {name} ...")
        content = mediapipe_io.add_segmenter_metadata(convert(model, name, representative if name == "int8" else None), labels)
        files[name] = content
        entries[name], why = _verify(name, content, split, keras_masks, keras_metrics, labels, data.ignore_index, max_drop, say)
        if why:
            failed[name] = why
    web = _web_check(files, split, keras_metrics, labels, data.ignore_index, entries, failed, say) if getattr(options, "verify_web", True) else \
        {"checked": False, "why": "verify_web is off"}
    meta = _metadata(run_dir, config, labels, data, split_name, len(split), keras_metrics, entries, model, failed, web, max_drop)
    validate_metadata(meta)
    with staged_directory(target, overwrite=overwrite) as tmp:
        for name, content in files.items():
            atomic_write_bytes(tmp / entries[name]["file"], content)
        atomic_write_text(tmp / "labels.txt", "\n".join(labels) + "\n")
        write_json(tmp / "metadata.json", meta)
        atomic_write_text(tmp / "README.md", _readme(meta))
    result = ExportResult(target, meta, failed)
    if failed and not getattr(options, "allow_drop", False):
        first = next(iter(failed.items()))
        raise ExportCheckError(f"{first[0]}: {first[1]}; the bundle was written to {target} (pass --allow-drop to accept it)", result)
    return result


def _verify(name: str, content: bytes, split, keras_masks: np.ndarray, keras_metrics: dict, labels: list[str],
            ignore_index: int | None, max_drop: float, say) -> tuple[dict[str, Any], str | None]:
    key = "miou"
    io = litert.io_details(litert.load_interpreter(content))
    entry = new_variant(name, _DESCRIPTIONS[name])
    record_file(entry, content)
    entry.update(input=io["inputs"][0], output=io["outputs"][-1], ops=litert.inspect_model(content).op_names,
                 tflite_metadata={"writer": "mediapipe image_segmenter", "normalization": {"mean": [0.0], "std": [1.0]},
                                  "activation": "NONE", "labels": "labels packed in the file"})
    if name == "int8":
        entry["representative"] = "training images (at most 100, seeded)"
    masks = _litert_masks(content, split.x)
    m = mask_metrics(split.y, masks, labels, ignore_index)
    entry["metrics"] = {key: m[key], "pixel_accuracy": m["pixel_accuracy"], "per_class_iou": m["per_class_iou"],
                        "agreement": agreement(masks, keras_masks), "drop_points": 100.0 * (keras_metrics[key] - m[key])}
    if "dice" in m:
        entry["metrics"]["dice"] = m["dice"]
    entry["verified_on"].append("litert")
    gate = max_drop if name == "int8" else 1.0
    why = None
    if entry["metrics"]["drop_points"] > gate:
        why = f"mIoU on LiteRT {m[key]:.4f} is {entry['metrics']['drop_points']:.2f} points under Keras' {keras_metrics[key]:.4f} (gate {gate})"
    say(f"  {name}: LiteRT mIoU {m[key]:.4f}, agreement with Keras {entry['metrics']['agreement']:.4f}")
    mp_masks, error = mediapipe_io.mediapipe_masks(content, split.x)
    if mp_masks is None:
        entry["mediapipe"] = {"loaded": False, "error": error}
        why = why or f"MediaPipe's ImageSegmenter refused the model: {error}"
    else:
        mm = mask_metrics(split.y, mp_masks, labels, ignore_index)
        drop = 100.0 * (keras_metrics[key] - mm[key])
        entry["mediapipe"] = {"loaded": True, key: mm[key], "per_class_iou": mm["per_class_iou"], "drop_points": drop,
                              "agreement_with_litert": agreement(mp_masks, masks), "version": mediapipe_io.mediapipe_version()}
        if drop <= MEDIAPIPE_MAX_DROP:
            entry["verified_on"].append("mediapipe-tasks")
        else:
            why = why or f"MediaPipe's mask mIoU {mm[key]:.4f} is {drop:.2f} points under Keras' (gate {MEDIAPIPE_MAX_DROP})"
        say(f"  {name}: MediaPipe mIoU {mm[key]:.4f}, agreement with LiteRT {entry['mediapipe']['agreement_with_litert']:.4f}")
    entry["within_threshold"] = why is None
    if why:
        entry["error"] = why
    return entry, why


def _web_check(files: dict[str, bytes], split, keras_metrics: dict, labels: list[str], ignore_index: int | None,
               entries: dict, failed: dict, say) -> dict[str, Any]:
    """Runs every variant in MediaPipe Tasks for Web (headless Chromium); adds ``mediapipe-web`` to
    ``verified_on`` where its mask mIoU is within 1 point of Keras'. Without a browser or the npm
    package the check is skipped and says why (the bundle does not depend on it)."""
    from tlkeras.core.browser import BrowserUnavailable
    from tlkeras.core.segmentation.web import web_masks

    try:
        masks, version = web_masks(files, split.x)
    except (TLKerasError, BrowserUnavailable, RuntimeError, OSError, TimeoutError) as exc:
        say(f"  browser check skipped: {exc}")
        return {"checked": False, "why": str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}
    result: dict[str, Any] = {"checked": True, "package": f"@mediapipe/tasks-vision {version}", "browser": "headless Chromium"}
    for name, mask in masks.items():
        m = mask_metrics(split.y, mask, labels, ignore_index)
        drop = 100.0 * (keras_metrics["miou"] - m["miou"])
        entries[name]["mediapipe"]["web"] = {"miou": m["miou"], "per_class_iou": m["per_class_iou"], "drop_points": drop}
        say(f"  {name}: MediaPipe Web mIoU {m['miou']:.4f}")
        if drop <= MEDIAPIPE_MAX_DROP:
            entries[name]["verified_on"].append("mediapipe-web")
        else:
            why = f"MediaPipe Web's mask mIoU {m['miou']:.4f} is {drop:.2f} points under Keras' (gate {MEDIAPIPE_MAX_DROP})"
            failed.setdefault(name, why)
            entries[name]["within_threshold"] = False
            entries[name].setdefault("error", why)
    return result


def _metadata(run_dir: Path, config, labels, data, split_name: str, count: int, keras_metrics: dict, entries: dict, model,
              failed: dict, web: dict, max_drop: float) -> dict[str, Any]:
    size = int(model.inputs[0].shape[1])
    return describe(
        name=run_dir.resolve().name, modality="image",
        task={"name": "segmentation", "head": None, "num_outputs": len(labels), "class_names": labels, "labels_file": "labels.txt"},
        input={"shape": [1, size, size, 3], "color": "RGB", "range": "0..255 raw pixels (float32; uint8 for int8)",
               "resize": "stretch to the input size (as MediaPipe does)", "normalization": {"mean": [0.0], "std": [1.0]},
               "note": "normalization is inside the model"},
        outputs=[{"name": "segmentation_scores", "task": "segmentation", "shape": [1, size, size, len(labels)], "class_names": labels,
                  "labels_file": "labels.txt", "meaning": "softmax probabilities per class (class 0 the background); "
                  "MediaPipe's category mask is their argmax"}],
        evaluation={"split": split_name, "count": count, "data": data.source, "primary_metric": "miou", "max_drop_points": max_drop,
                    "keras": {k: keras_metrics[k] for k in ("miou", "pixel_accuracy", "dice") if k in keras_metrics},
                    "keras_per_class_iou": keras_metrics["per_class_iou"], "ignore_index": data.ignore_index,
                    "metadata_writer": f"mediapipe {mediapipe_io.mediapipe_version()} (metadata_writers.image_segmenter)"},
        variants=entries, failed=failed, recommended="int8" if "int8" in entries and "int8" not in failed else next(iter(entries)),
        source_run={"path": str(run_dir), "name": run_dir.resolve().name, "backbone": config.model.backbone, "alpha": config.model.alpha,
                    "weights": config.model.weights, "data": data.source, "seed": config.seed},
        extras={"web": web})


def _readme(meta: dict[str, Any]) -> str:
    lines = [f"# {meta['name']}: a segmentation bundle", "",
             f"Classes: {', '.join(meta['task']['class_names'])} (class 0 is the background). Input {meta['input']['shape']} raw RGB pixels, "
             f"stretched; output {meta['outputs'][0]['shape']} probabilities. Load a file in MediaPipe's ImageSegmenter "
             f"(category mask = argmax).", "",
             "| file | KB | mIoU (LiteRT) | mIoU (MediaPipe) | verified on |", "|---|---|---|---|---|"]
    for v in meta["variants"].values():
        mp_miou = (v.get("mediapipe") or {}).get("miou")
        lines.append(f"| {v['file']} | {v['bytes'] / 1024:.0f} | {v['metrics']['miou']:.4f} | "
                     f"{'—' if mp_miou is None else f'{mp_miou:.4f}'} | {', '.join(v['verified_on'])} |")
    keras = meta["evaluation"]["keras"]["miou"]
    lines += ["", f"Keras mIoU on {meta['evaluation']['split']} ({meta['evaluation']['count']} images): {keras:.4f}", ""]
    return "\n".join(lines)


def latency(path: str | os.PathLike, threads: int = 1, iterations: int = 50) -> dict[str, float]:
    """p50/p90 of one variant on LiteRT (see :func:`tlkeras.core.litert.measure_latency`)."""
    return litert.measure_latency(path, num_threads=threads, iterations=iterations, warmup=5)
