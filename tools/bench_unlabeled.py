"""Benchmark of the unlabelled-data techniques on flowers5 (issue 8).

Three experiments, each for several seeds, with MobileNet-0.25 ImageNet weights at ``--size`` px:

* ``shift`` (domain adaptation): source = flowers5 train as is; target = the same photos under a
  fixed shift (:func:`domain_shift`: grayscale, Gaussian blur, halved contrast, +40 brightness),
  labels hidden; evaluated on the shifted test split. Methods: ``source_only`` (the same
  adaptation-phase training without an alignment loss), ``dann``, ``mmd``, ``importance``.
* ``few`` (semi-supervised): 10 labelled images per class (drawn per seed), the other 450 train
  images unlabelled; flowers5 val (150 labelled) for early stopping, as ``tlkeras.train`` does.
  Methods: ``supervised`` (two-phase fit on the 50 labels), ``pseudo_label``, ``fixmatch``.
* ``ssl`` (self-supervised): linear-probe test accuracy on frozen pooled features, before and
  after SimCLR continued pretraining on the 500 train images (labels unused).

Every finished run appends one JSON line to ``--results``; a rerun skips what is there, so an
interrupted benchmark resumes. ``--report`` prints the Markdown tables (mean and std of seeds).

    python tools/bench_unlabeled.py --experiments shift few ssl --seeds 0 1 2
    python tools/bench_unlabeled.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
FLOWERS5 = SHARED / "data" / "flowers5"
WEIGHTS = SHARED / "weights" / "mobilenet_0.25_224_imagenet_no_top.h5"

METHODS = {
    "shift": ("source_only", "dann", "mmd", "importance"),
    "few": ("supervised", "pseudo_label", "fixmatch"),
    "ssl": ("simclr",),
}


def domain_shift(x: np.ndarray) -> np.ndarray:
    """The fixed target-domain shift: grayscale, Gaussian blur (radius 1.5 px at 128 px, scaled
    with the size), contrast x0.5 around the image mean, brightness +40. uint8 in, uint8 out."""
    from PIL import Image, ImageFilter

    radius = 1.5 * x.shape[1] / 128
    out = []
    for image in x:
        img = Image.fromarray(image).convert("L").convert("RGB").filter(ImageFilter.GaussianBlur(radius))
        a = np.asarray(img).astype(np.float32)
        a = (a - a.mean()) * 0.5 + a.mean() + 40.0
        out.append(np.clip(np.round(a), 0, 255).astype(np.uint8))
    return np.stack(out)


def load(size: int):
    """flowers5 at ``size`` px as a DataBundle (decoded once, cached next to the results)."""
    from tlkeras.config import DataConfig
    from tlkeras.core.data import load_data

    return load_data(DataConfig(source=str(FLOWERS5)), size, "softmax", 0)


def base_config(size: int, seed: int, args):
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(
        data=DataConfig(source=str(FLOWERS5), image_size=size, batch_size=32, augment="light"),
        model=ModelConfig(backbone="mobilenet", alpha=0.25, weights=str(WEIGHTS), dropout=0.2),
        train=TrainConfig(phase2_epochs=args.finetune_epochs, unfreeze=args.unfreeze, verbose=0),
        seed=seed,
    )


def run_shift(method: str, seed: int, bundle, args) -> dict:

    from tlkeras.adapt.domain import DomainAdaptationOptions, adapt_domain
    from tlkeras.adapt.importance import ImportanceWeightingOptions, train_importance_weighted
    from tlkeras.core.data import Split

    config = base_config(bundle.image_size, seed, args)
    target = domain_shift(bundle.train.x)
    target_test = Split(domain_shift(bundle.test.x), bundle.test.y)
    if method == "importance":
        result = train_importance_weighted(config, target, ImportanceWeightingOptions(), data=bundle, target_test=target_test, write=False)
        extra = result.metrics["importance"]
    else:
        weight = {"dann": args.dann_weight, "mmd": args.mmd_weight}.get(method, 1.0)
        options = DomainAdaptationOptions(method=method, epochs=args.adapt_epochs, weight=weight,
                                          discriminator_lr_factor=args.disc_lr_factor)
        result = adapt_domain(config, target, options, data=bundle, target_test=target_test, write=False)
        extra = {k: result.history[k][-1] for k in ("align_loss", "domain_accuracy") if k in result.history}
    return {"target_test": result.metrics["target"]["accuracy"], "source_test": result.metrics["final"]["accuracy"], **extra}


def run_few(method: str, seed: int, bundle, args) -> dict:
    import dataclasses

    from tlkeras._backend import keras
    from tlkeras.adapt.semisupervised import FixMatchOptions, PseudoLabelOptions, self_train, train_fixmatch
    from tlkeras.core.data import Split
    from tlkeras.core.metrics import evaluate_model
    from tlkeras.core.models import build_model
    from tlkeras.train.recipe import fit_two_phase

    rng = np.random.default_rng(1000 + seed)
    labelled = np.sort(np.concatenate([rng.choice(np.flatnonzero(bundle.train.y == c), 10, replace=False) for c in range(bundle.num_outputs)]))
    rest = np.setdiff1d(np.arange(len(bundle.train)), labelled)
    few = dataclasses.replace(bundle, train=Split(bundle.train.x[labelled], bundle.train.y[labelled]))
    unlabeled, truth = bundle.train.x[rest], bundle.train.y[rest]
    config = base_config(bundle.image_size, seed, args)
    if method == "supervised":
        keras.utils.set_random_seed(seed)
        model = build_model(config.model, bundle.num_outputs, bundle.image_size)
        fit_two_phase(model, few, config)
        return {"test": evaluate_model(model, bundle.test, bundle.class_names, "softmax")["accuracy"]}
    if method == "pseudo_label":
        options = PseudoLabelOptions(threshold=args.threshold, rounds=args.rounds, max_per_class=args.max_per_class)
        result = self_train(config, unlabeled, options, data=few, write=False, diagnostic_labels=truth)
        rounds = [{k: r.get(k) for k in ("round", "pseudo_labels", "pseudo_label_accuracy", "val_accuracy")} for r in result.metrics["rounds"]]
        return {"test": result.metrics["final"]["accuracy"], "rounds": rounds}
    options = FixMatchOptions(threshold=args.fixmatch_threshold, epochs=args.fixmatch_epochs, unlabeled_ratio=args.mu,
                              unfreeze=args.fixmatch_unfreeze, learning_rate=args.fixmatch_lr)
    result = train_fixmatch(config, unlabeled, options, data=few, write=False)
    return {"test": result.metrics["final"]["accuracy"], "last_mask_rate": result.metrics["fixmatch"]["last_mask_rate"]}


def run_ssl(method: str, seed: int, bundle, args) -> dict:
    from tlkeras.adapt.simclr import SimCLROptions, train_simclr

    config = base_config(bundle.image_size, seed, args)
    options = SimCLROptions(epochs=args.simclr_epochs, batch_size=args.simclr_batch, unfreeze=args.simclr_unfreeze,
                            learning_rate=args.simclr_lr, finetune=False)
    result = train_simclr(config, bundle.train.x, options, data=bundle, write=False)
    probe = result.metrics["linear_probe"]
    return {"probe_before": probe["before"]["accuracy"], "probe_after": probe["after"]["accuracy"],
            "contrastive_accuracy": result.metrics["simclr"]["contrastive_accuracy"], "simclr_loss": result.metrics["simclr"]["loss"]}


RUNNERS = {"shift": run_shift, "few": run_few, "ssl": run_ssl}


def _done(path: Path) -> set:
    if not path.is_file():
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["experiment"], r["method"], r["seed"], r["tag"]) for r in rows}


def report(path: Path, tag: str | None) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if tag:
        rows = [r for r in rows if r["tag"] == tag]
    lines = []
    keys = {"shift": ["target_test", "source_test"], "few": ["test"], "ssl": ["probe_before", "probe_after"]}
    for experiment, methods in METHODS.items():
        found = [r for r in rows if r["experiment"] == experiment]
        if not found:
            continue
        lines.append(f"\n### {experiment}\n")
        lines.append("| method | " + " | ".join(f"{k} (mean ± std)" for k in keys[experiment]) + " | seeds | wall s / run |")
        lines.append("|---|" + "---|" * (len(keys[experiment]) + 2))
        for method in methods:
            mine = [r for r in found if r["method"] == method]
            if not mine:
                continue
            cells = []
            for k in keys[experiment]:
                v = np.array([r[k] for r in mine], float)
                cells.append(f"{v.mean():.3f} ± {v.std():.3f} ({', '.join(f'{x:.3f}' for x in v)})")
            wall = np.mean([r["wall_s"] for r in mine])
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {len(mine)} | {wall:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=["shift", "few", "ssl"], choices=list(METHODS))
    parser.add_argument("--methods", nargs="+", default=None, help="a subset of the experiments' methods")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])  # seed 0 was the pilot
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "unlabeled.jsonl"))
    parser.add_argument("--tag", default="main", help="label of this configuration in the results file")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--unfreeze", default="blocks:6")
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--adapt-epochs", type=int, default=10)
    parser.add_argument("--dann-weight", type=float, default=0.3)
    parser.add_argument("--mmd-weight", type=float, default=3.0)
    parser.add_argument("--disc-lr-factor", type=float, default=10.0)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-per-class", type=int, default=None)
    parser.add_argument("--fixmatch-threshold", type=float, default=0.8)
    parser.add_argument("--fixmatch-epochs", type=int, default=20)
    parser.add_argument("--mu", type=int, default=2)
    parser.add_argument("--fixmatch-unfreeze", default="none")
    parser.add_argument("--fixmatch-lr", type=float, default=None)
    parser.add_argument("--simclr-epochs", type=int, default=15)
    parser.add_argument("--simclr-batch", type=int, default=64)
    parser.add_argument("--simclr-unfreeze", default=None)
    parser.add_argument("--simclr-lr", type=float, default=None)
    args = parser.parse_args(argv)
    path = Path(args.results)
    if args.report:
        print(report(path, args.tag))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    done = _done(path)
    bundle = load(args.size)
    settings = {k: v for k, v in vars(args).items() if k not in ("experiments", "methods", "seeds", "results", "report")}
    for experiment in args.experiments:
        for seed in args.seeds:
            for method in METHODS[experiment]:
                if args.methods and method not in args.methods:
                    continue
                if (experiment, method, seed, args.tag) in done:
                    continue
                start = time.perf_counter()
                row = RUNNERS[experiment](method, seed, bundle, args)
                row = {"experiment": experiment, "method": method, "seed": seed, "tag": args.tag,
                       "wall_s": round(time.perf_counter() - start, 1), "load_avg": os.getloadavg()[0],
                       "date": time.strftime("%Y-%m-%d %H:%M"), **row, "settings": settings}
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps({k: v for k, v in row.items() if k != "settings"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
