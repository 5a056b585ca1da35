"""Shared command-line plumbing: dataclass fields become flags, errors become one line.

Every CLI (``python -m tlkeras.train``, ``... .evaluate``, ...) is a thin layer: it parses flags
into the same option dataclasses the Python API takes (:func:`add_option_flags`,
:func:`add_config_flags`) and calls the library. :func:`run` maps every failure the same way:

- :class:`~tlkeras.errors.TLKerasError` (and its typed subclasses): ``<prog>: error: <message>`` on
  one line of stderr, exit code ``error.exit_code`` (2; 3 for a failed export gate);
- a command line the parser rejects: one line (not the whole usage), exit code 2
  (:class:`ArgumentParser`);
- Ctrl-C: one line, exit code 130;
- a full disk, an unreadable file, text that is not UTF-8, memory exhaustion: one line, exit
  code 2.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import math
import os
import re
import sys
import typing
import warnings
from typing import Any, Callable, Sequence

from tlkeras.errors import DiskFullError, TLKerasError, UsageError

__all__ = [
    "ArgumentParser",
    "add_config_flags",
    "add_option_flags",
    "options_from_args",
    "with_fix",
    "config_from_args",
    "run",
    "quiet_tensorflow",
]

# Flags whose name differs from the field's.
_FLAG_NAMES = {("data", "source"): "data"}


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are one line, not the whole usage.

    ``error()`` raises :class:`~tlkeras.errors.UsageError` (which :func:`run` prints as one line
    with exit code 2) instead of printing the 30-line usage and exiting. Subcommand parsers
    inherit the class. ``--help`` still prints the full help and exits 0.
    """

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        raise UsageError(f"{message}; see {self.prog} --help")

    def _get_value(self, action, arg_string):  # noqa: ANN001 - argparse's hook for every converted value
        # float("nan") and float("inf") parse; no tlkeras option means either, and NaN slips
        # through range checks (every comparison with it is false).
        value = super()._get_value(action, arg_string)
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentError(action, f"{arg_string!r} is not a finite number; pass a number such as 0.5")
        return value


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
        if not stripped:
            current = None  # a blank line ends the section's last entry (class notes may follow)
            continue
        match = re.match(r"^(\w+): (.*)$", stripped)
        if match and line.startswith(" " * 8) and not line.startswith(" " * 12):
            current = match.group(1)
            helps[current] = match.group(2)
        elif current:
            helps[current] += " " + stripped
    # Sphinx markup reads badly in --help: ``x`` -> x, :func:`x` -> x.
    plain = {k: re.sub(r":\w+:`~?([^`]+)`", r"\1", v).replace("``", "") for k, v in helps.items()}
    return {k: v.replace("%", "%%") for k, v in plain.items()}


def _sequence(kind: type, flag: str) -> Callable[[str], tuple]:
    """An argparse type for tuple fields: comma-separated values of ``kind``."""

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(p) for p in re.split(r"[,\s]+", text.strip()) if p)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes comma-separated {kind.__name__} values, got {text!r}") from None

    return parse


def add_option_flags(
    parser: argparse.ArgumentParser,
    cls,
    *,
    title: str | None = None,
    dest_prefix: str = "",
    flag_prefix: str | None = None,
    names: dict[str, str] | None = None,
    skip: Sequence[str] = (),
    list_nargs: str = "+",
) -> argparse._ArgumentGroup:
    """Adds one flag per field of the options dataclass ``cls``; help comes from its docstring.

    A field ``foo_bar`` becomes ``--foo-bar`` (``names`` renames fields); bool fields get
    ``--x/--no-x``; ``list[T]`` fields take several values; ``tuple[T, ...]`` fields take one
    comma-separated value. Flags default to "not given" (``argparse.SUPPRESS``), so only explicit
    flags land in the namespace, under ``dest_prefix + field``. A flag the parser already has
    (e.g. ``--batch-size`` of the run config) is renamed ``--<flag_prefix>-<field>``.

    Returns the argument group (``title``), for flags of the same topic that are not fields.

    Side effects: adds the group to ``parser``.
    """
    names = names or {}
    group = parser.add_argument_group(title or f"{cls.__name__} options")
    helps = _field_help(cls)
    hints = typing.get_type_hints(cls)
    taken = set(parser._option_string_actions)  # noqa: SLF001 - argparse has no public lookup
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + names.get(f.name, f.name).replace("_", "-")
        if flag in taken and flag_prefix:
            flag = f"--{flag_prefix}-{f.name.replace('_', '-')}"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        # None means "decided later" (the run's value, an automatic choice): the docstring says by what.
        text = helps.get(f.name, "") if default is None else f"{helps.get(f.name, '')} (default: {shown})"
        kwargs: dict[str, Any] = {"dest": dest_prefix + f.name, "default": argparse.SUPPRESS, "help": text}
        hint = hints[f.name]
        inner = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        origin = typing.get_origin(hint)
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif origin is list:
            kind = typing.get_args(hint)[0]
            group.add_argument(flag, nargs=list_nargs, type=kind, metavar=kind.__name__.upper(), **kwargs)
        elif origin is tuple:
            kind = typing.get_args(hint)[0]
            group.add_argument(flag, type=_sequence(kind, flag), metavar=f"{kind.__name__.upper()},...", **kwargs)
        else:
            # A field that also takes text (``float | str``: "10m", "300KB") is parsed by its validate().
            kind = inner[0] if inner[0] in (int, float) and str not in inner else str
            group.add_argument(flag, type=kind, metavar=kind.__name__.upper(), **kwargs)
    return group


def with_fix(exc: TLKerasError, flags: dict[str, str]) -> TLKerasError:
    """Adds "what to do" to a validation message that only says what is wrong.

    A message without a hint (no ``;``) gets ``; change <flag>`` for the option keys it names
    (``flags`` maps a key such as ``phase1_lr`` to its flag), or ``; see --help``. Returns a new
    error of the same type, or ``exc`` when it already says what to do.
    """
    text = str(exc)
    if ";" in text:
        return exc
    named = list(dict.fromkeys(flag for key, flag in flags.items() if re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", text)))
    fix = f"change {' or '.join(named[:2])}" if named else "see --help for the valid values"
    try:
        return type(exc)(f"{text}; {fix}", exc.exit_code)
    except TypeError:  # a subclass with its own constructor (it carries more than a message)
        return exc


def options_from_args(args: argparse.Namespace, cls, *, dest_prefix: str = "", names: dict[str, str] | None = None, **fixed):
    """Builds ``cls`` from the flags :func:`add_option_flags` added (only those given) plus ``fixed``.

    Calls ``validate()`` when the class has one, so a bad value fails before any work starts; its
    error names the flag to change (``names`` as given to :func:`add_option_flags`).
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {dest[len(dest_prefix):]: value for dest, value in vars(args).items()
              if dest.startswith(dest_prefix) and dest[len(dest_prefix):] in fields}
    values.update(fixed)
    try:
        options = cls(**values)
        validate = getattr(options, "validate", None)
        if callable(validate):
            options = validate() or options
    except TLKerasError as exc:
        flags = {name: "--" + (names or {}).get(name, name).replace("_", "-") for name in fields}
        raise with_fix(exc, flags) from None
    return options


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per RunConfig field (``--backbone``, ``--phase1-epochs``, ...) plus ``--config``.

    Flags default to "not given", so values from ``--config`` survive unless overridden.
    """
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    parser.add_argument("--config", metavar="YAML", help="a run config YAML (e.g. runs/<name>/config.yaml); flags override it")
    for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
        renames = {name: flag for (sec, name), flag in _FLAG_NAMES.items() if sec == section}
        add_option_flags(parser, cls, title=f"{section} options", dest_prefix=f"{section}.", names=renames, list_nargs="*")
    add_option_flags(parser, RunConfig, title="run options", skip=("data", "model", "train"))


def config_from_args(args: argparse.Namespace):
    """Builds a validated RunConfig: ``--config`` YAML first (if given), then explicit flags."""
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig, config_from_dict, config_to_dict, load_config

    try:
        base = load_config(args.config) if getattr(args, "config", None) else RunConfig()
        values = config_to_dict(base)
        for dest, value in vars(args).items():
            if dest == "config" or dest.startswith("_"):
                continue
            section, _, name = dest.partition(".")
            if name:
                if section in ("data", "model", "train"):
                    values[section][name] = value
            elif dest in values:
                values[dest] = value
        return config_from_dict(values)
    except TLKerasError as exc:
        flags = {}
        for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig), (None, RunConfig)):
            for f in dataclasses.fields(cls):
                flag = "--" + _FLAG_NAMES.get((section, f.name), f.name).replace("_", "-")
                flags[f.name] = f"{flag} (or {section}.{f.name} in a --config YAML)" if section else flag
        raise with_fix(exc, flags) from None


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
    # 3: TensorFlow's C++ runtime prints ERROR-level notes that are not errors of the run (e.g.
    # "oneDNN supports DT_UINT8 only on platforms with AVX-512"); real failures still raise.
    if not os.environ.get("TLKERAS_SHOW_TF_LOGS"):  # TLKERAS_SHOW_TF_LOGS=1 shows everything
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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
            print(f"tlkeras: warning: {' '.join(str(message).splitlines())}", file=sys.stderr)

    warnings.showwarning = one_line


def _fail(prog: str, message: str, code: int) -> int:
    print(f"{prog}: error: {' '.join(str(message).splitlines())}", file=sys.stderr)
    return code


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is in ``exc``'s chain of causes and contexts."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def run(
    prog: str,
    main: Callable[[Sequence[str] | None], int | None],
    argv: Sequence[str] | None = None,
    *,
    interrupted: str = "interrupted; nothing half-written was kept, run the same command again",
) -> int:
    """Runs a CLI ``main`` and maps every expected failure to one stderr line and an exit code.

    Args:
        prog: the name printed before ``error:`` (``tlkeras.train``).
        main: parses ``argv`` and does the work; returns an exit code (None: 0).
        argv: the arguments (None: ``sys.argv[1:]``).
        interrupted: what Ctrl-C prints after ``<prog>: `` (say how to continue).

    Returns:
        0 on success, ``error.exit_code`` for a :class:`~tlkeras.errors.TLKerasError` (2; 3 for a
        failed export gate), 2 for an OS-level problem (missing permission, full disk, non-UTF-8
        text, out of memory), 130 on Ctrl-C. Anything else is a bug and keeps its traceback.
    """
    from tlkeras.runs import disk_full_message

    restore = _terminate_as_interrupt()
    try:
        quiet_tensorflow()
        try:
            return int(main(argv) or 0)
        except Exception as exc:
            # Ctrl-C lands between any two bytecodes; inside TensorFlow's graph building it can
            # surface as another error raised while handling it (seen: a SystemError from a list
            # operation cut short). That is still the user's interrupt, not a bug.
            if _caused_by_interrupt(exc):
                raise KeyboardInterrupt from None
            raise
    except TLKerasError as exc:
        return _fail(prog, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except UnicodeError as exc:
        where = f" ({exc.reason} at byte {exc.start})" if isinstance(exc, UnicodeDecodeError) else ""
        return _fail(prog, f"a text input (YAML, CSV, labels.txt or a file name) is not valid UTF-8{where}; "
                           f"re-save it as UTF-8 or rename the file", 2)
    except MemoryError:
        return _fail(prog, "out of memory; lower --batch-size or --image-size, or use fewer images", 2)
    except OSError as exc:
        full = disk_full_message(exc)
        if full:
            return _fail(prog, full, DiskFullError.exit_code)
        if exc.errno is None:
            raise
        # A permissions problem or a vanished file is not a bug in tlkeras: say what and where.
        where = f" ({exc.filename})" if exc.filename else ""
        hint = {errno.EACCES: "; check its permissions", errno.EPERM: "; check its permissions",
                errno.ENOENT: "; check the path", errno.EISDIR: "; pass a file, not a folder",
                errno.ENOTDIR: "; pass a folder, not a file"}.get(exc.errno, "")
        return _fail(prog, f"{exc.strerror or exc}{where}{hint}", 2)
    except Exception as exc:  # noqa: BLE001 - only TensorFlow's disk-full errors are caught here
        full = disk_full_message(exc)
        if full is None:
            raise
        return _fail(prog, full, DiskFullError.exit_code)
    finally:
        restore()


def _terminate_as_interrupt() -> Callable[[], None]:
    """Makes SIGTERM (``kill``, a job scheduler's stop) unwind like Ctrl-C, so the staged
    directories and temporary folders are removed on the way out; returns what restores the old
    handler. Only the main thread can install signal handlers; elsewhere this does nothing."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)
