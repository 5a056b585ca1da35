#!/usr/bin/env python3
"""Detect objects with a tlkeras detection bundle, using only ai-edge-litert, NumPy and Pillow.

The app-side twin of ``classify.py`` for detector bundles (see export/README.md): it imports no
TensorFlow and no tlkeras, so it can be copied next to a bundle onto a Raspberry Pi or a server.

    pip install ai-edge-litert numpy pillow
    python detect.py export/<name> photo.jpg [more.jpg ...] [--variant int8] [--threshold 0.3] [--json]

A detector bundle's ``.tflite`` has two outputs and leaves decoding and non-maximum suppression to
the app (MediaPipe's ObjectDetector does both from the file's metadata). This script does them the
way MediaPipe does, from the bundle's ``detection.json``: it lays out the same anchors, decodes the
``location`` output (y, x, h, w encodings scaled by the box coder's scales), turns the ``score``
logits into sigmoid scores, makes a candidate of every (anchor, class) pair at or above the score
threshold, and keeps at most ``max_results`` after one class-agnostic greedy NMS. The image is
stretched to the square input (no letterbox), as in training and in MediaPipe. Boxes come back in
the original image's pixels: ``xmin, ymin, xmax, ymax``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["Detector", "make_anchors", "decode", "nms", "main"]


def make_anchors(layout: dict) -> np.ndarray:
    """``[N, 4]`` anchors ``(y_center, x_center, h, w)`` normalized to [0, 1], in the model's output order
    (level, row, column, scale, ratio), from ``detection.json``'s ``anchors`` block."""
    size = float(layout["image_size"])
    out = []
    for stride in layout["strides"]:
        grid = -(-int(layout["image_size"]) // int(stride))
        centers = (np.arange(grid, dtype="float64") + 0.5) * stride / size
        shapes = []
        for scale in layout["scales"]:
            side = layout["base"] * stride * scale / size
            for ratio in layout["ratios"]:  # width / height
                shapes.append((side / np.sqrt(ratio), side * np.sqrt(ratio)))
        yy, xx = np.meshgrid(centers, centers, indexing="ij")
        level = np.zeros((grid, grid, len(shapes), 4))
        level[..., 0], level[..., 1] = yy[..., None], xx[..., None]
        level[..., 2] = [h for h, _ in shapes]
        level[..., 3] = [w for _, w in shapes]
        out.append(level.reshape(-1, 4))
    return np.concatenate(out)


def decode(encodings: np.ndarray, anchors: np.ndarray, box_scales) -> np.ndarray:
    """Normalized ``ymin, xmin, ymax, xmax`` of YXHW encodings against their anchors."""
    sy, sx, sh, sw = box_scales
    e = encodings.astype("float64")
    y = e[:, 0] / sy * anchors[:, 2] + anchors[:, 0]
    x = e[:, 1] / sx * anchors[:, 3] + anchors[:, 1]
    h = np.exp(np.clip(e[:, 2] / sh, -10, 10)) * anchors[:, 2]
    w = np.exp(np.clip(e[:, 3] / sw, -10, 10)) * anchors[:, 3]
    return np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int) -> list[int]:
    """Greedy non-maximum suppression over every class at once; indices kept, best first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < limit:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        y0 = np.maximum(boxes[best, 0], boxes[rest, 0])
        x0 = np.maximum(boxes[best, 1], boxes[rest, 1])
        y1 = np.minimum(boxes[best, 2], boxes[rest, 2])
        x1 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        overlap = inter / np.maximum(area[best] + area[rest] - inter, 1e-12)
        order = rest[overlap <= iou]
    return keep


def load_image(path: str | Path) -> Image.Image:
    """Decodes an image as RGB (EXIF orientation applied, first frame, alpha on white)."""
    with Image.open(path) as img:
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
        return img.convert("RGB")


class Detector:
    """One variant of a detector bundle, ready to detect.

    Args:
        bundle: the bundle directory (holds metadata.json and detection.json).
        variant: a variant name from metadata.json; default: the bundle's ``recommended`` one.
        num_threads: CPU threads for LiteRT.
    """

    def __init__(self, bundle: str | Path, variant: str | None = None, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.bundle = Path(bundle)
        try:
            meta = json.loads((self.bundle / "metadata.json").read_text(encoding="utf-8"))
            settings = json.loads((self.bundle / "detection.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.bundle} is not a readable detector bundle (metadata.json and detection.json): {exc}") from None
        if (meta.get("task") or {}).get("name") != "detection":
            raise ValueError(f"{self.bundle} is not a detector bundle; use classify.py for classifiers")
        self.variant = variant or meta.get("recommended")
        entry = meta.get("variants", {}).get(self.variant)
        if not entry or not entry.get("file"):
            raise ValueError(f"variant {self.variant!r} is not in {self.bundle}; choose one of {', '.join(meta.get('variants', {}))}")
        self.class_names = list(settings["class_names"])
        self.layout, self.nms = settings["anchors"], settings["nms"]
        self.size = int(self.layout["image_size"])
        self.anchors = make_anchors(self.layout)
        self.interpreter = Interpreter(model_path=str(self.bundle / entry["file"]), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        outputs = self.interpreter.get_output_details()
        named = [i for i, d in enumerate(outputs) if "location" in d["name"]]
        location = named[0] if named else 0  # the export's serving signature lists location first
        self.location_index, self.score_index = outputs[location]["index"], outputs[1 - location]["index"]

    def raw(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(location [N, 4], logits [N, C])`` for one ``size x size x 3`` uint8 image."""
        x = pixels[None].astype(self.input["dtype"])
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.location_index)[0], self.interpreter.get_tensor(self.score_index)[0]

    def detect_pixels(self, pixels: np.ndarray, threshold: float | None = None) -> list[dict]:
        """Detections of a model-sized image: normalized boxes ``ymin, xmin, ymax, xmax``, best first."""
        location, logits = self.raw(pixels)
        scores = 1.0 / (1.0 + np.exp(-logits.astype("float64")))
        anchor_ids, classes = np.nonzero(scores >= (self.nms["score_threshold"] if threshold is None else threshold))
        values = scores[anchor_ids, classes]
        order = np.argsort(-values, kind="stable")[:5000]
        anchor_ids, classes, values = anchor_ids[order], classes[order], values[order]
        boxes = decode(location[anchor_ids], self.anchors[anchor_ids], self.layout["box_scales"])
        keep = nms(boxes, values, self.nms["iou"], self.nms["max_results"])
        return [{"label": self.class_names[int(classes[i])], "score": float(values[i]), "box": boxes[i].tolist()} for i in keep]

    def detect(self, path: str | Path, threshold: float | None = None) -> list[dict]:
        """Detections of an image file, boxes in its pixels ``[xmin, ymin, xmax, ymax]``."""
        image = load_image(path)
        width, height = image.size
        pixels = np.asarray(image.resize((self.size, self.size), Image.BILINEAR), dtype=np.uint8)
        found = self.detect_pixels(pixels, threshold)
        for d in found:
            ymin, xmin, ymax, xmax = d.pop("box")
            d["box"] = [float(np.clip(v, 0, limit)) for v, limit in ((xmin * width, width), (ymin * height, height),
                                                                     (xmax * width, width), (ymax * height, height))]
        return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detect.py", description="Detect objects with a tlkeras detector bundle (LiteRT only).")
    parser.add_argument("bundle", help="the bundle folder (metadata.json, detection.json, <variant>.tflite)")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--variant", help="float32, float16 or int8 (default: the bundle's recommended one)")
    parser.add_argument("--threshold", type=float, help="lowest score to report (default: the bundle's, 0.05)")
    parser.add_argument("--json", action="store_true", help="one JSON line per image")
    args = parser.parse_args(argv)
    try:
        detector = Detector(args.bundle, args.variant)
    except (ValueError, KeyError) as exc:
        print(f"detect.py: {exc}", file=sys.stderr)
        return 2
    for path in args.images:
        try:
            found = detector.detect(path, args.threshold)
        except OSError as exc:
            print(f"detect.py: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps({"image": str(path), "variant": detector.variant, "detections": found}))
        else:
            shown = "; ".join(f"{d['label']} {d['score']:.2f} at {[round(v) for v in d['box']]}" for d in found[:10]) or "nothing"
            print(f"{path}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
