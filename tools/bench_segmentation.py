"""Benchmark: tlkeras segmentation on nuclei vs the TensorFlow segmentation tutorial's recipe.

Per seed:

- tlkeras: ``train_model`` with the defaults (MobileNetV2 ImageNet encoder, U-Net-lite decoder,
  256 px, two phases), then the export (float32 and int8 with uint8 input), each file run in
  MediaPipe Tasks' ImageSegmenter on the test images: nucleus IoU and mIoU as MediaPipe sees them,
  the training time, and the int8 file's p50 latency on LiteRT with one thread.
- the tutorial (https://www.tensorflow.org/tutorials/images/segmentation) re-implemented on the same
  data and weights: the frozen MobileNetV2 encoder (its five skip layers), pix2pix upsampling blocks
  (Conv2DTranspose 512/256/128/64 + BatchNorm + ReLU), a last Conv2DTranspose to the classes,
  inputs scaled to [0, 1] as the tutorial does, 128 px, random horizontal flips, Adam (1e-3), sparse
  cross-entropy from logits, batch 64, 20 epochs; its masks are scored at 256 px (logits resized
  bilinearly) against the same test masks as tlkeras'.

Run under the shared lock: ``flock /tmp/tlkeras-bench.lock python tools/bench_segmentation.py --seeds 0``.
Writes ``--out`` (JSON) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
DATA = SHARED / "data" / "nuclei"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5"


def run_tlkeras(seed: int, work: Path) -> dict:
    from tlkeras.config import RunConfig
    from tlkeras.core import litert
    from tlkeras.export.bundle import ExportOptions, export_run
    from tlkeras.train.run import train_model

    config = RunConfig()
    config.data.source, config.model.weights = str(DATA), str(WEIGHTS)
    config.output_dir, config.name, config.seed = str(work), f"seg-seed{seed}", seed
    t0 = time.perf_counter()
    result = train_model(config)
    train_s = time.perf_counter() - t0
    bundle = export_run(result.run_dir, work / f"bundle-seed{seed}", ExportOptions(variants=("float32", "int8"), allow_drop=True),
                        progress=lambda line: print(line, flush=True))
    meta = bundle.metadata
    row = {"seed": seed, "train_s": train_s, "timings": result.timings,
           "keras": {"nucleus_iou": result.metrics["final"]["per_class_iou"]["nucleus"], "miou": result.metrics["final"]["miou"],
                     "pixel_accuracy": result.metrics["final"]["pixel_accuracy"],
                     "val_miou": result.metrics["val"]["miou"]},
           "selection": result.info["selection"]}
    for name, v in meta["variants"].items():
        mp = v.get("mediapipe", {})
        row[name] = {"bytes": v["bytes"], "litert_miou": v["metrics"]["miou"], "litert_nucleus_iou": v["metrics"]["per_class_iou"]["nucleus"],
                     "mediapipe_miou": mp.get("miou"), "mediapipe_nucleus_iou": (mp.get("per_class_iou") or {}).get("nucleus"),
                     "verified_on": v["verified_on"]}
    row["int8"]["latency_1_thread"] = litert.measure_latency(bundle.variant_path("int8"), num_threads=1, iterations=50, warmup=5)
    return row


def _tutorial_model(num_classes: int, size: int):
    from tlkeras._backend import keras

    base = keras.applications.MobileNetV2(input_shape=[size, size, 3], include_top=False, weights=str(WEIGHTS))
    names = ["block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "block_16_project"]
    down = keras.Model(base.input, [base.get_layer(n).output for n in names])
    down.trainable = False

    def upsample(filters):
        return keras.Sequential([
            keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", use_bias=False,
                                         kernel_initializer=keras.initializers.RandomNormal(0.0, 0.02)),
            keras.layers.BatchNormalization(), keras.layers.ReLU()])

    inputs = keras.Input([size, size, 3])
    skips = down(inputs)
    x = skips[-1]
    for up, skip in zip([upsample(512), upsample(256), upsample(128), upsample(64)], reversed(skips[:-1])):
        x = keras.layers.Concatenate()([up(x), skip])
    x = keras.layers.Conv2DTranspose(num_classes, 3, strides=2, padding="same")(x)
    return keras.Model(inputs, x)


def run_tutorial(seed: int, epochs: int = 20, size: int = 128, batch: int = 64) -> dict:
    from tlkeras._backend import keras, tf
    from tlkeras.config import RunConfig
    from tlkeras.core.segmentation.data import load_segmentation
    from tlkeras.core.segmentation.metrics import mask_metrics

    keras.utils.set_random_seed(seed)
    config = RunConfig()
    config.data.source = str(DATA)
    small = load_segmentation(config.data, size, seed)
    full = load_segmentation(config.data, 256, seed)
    model = _tutorial_model(small.num_outputs, size)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x = small.train.x.astype(np.float32) / 255.0
    y = small.train.y[..., None].astype(np.int32)

    def flip(image, mask):
        both = tf.concat([image, tf.cast(mask, tf.float32)], -1)
        both = tf.image.random_flip_left_right(both, seed=seed)
        return both[..., :3], tf.cast(both[..., 3:], tf.int32)

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).map(flip).batch(batch).prefetch(2)
    t0 = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=2)
    train_s = time.perf_counter() - t0
    logits = model.predict(full.test.x.astype(np.float32) / 255.0 if size == 256 else
                           np.stack([tf.image.resize(i, [size, size]).numpy() for i in full.test.x.astype(np.float32)]) / 255.0, verbose=0)
    pred = tf.argmax(tf.image.resize(logits, [256, 256], method="bilinear"), -1).numpy()
    m = mask_metrics(full.test.y, pred, full.class_names)
    return {"seed": seed, "train_s": train_s, "epochs": epochs, "size": size, "nucleus_iou": m["per_class_iou"]["nucleus"], "miou": m["miou"],
            "pixel_accuracy": m["pixel_accuracy"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default="/tmp/bench_segmentation.json")
    parser.add_argument("--skip-tutorial", action="store_true")
    parser.add_argument("--skip-tlkeras", action="store_true")
    parser.add_argument("--tutorial-epochs", type=int, default=20)
    parser.add_argument("--data", default=None, help="another images/+masks/ folder with a 'nucleus' class (smoke tests)")
    args = parser.parse_args(argv)
    global DATA
    DATA = Path(args.data) if args.data else DATA
    if not DATA.is_dir() or not WEIGHTS.is_file():
        print(f"needs {DATA} and {WEIGHTS}", file=sys.stderr)
        return 2
    results = {"tlkeras": [], "tutorial": []}
    with tempfile.TemporaryDirectory(prefix="bench-seg-") as tmp:
        for seed in args.seeds:
            if not args.skip_tlkeras:
                results["tlkeras"].append(run_tlkeras(seed, Path(tmp)))
                Path(args.out).write_text(json.dumps(results, indent=2))
            if not args.skip_tutorial:
                results["tutorial"].append(run_tutorial(seed, epochs=args.tutorial_epochs))
                Path(args.out).write_text(json.dumps(results, indent=2))
    print("| recipe | seed | test nucleus IoU (Keras) | float32 in MediaPipe | int8 in MediaPipe | test mIoU | train s | int8 p50 ms (1 thread) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results["tlkeras"]:
        print(f"| tlkeras | {r['seed']} | {r['keras']['nucleus_iou']:.4f} | {r['float32']['mediapipe_nucleus_iou']:.4f} | "
              f"{r['int8']['mediapipe_nucleus_iou']:.4f} | {r['keras']['miou']:.4f} | {r['train_s']:.0f} | {r['int8']['latency_1_thread']['p50_ms']:.1f} |")
    for r in results["tutorial"]:
        print(f"| TF tutorial (pix2pix, frozen encoder, {r['size']} px, {r['epochs']} epochs) | {r['seed']} | {r['nucleus_iou']:.4f} | — | — | "
              f"{r['miou']:.4f} | {r['train_s']:.0f} | — |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
