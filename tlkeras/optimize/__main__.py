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

__all__ = ["main", "build_parser", "stage_options"]


# Flag of each option field (the option dataclasses are the single source of the names' help
# and defaults); the stage's own flag (--prune, --cluster) carries its main value.
PRUNE_FLAGS = {
    "target_sparsity": "prune", "schedule": "prune_schedule", "initial_sparsity": "prune_initial",
    "begin_fraction": "prune_begin", "end_fraction": "prune_end", "frequency": "prune_frequency",
    "structure": "prune_structure", "min_weights": "prune_min_weights", "epochs": "prune_epochs",
}
CLUSTER_FLAGS = {"clusters": "cluster", "init": "cluster_init", "per_channel": "cluster_per_channel", "epochs": "cluster_epochs"}
QAT_FLAGS = {"epochs": "qat_epochs"}
FINETUNE_FLAGS = {"learning_rate": "lr"}


def build_parser() -> argparse.ArgumentParser:
    from tlkeras.optimize.options import ClusteringOptions, FineTuneOptions, PruningOptions, QATOptions

    parser = cli.ArgumentParser(
        prog="python -m tlkeras.optimize",
        description=(
            "Compress a trained run with tensorflow-model-optimization (pruning, weight clustering, "
            "quantization-aware training, or their combinations PQAT/CQAT) and write a new run "
            "directory with the model and a report (optimization.md/.json). Each stage fine-tunes "
            "with the run's phase-2 learning rate, epochs and data pipeline. At least one of --prune, "
            "--cluster and --qat; stages run prune -> cluster -> QAT."
        ),
    )
    parser.add_argument("run_dir", help="a run directory written by tlkeras.train")
    cli.add_option_flags(parser, PruningOptions, title="pruning (--prune SPARSITY turns it on)", dest_prefix="prune.",
                         names=PRUNE_FLAGS, skip=("skip_layers",))
    cli.add_option_flags(parser, ClusteringOptions, title="clustering (--cluster N turns it on)", dest_prefix="cluster.",
                         names=CLUSTER_FLAGS, skip=("skip_layers",))
    q = cli.add_option_flags(parser, QATOptions, title="quantization-aware training (--qat turns it on)", dest_prefix="qat.",
                             names=QAT_FLAGS, skip=("float_layers",))
    q.add_argument("--qat", action="store_true", help="quantization-aware training (after --prune: PQAT, after --cluster: CQAT)")
    q.add_argument("--float-layers", metavar="NAMES", help="comma-separated layers to keep in float")
    cli.add_option_flags(parser, FineTuneOptions, title="fine-tuning of every stage (unset: the run's phase-2 settings)",
                         dest_prefix="finetune.", names=FINETUNE_FLAGS)
    parser.add_argument("--quiet", dest="finetune.verbose", action="store_const", const=0, default=argparse.SUPPRESS,
                        help="no per-epoch progress (the same as --verbose 0); the result lines still print")
    f = parser.add_argument_group("layers")
    f.add_argument("--skip-layers", metavar="NAMES", help="comma-separated layers never to prune or cluster")
    o = parser.add_argument_group("output")
    o.add_argument("--data", help="the run's data at another path (default: the run's own data source)")
    o.add_argument("--output-dir", help="parent of the new run directory (default: next to the source run)")
    o.add_argument("--name", help="the new run's name (default: <source>-<stages>, e.g. base-prune50-qat)")
    o.add_argument("--no-tflite", action="store_true", help="skip the int8 TFLite conversion, its evaluation and sizes in the report")
    return parser


def _stages(args: argparse.Namespace) -> tuple[bool, bool, bool]:
    """Which stages the flags turn on: (prune, cluster, qat)."""
    given = vars(args)
    # 2:4 sparsity is always 50%: --prune-structure 2:4 alone turns pruning on.
    prune = "prune.target_sparsity" in given or given.get("prune.structure") == "2:4"
    return prune, "cluster.clusters" in given, bool(args.qat)


def stage_options(args: argparse.Namespace) -> tuple:
    """(PruningOptions | None, ClusteringOptions | None, QATOptions | None, FineTuneOptions), validated.

    Fields without a flag on the command line keep the dataclass defaults.
    """
    from tlkeras.optimize.options import ClusteringOptions, FineTuneOptions, PruningOptions, QATOptions

    prune, cluster, qat = _stages(args)
    # Comma-separated names as typed: the options' validate() splits and strips them.
    skip = args.skip_layers or []
    return (
        cli.options_from_args(args, PruningOptions, dest_prefix="prune.", names=PRUNE_FLAGS, skip_layers=skip) if prune else None,
        cli.options_from_args(args, ClusteringOptions, dest_prefix="cluster.", names=CLUSTER_FLAGS, skip_layers=skip) if cluster else None,
        cli.options_from_args(args, QATOptions, dest_prefix="qat.", names=QAT_FLAGS, float_layers=args.float_layers or []) if qat else None,
        cli.options_from_args(args, FineTuneOptions, dest_prefix="finetune.", names=FINETUNE_FLAGS),
    )


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from tlkeras.errors import TLKerasError

    if not any(_stages(args)):
        raise TLKerasError("nothing to do: choose at least one of --prune SPARSITY, --cluster N, --qat")
    from tlkeras.runs import check_run_name

    check_run_name(args.name)  # one folder under --output-dir, never a path that climbs out
    from tlkeras.optimize.pipeline import optimize_run

    pruning, clustering, qat, finetune = stage_options(args)
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
