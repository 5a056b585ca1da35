"""Calibration and the "unknown" answer on flowers5 with one class held out (issue 17).

Trains tlkeras' default two-phase recipe on four of flowers5's classes (MobileNetV2-1.0 ImageNet
weights from ../shared/weights), which fits the temperature and the unknown threshold on val
(``calibrate_model``, target known recall 0.95); then measures on test:
  - expected calibration error (15 bins) before and after temperature scaling,
  - AUROC of known test images versus every image of the held-out class by top softmax score,
  - the held-out class's false-accept rate and the known recall at the threshold,
and the time to write report.html (with and without Grad-CAM overlays of the mistakes).
Writes benchmarks/unknown.json and prints a Markdown table (kept in benchmarks/unknown.md).

    nice python tools/bench_unknown.py [--seeds 0 1 2] [--holdout tulip] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def split_known(bundle, holdout: str):
    """The bundle without ``holdout`` (labels renumbered), and every image of ``holdout``."""
    from tlkeras.core.data import from_arrays

    h = bundle.class_names.index(holdout)
    names = [c for c in bundle.class_names if c != holdout]
    remap = {old: new for new, old in enumerate(i for i in range(len(bundle.class_names)) if i != h)}

    def known(split):
        keep = split.y != h
        return split.x[keep], np.array([remap[int(v)] for v in split.y[keep]])

    unknown = np.concatenate([s.x[s.y == h] for s in (bundle.train, bundle.val, bundle.test)])
    x, y = known(bundle.train)
    data = from_arrays(x, y, class_names=names, val=known(bundle.val), test=known(bundle.test),
                       source=f"{bundle.source} without {holdout}")
    return data, unknown


def run(seed: int, holdout: str, shared: Path, out_dir: Path, smoke: bool = False) -> dict:
    from scipy.special import logsumexp
    from sklearn.metrics import roc_auc_score

    from tlkeras import DataConfig, ModelConfig, RunConfig, load_data, train_model
    from tlkeras.core.calibration import expected_calibration_error, model_logits, unknown_rejection
    from tlkeras.core.metrics import predict
    from tlkeras.explain.gradcam import gradcam_overlays
    from tlkeras.report.html import examples_from, write_run_report
    from tlkeras.runs import read_json

    size = 96 if smoke else 224
    full = load_data(DataConfig(source=str(shared / "data" / "flowers5"), image_size=size), size, seed=seed)
    data, unknown = split_known(full, holdout)
    weights = str(shared / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5")
    config = RunConfig(data=DataConfig(image_size=size), model=ModelConfig(backbone="mobilenet_v2", alpha=1.0, weights=weights),
                       seed=seed, output_dir=str(out_dir), name=f"unknown-{holdout}-{seed}")
    config.train.verbose = 0
    if smoke:  # checks the tool end to end in a minute; not a measurement
        config.train.phase1_epochs, config.train.phase2_epochs = 1, 1
    t0 = time.perf_counter()
    result = train_model(config, data=data)
    train_s = time.perf_counter() - t0
    model, run_dir = result.model, Path(result.run_dir)  # train_model calibrated the model on val
    calib = read_json(run_dir / "calibration.json")
    test_probs = predict(model, data.test.x)
    rejection = unknown_rejection(test_probs.max(1), predict(model, unknown).max(1), calib["unknown_threshold"])
    # Other scores an app could threshold if it read logits instead of the softmax output.
    known_logits, unknown_logits = model_logits(model, data.test.x), model_logits(model, unknown)
    truth = np.r_[np.ones(len(known_logits)), np.zeros(len(unknown_logits))]
    alternatives = {
        "auroc_max_logit": float(roc_auc_score(truth, np.r_[known_logits.max(1), unknown_logits.max(1)])),
        "auroc_energy": float(roc_auc_score(truth, np.r_[logsumexp(known_logits, 1), logsumexp(unknown_logits, 1)])),
    }
    t0 = time.perf_counter()
    examples = examples_from(model, data.test, "test")
    write_run_report(run_dir, examples, path=run_dir / "report_plain.html")
    report_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    path = write_run_report(run_dir, examples, functools.partial(gradcam_overlays, model), unknown=rejection)
    report_gradcam_s = time.perf_counter() - t0
    return {
        "seed": seed, "holdout": holdout, "known_classes": data.class_names,
        "val_accuracy": result.metrics["val"]["accuracy"], "test_accuracy": result.metrics["final"]["accuracy"],
        "temperature": calib["temperature"],
        "val_ece_before": calib["ece_before"], "val_ece_after": calib["ece_after"],
        "test_ece_before": calib["eval"]["ece_before"], "test_ece_after": calib["eval"]["ece_after"],
        "test_ece_saved_model": expected_calibration_error(test_probs, data.test.y),
        "unknown_threshold": calib["unknown_threshold"], "val_recall_at_threshold": calib["val_recall_at_threshold"],
        **{f"unknown_{k}": v for k, v in rejection.items()}, **alternatives,
        "train_s": train_s, "report_s": report_s, "report_gradcam_s": report_gradcam_s,
        "report_bytes": path.stat().st_size, "run_dir": str(run_dir),
    }


def table(rows: list[dict]) -> str:
    cols = [("holdout", "s"), ("seed", "d"), ("test_accuracy", ".3f"), ("temperature", ".2f"), ("test_ece_before", ".3f"),
            ("test_ece_after", ".3f"), ("unknown_threshold", ".3f"), ("unknown_known_recall", ".3f"),
            ("unknown_auroc", ".3f"), ("unknown_false_accept_rate", ".3f"), ("report_s", ".1f"), ("report_gradcam_s", ".1f")]
    head = "| " + " | ".join(c for c, _ in cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "".join("| " + " | ".join(format(r[c], f) for c, f in cols) + " |\n" for r in rows)
    means = ""
    for holdout in dict.fromkeys(r["holdout"] for r in rows):
        group = [r for r in rows if r["holdout"] == holdout]
        means += f"| {holdout} | mean | " + " | ".join(format(statistics.mean(r[c] for r in group), f) for c, f in cols[2:]) + " |\n"
    return head + body + means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--holdout", nargs="+", default=["tulip"], help="classes to hold out, one at a time")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "unknown.json")
    parser.add_argument("--smoke", action="store_true", help="96 px, one epoch per phase: checks the tool, measures nothing")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-unknown-") as tmp:
        for holdout in args.holdout:
            for seed in args.seeds:
                rows.append(run(seed, holdout, args.shared, Path(tmp), args.smoke))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "known_classes"}), flush=True)
    result = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load": os.getloadavg()}, "rows": rows}
    if not args.smoke:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
