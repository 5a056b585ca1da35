"""Export a detection run to a bundle MediaPipe's ObjectDetector loads as it is.

Variants: ``float32``, ``float16`` (float16 weights) and ``int8`` (full integer, uint8 input,
float32 outputs: MediaPipe takes float32 or uint8 outputs, never int8). Batch-1 input
``[1, S, S, 3]`` of raw 0..255 pixels; two outputs, ``location`` ``[1, N, 4]`` and ``score``
``[1, N, C]``, no NMS in the model (``tf.image.combined_non_max_suppression`` would need Flex ops);
TFLite builtins only. MediaPipe's metadata (anchors, decoding options, labels) goes into each file.

Each variant is verified on the test split (val when the data has none):
- ``litert``: LiteRT's outputs decoded with the NMS settings MediaPipe uses give an AP50 within
  1 point of the Keras model's (float variants; int8 within :data:`INT8_MAX_DROP` points, the
  quantization guardrail);
- ``mediapipe-tasks``: MediaPipe Python's ObjectDetector on the original images, scored with
  pycocotools, gives an AP50 within 1 point of the same model file decoded by LiteRT (the float
  variants therefore within about 1 point of Keras as well).

- ``mediapipe-web``: MediaPipe Tasks for Web's ObjectDetector in headless Chromium
  (:mod:`tlkeras.core.detection.web`) on the first :data:`WEB_IMAGES` images gives the same
  detections as MediaPipe Python (same categories, boxes within 2 px, scores within 0.02); skipped,
  with the reason in ``metadata.json``'s ``web`` entry, without Chromium or ``@mediapipe/tasks-vision``.

The bundle (``<variant>.tflite``, ``labels.txt``, ``detection.json``, ``metadata.json``,
``model_card.md``) is written
to a hidden temporary folder beside ``target`` and renamed into place when complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlkeras.errors import TLKerasError

__all__ = ["export_run", "DetectionExport", "VARIANTS", "INT8_MAX_DROP", "MEDIAPIPE_MAX_DIFF"]

VARIANTS = ("float32", "float16", "int8")
INT8_MAX_DROP = 0.03  # AP50 points (as a fraction) int8 may lose against Keras
MEDIAPIPE_MAX_DIFF = 0.01  # AP50 MediaPipe and LiteRT may differ by on the same file
FLOAT_MAX_DIFF = 0.01
WEB_IMAGES = 6  # test images the browser check runs (each variant, original sizes)


@dataclass
class DetectionExport:
    """What :func:`export_run` returns: the bundle folder and its ``metadata.json`` content."""

    bundle_dir: Path
    metadata: dict


def _serving(model, size: int):
    from tlkeras._backend import tf

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])
    def serve(image):
        location, score = model(image, training=False)
        return {"location": location, "score": score}

    return serve.get_concrete_function()


def convert(model, size: int, variant: str, representative: np.ndarray | None = None) -> bytes:
    """One variant's ``.tflite`` bytes (no metadata yet). Builtin ops only.

    Raises:
        TLKerasError: the converter fails (the message names the variant).
    """
    from tlkeras._backend import tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([_serving(model, size)], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if representative is None or not len(representative):
            raise TLKerasError("the int8 variant needs calibration images; the run's training data was empty")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None].astype("float32")] for image in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    try:
        return bytes(converter.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        text = " ".join(str(exc).split())[:300]
        raise TLKerasError(f"converting the {variant} variant failed: {text}") from None


class LiteRTDetector:
    """A ``.tflite`` detector in LiteRT returning (location [N, 4], logits [N, C]) per image."""

    def __init__(self, content: bytes, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=content, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()
        self.location_index = next(i for i, d in enumerate(self.outputs) if d["shape"][-1] == 4 and "location" in d["name"]) \
            if any("location" in d["name"] for d in self.outputs) else 0

    def location_first(self) -> bool:
        return self.location_index == 0

    def __call__(self, image: np.ndarray):
        self.interpreter.set_tensor(self.input["index"], image[None].astype(self.input["dtype"]))
        self.interpreter.invoke()
        values = [self.interpreter.get_tensor(d["index"])[0] for d in self.outputs]
        return values[self.location_index], values[1 - self.location_index]

    def latency_ms(self, image: np.ndarray, runs: int = 20) -> float:
        self(image)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            self(image)
            times.append((time.perf_counter() - t) * 1000)
        return float(np.median(times))


def _check_target(target: Path, overwrite: bool) -> None:
    if target.exists() and not overwrite:
        raise TLKerasError(f"{target} already exists; pass another output folder or --overwrite")
    if target.exists() and not target.is_dir():
        raise TLKerasError(f"{target} is a file; pass a folder for the bundle")


def export_run(task, run_dir, target, options=None, data_source=None, progress: Callable[[str], None] | None = None) -> DetectionExport:
    """Exports a detection run folder to a verified bundle at ``target``.

    Args:
        options: the export stage's ExportOptions (``variants``, ``overwrite``,
            ``representative_size``, ``verify_mediapipe``, ``seed`` are used) or None.
        data_source: the data to verify on (default: the run's own ``--data``).
        progress: called with one line per step.

    Raises:
        TLKerasError: not a detection run, data without images to verify on, a variant that
            fails to convert or fails its checks (nothing is left at ``target`` then).

    Side effects: writes the bundle folder atomically; reads the data.
    """
    from tlkeras.core.detection.anchors import AnchorConfig, make_anchors, postprocess
    from tlkeras.core.detection.metrics import coco_metrics
    from tlkeras.core.detection.pipeline import decode_samples, load_rgb
    from tlkeras.core.detection.run import load_run, read_data_for
    from tlkeras.core.detection.train import NMS, predict, to_pixels

    say = progress or (lambda line: None)
    target = Path(target)
    run_dir = Path(run_dir)
    overwrite = bool(getattr(options, "overwrite", False))
    _check_target(target, overwrite)
    wanted = [v for v in (getattr(options, "variants", None) or VARIANTS) if v in VARIANTS] or list(VARIANTS)
    model, config, detection, class_names = load_run(run_dir)
    if data_source is not None:
        config.data.source = str(data_source)
    data = read_data_for(config, task)
    split = "test" if data.test else "val"
    samples = data.split(split)
    anchor_config = AnchorConfig.from_dict(detection["anchors"])
    anchors, scales, size = make_anchors(anchor_config), anchor_config.box_scales, anchor_config.image_size
    decoded = decode_samples(samples, size)
    keras_dets = predict(model, decoded, anchors, scales)
    keras_metrics = coco_metrics(samples, keras_dets, class_names)
    say(f"keras on {split} ({len(samples)} images): AP50 {keras_metrics['AP50']:.3f} AP {keras_metrics['AP']:.3f}")
    rng = np.random.default_rng(getattr(options, "seed", 42))
    count = min(len(data.train), int(getattr(options, "representative_size", 200) or 200))
    representative = decode_samples([data.train[i] for i in sorted(rng.choice(len(data.train), count, replace=False))], size).images
    keras_out = [np.asarray(t) for t in model(decoded.images[:4].astype("float32"), training=False)]  # (location, score) of 4 images
    variants: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TLKerasError(f"cannot create {target.parent}: {exc.strerror}; pass a writable output folder") from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))  # same file system: the rename is atomic
    try:
        for name in wanted:
            say(f"{name}: converting")
            raw = convert(model, size, name, representative if name == "int8" else None)
            runner = LiteRTDetector(raw)
            from tlkeras.core.detection.mediapipe_io import write_detector_metadata

            content = write_detector_metadata(raw, anchors=anchors, box_scales=scales, class_names=class_names,
                                              location_first=runner.location_first())
            (tmp / f"{name}.tflite").write_bytes(content)
            entry = _verify_litert(name, content, decoded, anchors, scales, keras_metrics, keras_out, class_names, NMS, postprocess, to_pixels, coco_metrics)
            entry.update(file=f"{name}.tflite", bytes=len(content))
            if getattr(options, "verify_mediapipe", True):
                _verify_mediapipe(entry, tmp / f"{name}.tflite", decoded, class_names, NMS, load_rgb, coco_metrics, to_pixels)
            variants[name] = entry
            if not entry["within_threshold"]:
                failed[name] = entry["error"] or "outside its AP50 threshold"
            say(f"{name}: {entry['bytes'] / 1024:.0f} KB, LiteRT AP50 {entry['metrics']['AP50']:.3f}, "
                f"MediaPipe AP50 {format(entry['mediapipe']['AP50'], '.3f') if 'AP50' in (entry.get('mediapipe') or {}) else 'n/a'}, "
                f"verified on {entry['verified_on']}")
        web = _verify_web(variants, tmp, samples, class_names, NMS, load_rgb, failed, say) if getattr(options, "verify_web", True) \
            else {"checked": False, "why": "verify_web is off"}
        metadata = _describe(run_dir, config, class_names, detection, split, keras_metrics, variants, failed, anchors, web)
        shutil.copyfile(run_dir / "labels.txt", tmp / "labels.txt")
        shutil.copyfile(run_dir / "detection.json", tmp / "detection.json")
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2, default=_json) + "\n", encoding="utf-8")
        from tlkeras.core.detection.card import detection_card

        (tmp / "model_card.md").write_text(detection_card(json.loads(json.dumps(metadata, default=_json))), encoding="utf-8")
        if failed:
            raise TLKerasError(f"export checks failed: {'; '.join(f'{k}: {v}' for k, v in failed.items())}; nothing was written")
        if target.exists():
            shutil.rmtree(target)
        tmp.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DetectionExport(target, metadata)


def _json(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _verify_litert(name, content, decoded, anchors, scales, keras_metrics, keras_out, class_names, nms, postprocess, to_pixels, coco_metrics):
    runner = LiteRTDetector(content)
    dets, first = [], []
    for i, image in enumerate(decoded.images):
        loc, logits = runner(image)
        if i < len(keras_out[0]):
            first.append((loc, logits))
        dets.append(to_pixels(*postprocess(loc, logits, anchors, scales, **nms), decoded.samples[i]))
    metrics = coco_metrics(decoded.samples, dets, class_names)
    max_loc = float(max(np.abs(a[0] - b).max() for a, b in zip(first, keras_out[0])))  # image by image
    max_score = float(max(np.abs(a[1] - b).max() for a, b in zip(first, keras_out[1])))
    drop = keras_metrics["AP50"] - metrics["AP50"]
    limit = INT8_MAX_DROP if name == "int8" else FLOAT_MAX_DIFF
    ok = drop <= limit
    entry = {"description": {"float32": "float32 weights and activations", "float16": "float16 weights, float32 compute",
                             "int8": "int8 weights and activations, uint8 input, float32 outputs"}[name],
             "input": {"dtype": str(runner.input["dtype"].__name__), "shape": [int(v) for v in runner.input["shape"]]},
             "output": [{"name": d["name"], "dtype": d["dtype"].__name__, "shape": [int(v) for v in d["shape"]]} for d in runner.outputs],
             "metrics": {"AP50": metrics["AP50"], "AP": metrics["AP"], "AP75": metrics["AP75"], "drop_points": 100 * drop,
                         "max_abs_diff_location": max_loc, "max_abs_diff_score_logits": max_score, "agreement": None},
             "within_threshold": ok, "verified_on": ["litert"] if ok else [], "guardrail": {"metric": "AP50", "max_drop_points": 100 * limit},
             "latency": {"litert_p50_ms_1_thread": runner.latency_ms(decoded.images[0])}, "error": None if ok else
             f"LiteRT AP50 {metrics['AP50']:.3f} is {100 * drop:.1f} points below Keras' {keras_metrics['AP50']:.3f} (limit {100 * limit:.0f})"}
    return entry


def _verify_mediapipe(entry, path, decoded, class_names, nms, load_rgb, coco_metrics, to_pixels) -> None:
    """Two MediaPipe runs: on the pixels LiteRT saw (the model-size images: the check, within
    :data:`MEDIAPIPE_MAX_DIFF` of LiteRT's AP50), and on the original images, as an app feeds it (reported)."""
    from tlkeras.core.detection.data import Sample
    from tlkeras.core.detection.mediapipe_io import mediapipe_available, mediapipe_detect

    if not mediapipe_available():
        entry["mediapipe"] = {"checked": False, "why": "mediapipe is not installed"}
        return
    samples, size = decoded.samples, decoded.images.shape[1]
    same = [Sample(None, size, size, s.boxes, s.labels, s.difficult, image=decoded.images[i]) for i, s in enumerate(samples)]
    settings = {"score_threshold": nms["score_threshold"], "max_results": nms["max_results"], "load_rgb": load_rgb, "class_names": class_names}
    try:
        square = mediapipe_detect(path, same, **settings)
        original = mediapipe_detect(path, samples, **settings)
    except Exception as exc:  # noqa: BLE001 - MediaPipe raises RuntimeError/ValueError with its graph errors
        entry["mediapipe"] = {"checked": True, "loaded": False, "error": " ".join(str(exc).split())[:300]}
        entry["within_threshold"] = False
        entry["error"] = f"MediaPipe's ObjectDetector refused the file: {entry['mediapipe']['error']}"
        return
    # MediaPipe's boxes on the square input, back to the original image's pixels (normalized y, x first).
    square = [to_pixels(np.c_[b[:, 1], b[:, 0], b[:, 3], b[:, 2]] / size, sc, c, s) for (b, sc, c), s in zip(square, samples)]
    checked = coco_metrics(samples, square, class_names)
    m = coco_metrics(samples, original, class_names)
    diff = abs(checked["AP50"] - entry["metrics"]["AP50"])
    entry["mediapipe"] = {"checked": True, "loaded": True, "AP50": m["AP50"], "AP": m["AP"], "AP75": m["AP75"], "AR100": m["AR100"],
                          "per_class": m["per_class"], "on": "the original images (MediaPipe resizes them)",
                          "same_pixels": {"AP50": checked["AP50"], "AP": checked["AP"], "diff_vs_litert_points": 100 * diff},
                          "settings": {"score_threshold": nms["score_threshold"], "max_results": nms["max_results"], "nms_iou": nms["iou"]}}
    if diff <= MEDIAPIPE_MAX_DIFF:
        entry["verified_on"].append("mediapipe-tasks")
    else:
        entry["within_threshold"] = False
        entry["error"] = (f"MediaPipe AP50 {checked['AP50']:.3f} differs from LiteRT's {entry['metrics']['AP50']:.3f} "
                          f"on the same pixels by {100 * diff:.1f} points")


def _verify_web(variants: dict, folder: Path, samples, class_names, nms, load_rgb, failed: dict, say) -> dict:
    """The browser check: every variant in MediaPipe Tasks for Web's ObjectDetector (headless Chromium)
    on the first :data:`WEB_IMAGES` images of the split, against MediaPipe Python's detections on the
    same images; ``mediapipe-web`` joins ``verified_on`` when they are equal (same categories, boxes
    within a few pixels, scores within a small tolerance). Without Chromium, the npm package or
    MediaPipe Python the check is skipped and says why (the bundle does not depend on it)."""
    from tlkeras.core.browser import BrowserUnavailable
    from tlkeras.core.detection.mediapipe_io import mediapipe_available, mediapipe_detect
    from tlkeras.core.detection.web import BOX_TOLERANCE_PX, SCORE_TOLERANCE, compare_detections, web_detections

    if not mediapipe_available():
        return {"checked": False, "why": "mediapipe (Python) is not installed: nothing to compare the browser's detections with"}
    names = [n for n, e in variants.items() if (e.get("mediapipe") or {}).get("loaded")]
    if not names:
        return {"checked": False, "why": "no variant ran in MediaPipe Python (verify_mediapipe off, or it refused the files)"}
    chosen = list(samples[:WEB_IMAGES])
    images = [np.ascontiguousarray(load_rgb(s)) for s in chosen]
    settings = {"score_threshold": nms["score_threshold"], "max_results": nms["max_results"]}
    try:
        found, version = web_detections({n: (folder / f"{n}.tflite").read_bytes() for n in names}, images, class_names=class_names, **settings)
    except (TLKerasError, BrowserUnavailable, RuntimeError, OSError, TimeoutError) as exc:
        say(f"browser check skipped: {exc}")
        return {"checked": False, "why": str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}
    result = {"checked": True, "package": f"@mediapipe/tasks-vision {version}", "browser": "headless Chromium", "images": len(images),
              "tolerance": {"box_px": BOX_TOLERANCE_PX, "score": SCORE_TOLERANCE}}
    for name in names:
        python = mediapipe_detect(folder / f"{name}.tflite", chosen, load_rgb=load_rgb, class_names=class_names, **settings)
        same = compare_detections(found[name], python, nms["score_threshold"])
        variants[name]["mediapipe"]["web"] = same
        say(f"{name}: MediaPipe Web {'equals' if same['equal'] else 'differs from'} MediaPipe Python on {len(images)} images "
            f"({same['matched']}/{same['detections']} matched, boxes within {same['max_box_diff_px']:.2f} px, scores {same['max_score_diff']:.4f})")
        if same["equal"]:
            variants[name]["verified_on"].append("mediapipe-web")
        else:
            why = (f"MediaPipe Web's detections differ from MediaPipe Python's ({same['unmatched']} unmatched, "
                   f"scores up to {same['max_score_diff']:.3f} apart)")
            failed.setdefault(name, why)
            variants[name]["within_threshold"] = False
            variants[name]["error"] = variants[name]["error"] or why
    return result


def _describe(run_dir, config, class_names, detection, split, keras_metrics, variants, failed, anchors, web) -> dict:
    from tlkeras.core.versions import versions

    recommended = "int8" if "int8" in variants and not variants["int8"].get("error") else next(iter(variants), None)
    return {
        "format": "tlkeras-bundle", "format_version": 2, "name": config.name or Path(run_dir).name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "modality": "image", "versions": versions(),
        "source_run": {"path": str(run_dir), "backbone": config.model.backbone, "weights": config.model.weights, "seed": config.seed,
                       "data": config.data.source},
        "task": {"name": "detection", "head": None, "num_outputs": len(class_names), "class_names": list(class_names), "labels_file": "labels.txt"},
        "input": {"shape": [1, detection["anchors"]["image_size"], detection["anchors"]["image_size"], 3], "pixels": "raw RGB 0..255",
                  "resize": "stretch the whole frame to the square input (as MediaPipe does)"},
        "outputs": [{"name": "location", "shape": [1, len(anchors), 4], "meaning": "YXHW box encodings against the anchors in detection.json"},
                    {"name": "score", "shape": [1, len(anchors), len(class_names)], "meaning": "class logits (MediaPipe applies the sigmoid)"}],
        "evaluation": {"primary_metric": "AP50", "split": split, "count": keras_metrics["images"], "keras": keras_metrics,
                       "nms": detection["nms"]},
        "variants": variants, "recommended": recommended, "unknown_threshold": None, "calibration": None, "micro": None,
        "saved_model": None, "onnx": None, "trainable": None, "web": web, "passed": not failed, "failed": dict(failed),
    }
