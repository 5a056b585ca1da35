"""``python -m tlkeras.tune``: hyperparameter search with KerasTuner over tlkeras' two-phase training.

Every ``tlkeras.train`` flag sets the base config (``--data``, ``--phase1-epochs`` ... are the
settings of a full trial). A searchable hyperparameter given as an explicit flag (``--dropout 0.2``)
is pinned; ``--space`` (YAML) and ``--hp NAME=SPEC`` declare the rest of the search space.
Rerunning the same command (or ``--resume DIR``) continues an interrupted search. See
docs/tuning.md for the space syntax and for distributed search (chief and workers).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from tlkeras import cli
from tlkeras.errors import TLKerasError

__all__ = ["main", "build_parser"]

# Explicit base-config flags that pin a hyperparameter.
_PIN_FLAGS = {
    "model.backbone": "backbone",
    "model.alpha": "alpha",
    "data.image_size": "image_size",
    "model.dropout": "dropout",
    "model.hidden_units": "hidden_units",
    "train.phase1_lr": "phase1_lr",
    "train.phase2_lr_factor": "phase2_lr_factor",
    "train.unfreeze": "unfreeze",
    "data.augment": "augment",
    "train.label_smoothing": "label_smoothing",
    "train.weight_decay": "weight_decay",
}
# SearchOptions fields the CLI sets itself: verbose from --quiet, pareto from --objective pareto,
# weights_for from --arch-weights.
_NOT_FLAGS = ("verbose", "pareto", "weights_for")
_CLI_DESTS = ("space", "hp", "arch_weights", "resume", "print_space", "quiet")
_RESUME_OK = {"resume", "max_trials", "time_budget", "quiet", "train.verbose"}


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m tlkeras.tune",
        description=(
            "Search transfer-learning hyperparameters with KerasTuner. Each trial builds and trains "
            "the model exactly like python -m tlkeras.train; results go to <output-dir>/<name>/ "
            "(trials.csv, trials.md, best.yaml, objective.png). Rerun the same command to resume."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    from tlkeras.tune.search import SearchOptions

    # Every SearchOptions field is a flag (help from its docstring); the CLI sets the rest itself.
    group = cli.add_option_flags(parser, SearchOptions, title="search options", skip=_NOT_FLAGS)
    S = argparse.SUPPRESS
    group.add_argument("--space", metavar="YAML", default=S, help="search space file: hyperparameter -> value (pinned), [list] (choice) or {min, max, step, sampling} (range)")
    group.add_argument("--hp", metavar="NAME=SPEC", action="append", default=S,
                       help="one search-space entry; SPEC is a value (pinned), a,b,c (choice), lo..hi, lo..hi/log or lo..hi/STEP (range); repeatable, overrides --space")
    group.add_argument("--resume", metavar="DIR", default=S, help="continue the search in DIR with its stored settings (only --max-trials, --time-budget, --quiet, --verbose may change)")
    group.add_argument("--print-space", action="store_true", default=S, help="print the resolved search space and exit")
    group.add_argument("--quiet", action="store_true", default=S, help="no per-trial summaries")
    group.add_argument("--arch-weights", metavar="BACKBONE[@ALPHA]=FILE", action="append", default=S,
                       help="weights file for one architecture of a search over backbones/widths, e.g. mobilenet@0.25=mobilenet_0.25.h5; repeatable")
    cli.add_config_flags(parser)
    return parser


def _pins(args: argparse.Namespace, given: dict) -> dict:
    pins = {}
    for dest, name in _PIN_FLAGS.items():
        if dest not in given:
            continue
        value = given[dest]
        if name == "hidden_units":
            if len(value) > 1:
                raise TLKerasError("--hidden-units with several layers cannot be searched; give one size (or 0) or none")
            value = value[0] if value else 0
        pins[name] = value
    return pins


def _space_overrides(args: argparse.Namespace, given: dict) -> dict:
    from tlkeras.tune.space import load_search_space

    overrides = dict(load_search_space(given["space"])) if "space" in given else {}
    for item in given.get("hp", []):
        name, sep, spec = item.partition("=")
        name, spec = name.strip(), spec.strip()
        if not sep or not name or not spec:
            raise TLKerasError(f"--hp {item!r} is not NAME=SPEC, e.g. --hp dropout=0.1..0.5 or --hp augment=off,light")
        overrides[name] = [s.strip() for s in spec.split(",")] if "," in spec else spec
    for name, value in _pins(args, given).items():
        if name in overrides:
            flag = "--" + next(d for d, n in _PIN_FLAGS.items() if n == name).split(".")[1].replace("_", "-")
            raise TLKerasError(f"{name} is pinned by {flag} and also given in the search space; keep one")
        overrides[name] = value
    return overrides


def _arch_weights(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not key.strip() or not path.strip():
            raise TLKerasError(f"--arch-weights {item!r} is not BACKBONE[@ALPHA]=FILE, e.g. --arch-weights mobilenet@0.25=weights.h5")
        out[key.strip()] = path.strip()
    return out


def _print_summary(result) -> None:
    info = result.info
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(info["status_counts"].items()))
    print(f"{info['trials']} trials ({counts or 'none'}); stopped by {info['stopped_by']}; {info['seconds']:.0f}s")
    if result.best_values is not None:
        shown = ", ".join(f"{k}={v}" for k, v in result.best_values.items())
        print(f"best {result.objective} {result.best_score:.4f} (trial {info['best_trial']}): {shown}")
        print(f"results: {result.directory / 'trials.md'}")
        print(f"retrain the best: python -m tlkeras.train --config {result.directory / 'best.yaml'}")
    device = info.get("device")
    if device:
        counts = info["status_counts"]
        print(f"device: {device['variant']}, {device['limits_text']}; {counts.get('INFEASIBLE', 0)} infeasible trial(s) never trained; "
              f"front: {', '.join(info.get('front') or []) or 'empty'} (plot: {result.directory / 'pareto.png'})")
    winner = info.get("winner")
    if winner and winner.get("bundle"):
        state = "verified" if winner["verified"] else f"NOT verified ({winner['why']})"
        fits = "meets the limits" if winner.get("meets_limits") else f"breaks {', '.join(winner.get('problems') or [])}"
        print(f"winner's bundle: {winner['bundle']} ({state}; {winner['size']} bytes, p50 {winner['latency_ms']:.2f} ms; {fits})")
    elif winner:
        print(f"winner's bundle not exported: {winner['why']}")


def _main(argv: Sequence[str] | None) -> int:
    import dataclasses

    args = build_parser().parse_args(argv)
    given = vars(args)
    from tlkeras.tune.search import SearchOptions, load_search, run_search

    option_dests = [f.name for f in dataclasses.fields(SearchOptions) if f.name not in _NOT_FLAGS]
    from tlkeras.tune.space import SearchSpace

    if "resume" in given:
        extra = sorted(k for k, v in given.items() if k not in _RESUME_OK and not (k == "config" and v is None))
        if extra:
            flag = "--" + extra[0].split(".")[-1].replace("_", "-")
            raise TLKerasError(f"--resume uses the search's stored settings; drop {flag} (only --max-trials, --time-budget, --quiet, --verbose may change)")
        base, space, options = load_search(given["resume"])
    else:
        base = cli.config_from_args(argparse.Namespace(**{k: v for k, v in given.items() if k not in (*option_dests, *_CLI_DESTS)}))
        options = SearchOptions(**{k: given[k] for k in option_dests if k in given})
        options.weights_for = _arch_weights(given.get("arch_weights", []))
        space = _space_overrides(args, given)
    for key in ("max_trials", "time_budget"):
        if key in given:
            setattr(options, key, given[key])
    options.verbose = 0 if given.get("quiet") else 1
    trial_verbose = int(given.get("train.verbose", 0))

    if given.get("print_space"):
        options.validate()
        print(SearchSpace.create(space, base.validate()).describe())
        return 0
    try:
        result = run_search(base, space, options, trial_verbose=trial_verbose)
    except KeyboardInterrupt:
        print("tlkeras.tune: interrupted; finished trials are kept, run the same command (or --resume DIR) to continue", file=sys.stderr)
        return 130
    if result.role == "worker":
        print(f"worker {result.info.get('trials_run', 0)} trial(s) done")
        return 0
    _print_summary(result)
    if result.best_values is None:
        print(f"tlkeras.tune: error: no trial completed; see {result.directory / 'trials.md'}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.tune``; returns the exit code."""
    return cli.run("tlkeras.tune", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
