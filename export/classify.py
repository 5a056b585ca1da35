#!/usr/bin/env python3
"""Classify images with a tlkeras bundle, using only ai-edge-litert, NumPy and Pillow.

This file is a reference consumer of the bundle format (see export/README.md): it imports no
TensorFlow and no tlkeras, so it can be copied next to a bundle onto a Raspberry Pi or a server.

    pip install ai-edge-litert numpy pillow
    python classify.py export/<name> photo.jpg [more.jpg ...] [--variant int8] [--top 3] [--json]

It reads metadata.json for the input size, the class names and each variant's input/output
quantization, prepares the image exactly as tlkeras does in training (EXIF orientation, RGB,
alpha composited on white, bilinear resize to the square input size, raw 0..255 values), feeds
it as float32 or quantized to int8/uint8, and dequantizes the output. When the bundle carries an
``unknown_threshold`` (from the run's calibration), a softmax image whose top score is below it is
answered ``unknown``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["Classifier", "load_image", "main"]


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Decodes an image into ``size x size x 3`` uint8 RGB, the way tlkeras' data loader does."""
    with Image.open(path) as img:
        img.seek(0)  # first frame of an animation
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


class Classifier:
    """One variant of a bundle, ready to classify images.

    Args:
        bundle: the bundle directory (holds metadata.json).
        variant: a variant name from metadata.json; default: the bundle's ``recommended`` one.
        num_threads: CPU threads for LiteRT.
    """

    def __init__(self, bundle: str | Path, variant: str | None = None, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.bundle = Path(bundle)
        meta_path = self.bundle / "metadata.json"
        if not meta_path.is_file():
            raise ValueError(f"{self.bundle} has no metadata.json; pass a tlkeras bundle directory")
        self.metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        variants = {k: v for k, v in self.metadata["variants"].items() if v.get("file")}
        self.variant = variant or self.metadata.get("recommended") or next(iter(variants))
        if self.variant not in variants:
            raise ValueError(f"variant {self.variant!r} is not in this bundle; choose one of {', '.join(variants)}")
        self.info = variants[self.variant]
        self.class_names = self.metadata["task"]["class_names"]
        self.head = self.metadata["task"]["head"]
        self.size = int(self.metadata["input"]["shape"][1])
        self.unknown_threshold = self.metadata.get("unknown_threshold")
        self.interpreter = Interpreter(model_path=str(self.bundle / self.info["file"]), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]

    def _quantize(self, pixels: np.ndarray) -> np.ndarray:
        spec = self.info["input"]
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            return pixels.astype(dtype)
        limits = np.iinfo(dtype)
        q = np.round(pixels / spec["scale"]) + spec["zero_point"]
        return np.clip(q, limits.min, limits.max).astype(dtype)

    def _dequantize(self, q: np.ndarray) -> np.ndarray:
        spec = self.info["output"]
        if spec.get("scale"):
            return (q.astype(np.float32) - spec["zero_point"]) * spec["scale"]
        return q.astype(np.float32)

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Model outputs for one ``S x S x 3`` image of raw 0..255 pixels."""
        batch = self._quantize(np.asarray(pixels, np.float32)[None])
        self.interpreter.set_tensor(self._input["index"], batch)
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self._output["index"]))[0]

    def classify(self, image_path: str | Path, top: int = 3) -> list[tuple[str, float]]:
        """``[(label, score), ...]``: the top classes (softmax), the present ones (sigmoid), or values."""
        scores = self.scores(load_image(image_path, self.size))
        if self.head == "regression":
            return list(zip(self.class_names, scores.tolist()))
        order = np.argsort(-scores)
        if self.head == "softmax" and self.unknown_threshold is not None and scores[order[0]] < self.unknown_threshold:
            # Below the calibrated threshold the model is not confident in any known class.
            return [("unknown", float(scores[order[0]]))]
        if self.head == "sigmoid":
            order = [i for i in order if scores[i] >= 0.5] or order[:1]
        return [(self.class_names[i], float(scores[i])) for i in list(order)[:top]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify images with a tlkeras bundle (LiteRT only).")
    parser.add_argument("bundle", help="bundle directory, e.g. export/<name>")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--variant", default=None, help="variant name (default: the bundle's recommended one)")
    parser.add_argument("--top", type=int, default=3, help="classes to show per image")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    args = parser.parse_args(argv)
    try:
        classifier = Classifier(args.bundle, args.variant, args.threads)
    except (ValueError, OSError) as exc:
        print(f"classify.py: error: {exc}", file=sys.stderr)
        return 2
    status = 0
    for path in args.images:
        try:
            result = classifier.classify(path, args.top)
        except OSError as exc:
            print(f"classify.py: error: cannot read {path}: {exc}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps({"image": path, "variant": classifier.variant, "predictions": result}))
        else:
            shown = ", ".join(f"{label} {score:.3f}" for label, score in result)
            print(f"{path}: {shown}")
    return status


if __name__ == "__main__":
    sys.exit(main())
