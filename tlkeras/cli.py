"""Shared command-line plumbing: dataclass fields become flags, errors become one line.

Every CLI (``python -m tlkeras.train``, ``... .evaluate``, ...) is a thin layer: it parses flags
into the same config dataclasses the Python API takes and calls the library. Bad input raises
:class:`~tlkeras.errors.TLKerasError`, which :func:`run` prints as ``<prog>: error: <message>`` on
one line of stderr, exiting 2 without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
import typing
import warnings
from typing import Any, Callable, Sequence

from tlkeras.errors import TLKerasError

__all__ = ["add_config_flags", "config_from_args", "run", "quiet_tensorflow"]

# Flags whose name differs from the field's.
_FLAG_NAMES = {("data", "source"): "data"}


def _field_help(cls) -> dict[str, str]:
    """Reads the ``Attributes:`` section of a Google-style class docstring into {field: help}."""
    doc = cls.__doc__ or ""
    helps: dict[str, str] = {}
    current = None
    in_attrs = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped == "Attributes:":
            in_attrs = True
            continue
        if not in_attrs:
            continue
        match = re.match(r"^(\w+): (.*)$", stripped)
        if match and line.startswith(" " * 8) and not line.startswith(" " * 12):
            current = match.group(1)
            helps[current] = match.group(2)
        elif stripped and current:
            helps[current] += " " + stripped
    return {k: v.replace("%", "%%") for k, v in helps.items()}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per RunConfig field (``--backbone``, ``--phase1-epochs``, ...) plus ``--config``.

    Flags default to "not given", so values from ``--config`` survive unless overridden.
    """
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    parser.add_argument("--config", metavar="YAML", help="a run config YAML (e.g. runs/<name>/config.yaml); flags override it")
    for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig), (None, RunConfig)):
        group = parser.add_argument_group(f"{section} options" if section else "run options")
        helps = _field_help(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if section is None and f.name in ("data", "model", "train"):
                continue
            flag = "--" + _FLAG_NAMES.get((section, f.name), f.name).replace("_", "-")
            dest = f"{section}.{f.name}" if section else f.name
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            text = f"{helps.get(f.name, '')} (default: {default})"
            hint = hints[f.name]
            kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": text}
            if hint is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            elif typing.get_origin(hint) is list:
                group.add_argument(flag, nargs="*", type=int, metavar="N", **kwargs)
            else:
                inner = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
                kind = inner[0] if inner[0] in (int, float) else str
                group.add_argument(flag, type=kind, metavar=kind.__name__.upper(), **kwargs)


def config_from_args(args: argparse.Namespace):
    """Builds a validated RunConfig: ``--config`` YAML first (if given), then explicit flags."""
    from tlkeras.config import RunConfig, config_from_dict, config_to_dict, load_config

    base = load_config(args.config) if getattr(args, "config", None) else RunConfig()
    values = config_to_dict(base)
    for dest, value in vars(args).items():
        if dest == "config" or dest.startswith("_"):
            continue
        section, _, name = dest.partition(".")
        if name:
            values[section][name] = value
        elif dest in values:
            values[dest] = value
    return config_from_dict(values)


def _import_backend_silently() -> None:
    """Imports TensorFlow with file descriptor 2 pointed at /dev/null.

    TensorFlow's C++ start-up lines (oneDNN, CUDA stubs) are printed by absl before its log level
    can be set, so no environment variable silences them; a CLI whose only stderr line should be
    the error message has to hide them while importing.
    """
    if "tensorflow" in sys.modules or os.environ.get("TLKERAS_SHOW_TF_LOGS"):
        import tlkeras._backend  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        from tlkeras._backend import tf

        # Device discovery prints its own C++ lines (e.g. cuInit on a machine without a GPU
        # driver); trigger it now, while stderr is still pointed away.
        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow() -> None:
    """Keeps TensorFlow/absl/Python warnings from cluttering the CLI's stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _import_backend_silently()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover
        pass
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)

    def one_line(message, category, filename, lineno, file=None, line=None):
        if category is UserWarning and "tlkeras" in str(filename):
            print(f"tlkeras: warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line


def run(prog: str, main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Runs a CLI ``main``; maps TLKerasError and Ctrl-C to one stderr line and an exit code."""
    quiet_tensorflow()
    try:
        return int(main(argv) or 0)
    except TLKerasError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; a run with a finished epoch continues with --resume --name <name>", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno is None:
            raise
        # A full disk or a permissions problem is not a bug in tlkeras: say what and where.
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{prog}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
