"""The int8 guardrail: keep the layers that lose most in float until the int8 variant passes.

Post-training int8 can cost a few points (flowers5, MobileNet-0.25: 3.3 points, 0.947 top-1
agreement). When the ``int8_float_io`` variant misses the gate (a drop over ``max_drop`` points,
or top-1 agreement with Keras under ``min_agreement``), :func:`guard_int8` re-quantizes the
calibrated model with the worst layers of the quantization debugger's report (largest RMS error
in quantization steps) kept in float: 1, 2, 4, 8 ... layers, until the gate passes or the file
would exceed the size budget (a share of the float32 model's bytes). This is TensorFlow's
selective quantization (:func:`tlkeras.export.convert.selective_int8`).

Only ``int8_float_io`` is guarded: the integer-I/O variants (``int8`` for microcontrollers,
``uint8_io`` for accelerators) exist to be integer end to end, and a float layer inside defeats
them; they keep failing loudly instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tlkeras.core import litert
from tlkeras.export.convert import selective_int8

__all__ = ["GuardResult", "guard_int8", "gate", "latency_cost"]


def gate(metrics: dict[str, Any], max_drop: float, min_agreement: float) -> bool:
    """Whether a variant's metrics pass: drop within ``max_drop`` and, where defined, agreement."""
    agreement = metrics.get("agreement")
    return metrics["drop_points"] <= max_drop + 1e-9 and (agreement is None or agreement >= min_agreement - 1e-9)


@dataclass
class GuardResult:
    """What :func:`guard_int8` tried and chose.

    Attributes:
        passed: a re-quantized model passed the gate within the budget.
        content: the chosen ``.tflite`` (None when nothing passed).
        metrics: the chosen model's metrics (None when nothing passed).
        float_layers: Keras layer names kept in float in the chosen model.
        float_nodes: the TFLite tensor names denylisted.
        attempts: one row per try: layers kept float, bytes, agreement, drop, passed.
        reason: why it stopped without passing.
    """

    passed: bool
    content: bytes | None = None
    metrics: dict[str, Any] | None = None
    float_layers: list[str] = field(default_factory=list)
    float_nodes: list[str] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""


def guard_int8(
    debugger,
    rows: Sequence[dict[str, Any]],
    evaluate: Callable[[bytes], dict[str, Any]],
    *,
    max_drop: float,
    min_agreement: float,
    max_bytes: int,
    max_layers: int = 64,
) -> GuardResult:
    """Keeps more and more of the worst int8 layers in float until the gate passes.

    Args:
        debugger: a run quantization debugger of the variant's serving model
            (:func:`tlkeras.export.convert.quantization_debugger`).
        rows: its per-layer rows, worst first (:func:`tlkeras.export.convert.debugger_rows`).
        evaluate: runs a ``.tflite`` on the evaluation split and returns its metrics
            (``drop_points``, ``agreement``).
        max_drop, min_agreement: the gate.
        max_bytes: the size budget; a model over it is not accepted and the search stops.
        max_layers: the most layers kept in float.

    Returns:
        A :class:`GuardResult`.
    """
    ranked = [r for r in rows if r.get("node") and r["rmse_over_scale"] == r["rmse_over_scale"]]
    result = GuardResult(passed=False)
    if not ranked:
        result.reason = "the quantization debugger named no layer to keep in float"
        return result
    count = 1
    tried: set[int] = set()
    while True:
        count = min(count, len(ranked), max_layers)
        if count in tried:
            result.reason = (f"still over the gate with the {count} worst layers in float "
                             f"({'every layer the debugger measured' if count == len(ranked) else f'the limit of {max_layers}'})")
            return result
        tried.add(count)
        chosen = ranked[:count]
        content = selective_int8(debugger, [r["node"] for r in chosen])
        if len(content) > max_bytes:
            result.attempts.append({"float_layers": count, "bytes": len(content), "over_budget": True})
            result.reason = f"keeping {count} layers in float makes the file {len(content)} bytes, over the size budget of {max_bytes}"
            return result
        metrics = evaluate(content)
        ok = gate(metrics, max_drop, min_agreement)
        result.attempts.append({"float_layers": count, "bytes": len(content), "agreement": metrics.get("agreement"),
                                "drop_points": metrics["drop_points"], "passed": ok})
        if ok:
            result.passed = True
            result.content = content
            result.metrics = metrics
            result.float_layers = list(dict.fromkeys(r["layer"] for r in chosen))
            result.float_nodes = [r["node"] for r in chosen]
            return result
        count *= 2


def latency_cost(before: bytes, after: bytes, iterations: int = 30) -> dict[str, float]:
    """p50 latency (LiteRT, 1 thread) of the plain and the guarded int8 model, measured interleaved."""
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(3):  # interleaved rounds, so a busy machine slows both alike
        for key, content in (("before", before), ("after", after)):
            times[key].append(litert.measure_latency(content, num_threads=1, iterations=iterations, warmup=3)["p50_ms"])
    p50 = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"p50_ms_before": p50["before"], "p50_ms_after": p50["after"], "ratio": p50["after"] / max(p50["before"], 1e-9)}
