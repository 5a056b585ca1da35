"""``python -m tlkeras.audit DATA``: duplicates, train/val/test leakage, likely label errors and
outliers of an image data set, read the way ``tlkeras.train`` reads it.

Writes a report folder (``audit.json``, ``audit.md``, a self-contained ``audit.html``) and prints a
one-paragraph summary; ``--write-clean FILE.csv`` writes the data without the flagged items. Images
are never moved, renamed or deleted. Exit code 0 whatever is found; 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from typing import Sequence

from tlkeras import cli

__all__ = ["main", "build_parser"]


def _option_help(cls) -> dict[str, str]:
    """{field: text} from the ``Attributes:`` section of the options' docstring."""
    helps: dict[str, str] = {}
    current = None
    for line in (cls.__doc__ or "").split("Attributes:", 1)[-1].splitlines():
        match = re.match(r"^ {8}(\w+): (.*)$", line)
        if match:
            current = match.group(1)
            helps[current] = match.group(2)
        elif line.strip() and current:
            helps[current] += " " + line.strip()
    return {k: v.replace("%", "%%") for k, v in helps.items()}


def build_parser() -> argparse.ArgumentParser:
    from tlkeras.audit.run import AuditOptions  # a dataclass; no TensorFlow import

    parser = cli.ArgumentParser(
        prog="python -m tlkeras.audit",
        description=(
            "Audit an image data set (a folder of class folders, optionally under train/ val/ test/, or a CSV "
            "of path,label[,split]) for exact and near duplicates, leakage between splits, likely label errors "
            "and outliers. Reads the data as tlkeras.train does (same flags, same split seed)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("source", nargs="?", metavar="DATA", help="the image folder or CSV (or --data, or --config)")
    audit = parser.add_argument_group("audit options")
    helps = _option_help(AuditOptions)
    hints = typing.get_type_hints(AuditOptions)
    for f in dataclasses.fields(AuditOptions):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        if hint is bool:
            audit.add_argument(flag, dest=f"_audit.{f.name}", action=argparse.BooleanOptionalAction, default=f.default, help=helps.get(f.name))
        else:
            kind = next((a for a in (typing.get_args(hint) or (hint,)) if a is not type(None)), str)
            metavar = "CSV" if f.name == "write_clean" else ("DIR" if f.name == "report_dir" else kind.__name__.upper())
            audit.add_argument(flag, dest=f"_audit.{f.name}", type=kind, default=f.default, metavar=metavar, help=helps.get(f.name))
    cli.add_config_flags(parser)
    # The training recipe does not change what the audit sees: keep those flags out of --help.
    for action in parser._actions:
        if action.dest.startswith("train."):
            action.help = argparse.SUPPRESS
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from tlkeras.audit.run import AuditOptions, audit_data
    from tlkeras.errors import TLKerasError

    values = {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith("_audit.")}
    source = args.source
    for key in [k for k in vars(args) if k.startswith("_audit.") or k == "source"]:
        delattr(args, key)
    config = cli.config_from_args(args)
    if source is not None:
        if getattr(args, "data.source", None) is not None and getattr(args, "data.source") != source:
            raise TLKerasError("give the data once: either DATA or --data")
        config.data.source = source
    if config.data.source is None:
        raise TLKerasError("no data given; pass DATA (an image folder or a CSV of path,label), --data or --config")
    result = audit_data(config, AuditOptions(**values))
    print(result.summary())
    if result.clean_csv is not None:
        kept = sum(1 for _ in open(result.clean_csv, encoding="utf-8")) - 1
        print(f"clean CSV: {result.clean_csv} ({kept} of {result.findings['counts']['images']} images)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.audit``; returns the exit code."""
    return cli.run("tlkeras.audit", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
