"""``python -m tlkeras.optimize runs/<name> ...``: compress a trained run into a new run directory.

Examples::

    python -m tlkeras.optimize runs/base --prune 0.5                # magnitude pruning to 50%
    python -m tlkeras.optimize runs/base --prune-structure 2:4      # structured 2:4 sparsity
    python -m tlkeras.optimize runs/base --cluster 16               # 16 shared weights per layer
    python -m tlkeras.optimize runs/base --qat                      # quantization-aware training
    python -m tlkeras.optimize runs/base --prune 0.5 --qat          # PQAT
    python -m tlkeras.optimize runs/base --cluster 16 --qat         # CQAT
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from tlkeras import cli

__all__ = ["main", "build_parser"]


def _sparsity(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m tlkeras.optimize",
        description=(
            "Compress a trained run with tensorflow-model-optimization (pruning, weight clustering, "
            "quantization-aware training, or their combinations PQAT/CQAT) and write a new run "
            "directory with the model and a report (optimization.md/.json). Each stage fine-tunes "
            "with the run's phase-2 learning rate, epochs and data pipeline."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_dir", help="a run directory written by tlkeras.train")
    what = parser.add_argument_group("what to do (at least one; stages run prune -> cluster -> QAT)")
    what.add_argument("--prune", type=_sparsity, metavar="SPARSITY", help="magnitude pruning to this target sparsity in [0, 1), e.g. 0.5")
    what.add_argument("--cluster", type=int, metavar="N", help="weight clustering to N shared values per layer (N >= 2)")
    what.add_argument("--qat", action="store_true", help="quantization-aware training (after --prune: PQAT, after --cluster: CQAT)")
    p = parser.add_argument_group("pruning")
    p.add_argument("--prune-schedule", choices=("polynomial", "constant"), default="polynomial", help="how sparsity grows during fine-tuning")
    p.add_argument("--prune-structure", choices=("unstructured", "2:4"), default="unstructured",
                   help="2:4: two zeros in every four consecutive weights (always 50%%; --prune may be left out)")
    p.add_argument("--prune-begin", type=float, default=0.0, metavar="FRACTION", help="share of the fine-tuning steps before pruning starts")
    p.add_argument("--prune-end", type=float, default=0.6, metavar="FRACTION", help="share of the fine-tuning steps at which the target is reached")
    p.add_argument("--prune-frequency", type=int, metavar="STEPS", help="steps between mask updates (default: about 8 updates)")
    p.add_argument("--prune-epochs", type=int, metavar="N", help="fine-tuning epochs of the pruning stage (default: --epochs)")
    p.add_argument("--prune-min-weights", type=int, default=0, metavar="N", help="leave kernels with fewer weights dense")
    c = parser.add_argument_group("clustering")
    c.add_argument("--cluster-init", choices=("kmeans++", "linear", "density", "random"), default="kmeans++", help="centroid initialization")
    c.add_argument("--cluster-epochs", type=int, metavar="N", help="fine-tuning epochs of the clustering stage (default: --epochs)")
    c.add_argument("--cluster-per-channel", action="store_true", help="cluster each output channel of Conv2D kernels separately")
    q = parser.add_argument_group("quantization-aware training")
    q.add_argument("--qat-epochs", type=int, metavar="N", help="fine-tuning epochs of the QAT stage (default: --epochs)")
    q.add_argument("--float-layers", metavar="NAMES", help="comma-separated layers to keep in float")
    f = parser.add_argument_group("fine-tuning (defaults: the run's phase-2 settings)")
    f.add_argument("--epochs", type=int, help="fine-tuning epochs per stage (default: the run's phase2_epochs)")
    f.add_argument("--lr", type=float, help="learning rate (default: the run's phase1_lr * phase2_lr_factor)")
    f.add_argument("--warmup-epochs", type=float, help="learning-rate warm-up (default: the run's)")
    f.add_argument("--batch-size", type=int, help="default: the run's")
    f.add_argument("--augment", choices=("off", "light", "strong"), help="default: the run's")
    f.add_argument("--patience", type=int, help="early-stopping patience (default: the run's)")
    f.add_argument("--self-distill", type=float, metavar="W", default=None,
                   help="weight in [0, 1] of the uncompressed model's own predictions in the fine-tuning targets "
                   "(default: the library's FineTuneOptions default)")
    f.add_argument("--head-only", action="store_true", help="compress and train only the head (required for a TF-Hub backbone)")
    f.add_argument("--skip-layers", metavar="NAMES", help="comma-separated layers never to prune or cluster")
    f.add_argument("--verbose", type=int, choices=(0, 1, 2), help="Keras progress display (default: the run's)")
    o = parser.add_argument_group("output")
    o.add_argument("--data", help="the run's data at another path (default: the run's own data source)")
    o.add_argument("--output-dir", help="parent of the new run directory (default: next to the source run)")
    o.add_argument("--name", help="the new run's name (default: <source>-<stages>, e.g. base-prune50-qat)")
    o.add_argument("--no-tflite", action="store_true", help="skip the int8 TFLite conversion, its evaluation and sizes in the report")
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from tlkeras.errors import TLKerasError

    if args.prune is None and args.prune_structure == "2:4":
        args.prune = 0.5
    if args.prune is None and args.cluster is None and not args.qat:
        raise TLKerasError("nothing to do: choose at least one of --prune SPARSITY, --cluster N, --qat")
    from tlkeras.runs import check_run_name

    check_run_name(args.name)  # one folder under --output-dir, never a path that climbs out
    from tlkeras.optimize.options import ClusteringOptions, FineTuneOptions, PruningOptions, QATOptions
    from tlkeras.optimize.pipeline import optimize_run

    skip = [n for n in (args.skip_layers or "").split(",") if n.strip()]
    pruning = clustering = qat = None
    if args.prune is not None:
        pruning = PruningOptions(
            target_sparsity=args.prune, schedule=args.prune_schedule, begin_fraction=args.prune_begin, end_fraction=args.prune_end,
            frequency=args.prune_frequency, structure=args.prune_structure, min_weights=args.prune_min_weights, skip_layers=skip,
            epochs=args.prune_epochs,
        ).validate()
    if args.cluster is not None:
        clustering = ClusteringOptions(clusters=args.cluster, init=args.cluster_init, per_channel=args.cluster_per_channel, skip_layers=skip,
                                       epochs=args.cluster_epochs).validate()
    if args.qat:
        qat = QATOptions(float_layers=[n for n in (args.float_layers or "").split(",") if n.strip()], epochs=args.qat_epochs).validate()
    finetune = FineTuneOptions(
        epochs=args.epochs, learning_rate=args.lr, warmup_epochs=args.warmup_epochs, batch_size=args.batch_size, augment=args.augment,
        patience=args.patience, verbose=args.verbose, head_only=args.head_only,
        **({"self_distill": args.self_distill} if args.self_distill is not None else {}),
    ).validate()
    result = optimize_run(
        args.run_dir, pruning=pruning, clustering=clustering, qat=qat, finetune=finetune, output_dir=args.output_dir, name=args.name,
        data_source=args.data, tflite=not args.no_tflite,
    )
    _print_summary(result.report, result.run_dir)
    return 0


def _print_summary(report: dict, run_dir) -> None:
    acc, size, m = report["accuracy"], report["size"], report["metric"]
    line = f"{report['pipeline']}: {m} {acc['before']['float']:.3f} -> {acc['after']['float']:.3f}"
    if acc["after"].get("int8") is not None:
        line += f" | int8 {acc['before']['int8_ptq']:.3f} (post-training, before) -> {acc['after']['int8']:.3f} ({acc['after']['int8_method']})"
    print(line)
    if "sparsity" in report:
        sp = report["sparsity"]
        text = f"sparsity: pruned layers {sp['pruned_layers_overall']:.1%}, all kernels {sp['all_kernels_overall']:.1%}"
        if "int8_tflite_overall" in sp:
            text += f", int8 TFLite weights {sp['int8_tflite_overall']:.1%}"
        print(text)
    if "clustering" in report:
        print(f"clustering: at most {report['clustering']['max_unique']} unique weights {report['clustering']['bound']} in the clustered layers")
    if "qat" in report and report["qat"]["unsupported_layers"]:
        print(f"left in float (unsupported by QAT): {', '.join(report['qat']['unsupported_layers'])}")
    text = f"gzipped Keras model {size['before']['keras_gzip_bytes'] / 1024:.0f} -> {size['after']['keras_gzip_bytes'] / 1024:.0f} KiB"
    if size["after"].get("int8_tflite_gzip_bytes"):
        text += (f" | gzipped int8 TFLite {size['before']['int8_tflite_gzip_bytes'] / 1024:.0f} -> "
                 f"{size['after']['int8_tflite_gzip_bytes'] / 1024:.0f} KiB ({size['int8_gzip_ratio']:.2f}x smaller)")
    print(text)
    if run_dir is not None:
        print(f"run directory: {run_dir} (report: {run_dir}/optimization.md)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.optimize``; returns the exit code."""
    return cli.run("tlkeras.optimize", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
