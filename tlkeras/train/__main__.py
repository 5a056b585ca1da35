"""``python -m tlkeras.train``: two-phase transfer training from the command line.

With no ``--data`` (and no data source in ``--config``) it runs the quickstart on the photos and
ImageNet backbone shipped in the package (:mod:`tlkeras.quickstart`): transfer vs. from scratch,
an int8 export verified on LiteRT and MediaPipe, the report. ``--demo shapes`` runs the older demo
on generated shapes instead (a source and a target task that share nothing with ImageNet).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from tlkeras import cli

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m tlkeras.train",
        description=(
            "Train a transfer-learning model in two phases (frozen backbone, then fine-tuning) and "
            "write runs/<name>/. Without --data, run the quickstart: real photos and ImageNet weights shipped in the "
            "package, transfer vs. from scratch, an int8 export verified on LiteRT (offline, about 90 s on 2 CPU cores)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--list-backbones", action="store_true", help="print the registered backbones and exit")
    parser.add_argument(
        "--demo", default=None, choices=("flowers", "shapes"),
        help="without --data: flowers (the default) trains on real photos and ImageNet weights shipped in the package and "
        "exports int8; shapes pretrains a backbone on generated shapes and transfers it to new shapes")
    parser.add_argument("--audit", action="store_true", help="audit the data first (duplicates, train/test leakage, likely label errors; python -m tlkeras.audit): writes <output-dir>/<name>-audit/ and prints a summary")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the interrupted run --name (under --output-dir) from its last completed epoch, "
        "with the config it was started with",
    )
    unlabeled = parser.add_argument_group(
        "learning from unlabelled images",
        "train with one technique at its default options (python -m tlkeras.adapt TECHNIQUE --help sets each option)",
    )
    unlabeled.add_argument(
        "--technique", default=None, choices=sorted(_techniques()),
        help="domain adaptation (dann, mmd, importance), semi-supervised (pseudo-label, fixmatch) or self-supervised (simclr)",
    )
    unlabeled.add_argument("--unlabeled", default=None, metavar="PATH",
                           help="the unlabelled images for --technique (a folder, searched recursively, or a CSV with a path column)")
    unlabeled.add_argument("--target-test", default=None, metavar="DIR",
                           help="labelled target-domain images (class folders) to report on; dann, mmd and importance only")
    cli.add_config_flags(parser)
    parser.add_argument("--quiet", dest="train.verbose", action="store_const", const=0, default=argparse.SUPPRESS,
                        help="no per-epoch progress (the same as --verbose 0); the result lines still print")
    return parser


def _techniques() -> dict:
    from tlkeras.adapt.catalog import TECHNIQUES  # argparse only; no TensorFlow import

    return TECHNIQUES


def _print_summary(result) -> None:
    m = result.metrics
    split = m["final_split"]
    if "accuracy" in m["final"]:
        print(f"val accuracy {m['val']['accuracy']:.3f} | {split} accuracy {m['final']['accuracy']:.3f} | macro F1 {m['final']['f1_macro']:.3f}")
    else:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in m["final"].items() if isinstance(v, float))
        print(f"{split}: {shown}")
    t = result.timings
    print(f"phase 1 {t['phase1']:.1f}s | phase 2 {t['phase2']:.1f}s | total {t['total']:.1f}s")
    if result.run_dir is not None:
        print(f"run directory: {result.run_dir}")
        _say_report(result.run_dir)


def _say_report(run_dir) -> None:
    page = Path(run_dir) / "report.html"
    if page.is_file():
        print(f"report: {page}")


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from tlkeras.core.backbones import get_backbone, list_backbones

    if args.list_backbones:
        for name in list_backbones("image"):
            print(get_backbone(name).describe())
        print("hub:<handle-or-dir>: a TF-Hub feature-vector model (URL or local SavedModel directory)")
        print("\ntext encoders (for text data: a CSV with a text column or folders of .txt files):")
        for name in list_backbones("text"):
            print(get_backbone(name).describe())
        print("hub:<handle-or-dir> on text: a BERT-family encoder with --preprocess <its preprocessing model>, or a sentence encoder taking strings")
        return 0
    config = cli.config_from_args(args)  # takes the run-config flags, ignores the others
    if args.audit and not args.resume and config.data.source is not None:
        from tlkeras.audit.run import audit_before_training

        audit_before_training(config)
    if args.technique is not None or args.unlabeled is not None or args.target_test is not None:
        return _train_with_unlabeled(config, args.technique, args.unlabeled, args.target_test, resume=args.resume)
    if args.resume:
        from tlkeras.train.run import train_model

        _print_summary(train_model(config, resume=True, report_writer=_grad_cam_report))
        return 0
    if args.demo is not None and config.data.source is not None:
        from tlkeras.errors import TLKerasError

        raise TLKerasError(f"--demo {args.demo} runs on data shipped with tlkeras; drop --data to run it, or drop --demo to train on your data")
    if config.data.source is None and args.demo == "shapes":
        from tlkeras.train.demo import run_demo

        run_demo(config, explicit=set(vars(args)))  # its run writes report.html, as every train_model run does
        return 0
    if config.data.source is None:
        if os.environ.get("TF_CONFIG"):
            from tlkeras.errors import TLKerasError

            raise TLKerasError("the quickstart runs on one machine; pass --data to train across workers")
        from tlkeras.quickstart.run import run_quickstart

        run_quickstart(config, explicit=set(vars(args)))
        return 0
    from tlkeras.train.run import train_model

    _print_summary(train_model(config, report_writer=_grad_cam_report))
    return 0


def _grad_cam_report(run_dir, result):
    """The CLI's ``report.html``: the library's page plus Grad-CAM overlays of the mistakes."""
    from tlkeras.explain.report import write_train_report

    return write_train_report(run_dir, result)


def _write_report(run_dir, result) -> None:
    """``report.html`` of a run trained outside :func:`train_model` (the techniques' runs)."""
    if run_dir is not None and result.config.report:
        from tlkeras.train.run import write_report

        write_report(run_dir, result, _grad_cam_report)
        _say_report(run_dir)


def _train_with_unlabeled(config, technique, unlabeled, target_test, *, resume: bool) -> int:
    from tlkeras.errors import TLKerasError

    if technique is None:
        raise TLKerasError("--unlabeled and --target-test need --technique; add --technique dann, mmd, importance, pseudo-label, fixmatch or simclr")
    if unlabeled is None:
        raise TLKerasError(f"--technique {technique} needs --unlabeled <folder|file.csv> with the unlabelled images")
    if resume:
        raise TLKerasError("--resume applies to plain two-phase runs; rerun the technique without --resume")
    if config.data.source is None:
        raise TLKerasError("--technique needs labelled data: pass --data <folder|file.csv>")
    from tlkeras.adapt.catalog import print_summary
    from tlkeras.adapt.run import train_with_unlabeled

    method = _techniques()[technique][0]
    print_summary(result := train_with_unlabeled(config, method, unlabeled, target_test=target_test))
    _write_report(result.run_dir, result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.train``; returns the exit code."""
    return cli.run("tlkeras.train", _main, argv,
                   interrupted="interrupted; a run with a finished epoch continues with --resume --name <name>")


if __name__ == "__main__":
    sys.exit(main())
