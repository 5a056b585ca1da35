"""``python -m tlkeras.adapt``: transfer learning with unlabelled images, from the command line.

One subcommand per technique; each takes every ``tlkeras.train`` flag (``--data``, ``--backbone``,
``--phase1-epochs``, ``--config`` ...) plus ``--unlabeled`` and the technique's own options, and
writes the same run directory as ``tlkeras.train``::

    python -m tlkeras.adapt dann --data labelled/ --unlabeled target_images/ --target-test target_test/
    python -m tlkeras.adapt mmd --data labelled/ --unlabeled target_images/ --weight 1.0
    python -m tlkeras.adapt importance --data labelled/ --unlabeled target_images/
    python -m tlkeras.adapt pseudo-label --data few_labels/ --unlabeled unlabelled/ --threshold 0.9 --rounds 3
    python -m tlkeras.adapt fixmatch --data few_labels/ --unlabeled unlabelled/ --threshold 0.95
    python -m tlkeras.adapt simclr --data labelled/ --unlabeled unlabelled/ --epochs 20
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from tlkeras import cli
from tlkeras.adapt.catalog import TECHNIQUES, print_summary

__all__ = ["main", "build_parser", "print_summary", "TECHNIQUES"]

_SKIP_FIELDS = {"method"}  # fixed by the subcommand


def _options_class(path: str):
    # Imported lazily: the option classes' modules import TensorFlow, which --help should not wait for.
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m tlkeras.adapt",
        description=(
            "Train with unlabelled images: domain adaptation (dann, mmd, importance), semi-supervised "
            "(pseudo-label, fixmatch) or self-supervised (simclr). Writes runs/<name>/ like tlkeras.train."
        ),
    )
    subparsers = parser.add_subparsers(dest="technique", metavar="TECHNIQUE", required=True)
    for name, (method, path, text) in TECHNIQUES.items():
        sub = subparsers.add_parser(name, help=text, description=text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        sub.add_argument("--unlabeled", required=True, metavar="PATH",
                         help="unlabelled images: a folder (searched recursively; subfolder names are ignored) or a CSV with a path column"
                         + (" from the target domain" if method in ("dann", "mmd", "importance") else ""))
        if method in ("dann", "mmd", "importance"):
            sub.add_argument("--target-test", metavar="DIR", default=None,
                             help="optional labelled target images (class folders) to report target accuracy on; never trained on")
        cli.add_config_flags(sub)
        sub.add_argument("--quiet", dest="train.verbose", action="store_const", const=0, default=argparse.SUPPRESS,
                         help="no per-epoch progress (the same as --verbose 0); the result lines still print")
        prefix = "adapt" if method in ("dann", "mmd") else method.replace("_", "-")
        cli.add_option_flags(sub, _options_class(path), title=f"{prefix} options", dest_prefix="opt.", flag_prefix=prefix, skip=_SKIP_FIELDS)
    return parser


def _options_from_args(args: argparse.Namespace, method: str, path: str):
    fixed = {"method": method} if method in ("dann", "mmd") else {}
    return cli.options_from_args(args, _options_class(path), dest_prefix="opt.", **fixed)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    method, path, _ = TECHNIQUES[args.technique]
    options = _options_from_args(args, method, path)
    # The run-config flags alone (technique options live under "opt." and are not config keys).
    config = cli.config_from_args(argparse.Namespace(**{k: v for k, v in vars(args).items() if not k.startswith("opt.")}))
    if config.data.source is None:
        from tlkeras.errors import ConfigError

        raise ConfigError("no labelled data given; pass --data <folder|file.csv> (the embedded demo has no unlabelled images)")
    from tlkeras.adapt.run import train_with_unlabeled

    result = train_with_unlabeled(config, method, args.unlabeled, options, target_test=getattr(args, "target_test", None))
    print_summary(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.adapt``; returns the exit code."""
    return cli.run("tlkeras.adapt", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
