"""On-device training benchmark (issue 24): flowers5, MobileNetV2-1.0, one class held out of the run.

Trains the default recipe on four flowers5 classes (tulip held out), exports the float32 variant and
``trainable.tflite`` (``python -m tlkeras.export RUN --trainable``), then drives the trainable model
through LiteRT signature runners (``tlkeras.export.personalize``, no TensorFlow in those calls):

  - size of trainable.tflite against the float32 variant (target <= 1.05x);
  - p50 latency (1 thread) of embed, infer and a train step on 32 features;
  - training the head from zero on the device over the train split's embeddings, against the Keras
    linear probe (logistic regression, C chosen on val, on the same embeddings) on the test split
    (target within 1 point);
  - personalization: the run's head loaded, 5 and then 20 tulip training photos added in the first
    free slot; tulip recall on its 30 test photos and the four old classes' test accuracy before
    and after (target: at most 2 points lost).

    python tools/bench_trainable.py [--shared ../shared] [--work /tmp/tlkeras-bench-trainable] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HELD_OUT = "tulip"


def images(folder: Path, size: int) -> np.ndarray:
    from tlkeras.core.data import load_image

    return np.stack([load_image(p, size) for p in sorted(folder.iterdir()) if p.is_file()]).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--work", default="/tmp/tlkeras-bench-trainable")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shared, work = Path(args.shared), Path(args.work)
    flowers = shared / "data" / "flowers5"
    data = work / "flowers4"
    if not data.is_dir():
        for split in ("train", "val", "test"):
            for cls in sorted(p.name for p in (flowers / split).iterdir() if p.is_dir() and p.name != HELD_OUT):
                shutil.copytree(flowers / split / cls, data / split / cls)
    run = work / "runs" / f"flowers4-seed{args.seed}"
    if not (run / "model.keras").is_file():
        subprocess.run([sys.executable, "-m", "tlkeras.train", "--data", str(data), "--backbone", "mobilenet_v2",
                        "--weights", str(shared / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5"), "--seed", str(args.seed),
                        "--verbose", "0", "--output-dir", str(work / "runs"), "--name", run.name], check=True, cwd=work)
    bundle = work / "bundles" / run.name
    if not (bundle / "trainable.tflite").is_file():
        subprocess.run([sys.executable, "-m", "tlkeras.export", str(run), "--quantize", "float32", "--trainable", "--no-micro",
                        "--output-dir", str(bundle), "--overwrite", "--quiet"], check=True, cwd=work)
    meta = json.loads((bundle / "metadata.json").read_text())
    trainable = meta["trainable"]
    classes = meta["task"]["class_names"]

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from tlkeras.export.personalize import OnDeviceHead

    head = OnDeviceHead(bundle / "trainable.tflite")
    size = head.size
    feats, labels = {}, {}
    for split in ("train", "val", "test"):
        parts = [head.embed(images(data / split / c, size)) for c in classes]
        feats[split] = np.concatenate(parts)
        labels[split] = np.concatenate([[i] * len(p) for i, p in enumerate(parts)])
    tulip = {split: head.embed(images(flowers / split / HELD_OUT, size)) for split in ("train", "test")}
    saved = head.get_weights()

    def old_accuracy():
        return float(np.mean(head.scores(feats["test"])[:, : len(classes)].argmax(1) == labels["test"]))

    # The Keras linear probe on the same embeddings (phase 1's recipe: C by val log-loss).
    best = min(((log_loss(labels["val"], LogisticRegression(C=c, max_iter=3000).fit(feats["train"], labels["train"]).predict_proba(feats["val"])), c)
                for c in (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)))
    probe = LogisticRegression(C=best[1], max_iter=3000).fit(feats["train"], labels["train"])
    probe_test = float(probe.score(feats["test"], labels["test"]))
    head.reset()
    head.fit(feats["train"], labels["train"], epochs=200, learning_rate=0.1)
    device_test = old_accuracy()
    rows = {"probe_test": probe_test, "probe_C": best[1], "device_from_zero_test": device_test}
    head.set_weights(**saved)
    rows["old_before"] = old_accuracy()
    slot = len(classes)
    for shots in (5, 20):
        head.set_weights(**saved)
        x = np.concatenate([feats["train"], tulip["train"][:shots]])
        y = np.concatenate([labels["train"], [slot] * shots])
        head.fit(x, y, epochs=100, learning_rate=0.1)
        rows[f"tulip_recall_{shots}"] = float(np.mean(head.scores(tulip["test"]).argmax(1) == slot))
        rows[f"old_after_{shots}"] = old_accuracy()
        # What a desktop logistic regression (balanced, the probe's C) makes of the same features.
        ref = LogisticRegression(C=best[1], max_iter=3000, class_weight="balanced").fit(x, y)
        rows[f"reference_tulip_recall_{shots}"] = float(np.mean(ref.predict(tulip["test"]) == slot))
        rows[f"reference_old_{shots}"] = float(ref.score(feats["test"], labels["test"]))
    result = {"trainable": {k: trainable[k] for k in ("bytes", "size_vs_float32", "latency", "slots", "infer_agreement_with_keras",
                                                          "train_step_max_error_vs_numpy")}, "float32_bytes": meta["variants"]["float32"]["bytes"], **rows}
    (work / "bench_trainable.json").write_text(json.dumps(result, indent=2))
    lat = trainable["latency"]
    print(f"| trainable.tflite | {trainable['bytes'] / 1024:.0f} KB ({trainable['size_vs_float32']:.3f}x float32 {meta['variants']['float32']['bytes'] / 1024:.0f} KB) |")
    print(f"| p50 1 thread | embed {lat['embed_ms']:.1f} ms, infer {lat['infer_ms']:.1f} ms, train step (32 features) {lat['train_32_ms']:.2f} ms |")
    print(f"| from zero on the device | test {device_test:.3f} vs Keras probe {probe_test:.3f} (C={best[1]}) |")
    print(f"| old classes before | {rows['old_before']:.3f} |")
    for shots in (5, 20):
        print(f"| + {shots} tulip photos | tulip recall {rows[f'tulip_recall_{shots}']:.3f}, old classes {rows[f'old_after_{shots}']:.3f} "
              f"({100 * (rows[f'old_after_{shots}'] - rows['old_before']):+.1f} points); desktop logistic regression: tulip recall "
              f"{rows[f'reference_tulip_recall_{shots}']:.3f}, old classes {rows[f'reference_old_{shots}']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
