"""The search space: which hyperparameters a search varies, and how.

Each hyperparameter (:data:`HYPERPARAMETERS`) is pinned (one value), a choice (a list) or a range
(``{min, max, step, sampling}``, or the text ``lo..hi``, ``lo..hi/log``, ``lo..hi/step``); those the
user does not name take the defaults of :func:`default_space`. :class:`SearchSpace` holds all of
them, checked against the base config, and declares them on KerasTuner's ``HyperParameters``.

Nothing here writes files.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from tlkeras.config import AUGMENT_PRESETS, RunConfig, parse_unfreeze, read_yaml
from tlkeras.core.backbones import get_backbone
from tlkeras.core.models import HUB_PREFIX, resolve_image_size
from tlkeras.errors import TLKerasError

__all__ = [
    "HYPERPARAMETERS",
    "ParamSpec",
    "SearchSpace",
    "canonical_backbone",
    "default_space",
    "load_search_space",
    "parse_param_spec",
]


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
    "alpha": _Param(float, "width multiplier of MobileNet backbones, 0 for each backbone's default (model.alpha)", lambda v: None if v >= 0 else f"{v} is negative"),
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


def canonical_backbone(name: str) -> str:
    return name if str(name).startswith(HUB_PREFIX) else get_backbone(name).name


def default_space(base: RunConfig) -> dict[str, ParamSpec]:
    """The search space used for every hyperparameter the user does not name.

    Backbone, width (``alpha``, 0 when the base leaves it to the backbone) and input size stay
    pinned to the base config (changing them recomputes features and needs matching weights); the
    training hyperparameters are searched over ranges that work for transfer learning. Weight
    decay is pinned when the optimizer (sgd) ignores it.
    """
    size = base.data.image_size or resolve_image_size(base.model, None)
    spaces = {
        "backbone": ParamSpec("backbone", (base.model.backbone,)),
        "alpha": ParamSpec("alpha", (float(base.model.alpha or 0.0),)),
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
    def create(
        cls, overrides: "SearchSpace | dict | str | os.PathLike | None", base: RunConfig, weights_for: dict[str, str] | None = None
    ) -> "SearchSpace":
        """Defaults from :func:`default_space`, overridden by ``overrides`` (a dict of entries, a
        YAML file path, or a SearchSpace), then checked against ``base``.

        When the backbone is searched and ``alpha`` is not named, ``alpha`` is pinned to 0 (each
        backbone's default width): the base's width belongs to the base's backbone family.
        ``weights_for`` maps ``backbone`` or ``backbone@alpha`` to a weights file (see
        :func:`tlkeras.tune.hypermodel.trial_config`).

        Raises:
            TLKerasError: on any bad entry (see :func:`parse_param_spec`) or a combination that
                cannot work with ``base`` (a weights file with another backbone and no
                ``weights_for`` entry for it, a size below a backbone's minimum, weight decay
                with sgd).
        """
        if isinstance(overrides, SearchSpace):
            params = dict(overrides.params)
        else:
            if isinstance(overrides, (str, os.PathLike)):
                overrides = load_search_space(overrides)
            params = default_space(base)
            for name, raw in (overrides or {}).items():
                params[str(name)] = raw if isinstance(raw, ParamSpec) else parse_param_spec(str(name), raw)
            if params["backbone"].kind != "fixed" and "alpha" not in (overrides or {}):
                params["alpha"] = ParamSpec("alpha", (0.0,))
        space = cls({name: params[name] for name in _PARAMS})
        space.check(base, weights_for)
        return space

    def check(self, base: RunConfig, weights_for: dict[str, str] | None = None) -> None:
        """Cross-checks the space against the base config (see :meth:`create`)."""
        backbones = self.params["backbone"].candidates
        home = canonical_backbone(base.model.backbone)
        weights = str(base.model.weights).strip().lower()
        mapped = {canonical_backbone(str(k).split("@")[0]) for k in (weights_for or {})}
        others = [b for b in backbones if canonical_backbone(b) != home and canonical_backbone(b) not in mapped]
        if others and weights not in ("imagenet", "none"):
            raise TLKerasError(
                f"{_where('backbone')}: model.weights is a file made for {base.model.backbone}, so "
                f"{others[0]} cannot use it; pin backbone, use weights imagenet/none, or give "
                f"{others[0]} its own file (--arch-weights {others[0]}=FILE)"
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
            "backbone": m.backbone, "alpha": float(m.alpha or 0.0), "image_size": d.image_size or resolve_image_size(m, None),
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
    values = read_yaml(path, "search space file")  # the size, alias and encoding limits of configs
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise TLKerasError(f"search space file {path} must map hyperparameter names to values, lists or ranges")
    return values
