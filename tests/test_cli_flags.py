"""One spelling across the command-line tools: ``--quiet`` for less output, ``--no-write`` for "print,
write nothing", ``--verbose INT`` for the Keras progress level; no other spelling of either."""

from __future__ import annotations

import argparse
import importlib
import re

import pytest

from tlkeras import cli

CLIS = ("train", "evaluate", "export", "benchmark", "optimize", "tune", "adapt", "distill", "explain", "doctor", "audit")
# Commands whose progress or chatter can be turned off; the others print only their result.
QUIET = {"train", "export", "optimize", "tune", "adapt", "distill"}
# Commands that can run and print without writing (the rest exist to write their files).
NO_WRITE = {"evaluate", "benchmark"}


def parsers(name: str) -> list[argparse.ArgumentParser]:
    """The command's parser, or each sub-command's (adapt)."""
    parser = importlib.import_module(f"tlkeras.{name}.__main__").build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001 - no public lookup
    return [p for a in subs for p in a.choices.values()] or [parser]


def help_flags(name: str, capsys) -> list[set[str]]:
    """The flags each ``--help`` of the command lists (one set per sub-command of adapt): what a user sees."""
    main = importlib.import_module(f"tlkeras.{name}.__main__").main
    heads = [[sub] for sub in ("dann", "mmd", "importance", "pseudo-label", "fixmatch", "simclr")] if name == "adapt" else [[]]
    out = []
    for head in heads:
        with pytest.raises(SystemExit) as done:
            main([*head, "--help"])
        assert done.value.code == 0
        out.append(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", capsys.readouterr().out)))
    return out


@pytest.mark.parametrize("name", CLIS)
def test_quiet_and_no_write_are_spelled_one_way(name, capsys):
    for given in help_flags(name, capsys):
        assert ("--quiet" in given) == (name in QUIET), f"{name}: --quiet {'missing' if name in QUIET else 'unexpected'}"
        assert ("--no-write" in given) == (name in NO_WRITE), name
        other = given & {"--silent", "--no-verbose", "--dry-run", "--print-only", "--no-output"}
        assert not other, f"{name} spells quiet/no-write differently: {sorted(other)}"


@pytest.mark.parametrize("name", ["train", "distill"])
def test_quiet_is_verbose_zero_in_the_run_config(name):
    parser = parsers(name)[0]
    positional = [] if name == "train" else ["runs/teacher"]
    assert cli.config_from_args(parser.parse_args([*positional, "--quiet"])).train.verbose == 0
    assert cli.config_from_args(parser.parse_args([*positional, "--verbose", "1"])).train.verbose == 1
    assert cli.config_from_args(parser.parse_args(positional)).train.verbose == 2  # the default is untouched


def test_quiet_in_adapt_and_optimize():
    for sub in parsers("adapt"):
        args = sub.parse_args(["--unlabeled", "u", "--quiet"])
        assert cli.config_from_args(args).train.verbose == 0
    args = parsers("optimize")[0].parse_args(["runs/x", "--qat", "--quiet"])
    assert vars(args)["finetune.verbose"] == 0
