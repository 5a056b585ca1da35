"""Hyperparameter search with KerasTuner over the same build and two-phase training as ``tlkeras.train``.

A trial is a training run: :class:`TransferHyperModel` turns a trial's hyperparameter values into a
:class:`~tlkeras.config.RunConfig`, builds the model with :func:`tlkeras.models.build_model` and
trains it with :func:`tlkeras.training.fit_two_phase` (both phases, early stopping restoring the
best weights), then scores the final model on the validation split with the same scikit-learn
metrics ``tlkeras.train`` reports. A trial's ``val_accuracy`` therefore means what a training run's
``metrics.json`` ``val.accuracy`` means, and the best trial's values become a config YAML that
``python -m tlkeras.train --config`` retrains.

The search space covers backbone, input size, head dropout and hidden units, phase-1 learning
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

import contextlib
import copy
import csv
import dataclasses
import difflib
import hashlib
import io
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from tlkeras._backend import keras, keras_tuner, tf
from tlkeras.config import AUGMENT_PRESETS, RunConfig, config_from_dict, config_to_dict, parse_unfreeze, save_config
from tlkeras.core.backbones import get_backbone
from tlkeras.core.data import DataBundle, Split, load_data
from tlkeras.core.metrics import compute_metrics, predict
from tlkeras.core.models import HUB_PREFIX, backbone_layers, build_model, resolve_image_size
from tlkeras.errors import TLKerasError
from tlkeras.runs import atomic_path, atomic_write_text, default_run_name, write_json

kt = keras_tuner()

__all__ = [
    "HYPERPARAMETERS",
    "TUNERS",
    "ParamSpec",
    "SearchSpace",
    "SearchOptions",
    "SearchResult",
    "TransferHyperModel",
    "default_space",
    "parse_param_spec",
    "parse_duration",
    "load_search_space",
    "reported_metrics",
    "objective_direction",
    "trial_config",
    "load_search",
    "run_search",
    "SEARCH_FILE",
]

TUNERS = ("random", "hyperband", "bayesian")
SEARCH_FILE = "search.yaml"
_BUDGET_MESSAGE = "stopped by the time budget"


# ---------------------------------------------------------------------------------------------
# The hyperparameters


@dataclass(frozen=True)
class _Param:
    kind: type
    help: str
    check: Callable[[Any], str | None]


def _check_backbone(value: str) -> str | None:
    if str(value).startswith(HUB_PREFIX):
        return None
    try:
        get_backbone(value)
    except TLKerasError as exc:
        return str(exc)
    return None


def _check_unfreeze(value: str) -> str | None:
    try:
        parse_unfreeze(value)
    except TLKerasError as exc:
        return str(exc)
    return None


def _between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = True) -> Callable[[Any], str | None]:
    def check(value):
        low_ok = value > lo if lo_open else value >= lo
        high_ok = value < hi if hi_open else value <= hi
        if low_ok and high_ok:
            return None
        return f"{value} is outside {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    return check


_PARAMS: dict[str, _Param] = {
    "backbone": _Param(str, "backbone name (model.backbone)", _check_backbone),
    "image_size": _Param(int, "square input size in pixels (data.image_size)", lambda v: None if v >= 1 else f"{v} is not a positive size"),
    "dropout": _Param(float, "head dropout rate (model.dropout)", _between(0.0, 1.0)),
    "hidden_units": _Param(int, "units of one hidden Dense layer in the head, 0 for none (model.hidden_units)", lambda v: None if v >= 0 else f"{v} is negative"),
    "phase1_lr": _Param(float, "phase-1 learning rate (train.phase1_lr)", lambda v: None if v > 0 else f"{v} is not > 0"),
    "phase2_lr_factor": _Param(float, "phase-2 learning rate / phase-1 learning rate (train.phase2_lr_factor)", _between(0.0, 1.0, lo_open=True)),
    "unfreeze": _Param(str, "what phase 2 fine-tunes: none, layers:N, blocks:N or all (train.unfreeze)", _check_unfreeze),
    "augment": _Param(str, "augmentation strength: off, light or strong (data.augment)", lambda v: None if v in AUGMENT_PRESETS else f"{v!r} is not one of {', '.join(AUGMENT_PRESETS)}"),
    "label_smoothing": _Param(float, "label smoothing of the softmax loss (train.label_smoothing)", _between(0.0, 1.0)),
    "weight_decay": _Param(float, "decoupled weight decay; > 0 switches adam to adamw (train.weight_decay)", lambda v: None if v >= 0 else f"{v} is negative"),
}

#: The searchable hyperparameters: name -> what it sets.
HYPERPARAMETERS: dict[str, str] = {name: p.help for name, p in _PARAMS.items()}

_RANGE_KEYS = ("min", "max", "step", "sampling")
_SAMPLINGS = ("linear", "log", "reverse_log")


def _where(name: str) -> str:
    return f"search space key {name!r}"


def _coerce(name: str, value: Any) -> Any:
    """Converts one YAML/flag value to the hyperparameter's type and checks it."""
    param = _PARAMS[name]
    kind = param.kind
    try:
        if kind is str:
            if isinstance(value, bool):  # YAML 1.1 reads a bare `off` as False
                value = "off" if value is False else "on"
            if value is None or isinstance(value, (list, dict)):
                raise ValueError
            value = str(value).strip()
        elif kind is int:
            if isinstance(value, bool) or value is None:
                raise ValueError
            number = float(value)
            if not number.is_integer():
                raise ValueError
            value = int(number)
        else:
            if isinstance(value, bool) or value is None:
                raise ValueError
            value = float(value)
            if not math.isfinite(value):
                raise ValueError
    except (TypeError, ValueError):
        raise TLKerasError(f"{_where(name)}: {value!r} is not {'an integer' if kind is int else 'a number' if kind is float else 'a name'}") from None
    problem = param.check(value)
    if problem:
        raise TLKerasError(f"{_where(name)}: {problem}")
    return value


@dataclass
class ParamSpec:
    """How one hyperparameter is searched.

    Attributes:
        name: one of :data:`HYPERPARAMETERS`.
        values: one value (pinned) or several (a choice); empty for a range.
        min: lower bound of a range (numeric hyperparameters only).
        max: upper bound of a range.
        step: spacing of a range's values (None: continuous for floats, 1 for integers).
        sampling: ``linear``, ``log`` or ``reverse_log`` (KerasTuner's samplings).
    """

    name: str
    values: tuple = ()
    min: float | int | None = None
    max: float | int | None = None
    step: float | int | None = None
    sampling: str = "linear"

    @property
    def kind(self) -> str:
        """``fixed``, ``choice`` or ``range``."""
        if self.min is not None:
            return "range"
        return "fixed" if len(self.values) == 1 else "choice"

    @property
    def candidates(self) -> list:
        """The pinned/choice values, or a range's bounds (for validation)."""
        return list(self.values) if self.kind != "range" else [self.min, self.max]

    def declare(self, hp) -> Any:
        """Registers this hyperparameter on a KerasTuner ``HyperParameters``; returns its value."""
        if self.kind == "fixed":
            return hp.Fixed(self.name, self.values[0])
        if self.kind == "choice":
            return hp.Choice(self.name, list(self.values))
        if _PARAMS[self.name].kind is int:
            return hp.Int(self.name, int(self.min), int(self.max), step=int(self.step) if self.step else None, sampling=self.sampling)
        return hp.Float(self.name, float(self.min), float(self.max), step=self.step, sampling=self.sampling)

    def to_yaml(self) -> Any:
        """The YAML form :func:`parse_param_spec` reads back."""
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "choice":
            return list(self.values)
        out: dict[str, Any] = {"min": self.min, "max": self.max}
        if self.step is not None:
            out["step"] = self.step
        if self.sampling != "linear":
            out["sampling"] = self.sampling
        return out

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{self.name} = {self.values[0]} (pinned)"
        if self.kind == "choice":
            return f"{self.name} in {{{', '.join(str(v) for v in self.values)}}}"
        step = f" step {self.step}" if self.step is not None else ""
        return f"{self.name} in [{self.min}, {self.max}]{step} ({self.sampling})"


_RANGE_TEXT = re.compile(r"^\s*([^.\s][^\s]*?)\s*\.\.\s*([^/\s]+)\s*(?:/\s*(\S+))?\s*$")


def parse_param_spec(name: str, raw: Any) -> ParamSpec:
    """Parses one search-space entry.

    Forms: a scalar pins the value; a list is a choice; a mapping ``{min, max, step, sampling}``
    or the text ``lo..hi``, ``lo..hi/log`` or ``lo..hi/step`` is a range (numeric only).

    Raises:
        TLKerasError: an unknown name, an empty choice list, a malformed range, or a value the
            hyperparameter cannot take; the message names the key.
    """
    if name not in _PARAMS:
        close = difflib.get_close_matches(str(name), list(_PARAMS), n=1)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(_PARAMS)}"
        raise TLKerasError(f"unknown hyperparameter {name!r} in the search space; {hint}")
    kind = _PARAMS[name].kind
    if isinstance(raw, str) and ".." in raw and kind is not str:
        match = _RANGE_TEXT.match(raw)
        if not match:
            raise TLKerasError(f"{_where(name)}: cannot read range {raw!r}; write lo..hi, lo..hi/log or lo..hi/step")
        lo, hi, extra = match.groups()
        raw = {"min": lo, "max": hi}
        if extra:
            if extra in _SAMPLINGS:
                raw["sampling"] = extra
            else:
                raw["step"] = extra
    if isinstance(raw, dict):
        if kind is str:
            raise TLKerasError(f"{_where(name)}: a range needs numbers; give a list of choices for {name}")
        unknown = sorted(set(map(str, raw)) - set(_RANGE_KEYS))
        if unknown:
            raise TLKerasError(f"{_where(name)}: unknown range field {unknown[0]!r}; a range has min, max, step and sampling")
        if "min" not in raw or "max" not in raw:
            raise TLKerasError(f"{_where(name)}: a range needs both min and max")
        lo, hi = _coerce(name, raw["min"]), _coerce(name, raw["max"])
        if not lo < hi:
            raise TLKerasError(f"{_where(name)}: min ({lo}) must be below max ({hi}); give one value to pin it")
        sampling = str(raw.get("sampling", "linear")).lower()
        if sampling not in _SAMPLINGS:
            raise TLKerasError(f"{_where(name)}: sampling {sampling!r} is not one of {', '.join(_SAMPLINGS)}")
        if sampling != "linear" and lo <= 0:
            raise TLKerasError(f"{_where(name)}: {sampling} sampling needs min > 0, got {lo}")
        step = raw.get("step")
        if step is not None:
            try:
                step = float(step)
            except (TypeError, ValueError):
                raise TLKerasError(f"{_where(name)}: step {raw.get('step')!r} is not a number") from None
            if not step > 0 or (kind is int and not step.is_integer()):
                raise TLKerasError(f"{_where(name)}: step must be a positive {'integer' if kind is int else 'number'}, got {raw.get('step')!r}")
            if sampling != "linear":
                raise TLKerasError(f"{_where(name)}: step applies to linear sampling only; drop step or sampling")
            step = int(step) if kind is int else step
        return ParamSpec(name, (), lo, hi, step, sampling)
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise TLKerasError(f"{_where(name)}: the choice list is empty; give at least one value")
        values = tuple(dict.fromkeys(_coerce(name, v) for v in raw))
        return ParamSpec(name, values)
    return ParamSpec(name, (_coerce(name, raw),))


def _canonical_backbone(name: str) -> str:
    return name if str(name).startswith(HUB_PREFIX) else get_backbone(name).name


def default_space(base: RunConfig) -> dict[str, ParamSpec]:
    """The search space used for every hyperparameter the user does not name.

    Backbone and input size stay pinned to the base config (changing them recomputes features
    and needs matching weights); the training hyperparameters are searched over ranges that work
    for transfer learning. Weight decay is pinned when the optimizer (sgd) ignores it.
    """
    size = base.data.image_size or resolve_image_size(base.model, None)
    spaces = {
        "backbone": ParamSpec("backbone", (base.model.backbone,)),
        "image_size": ParamSpec("image_size", (int(size),)),
        "dropout": ParamSpec("dropout", (), 0.0, 0.5, 0.1),
        "hidden_units": ParamSpec("hidden_units", (0, 128, 256)),
        "phase1_lr": ParamSpec("phase1_lr", (), 1e-4, 1e-2, None, "log"),
        "phase2_lr_factor": ParamSpec("phase2_lr_factor", (), 0.01, 0.3, None, "log"),
        "unfreeze": ParamSpec("unfreeze", ("none", "blocks:2", "blocks:4", "blocks:6")),
        "augment": ParamSpec("augment", ("off", "light", "strong")),
        "label_smoothing": ParamSpec("label_smoothing", (), 0.0, 0.2, 0.05),
        "weight_decay": ParamSpec("weight_decay", (0.0, 1e-4, 1e-3)),
    }
    if base.train.optimizer == "sgd":
        spaces["weight_decay"] = ParamSpec("weight_decay", (float(base.train.weight_decay),))
    return spaces


@dataclass
class SearchSpace:
    """All ten hyperparameters, each pinned, a choice or a range.

    Build it with :meth:`create` (defaults plus overrides, validated against the base config).
    """

    params: dict[str, ParamSpec] = field(default_factory=dict)

    @classmethod
    def create(cls, overrides: "SearchSpace | dict | str | os.PathLike | None", base: RunConfig) -> "SearchSpace":
        """Defaults from :func:`default_space`, overridden by ``overrides`` (a dict of entries, a
        YAML file path, or a SearchSpace), then checked against ``base``.

        Raises:
            TLKerasError: on any bad entry (see :func:`parse_param_spec`) or a combination that
                cannot work with ``base`` (a weights file with another backbone, a size below a
                backbone's minimum, weight decay with sgd).
        """
        if isinstance(overrides, SearchSpace):
            params = dict(overrides.params)
        else:
            if isinstance(overrides, (str, os.PathLike)):
                overrides = load_search_space(overrides)
            params = default_space(base)
            for name, raw in (overrides or {}).items():
                params[str(name)] = raw if isinstance(raw, ParamSpec) else parse_param_spec(str(name), raw)
        space = cls({name: params[name] for name in _PARAMS})
        space.check(base)
        return space

    def check(self, base: RunConfig) -> None:
        """Cross-checks the space against the base config (see :meth:`create`)."""
        backbones = self.params["backbone"].candidates
        home = _canonical_backbone(base.model.backbone)
        weights = str(base.model.weights).strip().lower()
        others = [b for b in backbones if _canonical_backbone(b) != home]
        if others and weights not in ("imagenet", "none"):
            raise TLKerasError(
                f"{_where('backbone')}: model.weights is a file made for {base.model.backbone}, so "
                f"{others[0]} cannot use it; pin backbone or use weights imagenet/none"
            )
        sizes = self.params["image_size"].candidates
        for backbone in backbones:
            model_cfg = dataclasses.replace(base.model, backbone=backbone)
            try:
                resolve_image_size(model_cfg, min(sizes))
            except TLKerasError as exc:
                raise TLKerasError(f"{_where('image_size')}: {exc}") from None
        decay = self.params["weight_decay"]
        if base.train.optimizer == "sgd" and (decay.kind != "fixed" or decay.values[0] != 0):
            raise TLKerasError(f"{_where('weight_decay')}: optimizer sgd ignores weight decay; pin weight_decay: 0 or use --optimizer adam/adamw")

    def base_values(self, base: RunConfig) -> dict[str, Any]:
        """The point of the space closest to ``base``: its value where the space allows it,
        else the pinned value, the first choice or the range's lower bound."""
        t, m, d = base.train, base.model, base.data
        units = m.hidden_units[0] if len(m.hidden_units) == 1 else (0 if not m.hidden_units else None)
        wanted = {
            "backbone": m.backbone, "image_size": d.image_size or resolve_image_size(m, None),
            "dropout": m.dropout, "hidden_units": units, "phase1_lr": t.phase1_lr,
            "phase2_lr_factor": t.phase2_lr_factor, "unfreeze": t.unfreeze, "augment": d.augment,
            "label_smoothing": t.label_smoothing, "weight_decay": t.weight_decay,
        }
        values = {}
        for name, spec in self.params.items():
            value = wanted[name]
            try:
                value = _coerce(name, value) if value is not None else None
            except TLKerasError:
                value = None
            if spec.kind == "range":
                ok = value is not None and spec.min <= value <= spec.max
                values[name] = value if ok else spec.min
            else:
                values[name] = value if value in spec.values else spec.values[0]
        return values

    def declare(self, hp) -> dict[str, Any]:
        """Registers every hyperparameter on ``hp``; returns the values ``hp`` holds for them."""
        return {name: spec.declare(hp) for name, spec in self.params.items()}

    def searched(self) -> list[str]:
        """Names of the hyperparameters that are not pinned."""
        return [n for n, s in self.params.items() if s.kind != "fixed"]

    def to_dict(self) -> dict[str, Any]:
        return {name: spec.to_yaml() for name, spec in self.params.items()}

    def describe(self) -> str:
        return "\n".join(spec.describe() for spec in self.params.values())


def load_search_space(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a search-space YAML file: a mapping of hyperparameter name -> entry.

    Raises:
        TLKerasError: a missing file, invalid YAML, or not a mapping.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            values = yaml.safe_load(fh)
    except FileNotFoundError:
        raise TLKerasError(f"search space file {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise TLKerasError(f"search space file {path} is not valid YAML{where}; fix the syntax") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise TLKerasError(f"search space file {path} must map hyperparameter names to values, lists or ranges")
    return values


# ---------------------------------------------------------------------------------------------
# Options, objective, durations


def parse_duration(text: str | float | int | None) -> float | None:
    """Seconds from ``600``, ``90s``, ``10m`` or ``1.5h``; None stays None.

    Raises:
        TLKerasError: for unreadable text or a value that is not > 0.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([smh]?)\s*", str(text).lower())
        if not match:
            raise TLKerasError(f"time_budget {text!r} is not a duration; write e.g. 600, 90s, 10m or 1.5h")
        seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if not seconds > 0:
        raise TLKerasError(f"time_budget must be > 0 seconds, got {text!r}; leave it out for no time limit")
    return seconds


@dataclass
class SearchOptions:
    """How the search runs.

    Attributes:
        tuner: ``random``, ``hyperband`` or ``bayesian``.
        objective: a metric the trials report (see :func:`reported_metrics`); None: the head's
            default (``val_accuracy`` for softmax, ``val_f1_macro`` for sigmoid, ``val_loss``
            for regression).
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

    def validate(self) -> "SearchOptions":
        """Checks the options (budgets of zero included); returns self."""
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


_DEFAULT_OBJECTIVE = {"softmax": "val_accuracy", "sigmoid": "val_f1_macro", "regression": "val_loss"}
_MIN_METRICS = ("loss", "mae", "rmse")


def reported_metrics(head: str, num_classes: int | None = None) -> list[str]:
    """The metric names a trial reports for ``head`` (each usable as the objective).

    ``val_loss`` is the plain loss of the validation split (cross-entropy without label
    smoothing, so trials with different smoothing compare fairly); the others are
    :func:`tlkeras.evaluation.compute_metrics` of the validation split, as in ``metrics.json``.
    """
    if head == "regression":
        names = ["mae", "rmse", "r2"]
    elif head == "sigmoid":
        names = ["subset_accuracy", "f1_micro", "f1_macro"]
    else:
        k = 1 if num_classes is None or num_classes <= 2 else min(5, num_classes - 1)
        names = ["accuracy", "precision_macro", "recall_macro", "f1_macro", f"top{k}_accuracy"]
    return ["val_loss"] + [f"val_{n}" for n in names]


def objective_direction(name: str) -> str:
    """``min`` for losses and errors, ``max`` for everything else."""
    return "min" if name.removeprefix("val_") in _MIN_METRICS else "max"


def _resolve_objective(objective: str | None, head: str, num_classes: int | None) -> str:
    name = objective or _DEFAULT_OBJECTIVE[head]
    known = reported_metrics(head, num_classes)
    if num_classes is None and head == "softmax" and re.fullmatch(r"val_top\d+_accuracy", name):
        return name  # k is known once the data is loaded
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"a {head} model reports {', '.join(known)}"
        raise TLKerasError(f"objective {name!r} is not reported by the trials; {hint}")
    return name


# ---------------------------------------------------------------------------------------------
# Trials


def _phase1_is_cheap(base: RunConfig) -> bool:
    """Whether every trial's phase 1 runs on cached features (whatever the trial's ``augment``)."""
    t = base.train
    return t.feature_cache == "on" or (t.feature_cache == "auto" and not t.phase1_augment)


def _shortens_phase1(base: RunConfig) -> bool:
    """Whether Hyperband's early rounds shorten phase 1 too (see :func:`_epoch_unit`)."""
    return not (_phase1_is_cheap(base) and base.train.phase2_epochs > 0)


def _epoch_unit(base: RunConfig) -> int:
    """Hyperband's ``max_epochs``: the epochs of the phase(s) a budget shortens.

    When phase 1 trains the head on cached features it costs seconds, so Hyperband shortens
    only phase 2 (fine-tuning, the expensive part) and its unit is one phase-2 epoch; otherwise
    both phases are shortened and the unit is one epoch of the longer phase.
    """
    t = base.train
    if not _shortens_phase1(base):
        return t.phase2_epochs
    return max(t.phase1_epochs, t.phase2_epochs, 1)


def _clean(value: Any) -> Any:
    """Drops float noise of stepped ranges (0.15000000000000002 -> 0.15)."""
    return float(f"{value:.10g}") if isinstance(value, float) else value


def trial_config(base: RunConfig, values: dict[str, Any], fraction: float = 1.0, *, shorten_phase1: bool = True) -> RunConfig:
    """The RunConfig of one trial: ``base`` with the hyperparameter ``values`` applied.

    Args:
        base: the base config (data source, epochs, seed, everything not searched).
        values: hyperparameter name -> value (KerasTuner's ``tuner/*`` entries are ignored).
        fraction: share of the base epochs a shortened phase trains (Hyperband's early rounds);
            ``shorten_phase1`` False leaves phase 1 at full length. A shortened phase with
            epochs still trains at least one.

    Returns:
        A validated copy; ``name`` is None so ``tlkeras.train`` picks a fresh run directory.
    """
    config = copy.deepcopy(base)
    home = _canonical_backbone(base.model.backbone)
    for name, value in values.items():
        if name not in _PARAMS:
            continue
        value = _clean(value)
        if name == "backbone":
            config.model.backbone = value
            if _canonical_backbone(value) != home:
                config.model.alpha = None  # the base alpha belongs to the base backbone's family
        elif name == "image_size":
            config.data.image_size = int(value)
        elif name == "dropout":
            config.model.dropout = float(value)
        elif name == "hidden_units":
            config.model.hidden_units = [int(value)] if int(value) > 0 else []
        elif name == "augment":
            config.data.augment = value
        elif name == "weight_decay":
            config.train.weight_decay = float(value)
            if value > 0 and config.train.optimizer == "adam":
                config.train.optimizer = "adamw"  # AdamW with decay 0 is Adam: one family
        else:
            setattr(config.train, name, value)
    if fraction < 1.0:
        t = config.train
        if shorten_phase1:
            t.phase1_epochs = math.ceil(t.phase1_epochs * fraction) if t.phase1_epochs else 0
        t.phase2_epochs = math.ceil(t.phase2_epochs * fraction) if t.phase2_epochs else 0
    config.name = None
    return config.validate()


class _DataCache:
    """Decodes the data once per image size (trials at one size share the in-memory images)."""

    def __init__(self, base: RunConfig, data: DataBundle | None):
        self.base = base
        self.given = data
        self.bundles: dict[int, DataBundle] = {}

    def get(self, size: int) -> DataBundle:
        size = int(size)
        if size not in self.bundles:
            if self.given is not None:
                self.bundles[size] = self.given if self.given.image_size == size else _resized(self.given, size)
            else:
                self.bundles[size] = load_data(self.base.data, size, self.base.model.head, self.base.seed)
        return self.bundles[size]


def _resized(bundle: DataBundle, size: int) -> DataBundle:
    def one(split: Split | None) -> Split | None:
        if split is None:
            return None
        x = tf.cast(tf.round(tf.clip_by_value(tf.image.resize(split.x, (size, size)), 0, 255)), tf.uint8).numpy()
        return Split(x, split.y, list(split.paths))

    return dataclasses.replace(bundle, train=one(bundle.train), val=one(bundle.val), test=one(bundle.test), image_size=size)


class _FeatureCache:
    """Keeps the pooled backbone features of phase 1 across trials.

    ``tlkeras.training.fit_two_phase`` computes features with its module function ``_features``;
    while a trial runs, that function is wrapped by a memo keyed by a hash of the backbone's
    weights and the image array, so a second trial with the same (backbone, size, weights) gets
    the same NumPy features back without running the backbone. Augmented views (random) are
    never cached.
    """

    def __init__(self):
        self.store: dict[tuple, np.ndarray] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _fingerprint(model) -> str:
        digest = hashlib.blake2b(digest_size=16)
        for layer in backbone_layers(model):
            for weight in layer.weights:
                digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
        return digest.hexdigest()

    @contextlib.contextmanager
    def active(self, enabled: bool):
        import tlkeras.train.engine as training

        original = getattr(training, "_features", None)
        if not enabled or original is None:  # a core without the hook: correct, just uncached
            yield
            return

        def cached(model, x, batch_size, augment, views, seed):
            if augment != "off" and views > 1:
                return original(model, x, batch_size, augment, views, seed)
            key = (self._fingerprint(model), id(x), x.shape)
            if key in self.store:
                self.hits += 1
            else:
                self.misses += 1
                self.store[key] = original(model, x, batch_size, augment, views, seed)
            return self.store[key]

        training._features = cached
        try:
            yield
        finally:
            training._features = original


class _OutOfTime(Exception):
    """Raised inside a trial's fit when the search's time budget runs out."""


class _DeadlineCallback(keras.callbacks.Callback):
    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline

    def _check(self, *_args, **_kwargs):
        if time.monotonic() >= self.deadline:
            raise _OutOfTime()

    on_train_begin = on_train_batch_end = on_epoch_end = _check


def _val_loss(head: str, y: np.ndarray, outputs: np.ndarray, num_outputs: int) -> float:
    eps = 1e-7
    if head == "softmax":
        p = np.clip(outputs[np.arange(len(y)), y.astype(int)], eps, 1.0)
        return float(-np.mean(np.log(p)))
    if head == "sigmoid":
        p = np.clip(outputs, eps, 1 - eps)
        t = y.astype(np.float32).reshape(p.shape)
        return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))
    return float(np.mean((outputs - y.reshape(outputs.shape)) ** 2))


class TransferHyperModel(kt.HyperModel):
    """A KerasTuner HyperModel whose trials are ``tlkeras.train`` runs.

    ``build(hp)`` seeds like :func:`tlkeras.training.train_model` and calls
    :func:`tlkeras.models.build_model`; ``fit(hp, model)`` calls
    :func:`tlkeras.training.fit_two_phase` and returns the validation metrics of the trained
    model (:func:`reported_metrics`) plus ``phase1_epochs``/``phase2_epochs`` (the epochs the
    trial was given) and ``seconds``.

    Args:
        base: the base RunConfig (validated, data source set unless ``data`` is given).
        space: the search space.
        data: an in-memory DataBundle instead of ``base.data.source``.
        callbacks: extra Keras callbacks for every trial's training.
        trial_verbose: Keras progress display inside trials.
    """

    def __init__(self, base: RunConfig, space: SearchSpace, data: DataBundle | None = None, callbacks: list | None = None, trial_verbose: int = 0):
        super().__init__(name="tlkeras_transfer", tunable=True)
        self.base = base
        self.space = space
        self.callbacks = list(callbacks or [])
        self.trial_verbose = trial_verbose
        self.data = _DataCache(base, data)
        self.features = _FeatureCache()

    def declare_hyperparameters(self, hp) -> None:
        self.space.declare(hp)

    def config_for(self, hp) -> RunConfig:
        """The RunConfig a trial with these hyperparameters trains (Hyperband: its epoch share)."""
        values = self.space.declare(hp)
        epochs = hp.values.get("tuner/epochs")
        fraction = min(1.0, float(epochs) / _epoch_unit(self.base)) if epochs else 1.0
        config = trial_config(self.base, values, fraction, shorten_phase1=_shortens_phase1(self.base))
        config.train.verbose = self.trial_verbose
        return config

    def build(self, hp):
        from tlkeras.train.engine import select_strategy

        config = self.config_for(hp)
        bundle = self.data.get(config.data.image_size)
        keras.utils.set_random_seed(config.seed)  # as train_model does, so initial weights match
        self._strategy = select_strategy(config.train.distribute)
        with self._strategy.scope():
            return build_model(config.model, bundle.num_outputs, config.data.image_size)

    def fit(self, hp, model, *args, callbacks=None, **kwargs) -> dict[str, float]:
        from tlkeras.train.engine import fit_two_phase, uses_feature_cache

        config = self.config_for(hp)
        bundle = self.data.get(config.data.image_size)
        with self.features.active(uses_feature_cache(config)):
            fit_two_phase(
                model, bundle, config, callbacks=[*self.callbacks, *(callbacks or [])],
                strategy=getattr(self, "_strategy", None),
            )
        outputs = predict(model, bundle.val.x, config.data.batch_size)
        metrics = compute_metrics(bundle.val.y, outputs, bundle.class_names, bundle.head)
        result = {"val_loss": _val_loss(bundle.head, bundle.val.y, outputs, bundle.num_outputs)}
        for key, value in metrics.items():
            if isinstance(value, float):
                result[f"val_{key}"] = value
        result["phase1_epochs"] = float(config.train.phase1_epochs)
        result["phase2_epochs"] = float(config.train.phase2_epochs)
        return result


def _budgeted(base_cls):
    """A subclass of a KerasTuner oracle that stops handing out trials after a deadline."""

    class Budgeted(base_cls):
        deadline: float | None = None
        stopped_by: str | None = None
        initial_values: dict | None = None

        def _random_values(self):
            # Every oracle draws its first (random) points here: hand out the base
            # configuration once, then sample. The oracle's record of tried values (saved with
            # its state) keeps a resumed search from proposing it again.
            initial = self.initial_values
            if initial is not None and not self._duplicate(initial):
                return dict(initial)
            return super()._random_values()

        @kt.synchronized
        def create_trial(self, tuner_id):
            if self.deadline is not None and time.monotonic() >= self.deadline and tuner_id not in self.ongoing_trials:
                self.stopped_by = "time_budget"
                # Like KerasTuner's own STOPPED answer: forget the tuner so a chief can exit.
                self.tuner_ids.discard(tuner_id)
                return kt.engine.trial.Trial(self.hyperparameters.copy(), status="STOPPED")
            return super().create_trial(tuner_id)

    Budgeted.__name__ = Budgeted.__qualname__ = f"Budgeted{base_cls.__name__}"
    return Budgeted


def _serve_oracle(oracle) -> None:
    """Runs KerasTuner's gRPC oracle service until every worker has been told to stop."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise TLKerasError(f"the chief cannot listen on {address} (port in use or not this machine's address); set KERASTUNER_ORACLE_PORT to a free port")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(0.5)
    finally:
        server.stop(grace=2)


class _TransferTuner(kt.engine.base_tuner.BaseTuner):
    """Runs trials through :class:`TransferHyperModel` (KerasTuner's documented ``run_trial`` override)."""

    def __init__(self, oracle, hypermodel: TransferHyperModel, *, deadline: float | None, worker_log: bool, **kwargs):
        self.deadline = deadline
        self.worker_log = worker_log
        self.trials_run = 0
        self.trials_started = 0
        self._stopped: set[str] = set()
        super().__init__(oracle, hypermodel, **kwargs)

    def search(self, *fit_args, **fit_kwargs):
        if _role() != "chief":
            return super().search(*fit_args, **fit_kwargs)
        # KerasTuner's chief (BaseTuner.search -> oracle_chief.start_server) polls for the end of
        # the search every 20 s; serving the same OracleServicer here ends it within a second and
        # turns a port that cannot be bound into a one-line error.
        if "verbose" in fit_kwargs:
            self.oracle.verbose = fit_kwargs["verbose"]
        self.save()
        _serve_oracle(self.oracle)

    def _populate_initial_space(self):
        # The space has no conditional parts; declaring it is enough (KerasTuner's default would
        # build a real model here just to discover the hyperparameters).
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        start = time.perf_counter()
        callbacks = [_DeadlineCallback(self.deadline)] if self.deadline is not None else []
        model = None
        self.trials_started += 1
        from tlkeras.train.engine import precision_policy

        try:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise _OutOfTime()
            with precision_policy(self.hypermodel.base.train.mixed_precision):
                model = self.hypermodel.build(hp)
                result = self.hypermodel.fit(hp, model, callbacks=callbacks)
        except _OutOfTime:
            self._stopped.add(trial.trial_id)
            raise kt.errors.FailedTrialError(_BUDGET_MESSAGE) from None
        except TLKerasError as exc:
            # A configuration this data/backbone cannot train: the trial fails, the search goes on.
            raise kt.errors.FailedTrialError(str(exc)) from None
        finally:
            del model
            keras.backend.clear_session()
        result["seconds"] = time.perf_counter() - start
        self.trials_run += 1
        if self.worker_log:
            objective = self.oracle.objective.name
            print(f"tlkeras.tune: [{self.tuner_id}] trial {trial.trial_id}: {objective} {result.get(objective, float('nan')):.4f} ({result['seconds']:.1f}s)", flush=True)
        return result

    def on_trial_end(self, trial):
        if trial.trial_id in self._stopped:
            trial.status = "STOPPED"  # not a failure, not a result: the budget ran out
            trial.message = _BUDGET_MESSAGE
        super().on_trial_end(trial)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class SearchResult:
    """What :func:`run_search` did.

    Attributes:
        directory: the search directory.
        role: ``single``, ``chief`` or ``worker``.
        objective: the objective's name; ``direction`` is ``min`` or ``max``.
        trials: one row per trial, best first (what trials.csv holds).
        best_values: the best trial's hyperparameter values (None if no trial completed).
        best_score: its objective value.
        best_config: the RunConfig written to ``best.yaml`` (full epochs).
        info: stop reason, counts, timings and feature-cache statistics (``search.json``).
    """

    directory: Path
    role: str
    objective: str
    direction: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    best_values: dict[str, Any] | None = None
    best_score: float | None = None
    best_config: RunConfig | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _last_line(message: str | None) -> str:
    lines = [l.strip() for l in (message or "").splitlines() if l.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= 160 else text[:157] + "..."


def _trial_rows(oracle, objective: str, direction: str) -> list[dict[str, Any]]:
    order = {tid: i for i, tid in enumerate(oracle.start_order)}
    rows = []
    for tid, trial in oracle.trials.items():
        values = trial.hyperparameters.values
        row: dict[str, Any] = {"trial": tid, "number": order.get(tid, len(order)) + 1, "status": trial.status}
        metrics = {name: _float(trial.metrics.get_last_value(name)) for name in trial.metrics.metrics}
        row[objective] = metrics.get(objective) if trial.status == "COMPLETED" else None
        for name in _PARAMS:
            row[name] = _clean(values.get(name))
        row["phase1_epochs"] = _as_int(metrics.get("phase1_epochs"))
        row["phase2_epochs"] = _as_int(metrics.get("phase2_epochs"))
        row["seconds"] = round(metrics["seconds"], 1) if metrics.get("seconds") is not None else None
        for name, value in sorted(metrics.items()):
            if name.startswith("val_") and name != objective:
                row[name] = value if trial.status == "COMPLETED" else None
        row["note"] = "" if trial.status == "COMPLETED" else _last_line(trial.message) or trial.status.lower()
        rows.append(row)
    sign = -1.0 if direction == "max" else 1.0
    rows.sort(key=lambda r: (r[objective] is None or r["status"] != "COMPLETED", sign * (r[objective] or 0.0), r["number"]))
    return rows


def _float(value) -> float | None:
    return None if value is None else float(value)


def _as_int(value):
    return None if value is None else int(round(value))


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def _write_tables(directory: Path, rows: list[dict[str, Any]], objective: str, searched: list[str]) -> None:
    columns = _columns(rows) or ["trial", "number", "status", objective]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_text(directory / "trials.csv", buffer.getvalue())

    # The Markdown table shows what differs between trials; the CSV has every column.
    shown = ["trial", "status", objective, *searched, "phase1_epochs", "phase2_epochs", "seconds", "note"]
    shown = [c for c in shown if c in columns] if rows else shown
    lines = [
        f"# Trials, best {objective} first",
        "",
        "| rank | " + " | ".join(shown) + " |",
        "|" + "---|" * (len(shown) + 1),
    ]
    for rank, row in enumerate(rows, 1):
        cells = [_fmt(row.get(c)).replace("|", "/") for c in shown]
        lines.append(f"| {rank if row['status'] == 'COMPLETED' else ''} | " + " | ".join(cells) + " |")
    atomic_write_text(directory / "trials.md", "\n".join(lines) + "\n")


def _plot(directory: Path, rows: list[dict[str, Any]], objective: str, direction: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    done = sorted((r["number"], r[objective]) for r in rows if r["status"] == "COMPLETED" and r[objective] is not None)
    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if done:
        xs, ys = zip(*done)
        best = np.maximum.accumulate(ys) if direction == "max" else np.minimum.accumulate(ys)
        ax.scatter(xs, ys, s=18, label="trial")
        ax.step(xs, best, where="post", color="tab:orange", label="best so far")
        ax.legend(loc="best")
    ax.set_xlabel("trial (start order)")
    ax.set_ylabel(objective)
    ax.set_title(f"{objective} per trial ({direction})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(directory / "objective.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# ---------------------------------------------------------------------------------------------
# The search


def _role() -> str:
    """``single``, or ``chief``/``worker`` when KerasTuner's distributed variables are set."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    for var in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if not os.environ.get(var):
            raise TLKerasError(f"KERASTUNER_ORACLE_IP is set but {var} is not; set both (see docs/tuning.md)")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


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
    return {
        "tlkeras_search": 1,
        "options": {
            "tuner": options.tuner, "objective": objective, "max_trials": options.max_trials,
            "time_budget": options.time_budget, "hyperband_factor": int(options.hyperband_factor),
            "hyperband_iterations": int(options.hyperband_iterations),
            "start_from_base": bool(options.start_from_base),
        },
        "space": space.to_dict(),
        "config": config_to_dict(base),
    }


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
    space = SearchSpace.create(doc.get("space") or {}, base)
    opts = dict(doc.get("options") or {})
    options = SearchOptions(**{k: v for k, v in opts.items() if k in {f.name for f in dataclasses.fields(SearchOptions)}})
    return base, space, options


def _make_oracle(options: SearchOptions, objective: str, direction: str, seed: int, epoch_unit: int):
    objective_obj = kt.Objective(objective, direction)
    common = {"objective": objective_obj, "seed": seed, "max_consecutive_failed_trials": 3}
    if options.tuner == "hyperband":
        oracle = _budgeted(kt.oracles.HyperbandOracle)(
            max_epochs=epoch_unit, factor=int(options.hyperband_factor),
            hyperband_iterations=int(options.hyperband_iterations), **common,
        )
        oracle.max_trials = options.max_trials  # Hyperband has no max_trials argument; the base Oracle honours it
        return oracle
    cls = kt.oracles.RandomSearchOracle if options.tuner == "random" else kt.oracles.BayesianOptimizationOracle
    return _budgeted(cls)(max_trials=options.max_trials or 10, **common)


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
    ``search.json``. Reruns with the same settings continue the search. In a distributed
    search, the oracle's address is added to ``no_grpc_proxy`` so a proxy never sees it.
    """
    started = time.monotonic()
    options = copy.deepcopy(options) if options is not None else SearchOptions()
    options.validate()
    base = _prepare_base(config, data)
    space = SearchSpace.create(space, base)
    role = _role()
    objective = _resolve_objective(options.objective, base.model.head, None)
    hypermodel = TransferHyperModel(base, space, data, callbacks, trial_verbose)
    if role != "chief":
        # Loading the first size checks the data before anything is written.
        bundle = hypermodel.data.get(space.params["image_size"].candidates[0])
        objective = _resolve_objective(objective, base.model.head, bundle.num_outputs)
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
        spec_file = directory / SEARCH_FILE
        if directory.exists() and options.overwrite:
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

    deadline = started + options.time_budget if options.time_budget else None
    oracle = _make_oracle(options, objective, direction, base.seed, _epoch_unit(base))
    oracle.deadline = deadline
    if options.start_from_base:
        oracle.initial_values = space.base_values(base)
    tuner = _TransferTuner(
        oracle, hypermodel, deadline=deadline, worker_log=role == "worker",
        directory=str(directory.parent), project_name=directory.name, overwrite=False,
    )
    if role != "worker":
        atomic_write_text(directory / SEARCH_FILE, yaml.safe_dump(document, sort_keys=False))
    already = len(oracle.trials) if role != "worker" else 0

    if role != "single":
        where = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
        what = "serving the oracle on" if role == "chief" else "asking the chief oracle for trials at"
        print(f"tlkeras.tune: [{os.environ['KERASTUNER_TUNER_ID']}] {role} ready, {what} {where}", flush=True)
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
        last = _last_line(str(exc).split("\n", 1)[-1]) or "see trials.md"
        raise TLKerasError(f"{oracle.max_consecutive_failed_trials} trials in a row failed, the search stopped; last error: {last} ({directory / 'trials.md'})") from None
    if role == "worker":
        return SearchResult(directory, role, objective, direction, info={"trials_run": tuner.trials_run, "seconds": time.monotonic() - started})
    return _finish(tuner, base, space, options, directory, objective, direction, started, stopped_by, already, hypermodel)


def _finish(tuner, base, space, options, directory, objective, direction, started, stopped_by, already, hypermodel) -> SearchResult:
    """Writes trials.csv/md, objective.png, best.yaml and search.json; returns the result."""
    oracle = tuner.oracle
    rows = _trial_rows(oracle, objective, direction)
    _write_tables(directory, rows, objective, space.searched())
    _plot(directory, rows, objective, direction)
    completed = [r for r in rows if r["status"] == "COMPLETED" and r[objective] is not None]
    if stopped_by is None:
        if getattr(oracle, "stopped_by", None):
            stopped_by = oracle.stopped_by
        elif oracle.max_trials and len(oracle.trials) >= oracle.max_trials:
            stopped_by = "max_trials"
        else:
            stopped_by = "complete"
    result = SearchResult(directory, "chief" if _role() == "chief" else "single", objective, direction, rows)
    if completed:
        best = completed[0]
        best_trial = oracle.trials[best["trial"]]
        values = {k: _clean(v) for k, v in best_trial.hyperparameters.values.items() if k in _PARAMS}
        best_config = trial_config(base, values)
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
    write_json(directory / "search.json", result.info)
    return result
