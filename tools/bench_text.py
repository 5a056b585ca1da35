"""Text benchmark on ../shared/data/sentences (issue 23): tlkeras' text default against TF-IDF +
logistic regression and MediaPipe Model Maker's text classifier, side by side in one run.

Per seed (default 0 1 2), on the CSV's own train / val / test split (2,072 / 444 / 444):

  - tlkeras' default text run: ``python -m tlkeras.train --data sentences.csv --word-vectors GloVe``
    (the word_embedding encoder, offline), and the same without word vectors;
  - TF-IDF (word 1-2 grams) + logistic regression, C chosen on val by accuracy (scikit-learn);
  - MediaPipe Model Maker 0.2.1.4's average-word-embedding classifier at its defaults, in its own
    virtual environment (``--mpmm-python``; ../shared/tools/mpmm/setup.sh makes one); skipped when
    absent.

Then the seed-0 tlkeras run is exported (float32, float16, dynamic-range int8) and each variant's
MediaPipe TextClassifier agreement with Keras, size and p50 LiteRT latency per sentence (1 thread)
are reported; and the BERT path runs with the test-built BERT-shaped encoder (tests/text_fixtures.py;
no pretrained BERT exists offline) at sequence length 128: seconds per fine-tuning epoch per 1,000
sentences, export and MediaPipe agreement. Prints Markdown (for benchmarks/text.md) and writes
``<work>/bench_text.json``. Run it alone: it times things.

    python tools/bench_text.py [--shared ../shared] [--work /tmp/tlkeras-bench-text] [--seeds 0 1 2]
                               [--mpmm-python /work/.mpmm-venv/bin/python] [--no-bert]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {
    "vs_tfidf": "tlkeras test accuracy >= TF-IDF + LR - 2 points",
    "vs_mpmm": "tlkeras test accuracy >= MediaPipe Model Maker + 20 points",
    "mediapipe": "MediaPipe TextClassifier top-1 = Keras on >= 99% of test texts, every variant",
    "int8_size": "dynamic-range int8 file <= 0.35x float32",
}


def tfidf_baseline(csv_path: Path) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    rows = list(csv.DictReader(open(csv_path, newline="", encoding="utf-8")))
    split = {k: ([r["text"] for r in rows if r["split"] == k], [r["label"] for r in rows if r["split"] == k]) for k in ("train", "val", "test")}
    t0 = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2))
    x = {k: (vec.fit_transform(v[0]) if k == "train" else vec.transform(v[0])) for k, v in split.items()}
    best = None
    for c in (0.1, 0.3, 1, 3, 10, 30, 100):
        clf = LogisticRegression(C=c, max_iter=5000).fit(x["train"], split["train"][1])
        val = clf.score(x["val"], split["val"][1])
        if best is None or val > best[0]:
            best = (val, c, clf.score(x["test"], split["test"][1]))
    return {"who": "tfidf_lr", "val": best[0], "test": best[2], "C": best[1], "seconds": time.perf_counter() - t0}


def mpmm(python: str, csv_path: Path, seed: int, shared: Path) -> dict | None:
    if not python or not Path(python).is_file():
        return None
    out = subprocess.run([python, str(shared / "tools" / "mpmm" / "text_ref.py"), str(csv_path), str(seed)], capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        print(f"MediaPipe Model Maker failed (seed {seed}): {out.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    result = json.loads(lines[-1])
    return {"who": "mpmm_awe", "val": result["val"], "test": result["test"], "seconds": result["t_train_s"], "tflite_bytes": result["tflite_bytes"]}


def tlkeras_run(csv_path: Path, work: Path, seed: int, vectors: Path | None, name: str, extra=()) -> tuple[dict, Path]:
    run = work / "runs" / f"{name}-seed{seed}"
    if not (run / "metrics.json").is_file():
        args = [sys.executable, "-m", "tlkeras.train", "--data", str(csv_path), "--seed", str(seed), "--verbose", "0",
                "--output-dir", str(work / "runs"), "--name", run.name, *extra]
        if vectors is not None:
            args += ["--word-vectors", str(vectors)]
        t0 = time.perf_counter()
        subprocess.run(args, check=True, cwd=work, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
    else:
        wall = float("nan")
    metrics = json.loads((run / "metrics.json").read_text())
    info = json.loads((run / "run.json").read_text())
    return {"who": name, "val": metrics["val"]["accuracy"], "test": metrics["final"]["accuracy"], "seconds": info["timings"]["total"],
            "wall_with_startup": wall, "phase1": info["timings"]["phase1"], "phase2": info["timings"]["phase2"],
            "kept": (info.get("selection") or {}).get("kept")}, run


def export_bundle(run: Path, work: Path) -> dict:
    from tlkeras.export.bundle import ExportOptions, export_run

    target = work / "bundles" / run.name
    result = export_run(run, target, ExportOptions(overwrite=True, allow_drop=True))
    out = {}
    for name, v in result.metadata["variants"].items():
        out[name] = {"bytes": v["bytes"], "size_vs_float32": v.get("size_vs_float32"), "accuracy": v["metrics"]["accuracy"],
                     "agreement_litert": v["metrics"]["agreement"], "agreement_mediapipe": (v.get("mediapipe") or {}).get("agreement"),
                     "p50_ms": v["latency"]["p50_ms"], "verified_on": v["verified_on"]}
    return out


def bert_path(csv_path: Path, work: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from text_fixtures import build_bert_pair

    pre, enc = build_bert_pair(work / "bert_hub", seq_length=128)
    run = work / "runs" / "bert-fixture"
    if not (run / "metrics.json").is_file():
        subprocess.run([sys.executable, "-m", "tlkeras.train", "--data", str(csv_path), "--backbone", f"hub:{enc}", "--preprocess", str(pre),
                        "--sequence-length", "128", "--phase2-epochs", "2", "--early-stopping-patience", "0", "--verbose", "0",
                        "--output-dir", str(work / "runs"), "--name", run.name], check=True, cwd=work, stdout=subprocess.DEVNULL)
    info = json.loads((run / "run.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "history.json").read_text())
    epochs2 = sum(1 for p in history["phase"] if p == 2)
    per_epoch = info["timings"]["phase2"] / max(1, epochs2)
    return {"test": metrics["final"]["accuracy"], "train_count": info["data"]["train"], "phase2_epochs": epochs2,
            "seconds_per_epoch_per_1000": per_epoch / (info["data"]["train"] / 1000.0), "export": export_bundle(run, work)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--work", default="/tmp/tlkeras-bench-text")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--mpmm-python", default=os.environ.get("MPMM_PYTHON", "/work/.mpmm-venv/bin/python"))
    parser.add_argument("--no-bert", action="store_true")
    args = parser.parse_args()
    shared, work = Path(args.shared), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    csv_path = shared / "data" / "sentences" / "sentences.csv"
    vectors = shared / "weights" / "glove.6B.50d.top2446.txt"
    rows = {"tlkeras (GloVe)": [], "tlkeras (no vectors)": [], "TF-IDF + LR": [], "MediaPipe Model Maker": []}
    first_run = None
    for seed in args.seeds:
        result, run = tlkeras_run(csv_path, work, seed, vectors, "words-glove")
        rows["tlkeras (GloVe)"].append(result)
        first_run = first_run or run
        rows["tlkeras (no vectors)"].append(tlkeras_run(csv_path, work, seed, None, "words-novectors")[0])
        rows["TF-IDF + LR"].append(tfidf_baseline(csv_path))
        m = mpmm(args.mpmm_python, csv_path, seed, shared)
        if m:
            rows["MediaPipe Model Maker"].append(m)
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]['test']:.3f}" for k, v in rows.items() if v), flush=True)
    exported = export_bundle(first_run, work)
    bert = None if args.no_bert else bert_path(csv_path, work)
    report = {"seeds": args.seeds, "rows": rows, "export": exported, "bert": bert}
    (work / "bench_text.json").write_text(json.dumps(report, indent=2))

    def mean(values):
        return sum(values) / len(values) if values else float("nan")

    print("\n| recipe | val acc (mean) | test acc (mean) | test per seed | train s (mean) |\n|---|---|---|---|---|")
    for name, results in rows.items():
        if results:
            per_seed = ", ".join("%.3f" % r["test"] for r in results)
            print(f"| {name} | {mean([r['val'] for r in results]):.3f} | {mean([r['test'] for r in results]):.3f} | "
                  f"{per_seed} | {mean([r['seconds'] for r in results]):.1f} |")
    print("\n| variant | KB | × float32 | test acc | LiteRT = Keras | MediaPipe = Keras | p50 ms (1 thread) |\n|---|---|---|---|---|---|---|")
    for name, v in exported.items():
        print(f"| {name} | {v['bytes'] / 1024:.0f} | {v['size_vs_float32']:.2f} | {v['accuracy']:.3f} | {v['agreement_litert']:.3f} | "
              f"{v['agreement_mediapipe']} | {v['p50_ms']:.3f} |")
    if bert:
        print(f"\nBERT-shaped fixture encoder at sequence length 128: {bert['seconds_per_epoch_per_1000']:.1f} s per fine-tuning epoch per "
              f"1,000 sentences; test {bert['test']:.3f}")
        for name, v in bert["export"].items():
            print(f"  {name}: {v['bytes'] / 1024:.0f} KB, MediaPipe = Keras {v['agreement_mediapipe']}, LiteRT = Keras {v['agreement_litert']:.3f}, p50 {v['p50_ms']:.2f} ms")
    ours, tfidf = mean([r["test"] for r in rows["tlkeras (GloVe)"]]), mean([r["test"] for r in rows["TF-IDF + LR"]])
    mp = mean([r["test"] for r in rows["MediaPipe Model Maker"]]) if rows["MediaPipe Model Maker"] else 0.489
    print("\ntargets:")
    print(f"  {TARGETS['vs_tfidf']}: {ours:.3f} vs {tfidf - 0.02:.3f}: {'met' if ours >= tfidf - 0.02 else 'NOT met'}")
    print(f"  {TARGETS['vs_mpmm']}: {ours:.3f} vs {mp + 0.20:.3f}: {'met' if ours >= mp + 0.20 else 'NOT met'}")
    ok = all((v["agreement_mediapipe"] or 0) >= 0.99 for v in exported.values())
    print(f"  {TARGETS['mediapipe']}: {'met' if ok else 'NOT met'}")
    ratio = exported.get("dynamic_range", {}).get("size_vs_float32")
    print(f"  {TARGETS['int8_size']}: {ratio if ratio is None else round(ratio, 3)}: {'met' if ratio is not None and ratio <= 0.35 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
