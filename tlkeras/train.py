"""``python -m tlkeras.train``: two-phase transfer training from the command line.

With no ``--data`` (and no data source in ``--config``) it runs the embedded offline demo:
transfer from a backbone pretrained on generated images, beside a from-scratch baseline.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from tlkeras import cli

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tlkeras.train",
        description=(
            "Train a transfer-learning model in two phases (frozen backbone, then fine-tuning) and "
            "write runs/<name>/. Without --data, run the embedded offline demo."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--list-backbones", action="store_true", help="print the registered backbones and exit")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the interrupted run --name (under --output-dir) from its last completed epoch, "
        "with the config it was started with",
    )
    cli.add_config_flags(parser)
    return parser


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


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from tlkeras.backbones import get_backbone, list_backbones

    if args.list_backbones:
        for name in list_backbones():
            print(get_backbone(name).describe())
        print("hub:<handle-or-dir>: a TF-Hub feature-vector model (URL or local SavedModel directory)")
        return 0
    config = cli.config_from_args(args)
    if args.resume:
        from tlkeras.training import train_model

        _print_summary(train_model(config, resume=True))
        return 0
    if config.data.source is None:
        from tlkeras.demo import run_demo

        run_demo(config, explicit=set(vars(args)))
        return 0
    from tlkeras.training import train_model

    _print_summary(train_model(config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.train``; returns the exit code."""
    return cli.run("tlkeras.train", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
