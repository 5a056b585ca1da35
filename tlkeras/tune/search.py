"""Hyperparameter search with KerasTuner over the same build and two-phase training as ``tlkeras.train``.

A trial is a training run: :class:`TransferHyperModel` turns a trial's hyperparameter values into a
:class:`~tlkeras.config.RunConfig`, builds the model with :func:`tlkeras.core.models.build_model` and
trains it with :func:`tlkeras.train.recipe.fit_two_phase` (both phases, early stopping restoring the
best weights), then scores the final model on the validation split with the same scikit-learn
metrics ``tlkeras.train`` reports. A trial's ``val_accuracy`` therefore means what a training run's
``metrics.json`` ``val.accuracy`` means, and the best trial's values become a config YAML that
``python -m tlkeras.train --config`` retrains.

Under device limits (``max_size``, ``max_latency``, ``max_arena``: :mod:`tlkeras.tune.device`)
each trial's shape is converted to a TFLite variant and measured with LiteRT before it trains;
trials over a limit are infeasible and never train, and the Pareto front of accuracy against size
or latency is reported (:mod:`tlkeras.tune.results`); the winner's bundle is exported
(:mod:`tlkeras.tune.winner`).

The search space covers backbone, width (alpha), input size, head dropout and hidden units, phase-1 learning
rate, phase-2 learning-rate factor, unfreeze depth, augmentation strength, label smoothing and
weight decay (:data:`HYPERPARAMETERS`). Each is pinned (one value), a choice (a list) or a range
(``{min, max, step, sampling}``); unnamed ones take the defaults of :func:`default_space`.

Budgets: ``max_trials``, the epochs of a full trial (``train.phase1_epochs``/``phase2_epochs`` of
the base config; Hyperband's early rounds shorten fine-tuning, and phase 1 too when it is not
run on cached features) and a wall-clock ``time_budget`` after which no trial starts and a
running trial is stopped and marked STOPPED.

Cheap trials stay cheap: an unaugmented phase 1 trains the head on pooled backbone features, and
those features are computed once per (backbone weights, image size) for the whole search instead
of once per trial.

Resume and distribution are KerasTuner's own: the search directory holds the oracle's state
(``overwrite=False``), so rerunning the same command continues without redoing finished trials,
and the ``KERASTUNER_TUNER_ID`` / ``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT``
environment variables start a chief (the oracle, as a gRPC service) and workers.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tlkeras.config import TASK_OF_HEAD, RunConfig, config_from_dict, config_to_dict, save_config
from tlkeras.core.backbones import apply_recipe_defaults
from tlkeras.core.data import DataBundle
from tlkeras.core.models import HUB_PREFIX
from tlkeras.core.tasks import get_task
from tlkeras.errors import TLKerasError
from tlkeras.export.variants import parse_variants
from tlkeras.runs import atomic_write_text, default_run_name, write_json
from tlkeras.tune.device import DEVICE_FILE, DeviceMeter
from tlkeras.tune.hypermodel import TransferHyperModel, clean_value, epoch_unit, trial_config
from tlkeras.tune.limits import DeviceLimits, parse_duration, parse_latency, parse_size
from tlkeras.tune.results import (
    SearchResult,
    device_preamble,
    last_line,
    mark_front,
    plot_front,
    plot_objective,
    trial_rows,
    write_tables,
)
from tlkeras.tune.space import HYPERPARAMETERS, SearchSpace
from tlkeras.tune.tuner import TransferTuner, distributed_role, make_oracle, wait_for_chief
from tlkeras.tune.winner import export_winner

__all__ = [
    "TUNERS",
    "SEARCH_FILE",
    "SearchOptions",
    "SearchResult",
    "reported_metrics",
    "objective_direction",
    "load_search",
    "run_search",
]

TUNERS = ("random", "hyperband", "bayesian")
SEARCH_FILE = "search.yaml"


# ---------------------------------------------------------------------------------------------
# Options and objective


@dataclass
class SearchOptions:
    """How the search runs.

    Attributes:
        tuner: ``random``, ``hyperband`` or ``bayesian``.
        objective: a metric the trials report (see :func:`reported_metrics`), or ``pareto``
            (the front of the objective against ``pareto_axis``); None: the head's default
            (``val_accuracy`` for softmax, ``val_f1_macro`` for sigmoid, ``val_loss`` for
            regression).
        max_trials: most trials to run (None: 10 for random/bayesian, one full Hyperband
            iteration for hyperband).
        time_budget: wall-clock seconds (or text like ``10m``); after it no trial starts and a
            running trial is stopped and marked STOPPED. None: no limit.
        hyperband_factor: Hyperband's reduction factor (>= 2).
        hyperband_iterations: Hyperband iterations.
        overwrite: delete an existing search directory of the same name first (default: resume).
        start_from_base: make the first trial the base configuration (what ``tlkeras.train``
            would train with the same flags, moved into the space where it lies outside), so
            the search reports a winner only if it beats it on the objective.
        verbose: 0 silent, 1 KerasTuner's per-trial summary, 2 also per-epoch training lines.
        max_size: largest ``.tflite`` file (bytes, or text like ``300KB``, ``1.5MB``, ``256KiB``).
        max_latency: largest p50 LiteRT latency (milliseconds, or text like ``5ms``, ``0.01s``).
        max_arena: largest TFLite Micro tensor arena (bytes or text; full-integer variants).
        variant: the TFLite variant every trial is converted to and measured as (a name from
            :data:`tlkeras.export.variants.VARIANTS`; default ``int8`` when measuring).
        latency_threads: LiteRT threads the latency is measured with.
        pareto: report the Pareto front of the objective against ``pareto_axis`` (the CLI's
            ``--objective pareto``); the winner is the front's most accurate trial.
        pareto_axis: ``size`` or ``latency`` (default: latency when only a latency limit is
            given, else size).
        weights_for: weights files by architecture (``backbone@alpha`` or ``backbone`` ->
            path), for searches over backbones or widths with local weights files.
        export_winner: with device measurements, keep each trial's model and export and verify
            the winner's bundle (``bundle/``).

    Any limit, ``pareto`` or ``variant`` turns device measurements on: each trial's shape
    (architecture, resolution, variant) is converted and measured once, untrained, before it
    trains; a trial over a limit is infeasible and never trains.
    """

    tuner: str = "hyperband"
    objective: str | None = None
    max_trials: int | None = None
    time_budget: float | str | None = None
    hyperband_factor: int = 3
    hyperband_iterations: int = 1
    overwrite: bool = False
    start_from_base: bool = True
    verbose: int = 1
    max_size: int | str | None = None
    max_latency: float | str | None = None
    max_arena: int | str | None = None
    variant: str | None = None
    latency_threads: int = 1
    pareto: bool = False
    pareto_axis: str | None = None
    weights_for: dict[str, str] = field(default_factory=dict)
    export_winner: bool = True

    @property
    def limits(self) -> DeviceLimits:
        """The device limits (call :meth:`validate` first)."""
        return DeviceLimits(self.max_size, self.max_latency, self.max_arena)

    @property
    def measures_device(self) -> bool:
        """Whether trials are converted and measured on LiteRT."""
        return self.limits.any or self.pareto or self.variant is not None

    def validate(self) -> "SearchOptions":
        """Checks the options (budgets of zero included) and reads units; returns self."""
        if self.objective == "pareto":
            self.objective, self.pareto = None, True
        self.max_size = parse_size(self.max_size, "max_size")
        self.max_latency = parse_latency(self.max_latency, "max_latency")
        self.max_arena = parse_size(self.max_arena, "max_arena")
        if self.measures_device:
            from tlkeras.tune.device import full_integer

            names = parse_variants(self.variant or "int8")
            if len(names) != 1:
                raise TLKerasError(f"variant {self.variant!r} names {len(names)} variants; a search measures one, e.g. --variant int8")
            self.variant = names[0]
            if self.max_arena is not None and not full_integer(self.variant):
                raise TLKerasError(f"max_arena applies to full-integer variants (int8, int8_float_io, uint8_io), not {self.variant}; drop --max-arena or use --variant int8")
            if int(self.latency_threads) < 1:
                raise TLKerasError(f"latency_threads must be >= 1, got {self.latency_threads}")
            axis = self.pareto_axis or ("latency" if self.max_latency is not None and self.max_size is None else "size")
            if axis not in ("size", "latency"):
                raise TLKerasError(f"pareto_axis {self.pareto_axis!r} is not size or latency")
            self.pareto_axis = axis
        for key, path in dict(self.weights_for or {}).items():
            if not str(key).strip() or not Path(str(path)).expanduser().is_file():
                raise TLKerasError(f"weights file {path} for {key} does not exist; give --arch-weights BACKBONE[@ALPHA]=FILE with an existing file")
        self.weights_for = {str(k): str(Path(str(v)).expanduser().resolve()) for k, v in (self.weights_for or {}).items()}
        if self.tuner not in TUNERS:
            raise TLKerasError(f"tuner={self.tuner!r} is not valid; choose one of {', '.join(TUNERS)}")
        if self.max_trials is not None and int(self.max_trials) < 1:
            raise TLKerasError(f"max_trials must be >= 1, got {self.max_trials}; leave it out for the tuner's default")
        self.time_budget = parse_duration(self.time_budget)
        if int(self.hyperband_factor) < 2:
            raise TLKerasError(f"hyperband_factor must be >= 2, got {self.hyperband_factor}")
        if int(self.hyperband_iterations) < 1:
            raise TLKerasError(f"hyperband_iterations must be >= 1, got {self.hyperband_iterations}")
        return self


# The objective a search optimizes when none is given, by task (multi-label searches F1, regression the loss).
_DEFAULT_OBJECTIVE = {"classification": "val_accuracy", "multilabel": "val_f1_macro", "regression": "val_loss"}
_MIN_METRICS = ("loss", "mae", "rmse")


def _task(head: str):
    """The task a classification-family ``head`` value names."""
    return get_task(TASK_OF_HEAD.get(head, head))


def reported_metrics(head: str, num_classes: int | None = None) -> list[str]:
    """The metric names a trial reports for ``head`` (each usable as the objective).

    ``val_loss`` is the plain loss of the validation split (cross-entropy without label
    smoothing, so trials with different smoothing compare fairly); the others are
    :func:`tlkeras.core.metrics.compute_metrics` of the validation split, as in ``metrics.json``.
    """
    task = _task(head)
    if not task.higher_is_better:  # an error to minimise (regression)
        names = ["mae", "rmse", "r2"]
    elif not task.exclusive_classes:  # a set of labels per example
        names = ["subset_accuracy", "f1_micro", "f1_macro"]
    else:
        k = 1 if num_classes is None or num_classes <= 2 else min(5, num_classes - 1)
        names = ["accuracy", "precision_macro", "recall_macro", "f1_macro", f"top{k}_accuracy"]
    return ["val_loss"] + [f"val_{n}" for n in names]


def objective_direction(name: str) -> str:
    """``min`` for losses and errors, ``max`` for everything else."""
    return "min" if name.removeprefix("val_") in _MIN_METRICS else "max"


def resolve_objective(objective: str | None, head: str, num_classes: int | None) -> str:
    name = objective or _DEFAULT_OBJECTIVE[_task(head).name]
    known = reported_metrics(head, num_classes)
    if num_classes is None and _task(head).exclusive_classes and re.fullmatch(r"val_top\d+_accuracy", name):
        return name  # k is known once the data is loaded
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"a {head} model reports {', '.join(known)}"
        raise TLKerasError(f"objective {name!r} is not reported by the trials; {hint}")
    return name


# ---------------------------------------------------------------------------------------------
# The search


def _prepare_base(config: RunConfig, data: DataBundle | None) -> RunConfig:
    base = copy.deepcopy(config).validate()
    if base.train.phase1_epochs + base.train.phase2_epochs == 0:
        raise TLKerasError("phase1_epochs and phase2_epochs are both 0, a zero epoch budget; give a trial some epochs")
    source = base.data.source
    if data is None:
        if source is None:
            raise TLKerasError("no data source given; pass --data <folder|file.csv|tfds:name>")
        if not str(source).startswith("tfds:"):
            path = Path(source).expanduser()
            if not path.exists():
                raise TLKerasError(f"data path {source} does not exist; pass an image folder, a CSV file or tfds:<name>")
            base.data.source = str(path.resolve())  # best.yaml must work from any directory
    if data is not None and data.head != base.model.head:
        raise TLKerasError(f"the data is labelled for a {data.head} head but model.head is {base.model.head}")
    return base


def _spec_document(base: RunConfig, space: SearchSpace, options: SearchOptions, objective: str) -> dict[str, Any]:
    stored = {
        "tuner": options.tuner, "objective": objective, "max_trials": options.max_trials,
        "time_budget": options.time_budget, "hyperband_factor": int(options.hyperband_factor),
        "hyperband_iterations": int(options.hyperband_iterations),
        "start_from_base": bool(options.start_from_base),
    }
    if options.measures_device:  # only then, so searches without limits resume as before
        stored.update({
            "max_size": options.max_size, "max_latency": options.max_latency, "max_arena": options.max_arena,
            "variant": options.variant, "latency_threads": int(options.latency_threads),
            "pareto": bool(options.pareto), "pareto_axis": options.pareto_axis,
        })
    if options.weights_for:
        stored["weights_for"] = dict(options.weights_for)
    return {"tlkeras_search": 1, "options": stored, "space": space.to_dict(), "config": config_to_dict(base)}


# Settings that may change between a search and its resumption.
_RESUMABLE = {("options", "max_trials"), ("options", "time_budget"), ("config", "output_dir"), ("config", "name")}


def _first_difference(old: Any, new: Any, path: tuple = ()) -> str | None:
    if path in _RESUMABLE or path == ("config", "train", "verbose"):
        return None
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = _first_difference(old.get(key), new.get(key), path + (key,))
            if found:
                return found
        return None
    if isinstance(old, float) or isinstance(new, float):
        try:
            return None if math.isclose(float(old), float(new), rel_tol=1e-9) else ".".join(map(str, path))
        except (TypeError, ValueError):
            pass
    return None if old == new else ".".join(map(str, path))


def load_search(directory: str | os.PathLike) -> tuple[RunConfig, SearchSpace, SearchOptions]:
    """Reads the settings a search directory was started with (its ``search.yaml``).

    Returns:
        (base config, search space, options) to pass to :func:`run_search` to continue it.

    Raises:
        TLKerasError: if ``directory`` is not a tlkeras search directory.
    """
    path = Path(directory) / SEARCH_FILE
    if not path.is_file():
        raise TLKerasError(f"{directory} is not a tlkeras search directory (no {SEARCH_FILE})")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise TLKerasError(f"{path} is not valid YAML") from None
    base = config_from_dict(doc.get("config") or {})
    base.output_dir = str(Path(directory).parent)
    base.name = Path(directory).name
    opts = dict(doc.get("options") or {})
    options = SearchOptions(**{k: v for k, v in opts.items() if k in {f.name for f in dataclasses.fields(SearchOptions)}})
    space = SearchSpace.create(doc.get("space") or {}, base, options.weights_for)
    return base, space, options


def run_search(
    config: RunConfig,
    space: "SearchSpace | dict | str | os.PathLike | None" = None,
    options: SearchOptions | None = None,
    *,
    data: DataBundle | None = None,
    callbacks: list | None = None,
    trial_verbose: int = 0,
) -> SearchResult:
    """Searches hyperparameters with KerasTuner; each trial is a ``tlkeras.train`` run.

    Args:
        config: the base RunConfig: data source, epochs per phase (a full trial), seed, output
            folder and search name (``<output_dir>/<name>/``; default ``tune-<backbone>-<time>``).
        space: overrides of the default search space (dict, YAML path or SearchSpace).
        options: tuner, objective and budgets.
        data: an in-memory DataBundle to search on instead of ``config.data.source``.
        callbacks: extra Keras callbacks for every trial's training.
        trial_verbose: Keras progress display inside trials (0 silent).

    Returns:
        A :class:`SearchResult` (workers of a distributed search return one without trials).

    Raises:
        TLKerasError: bad input (checked before anything is written), or every trial failing.
        KeyboardInterrupt: after writing the results of the finished trials; rerun to resume.

    Side effects: writes ``<output_dir>/<name>/``: KerasTuner's oracle state and ``trial_*/``
    folders, ``search.yaml`` (the settings, for resuming), ``trials.csv``, ``trials.md``,
    ``best.yaml`` (a RunConfig for ``python -m tlkeras.train --config``), ``objective.png`` and
    ``search.json``; with device measurements (a limit, ``pareto`` or ``variant``) also
    ``device.json`` (one measurement per shape), ``pareto.png`` and the winner's ``bundle/``, and
    each trained trial's ``trial_<id>/model.keras`` until the winner is exported. Reruns with the
    same settings continue the search. In a distributed
    search, the oracle's address is added to ``no_grpc_proxy`` so a proxy never sees it.
    """
    started = time.monotonic()
    options = copy.deepcopy(options) if options is not None else SearchOptions()
    options.validate()
    base = _prepare_base(config, data)
    space = SearchSpace.create(space, base, options.weights_for)
    role = distributed_role()
    objective = resolve_objective(options.objective, base.model.head, None)
    hypermodel = TransferHyperModel(base, space, data, callbacks, trial_verbose, weights_for=options.weights_for)
    # What tlkeras.train would train with the same flags: the backbone family's recipe fills the
    # fields left unset (with the small-data rule once the data is known).
    home = copy.deepcopy(base)
    if role != "chief":
        # Loading the first size checks the data before anything is written.
        bundle = hypermodel.data.get(space.params["image_size"].candidates[0])
        objective = resolve_objective(objective, base.model.head, bundle.num_outputs)
        exclusive = _task(bundle.head).exclusive_classes
        apply_recipe_defaults(home, train_count=len(bundle.train), num_classes=bundle.num_outputs if exclusive else None)
    else:
        apply_recipe_defaults(home)
    direction = objective_direction(objective)
    options.objective = objective
    if role != "single":
        ip = os.environ["KERASTUNER_ORACLE_IP"]
        current = os.environ.get("no_grpc_proxy", "")
        if ip not in current.split(","):
            os.environ["no_grpc_proxy"] = ",".join(filter(None, [current, ip]))

    name = base.name or default_run_name(f"tune-{base.model.backbone.replace(HUB_PREFIX, 'hub-').split('/')[-1]}")
    base.name = name
    directory = Path(base.output_dir) / name
    document = _spec_document(base, space, options, objective)
    if role != "worker":
        _check_search_directory(directory, document, options.overwrite)

    deadline = started + options.time_budget if options.time_budget else None
    oracle = make_oracle(options, objective, direction, base.seed, epoch_unit(base))
    oracle.deadline = deadline
    if options.start_from_base:
        oracle.initial_values = space.base_values(home)
    meter = None
    if options.measures_device:
        meter = DeviceMeter(options.variant, options.limits, int(options.latency_threads), path=directory / DEVICE_FILE).load()
    tuner = TransferTuner(
        oracle, hypermodel, deadline=deadline, worker_log=role == "worker",
        meter=meter, save_models=meter is not None and options.export_winner,
        directory=str(directory.parent), project_name=directory.name, overwrite=False,
    )
    if role != "worker":
        atomic_write_text(directory / SEARCH_FILE, yaml.safe_dump(document, sort_keys=False))
    already = len(oracle.trials) if role != "worker" else 0

    if role != "single":
        where = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
        what = "serving the oracle on" if role == "chief" else "asking the chief oracle for trials at"
        print(f"tlkeras.tune: [{os.environ['KERASTUNER_TUNER_ID']}] {role} ready, {what} {where}", flush=True)
        if role == "worker":
            wait_for_chief()
    stopped_by = None
    try:
        tuner.search(verbose=options.verbose)
    except KeyboardInterrupt:
        stopped_by = "interrupted"
        if role != "worker":
            _finish(tuner, base, space, options, directory, objective, direction, started, stopped_by, already, hypermodel)
        raise
    except RuntimeError as exc:
        if "consecutive failures" not in str(exc):
            raise
        if role != "worker":
            _finish(tuner, base, space, options, directory, objective, direction, started, "failures", already, hypermodel)
        last = last_line(str(exc).split("\n", 1)[-1]) or "see trials.md"
        raise TLKerasError(f"{oracle.max_consecutive_failed_trials} trials in a row failed, the search stopped; last error: {last} ({directory / 'trials.md'})") from None
    if role == "worker":
        info = {"trials_run": tuner.trials_run, "trials_infeasible": tuner.trials_infeasible, "seconds": time.monotonic() - started}
        return SearchResult(directory, role, objective, direction, info=info)
    return _finish(tuner, base, space, options, directory, objective, direction, started, stopped_by, already, hypermodel)


def _check_search_directory(directory: Path, document: dict, overwrite: bool) -> None:
    """Refuses a folder that is not this search's (different settings, or not a search); clears it with ``overwrite``.

    Side effects: with ``overwrite``, removes an earlier search directory.
    """
    spec_file = directory / SEARCH_FILE
    if directory.exists() and overwrite:
        if not spec_file.is_file() and any(directory.iterdir()):
            raise TLKerasError(f"{directory} exists and is not a tlkeras search directory; --overwrite only replaces searches")
        shutil.rmtree(directory)
    elif spec_file.is_file():
        try:
            old = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            old = {}
        diff = _first_difference(old, document)
        if diff:
            raise TLKerasError(
                f"search directory {directory} was started with different settings ({diff} differs); "
                f"resume with the same settings (--resume {directory}), or pass --overwrite or another --name"
            )
    elif directory.exists() and any(directory.iterdir()):
        raise TLKerasError(f"{directory} exists and is not a tlkeras search directory; choose another --name")


def _finish(tuner, base, space, options, directory, objective, direction, started, stopped_by, already, hypermodel) -> SearchResult:
    """Writes trials.csv/md, objective.png, best.yaml and search.json (with device measurements
    also pareto.png and the winner's bundle); returns the result."""
    oracle = tuner.oracle
    meter = tuner.meter.load() if tuner.meter is not None else None
    rows = trial_rows(oracle, objective, direction, meter)
    front = mark_front(rows, objective, direction, options.pareto_axis) if meter is not None else []
    preamble = device_preamble(rows, meter, options.pareto, options.pareto_axis) if meter is not None else []
    write_tables(directory, rows, objective, space.searched(), preamble)
    plot_objective(directory, rows, objective, direction)
    if meter is not None:
        plot_front(directory, rows, objective, options.pareto_axis, options.limits, meter)
    completed = [r for r in rows if r["status"] == "COMPLETED" and r[objective] is not None]
    if stopped_by is None:
        if getattr(oracle, "stopped_by", None):
            stopped_by = oracle.stopped_by
        elif oracle.max_trials and len(oracle.trials) >= oracle.max_trials:
            stopped_by = "max_trials"
        else:
            stopped_by = "complete"
    result = SearchResult(directory, "chief" if distributed_role() == "chief" else "single", objective, direction, rows)
    if completed:
        best = completed[0]
        best_trial = oracle.trials[best["trial"]]
        values = {k: clean_value(v) for k, v in best_trial.hyperparameters.values.items() if k in HYPERPARAMETERS}
        best_config = trial_config(base, values, weights_for=options.weights_for)
        best_config.train.verbose = base.train.verbose
        save_config(best_config, directory / "best.yaml")
        result.best_values, result.best_score, result.best_config = values, best[objective], best_config
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    result.info = {
        "tuner": options.tuner,
        "objective": objective,
        "direction": direction,
        "stopped_by": stopped_by,
        "trials": len(rows),
        "status_counts": counts,
        "trials_before": already,
        "trials_started_here": tuner.trials_started,
        "trials_completed_here": tuner.trials_run,
        "best_trial": completed[0]["trial"] if completed else None,
        "best_score": result.best_score,
        "best_values": result.best_values,
        "seconds": round(time.monotonic() - started, 1),
        "time_budget": options.time_budget,
        "max_trials": oracle.max_trials,
        "feature_cache": {"computed": hypermodel.features.misses, "reused": hypermodel.features.hits},
    }
    if meter is not None:
        result.info["device"] = {**meter.describe(), "trials_infeasible_here": tuner.trials_infeasible}
        result.info["pareto_axis"] = options.pareto_axis
        result.info["front"] = front
        if completed and options.export_winner and stopped_by != "interrupted":
            result.info["winner"] = export_winner(directory, completed[0]["trial"], hypermodel, result.best_config, meter, options.limits)
            result.info["device"]["seconds"]["export"] = result.info["winner"].get("export_seconds")
    write_json(directory / "search.json", result.info)
    return result
