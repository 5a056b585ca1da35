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
import dataclasses
import sys
import typing
from typing import Any, Sequence

from tlkeras import cli
from tlkeras.adapt.catalog import TECHNIQUES, print_summary

__all__ = ["main", "build_parser", "print_summary", "TECHNIQUES"]

_SKIP_FIELDS = {"method"}  # fixed by the subcommand


def _options_class(path: str):
    # Imported lazily: the option classes' modules import TensorFlow, which --help should not wait for.
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _doc_help(cls) -> dict[str, str]:
    helps: dict[str, str] = {}
    current = None
    in_attrs = False
    for line in (cls.__doc__ or "").splitlines():
        stripped = line.strip()
        if stripped == "Attributes:":
            in_attrs = True
            continue
        if not in_attrs or not stripped:
            continue
        head, sep, rest = stripped.partition(": ")
        if sep and head.isidentifier() and line.startswith(" " * 8) and not line.startswith(" " * 12):
            current = head
            helps[current] = rest
        elif current:
            helps[current] += " " + stripped
    return {k: v.replace("%", "%%") for k, v in helps.items()}


def _add_option_flags(parser: argparse.ArgumentParser, cls, prefix: str) -> None:
    group = parser.add_argument_group(f"{prefix} options")
    helps = _doc_help(cls)
    hints = typing.get_type_hints(cls)
    taken = set(parser._option_string_actions)  # noqa: SLF001 - argparse has no public lookup
    for f in dataclasses.fields(cls):
        if f.name in _SKIP_FIELDS:
            continue
        flag = "--" + f.name.replace("_", "-")
        if flag in taken:  # e.g. --unfreeze, --batch-size already mean the run config's
            flag = f"--{prefix}-{f.name.replace('_', '-')}"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kwargs: dict[str, Any] = {"dest": f"opt.{f.name}", "default": argparse.SUPPRESS,
                                  "help": f"{helps.get(f.name, '')} (default: {default})"}
        hint = hints[f.name]
        inner = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(hint) is list:
            kind = typing.get_args(hint)[0]
            group.add_argument(flag, nargs="+", type=kind, metavar=kind.__name__.upper(), **kwargs)
        else:
            kind = inner[0] if inner[0] in (int, float) else str
            group.add_argument(flag, type=kind, metavar=kind.__name__.upper(), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        _add_option_flags(sub, _options_class(path), "adapt" if method in ("dann", "mmd") else method.replace("_", "-"))
    return parser


def _options_from_args(args: argparse.Namespace, method: str, path: str):
    cls = _options_class(path)
    values = {dest[4:]: value for dest, value in vars(args).items() if dest.startswith("opt.")}
    if method in ("dann", "mmd"):
        values["method"] = method
    return cls(**values).validate()


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    method, path, _ = TECHNIQUES[args.technique]
    options = _options_from_args(args, method, path)
    # The run-config flags alone (technique options live under "opt." and are not config keys).
    config = cli.config_from_args(argparse.Namespace(**{k: v for k, v in vars(args).items() if not k.startswith("opt.")}))
    if config.data.source is None:
        from tlkeras.errors import TLKerasError

        raise TLKerasError("no labelled data given; pass --data <folder|file.csv> (the embedded demo has no unlabelled images)")
    from tlkeras.adapt.run import train_with_unlabeled

    result = train_with_unlabeled(config, method, args.unlabeled, options, target_test=getattr(args, "target_test", None))
    print_summary(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.adapt``; returns the exit code."""
    return cli.run("tlkeras.adapt", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
