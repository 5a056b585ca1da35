"""Few-shot benchmark (issue 9): prototypes vs logistic regression on the same shots.

5-way 5-shot episodes on the test split of ../shared/data/flowers5, embeddings from the
MobileNet-0.25 ImageNet backbone (no training). Each episode fits every method on the same 5
support images per class and scores the same 15 queries per class. Methods:

- ``prototypes`` (tlkeras default: cosine, no centering), ``prototypes_centered`` (cosine after
  subtracting the support mean), ``prototypes_euclidean`` (squared Euclidean, Snell et al.);
- ``logreg`` (scikit-learn LogisticRegression, C=1, on the raw features) and ``logreg_l2``
  (the same on L2-normalized features).

Also checks that the prototype TFLite model (float32) agrees with the Python classifier.
Writes benchmarks/fewshot.json; the Markdown goes into benchmarks/issue9.md by hand.

    python tools/bench_fewshot.py [--episodes 600] [--image-size 224] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra-shots", type=int, nargs="*", default=[1, 10], help="also run K-shot prototypes vs logreg for these K")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "fewshot.json"))
    args = parser.parse_args(argv)

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from tlkeras import DataConfig, ModelConfig, load_data
    from tlkeras.heads.fewshot import FewShotClassifier, evaluate_episodes, export_fewshot, mean_interval

    shared = Path(args.shared)
    size = args.image_size
    weights = str(shared / "weights" / "mobilenet_0.25_224_imagenet_no_top.h5")
    t0 = time.perf_counter()
    bundle = load_data(DataConfig(source=str(shared / "data" / "flowers5")), size)
    fewshot = FewShotClassifier.from_backbone(ModelConfig(backbone="mobilenet", alpha=0.25, weights=weights), size)
    x, y = bundle.test.x, bundle.test.y
    emb = fewshot.embed(x)
    t_embed = time.perf_counter() - t0

    def logreg(sx, sy, qx):
        return LogisticRegression(C=1.0, max_iter=2000).fit(sx, sy).predict(qx)

    def logreg_l2(sx, sy, qx):
        n = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
        return LogisticRegression(C=1.0, max_iter=2000).fit(n(sx), sy).predict(n(qx))

    common = dict(n_way=5, k_shot=5, n_query=15, episodes=args.episodes, seed=args.seed)
    t0 = time.perf_counter()
    main_run = evaluate_episodes(emb, y, metric="cosine", baselines={"logreg": logreg, "logreg_l2": logreg_l2}, **common)
    centered = evaluate_episodes(emb, y, metric="cosine", center=True, **common)
    euclid = evaluate_episodes(emb, y, metric="euclidean", **common)
    t_episodes = time.perf_counter() - t0
    rows = {
        "prototypes": main_run["prototypes"],
        "prototypes_centered": centered["prototypes"],
        "prototypes_euclidean": euclid["prototypes"],
        "logreg": main_run["logreg"],
        "logreg_l2": main_run["logreg_l2"],
    }
    diff = np.array(main_run["prototypes"]["accuracies"]) - np.array(main_run["logreg"]["accuracies"])
    paired = mean_interval(diff)
    other_shots = {}
    for k in args.extra_shots:
        run = evaluate_episodes(emb, y, metric="cosine", baselines={"logreg": logreg}, **{**common, "k_shot": k})
        d = mean_interval(np.array(run["prototypes"]["accuracies"]) - np.array(run["logreg"]["accuracies"]))
        other_shots[str(k)] = {m: {"mean": run[m]["mean"], "ci95": run[m]["ci95"]} for m in ("prototypes", "logreg")}
        other_shots[str(k)]["prototypes_minus_logreg"] = {"mean": d[0], "ci95": d[1]}

    # TFLite agreement: one 5-shot support set from the train split, all test images as queries.
    rng = np.random.default_rng(args.seed)
    support = np.concatenate([rng.choice(np.flatnonzero(bundle.train.y == c), 5, replace=False) for c in range(5)])
    fewshot.fit(bundle.train.x[support], bundle.train.y[support], bundle.class_names)
    python_pred = fewshot.predict(x)
    import tempfile

    from tlkeras.core import litert

    with tempfile.TemporaryDirectory() as tmp:
        result = export_fewshot(fewshot, bundle.train.x[support], bundle.train.y[support], Path(tmp) / "bundle",
                                eval_images=x, eval_labels=y)
        lite = litert.run_model(result.variant_path("float32"), x)
        size_kb = result.metadata["variants"]["float32"]["bytes"] / 1024
    tflite = {"agreement_with_python": float(np.mean(lite.argmax(1) == python_pred)),
              "test_accuracy_one_support_set": float(np.mean(python_pred == y)), "float32_kb": size_kb}

    out = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"platform": platform.platform(), "cpu": platform.processor() or platform.machine()},
        "image_size": size,
        "settings": main_run["settings"],
        "results": {k: {"mean": v["mean"], "ci95": v["ci95"]} for k, v in rows.items()},
        "prototypes_minus_logreg": {"mean": paired[0], "ci95": paired[1]},
        "other_shots": other_shots,
        "tflite": tflite,
        "timings_s": {"load_and_embed": t_embed, "episodes": t_episodes},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"{args.episodes} episodes, 5-way 5-shot, 15 queries/class, flowers5 test split at {size}px")
    for name, r in out["results"].items():
        print(f"  {name:22s} {100 * r['mean']:.1f} +- {100 * r['ci95']:.1f}")
    print(f"  prototypes - logreg (paired): {100 * paired[0]:+.1f} +- {100 * paired[1]:.1f} points")
    for k, r in other_shots.items():
        print(f"  {k}-shot: prototypes {100 * r['prototypes']['mean']:.1f} +- {100 * r['prototypes']['ci95']:.1f}, "
              f"logreg {100 * r['logreg']['mean']:.1f} +- {100 * r['logreg']['ci95']:.1f}")
    print(f"  TFLite float32 ({size_kb:.0f} KB) agreement with Python: {tflite['agreement_with_python']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
