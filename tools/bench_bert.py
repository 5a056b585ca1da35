"""BERT benchmark (issue 34): the real all-MiniLM-L6-v2 checkpoint (``hf:``) on ../shared/data/sentences.

Per seed, on the CSV's own train / val / test split (2,072 / 444 / 444), side by side in one run:

  - MiniLM frozen: phase 1 only (the linear probe on cached masked-mean sentence vectors);
  - MiniLM fine-tuned: phase 1, then the whole encoder (AdamW, warm-up, cosine) for ``--epochs``;
  - TF-IDF (word 1-2 grams) + logistic regression, C chosen on val (the classical baseline).

Then the seed-0 fine-tuned run is exported (float32, float16, dynamic-range int8, BertTokenizer
metadata) and each variant's size, LiteRT agreement, MediaPipe TextClassifier agreement with Keras
on the test texts and p50 LiteRT latency per sentence (1 thread) are reported. Prints Markdown (for
docs/bert.md) and writes ``<work>/bench_bert.json``. It times things: run it alone,

    flock /tmp/tlkeras-bench.lock python tools/bench_bert.py [--seeds 0] [--epochs 2] [--sequence-length 64] [--web]
          [--checkpoint hf:all_minilm_l6_v2] [--shared ../shared] [--work /tmp/tlkeras-bench-bert]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

TARGETS = {
    "test": "MiniLM fine-tuned test accuracy >= 0.90",
    "phase2_seconds": "fine-tuning (phase 2) <= 300 s on the 2,072 training sentences",
    "int8_mb": "dynamic-range int8 file <= 30 MB",
    "mediapipe": "MediaPipe TextClassifier agrees with Keras on >= 99.5% of the test texts, every variant",
}


def train(csv_path: Path, work: Path, seed: int, name: str, args, phase2_epochs: int) -> tuple[dict, Path]:
    run = work / "runs" / name
    if not (run / "metrics.json").is_file():
        cmd = [sys.executable, "-m", "tlkeras.train", "--data", str(csv_path), "--backbone", args.checkpoint, "--seed", str(seed),
               "--sequence-length", str(args.sequence_length), "--phase2-epochs", str(phase2_epochs), "--optimizer", "adamw",
               "--weight-decay", "0.01", "--verbose", "1", "--output-dir", str(work / "runs"), "--name", name]
        with open(work / f"{name}.log", "w") as log:
            subprocess.run(cmd, check=True, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    metrics = json.loads((run / "metrics.json").read_text())
    info = json.loads((run / "run.json").read_text())
    timings = info["timings"]
    return {"who": name, "val": metrics["val"]["accuracy"], "test": metrics["final"]["accuracy"], "phase1_seconds": timings.get("phase1"),
            "phase2_seconds": timings.get("phase2"), "total_seconds": timings.get("total"), "selection": info.get("selection")}, run


def export(run: Path, work: Path, web: bool) -> dict:
    from tlkeras.export.bundle import ExportOptions, export_run

    target = work / "bundles" / run.name
    t0 = time.perf_counter()
    result = export_run(run, target, ExportOptions(overwrite=True, allow_drop=True, web=web))
    out = {"seconds": time.perf_counter() - t0}
    if web:
        out["web"] = {name: {k: check.get(k) for k in ("loaded", "agreement", "p50_ms", "count", "passed")}
                      for name, check in (result.metadata.get("web") or {}).get("checks", {}).items()}
    for name, v in result.metadata["variants"].items():
        mp = v.get("mediapipe") or {}
        out[name] = {"bytes": v["bytes"], "accuracy": v["metrics"]["accuracy"], "agreement_litert": v["metrics"]["agreement"],
                     "agreement_mediapipe": mp.get("agreement"), "mediapipe_max_score_diff": mp.get("max_score_diff"),
                     "p50_ms": v["latency"]["p50_ms"], "verified_on": v["verified_on"]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tlkeras-bench-bert"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=2, help="phase-2 (fine-tuning) epochs")
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--checkpoint", default="hf:all_minilm_l6_v2")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--web", action="store_true", help="also verify each variant on the bundle's page in headless Chromium (@mediapipe/tasks-text)")
    args = parser.parse_args()
    csv_path = args.shared / "data" / "sentences" / "sentences.csv"
    if not csv_path.is_file():
        print(f"no {csv_path}; pass --shared", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    from bench_text import tfidf_baseline

    results: dict = {"seeds": {}, "tfidf": tfidf_baseline(csv_path), "args": {k: str(v) for k, v in vars(args).items()}}
    first_run = None
    for seed in args.seeds:
        frozen, _ = train(csv_path, args.work, seed, f"minilm-frozen-s{seed}", args, 0)
        tuned, run = train(csv_path, args.work, seed, f"minilm-tuned-s{seed}", args, args.epochs)
        results["seeds"][seed] = {"frozen": frozen, "tuned": tuned}
        first_run = first_run or run
        print(json.dumps(results["seeds"][seed]), flush=True)
    if first_run is not None and not args.no_export:
        results["export"] = export(first_run, args.work, args.web)
    (args.work / "bench_bert.json").write_text(json.dumps(results, indent=2))
    print(report(results, args))
    return 0


def report(results: dict, args) -> str:
    seeds = results["seeds"]

    def mean(key, what):
        values = [s[key][what] for s in seeds.values() if s[key].get(what) is not None]
        return sum(values) / len(values) if values else float("nan")

    lines = [f"MiniLM-L6 (hf:, sequence length {args.sequence_length}, {args.epochs} fine-tuning epochs), seeds {', '.join(map(str, seeds))}:", "",
             "| model | val acc | test acc | phase 1 s | phase 2 s | total s |", "|---|---|---|---|---|---|"]
    for key, label in (("frozen", "MiniLM frozen (phase 1: probe on mean-pooled vectors)"), ("tuned", "MiniLM fine-tuned")):
        lines.append(f"| {label} | {mean(key, 'val'):.3f} | {mean(key, 'test'):.3f} | {mean(key, 'phase1_seconds'):.0f} | "
                     f"{mean(key, 'phase2_seconds') or 0:.0f} | {mean(key, 'total_seconds'):.0f} |")
    t = results["tfidf"]
    lines.append(f"| TF-IDF 1-2 grams + LR (C={t['C']}) | {t['val']:.3f} | {t['test']:.3f} | | | {t['seconds']:.0f} |")
    if "export" in results:
        lines += ["", "| variant | MB | test acc | LiteRT agreement | MediaPipe agreement | p50 ms (1 thread) |", "|---|---|---|---|---|---|"]
        for name, v in results["export"].items():
            if isinstance(v, dict) and "bytes" in v:
                lines.append(f"| {name} | {v['bytes'] / 1e6:.1f} | {v['accuracy']:.3f} | {v['agreement_litert']:.3f} | "
                             f"{v['agreement_mediapipe'] if v['agreement_mediapipe'] is None else format(v['agreement_mediapipe'], '.4f')} | {v['p50_ms']:.1f} |")
        for name, check in results["export"].get("web", {}).items():
            lines.append(f"- {name} in headless Chromium (@mediapipe/tasks-text): agreement {check.get('agreement')}, p50 {check.get('p50_ms')} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
