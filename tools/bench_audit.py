"""Benchmark of the data audit (issue 16) on a noisy copy of flowers5.

From flowers5 and a seed it builds a copy with a share of the training labels flipped at random
(the file is filed under another class folder of the copy) and near-duplicates of training images
planted in test (cropped to 92-98 % per side, resized to 50-90 %, re-encoded as JPEG at quality
60-90), audits the copy, and measures:

- label errors: precision and recall of the flagged items against the flipped ones (and of the
  ranked list cut at the number of flips);
- leakage: precision and recall of the test images flagged as having a copy in train against the
  planted ones (and a similarity sweep from the audit's features);
- the audit's wall time (load, hashes, features, search, report);
- with ``--train-seeds N``: the test accuracy of the same recipe trained on the clean original, the
  noisy copy and the audit's clean CSV, N seeds each, all evaluated on the original test split.

Writes ``<work>/bench_audit.json`` and prints a Markdown summary. Run it on a quiet machine:
``nice python tools/bench_audit.py --work /tmp/bench_audit``.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
SHARED = HERE.parent / "shared"


def build_noisy_copy(src: Path, dst: Path, seed: int, flip: float, leaks: int) -> dict:
    """Copies ``src`` (train/val/test class folders) to ``dst`` with flipped train labels and
    near-copies of train images planted in test. Returns what was planted (absolute paths)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.csv", "*.txt"))
    classes = sorted(p.name for p in (dst / "train").iterdir() if p.is_dir())
    train = sorted(p for p in (dst / "train").glob("*/*") if p.is_file())
    order = rng.permutation(len(train))
    n_flip = int(round(flip * len(train)))
    flipped, planted = [], []
    for i in order[:n_flip]:
        path = train[i]
        true = path.parent.name
        given = classes[(classes.index(true) + int(rng.integers(1, len(classes)))) % len(classes)]
        target = dst / "train" / given / f"flipped_{path.name}"
        path.rename(target)  # inside the benchmark's own copy
        flipped.append({"path": str(target.resolve()), "true": true, "given": given})
    for k, i in enumerate(order[n_flip : n_flip + leaks]):
        path = train[i]
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            cw, ch = int(w * rng.uniform(0.92, 0.98)), int(h * rng.uniform(0.92, 0.98))
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            scale = rng.uniform(0.5, 0.9)
            img = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((max(8, int(cw * scale)), max(8, int(ch * scale))), Image.BILINEAR)
            buffer = io.BytesIO()
            img.save(buffer, "JPEG", quality=int(rng.integers(60, 91)))
        target = dst / "test" / path.parent.name / f"leak_{k:02d}.jpg"
        target.write_bytes(buffer.getvalue())
        planted.append({"path": str(target.resolve()), "source": str(path.resolve())})
    return {"flipped": flipped, "planted": planted, "classes": classes}


def _pr(found: set, truth: set) -> dict:
    hit = len(found & truth)
    return {"flagged": len(found), "true": len(truth), "hits": hit,
            "precision": hit / len(found) if found else float("nan"), "recall": hit / len(truth) if truth else float("nan")}


def score(result, plant: dict) -> dict:
    f = result.findings
    by_path = {str(Path(it["path"]).resolve()): it["id"] for it in f["items"]}
    flipped = {by_path[x["path"]] for x in plant["flipped"]}
    planted = {by_path[x["path"]] for x in plant["planted"]}
    ranked = [x["index"] for x in f["label_issues"]]
    labels = _pr(set(ranked), flipped)
    labels["at_k"] = {k: _pr(set(ranked[:k]), flipped) for k in (len(flipped), 2 * len(flipped))}
    names = f["class_names"]
    suggested_right = sum(
        1 for x in f["label_issues"] if x["index"] in flipped
        and names[x["suggested"]] == next(p["true"] for p in plant["flipped"] if by_path[p["path"]] == x["index"])
    )
    labels["suggested_label_right"] = suggested_right
    if result.probabilities is not None:
        # The probe's ranking alone (cleanlab's self-confidence), best cut: the precision/recall curve.
        quality = result.probabilities[np.arange(len(f["items"])), [it["label"] for it in f["items"]]]
        order = np.argsort(quality)
        labels["curve"] = [(k, _pr(set(order[:k].tolist()), flipped)) for k in (10, 20, 25, 30, 40, 50, 75, 100)]
    leaked = set(f["leakage"].get("train-test", {}).get("ids", []))
    leakage = _pr(leaked, planted)
    leakage["unplanted"] = [f["items"][i].get("relpath") for i in sorted(leaked - planted)]
    if result.features is not None:
        unit = result.features
        train = np.array([it["split"] == "train" for it in f["items"]])
        test = np.flatnonzero([it["split"] == "test" for it in f["items"]])
        best = (unit[test] @ unit[train].T).max(axis=1)
        leakage["sweep"] = [(t, _pr({int(i) for i, b in zip(test, best) if b >= t}, planted)) for t in (0.85, 0.88, 0.9, 0.92, 0.94, 0.96)]
        leakage["planted_similarity"] = sorted(float(b) for i, b in zip(test, best) if int(i) in planted)
    return {"labels": labels, "leakage": leakage, "timings": result.timings, "probe_accuracy": f["probe_accuracy"],
            "near_pairs": len(f["near_duplicates"]), "exact_groups": len(f["exact_duplicates"]), "outliers": len(f["outliers"])}


def train_compare(sources: dict[str, str], clean_test_root: Path, backbone: str, alpha: float, weights: str, seeds: int, work: Path) -> dict:
    """Test accuracy on the original test split of the same recipe trained on each source."""
    import tlkeras
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    size = 224
    test = tlkeras.load_data(DataConfig(source=str(clean_test_root)), size).test
    out = {}
    for name, source in sources.items():
        accs = []
        for seed in range(seeds):
            config = RunConfig(
                data=DataConfig(source=source, image_size=size), model=ModelConfig(backbone=backbone, alpha=alpha, weights=weights),
                train=TrainConfig(verbose=0), output_dir=str(work / "runs"), name=f"{name}-{seed}", seed=seed,
            )
            result = tlkeras.train_model(config, write=False)
            pred = tlkeras.predict(result.model, test.x).argmax(axis=1)
            accs.append(float((pred == test.y).mean()))
            print(f"  {name} seed {seed}: test accuracy {accs[-1]:.3f}", flush=True)
        out[name] = {"test_accuracy": accs, "mean": float(np.mean(accs))}
    return out


def markdown(report: dict) -> str:
    s = report["score"]
    lab, leak = s["labels"], s["leakage"]
    t = s["timings"]
    lines = [
        f"flowers5 copy, seed {report['seed']}: {lab['true']} flipped train labels, {leak['true']} planted test near-copies; "
        f"{report['backbone']} features ({report['weights_name']}), similarity {report['similarity']}",
        "",
        "| what | flagged | hits | precision | recall |",
        "|---|---|---|---|---|",
        f"| label errors (cleanlab) | {lab['flagged']} | {lab['hits']} | {lab['precision']:.2f} | {lab['recall']:.2f} |",
        *[f"| label errors, top {k} | {v['flagged']} | {v['hits']} | {v['precision']:.2f} | {v['recall']:.2f} |" for k, v in lab["at_k"].items()],
        f"| train-test leakage | {leak['flagged']} | {leak['hits']} | {leak['precision']:.2f} | {leak['recall']:.2f} |",
        "",
        f"Suggested label right for {lab['suggested_label_right']} of {lab['hits']} found flips; probe accuracy "
        f"{s['probe_accuracy']:.3f}; {s['near_pairs']} near-duplicate pairs, {s['exact_groups']} exact groups, {s['outliers']} outliers.",
        f"Time: {t['total']:.1f} s in all (load {t['load']:.1f}, files {t['files']:.1f}, features+duplicates "
        f"{t['features_and_duplicates']:.1f}, labels+outliers {t['labels_and_outliers']:.1f}, report {t['report']:.1f}).",
    ]
    if "sweep" in leak:
        lines += ["", "Leakage by embedding similarity alone, without the hash confirmation (test images whose best train match "
                  "reaches the threshold):", "",
                  "| threshold | flagged | precision | recall |", "|---|---|---|---|"]
        lines += [f"| {th} | {v['flagged']} | {v['precision']:.2f} | {v['recall']:.2f} |" for th, v in leak["sweep"]]
    if "curve" in lab:
        lines += ["", "Label errors by cut of the self-confidence ranking:", "", "| top k | precision | recall |", "|---|---|---|"]
        lines += [f"| {k} | {v['precision']:.2f} | {v['recall']:.2f} |" for k, v in lab["curve"]]
    if leak["unplanted"]:
        lines += ["", f"Flagged test images that were not planted: {', '.join(leak['unplanted'])}"]
    if report.get("train"):
        lines += ["", "| trained on | test accuracy (original test split) |", "|---|---|"]
        lines += [f"| {k} | {v['mean']:.3f} ({', '.join(f'{a:.3f}' for a in v['test_accuracy'])}) |" for k, v in report["train"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "data" / "flowers5"))
    parser.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_0.25_224_imagenet_no_top.h5"))
    parser.add_argument("--backbone", default="mobilenet")
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip", type=float, default=0.05, help="share of training labels flipped")
    parser.add_argument("--leaks", type=int, default=20, help="near-copies of train images planted in test")
    parser.add_argument("--similarity", type=float, default=None, help="near-duplicate threshold (default: the audit's)")
    parser.add_argument("--train-seeds", type=int, default=0, help="also train on clean / noisy / cleaned data, this many seeds")
    parser.add_argument("--work", default="/tmp/bench_audit")
    args = parser.parse_args(argv)
    src, weights = Path(args.data), Path(args.weights)
    if not src.is_dir() or not weights.is_file():
        print(f"bench_audit: needs {src} and {weights}", file=sys.stderr)
        return 2
    from tlkeras.audit.run import AuditOptions, audit_data
    from tlkeras.config import DataConfig, ModelConfig, RunConfig

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    plant = build_noisy_copy(src, work / "noisy", args.seed, args.flip, args.leaks)
    config = RunConfig(
        data=DataConfig(source=str(work / "noisy"), image_size=224),
        model=ModelConfig(backbone=args.backbone, alpha=args.alpha if args.backbone == "mobilenet" else None, weights=str(weights)),
        output_dir=str(work), name="report", seed=args.seed,
    )
    options = AuditOptions(write_clean=str(work / "clean.csv"), overwrite=True)
    if args.similarity is not None:
        options.similarity = args.similarity
    start = time.perf_counter()
    result = audit_data(config, options)
    wall = time.perf_counter() - start
    print(result.summary())
    report = {
        "seed": args.seed, "backbone": args.backbone, "weights_name": weights.name, "similarity": options.similarity,
        "wall_s": wall, "score": score(result, plant), "plant": plant,
    }
    if args.train_seeds:
        report["train"] = train_compare(
            {"clean": str(src), "noisy": str(work / "noisy"), "cleaned": str(result.clean_csv)}, src,
            args.backbone, args.alpha, str(weights), args.train_seeds, work,
        )
    (work / "bench_audit.json").write_text(json.dumps(report, indent=2, default=float))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
