"""Device measurements of trials: ``.tflite`` size, LiteRT latency and tensor arena, per shape.

What a model costs on a device depends only on its architecture (backbone, width, head) and input
size, not on its trained weights. :class:`DeviceMeter` therefore measures every shape once, on an
UNTRAINED copy (weights ``none``) converted to the search's TFLite variant as the export converts it
(bias-corrected for quantized variants), before any trial of that
shape trains: the file size, the p50 of LiteRT's ``invoke()`` with a stated number of threads, and
for full-integer variants the TFLite Micro tensor arena (:func:`tlkeras.core.litert.estimate_arena`).
A trial whose shape breaks a limit is infeasible and is never trained.

Measurements are kept in ``<search>/device.json`` (shape -> measurement, trial -> shape), so a
resumed search and the workers of a distributed one reuse them.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tlkeras.config import RunConfig
from tlkeras.core import litert
from tlkeras.core.backbones import get_backbone
from tlkeras.core.models import HUB_PREFIX, build_model
from tlkeras.errors import TLKerasError
from tlkeras.runs import atomic_write_text
from tlkeras.tune.limits import DeviceLimits

__all__ = ["DEVICE_FILE", "INFEASIBLE", "DeviceMeter", "Measurement", "effective_alpha", "full_integer", "shape_key"]

DEVICE_FILE = "device.json"
#: How an infeasible trial's message starts (the oracle does not count these as failures).
INFEASIBLE = "infeasible: "
_REPRESENTATIVE = 16  # calibration images for the untrained copy: enough for the converter, cheap


def full_integer(variant: str) -> bool:
    """Whether a variant runs int8 ops only (the ones TFLite Micro runs, with an arena to plan)."""
    from tlkeras.export.variants import VARIANTS

    return VARIANTS[variant].ops == "int8"


def effective_alpha(config: RunConfig) -> float | None:
    """The width the backbone is built with (its family default when ``model.alpha`` is None)."""
    if config.model.backbone.startswith(HUB_PREFIX):
        return None
    spec = get_backbone(config.model.backbone)
    if not spec.has_alpha:
        return None
    return float(config.model.alpha) if config.model.alpha is not None else 1.0


def shape_key(config: RunConfig, num_outputs: int, variant: str) -> str:
    """What a measurement depends on: backbone, width, head, input size, outputs and variant."""
    backbone = config.model.backbone
    if not backbone.startswith(HUB_PREFIX):
        backbone = get_backbone(backbone).name
    alpha = effective_alpha(config)
    width = f"@{alpha:g}" if alpha is not None else ""
    hidden = "-".join(str(int(u)) for u in config.model.hidden_units) or "0"
    return f"{backbone}{width} {int(config.data.image_size)}px hidden:{hidden} out:{int(num_outputs)} {variant}"


@dataclass
class Measurement:
    """One shape measured on LiteRT.

    Attributes:
        key: :func:`shape_key`.
        size: ``.tflite`` bytes.
        latency_ms: p50 of ``invoke()`` in milliseconds (``latency_p90_ms`` the p90).
        threads: LiteRT threads the latency was measured with.
        arena: TFLite Micro tensor-arena estimate in bytes (full-integer variants; else None).
        convert_seconds: building the untrained copy and converting it.
        time_seconds: timing it (and estimating the arena).
        error: why the shape could not be converted or run (then the other fields are None).
    """

    key: str
    size: int | None = None
    latency_ms: float | None = None
    latency_p90_ms: float | None = None
    threads: int = 1
    arena: int | None = None
    convert_seconds: float = 0.0
    time_seconds: float = 0.0
    error: str | None = None


@dataclass
class DeviceMeter:
    """Measures shapes once per search and checks them against the limits.

    Attributes:
        variant: the TFLite variant every trial is converted to.
        limits: the device limits.
        threads: LiteRT threads for latency.
        iterations: timed ``invoke()`` calls per shape (after 5 warm-up calls).
        path: the ``device.json`` file (None: keep in memory only).
    """

    variant: str
    limits: DeviceLimits
    threads: int = 1
    iterations: int = 50
    path: Path | None = None
    shapes: dict[str, Measurement] = field(default_factory=dict)
    trials: dict[str, str] = field(default_factory=dict)
    measured: int = 0
    reused: int = 0

    def load(self) -> "DeviceMeter":
        """Merges what ``path`` holds (a resumed search, other workers); returns self."""
        if self.path is None or not self.path.is_file():
            return self
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return self  # a damaged cache only costs re-measuring
        fields = set(Measurement.__dataclass_fields__)
        for key, raw in (doc.get("shapes") or {}).items():
            if isinstance(raw, dict):
                self.shapes.setdefault(key, Measurement(**{k: v for k, v in raw.items() if k in fields}))
        for trial, key in (doc.get("trials") or {}).items():
            self.trials.setdefault(str(trial), str(key))
        return self

    def save(self) -> None:
        """Writes ``path`` (merged with what other processes wrote meanwhile)."""
        if self.path is None:
            return
        mine_shapes, mine_trials = dict(self.shapes), dict(self.trials)
        self.load()
        self.shapes.update(mine_shapes)
        self.trials.update(mine_trials)
        doc = {
            "variant": self.variant, "threads": self.threads, "iterations": self.iterations,
            "shapes": {k: asdict(v) for k, v in sorted(self.shapes.items())},
            "trials": dict(sorted(self.trials.items())),
        }
        atomic_write_text(self.path, json.dumps(doc, indent=1) + "\n")

    def measure(self, config: RunConfig, num_outputs: int, images, trial_id: str | None = None) -> Measurement:
        """The measurement of ``config``'s shape: from the cache, else converted and timed now.

        Args:
            config: the trial's RunConfig (its weights are ignored: the copy is untrained).
            num_outputs: classes (or targets) of the head.
            images: uint8 training images at the trial's size, to calibrate int8 variants.
            trial_id: recorded against the shape for the trial table.

        Side effects: writes ``device.json`` when a shape is measured or a trial recorded.
        """
        key = shape_key(config, num_outputs, self.variant)
        if key in self.shapes:
            self.reused += 1
            found = self.shapes[key]
        else:
            found = self._measure(config, num_outputs, images, key)
            self.shapes[key] = found
            self.measured += 1
        if trial_id is not None:
            self.trials[str(trial_id)] = key
        self.save()
        return found

    def _measure(self, config: RunConfig, num_outputs: int, images, key: str) -> Measurement:
        from tlkeras._backend import keras
        from tlkeras.export.bias import bias_correct
        from tlkeras.export.convert import convert_variant, save_serving_model
        from tlkeras.export.variants import VARIANTS

        start = time.perf_counter()
        untrained = copy.deepcopy(config.model)
        untrained.weights = "none"
        size = int(config.data.image_size)
        spec = VARIANTS[self.variant]
        try:
            model = build_model(untrained, num_outputs, size)
            if spec.optimize and not spec.float16:
                # The export converts quantized variants from a bias-corrected copy, which adds a
                # bias to the layers without one (+2.6% of an int8 MobileNet-0.25): measure that.
                model = bias_correct(model, images[:_REPRESENTATIVE], activations=spec.ops == "int8")[0]
            with tempfile.TemporaryDirectory(prefix="tlkeras-device-") as tmp:
                saved = save_serving_model(model, Path(tmp) / "saved_model", config.model.head)
                content = convert_variant(saved, self.variant, images[:_REPRESENTATIVE])
        except TLKerasError as exc:
            return Measurement(key, threads=self.threads, convert_seconds=time.perf_counter() - start, error=str(exc))
        finally:
            keras.backend.clear_session()
        converted = time.perf_counter()
        arena = None
        if full_integer(self.variant):
            arena = litert.estimate_arena(litert.inspect_model(content)).total
        try:
            timing = litert.measure_latency(content, num_threads=self.threads, iterations=self.iterations, warmup=5)
        except TLKerasError as exc:
            return Measurement(key, size=len(content), threads=self.threads, arena=arena,
                               convert_seconds=converted - start, time_seconds=time.perf_counter() - converted, error=str(exc))
        return Measurement(
            key, size=len(content), latency_ms=round(timing["p50_ms"], 4), latency_p90_ms=round(timing["p90_ms"], 4),
            threads=self.threads, arena=arena, convert_seconds=round(converted - start, 3),
            time_seconds=round(time.perf_counter() - converted, 3),
        )

    def problems(self, measurement: Measurement) -> list[str]:
        """Why a measured shape is infeasible (empty: it fits the limits)."""
        if measurement.error:
            return [f"cannot be deployed as {self.variant}: {measurement.error}"]
        return self.limits.violations(measurement.size, measurement.latency_ms, measurement.arena)

    def for_trial(self, trial_id: str) -> Measurement | None:
        """The measurement recorded for a trial, if any."""
        key = self.trials.get(str(trial_id))
        return self.shapes.get(key) if key else None

    def seconds(self) -> dict[str, float]:
        """Time spent converting and timing the shapes measured (this run and earlier ones)."""
        return {
            "convert": round(sum(m.convert_seconds for m in self.shapes.values()), 1),
            "latency": round(sum(m.time_seconds for m in self.shapes.values()), 1),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "variant": self.variant, "threads": self.threads, "limits": asdict(self.limits), "limits_text": self.limits.describe(),
            "shapes_measured_here": self.measured, "shapes_reused": self.reused, "shapes": len(self.shapes),
            "seconds": self.seconds(), "file": os.fspath(self.path) if self.path else None,
        }
