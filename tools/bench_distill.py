"""Distillation benchmark (issue 9) on ../shared/data/flowers5 with the MobileNet-0.25 weights.

1. Teacher: ``tlkeras.train``'s default recipe at 224 px (or ``--teacher runs/<name>``).
2. Students at 128 px (same backbone and ImageNet weights; alpha 0.25 is the only width the
   weights file fits), the teacher's training recipe and budget (epochs, early stopping,
   augmentation), per seed:
   - ``distilled``: :func:`tlkeras.distill_model` with T=4, soft weight 0.7;
   - ``hard_labels``: the same code path with soft weight 0 (the controlled "without teacher");
   - ``train_128``: a plain ``tlkeras.train`` run at 128 px (reference).
3. The teacher and the seed-0 distilled student are exported (float32, int8_float_io) and timed
   with :func:`tlkeras.benchmark_bundle` (LiteRT, batch 1).
Writes benchmarks/distill.json.

    python tools/bench_distill.py [--seeds 0 1] [--student-size 128] [--teacher runs/x] [--work /tmp/...]
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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--student-size", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--soft-weight", type=float, default=0.7)
    parser.add_argument("--teacher", default=None, help="an existing teacher run directory")
    parser.add_argument("--no-reference", action="store_true", help="skip the plain tlkeras.train student at 128 px")
    parser.add_argument("--student", default=None, help="an existing distilled student run to export (skips student training)")
    parser.add_argument("--append", action="store_true", help="add the students to the rows already in --out")
    parser.add_argument("--student-alpha", type=float, default=None, help="a narrower student (default: the teacher's width)")
    parser.add_argument("--student-weights", default=None, help="the student's weights (default: the teacher's; 'none' = from scratch)")
    parser.add_argument("--student-recipe", default=None, metavar="P1:P2:UNFREEZE:LR_FACTOR[:PHASE1_LR[:PATIENCE]]",
                        help="the student's phase-1 epochs, phase-2 epochs, unfreeze spec and phase-2 lr factor "
                        "(default: the teacher's), e.g. 0:40:all:0.5:0.006:0 for a student trained from scratch (patience 0: keep the best epoch, no early stop)")
    parser.add_argument("--mixup", type=float, default=0.0)
    parser.add_argument("--work", default="/tmp/tlkeras-bench-issue9")
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "distill.json"))
    args = parser.parse_args(argv)

    from tlkeras import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tlkeras.benchmark.bundle import BenchmarkOptions, benchmark_bundle
    from tlkeras.config import load_config
    from tlkeras.core import litert
    from tlkeras.distill.distillation import DistillOptions, distill, student_config
    from tlkeras.export.bundle import ExportOptions, export_run
    from tlkeras.train.run import train_model

    shared = Path(args.shared)
    work = Path(args.work)
    runs = work / "runs"
    weights = str(shared / "weights" / "mobilenet_0.25_224_imagenet_no_top.h5")
    stamp = time.strftime("%H%M%S")
    results: dict = {"date": time.strftime("%Y-%m-%d"), "machine": {"platform": platform.platform(), "cpu": platform.processor() or platform.machine()},
                     "student_size": args.student_size, "student_alpha": args.student_alpha, "student_weights": args.student_weights,
                     "student_recipe": args.student_recipe, "mixup": args.mixup,
                     "temperature": args.temperature, "soft_weight": args.soft_weight, "students": []}

    def make_student_config(teacher_cfg, name, seed):
        cfg = student_config(teacher_cfg, image_size=args.student_size, alpha=args.student_alpha, weights=args.student_weights,
                             name=name, output_dir=str(runs))
        cfg.seed = seed
        cfg.train.verbose = 0
        if args.student_recipe:
            p1, p2, unfreeze, factor, *lr = args.student_recipe.split(":")  # lr = [PHASE1_LR, PATIENCE]
            cfg.train.phase1_epochs, cfg.train.phase2_epochs = int(p1), int(p2)
            cfg.train.unfreeze, cfg.train.phase2_lr_factor = unfreeze, float(factor)
            if lr:
                cfg.train.phase1_lr = float(lr[0])
            if len(lr) > 1:
                cfg.train.early_stopping_patience = int(lr[1])
        return cfg

    if args.teacher:
        teacher_dir = Path(args.teacher)
    else:
        t0 = time.perf_counter()
        config = RunConfig(data=DataConfig(source=str(shared / "data" / "flowers5"), image_size=224),
                           model=ModelConfig(backbone="mobilenet", alpha=0.25, weights=weights),
                           train=TrainConfig(verbose=0), output_dir=str(runs), name=f"teacher-{stamp}", seed=0)
        teacher = train_model(config)
        teacher_dir = teacher.run_dir
        print(f"teacher: test accuracy {teacher.metrics['final']['accuracy']:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    teacher_cfg = load_config(teacher_dir / "config.yaml")
    teacher_metrics = json.loads((teacher_dir / "metrics.json").read_text())
    results["teacher"] = {"run": str(teacher_dir), "test_accuracy": teacher_metrics["final"]["accuracy"],
                          "image_size": teacher_cfg.data.image_size, "recipe": {k: getattr(teacher_cfg.train, k) for k in
                                                                                 ("phase1_epochs", "phase2_epochs", "unfreeze", "early_stopping_patience")},
                          "augment": teacher_cfg.data.augment}

    distilled_dirs = {}
    if args.append and Path(args.out).is_file():
        previous = json.loads(Path(args.out).read_text())
        results["students"] = previous.get("students", [])
        results["exports"] = previous.get("exports")
    seeds = [] if args.student else args.seeds
    if args.student:
        distilled_dirs[args.seeds[0]] = Path(args.student)
    for seed in seeds:
        row = {"seed": seed}
        for label, weight in (("distilled", args.soft_weight), ("hard_labels", 0.0)):
            cfg = make_student_config(teacher_cfg, f"{label}-s{seed}-{stamp}", seed)
            t0 = time.perf_counter()
            res = distill(teacher_dir, cfg, DistillOptions(args.temperature, weight, args.mixup))
            row[label] = {"test_accuracy": res.metrics["final"]["accuracy"], "val_accuracy": res.metrics["val"]["accuracy"],
                          "epochs": len(res.history["phase"]), "seconds": time.perf_counter() - t0}
            if label == "distilled":
                distilled_dirs[seed] = res.run_dir
            print(f"seed {seed} {label}: test {row[label]['test_accuracy']:.3f} ({row[label]['seconds']:.0f}s)", flush=True)
        if not args.no_reference:
            cfg = make_student_config(teacher_cfg, f"train128-s{seed}-{stamp}", seed)
            cfg.data.split_seed = teacher_cfg.seed  # the distilled students' split
            t0 = time.perf_counter()
            res = train_model(cfg)
            row["train_128"] = {"test_accuracy": res.metrics["final"]["accuracy"], "val_accuracy": res.metrics["val"]["accuracy"],
                                "epochs": len(res.history["phase"]), "seconds": time.perf_counter() - t0}
            print(f"seed {seed} train_128: test {row['train_128']['test_accuracy']:.3f}", flush=True)
        results["students"].append(row)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    if seeds and args.append:
        return 0  # more students for an earlier run; its exports stay
    exports = {}
    for name, run in (("teacher", teacher_dir), ("student", distilled_dirs[args.seeds[0]])):
        target = work / "export" / f"{Path(run).name}"
        if target.exists():
            import shutil

            shutil.rmtree(target)
        result = export_run(run, target, ExportOptions(variants=("float32", "int8_float_io"), allow_drop=True))
        bench = benchmark_bundle(target, BenchmarkOptions(threads=(1, 2), iterations=200, rounds=5))
        rows = {r["variant"]: r for r in bench["rows"]}
        arena = {}
        for v in ("float32", "int8_float_io"):
            est = litert.estimate_arena(litert.inspect_model(result.variant_path(v)))
            arena[v] = {"activations": est.activations, "persistent": est.persistent, "total": est.total}
        exports[name] = {
            "bundle": str(target),
            "variants": {v: {"bytes": rows[v]["bytes"], "p50_ms_1thread": rows[v]["latency"]["1"]["p50_ms"],
                             "p50_ms_2threads": rows[v]["latency"]["2"]["p50_ms"], "accuracy": rows[v]["accuracy"],
                             "arena": arena[v]} for v in rows},
        }
        print(name, json.dumps({v: {k: x for k, x in d.items() if k != "arena"} for v, d in exports[name]["variants"].items()}), flush=True)
    results["exports"] = exports
    # Teacher and student timed together, round-robin, so load from other processes hits both.
    contents = {f"{name}/{v}": Path(exports[name]["bundle"], f"{v}.tflite").read_bytes() for name in exports for v in ("float32", "int8_float_io")}
    interleaved = {}
    for threads in (1, 2):
        interpreters = {k: litert.load_interpreter(c, threads) for k, c in contents.items()}
        times = {k: [] for k in interpreters}
        for it in interpreters.values():
            litert.set_random_input(it)
            litert.time_invokes(it, 20)
        for _ in range(10):
            for k, it in interpreters.items():
                times[k].append(litert.time_invokes(it, 30))
        import numpy as np

        interleaved[str(threads)] = {k: {"p50_ms": float(np.percentile(np.concatenate(v), 50)), "p90_ms": float(np.percentile(np.concatenate(v), 90))}
                                     for k, v in times.items()}
    results["interleaved_latency"] = interleaved
    print(json.dumps(interleaved, indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
