"""Benchmark a bundle's variants: size, gzipped size, LiteRT latency, accuracy, agreement.

Latency is the wall time of ``Interpreter.invoke()`` on one image (batch 1) with LiteRT's
default XNNPACK delegate (int16x8 runs on the builtin kernels), for each requested thread count.
Variants are timed round-robin in several rounds, so a burst of load from another process
spreads over all variants instead of hitting one; p50 and p90 are taken over the pooled times.
Accuracy and agreement come from the bundle's metadata.json, which the export measured on the
evaluation split with the same interpreter.

Side effects: :func:`write_benchmark` writes ``benchmark.md``, ``benchmark.json`` and
``size_vs_accuracy.png``; nothing else writes files.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlkeras.core import litert
from tlkeras.errors import TLKerasError

__all__ = ["BenchmarkOptions", "benchmark_bundle", "format_markdown", "plot_size_vs_accuracy", "write_benchmark", "read_bundle"]


@dataclass
class BenchmarkOptions:
    """How to time the variants.

    Attributes:
        threads: thread counts to time (default: 1 and all CPU cores).
        iterations: timed ``invoke()`` calls per variant and thread count.
        warmup: untimed calls first (XNNPACK packs weights on the first call).
        rounds: the iterations are split into this many round-robin rounds over the variants.
        variants: variant names to time (default: all in the bundle).
    """

    threads: tuple[int, ...] = ()
    iterations: int = 200
    warmup: int = 20
    rounds: int = 5
    variants: tuple[str, ...] = ()

    def validate(self) -> "BenchmarkOptions":
        if not self.threads:
            self.threads = tuple(sorted({1, os.cpu_count() or 1}))
        if any(int(t) < 1 for t in self.threads):
            raise TLKerasError(f"thread counts must be >= 1, got {list(self.threads)}")
        if self.iterations < 1 or self.rounds < 1 or self.warmup < 0:
            raise TLKerasError("iterations and rounds must be >= 1 and warmup >= 0")
        self.rounds = min(self.rounds, self.iterations)
        return self


def read_bundle(bundle_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks ``metadata.json`` of a bundle.

    Raises:
        TLKerasError: if the directory or its metadata is missing or not a tlkeras bundle.
    """
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / "metadata.json"
    if not bundle_dir.is_dir():
        raise TLKerasError(f"bundle directory {bundle_dir} does not exist; run python -m tlkeras.export first")
    if not path.is_file():
        raise TLKerasError(f"{bundle_dir} has no metadata.json; pass a bundle written by tlkeras.export")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TLKerasError(f"{path} is not valid JSON (line {exc.lineno}); re-export the bundle") from None
    if meta.get("format") != "tlkeras-bundle" or not isinstance(meta.get("variants"), dict):
        raise TLKerasError(f"{path} is not tlkeras bundle metadata; re-export the bundle")
    return meta


def benchmark_bundle(bundle_dir: str | os.PathLike, options: BenchmarkOptions | None = None) -> dict[str, Any]:
    """Times every variant of a bundle and collects its size and measured accuracy.

    Returns:
        ``{"bundle", "created", "machine", "options", "primary_metric", "keras", "rows": [...]}``
        where each row has ``variant``, ``bytes``, ``gzip_bytes``, ``size_ratio`` (to float32),
        ``latency`` (``{threads: {p50_ms, p90_ms, mean_ms, min_ms}}``), ``latency_ratio``
        (p50 at one thread / float32's), and the metrics from metadata.json.

    Raises:
        TLKerasError: a bad bundle, an unknown variant name, a missing ``.tflite`` file.
    """
    options = (options or BenchmarkOptions()).validate()
    bundle_dir = Path(bundle_dir)
    meta = read_bundle(bundle_dir)
    available = {k: v for k, v in meta["variants"].items() if v.get("file")}
    names = list(options.variants) or list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise TLKerasError(f"variant(s) {', '.join(unknown)} are not in {bundle_dir}; it has {', '.join(available)}")
    contents = {}
    for name in names:
        path = bundle_dir / available[name]["file"]
        if not path.is_file():
            raise TLKerasError(f"{path} is missing; re-export the bundle")
        contents[name] = path.read_bytes()

    interpreters = {(n, t): litert.load_interpreter(contents[n], t) for n in names for t in options.threads}
    for interpreter in interpreters.values():
        litert.set_random_input(interpreter)
        litert.time_invokes(interpreter, options.warmup)
    times: dict[tuple[str, int], list[np.ndarray]] = {key: [] for key in interpreters}
    per_round = [len(chunk) for chunk in np.array_split(np.arange(options.iterations), options.rounds)]
    for count in per_round:
        for key, interpreter in interpreters.items():
            times[key].append(litert.time_invokes(interpreter, count))

    key_metric = meta["evaluation"]["primary_metric"]
    task_metrics = _task_metrics(meta)
    rows = []
    for name in names:
        content = contents[name]
        info = available[name]
        latency = {}
        for t in options.threads:
            pooled = np.concatenate(times[(name, t)])
            latency[str(t)] = {
                "p50_ms": float(np.percentile(pooled, 50)),
                "p90_ms": float(np.percentile(pooled, 90)),
                "mean_ms": float(pooled.mean()),
                "min_ms": float(pooled.min()),
            }
        metrics = info.get("metrics") or {}
        rows.append({
            "variant": name,
            "file": info["file"],
            "bytes": len(content),
            "gzip_bytes": len(gzip.compress(content, 9)),
            "input_dtype": (info.get("input") or {}).get("dtype"),
            "latency": latency,
            key_metric: metrics.get(key_metric),
            "f1_macro": metrics.get("f1_macro"),
            "agreement": metrics.get("agreement"),
            "drop_points": metrics.get("drop_points"),
            "task_metrics": task_metrics(info),
        })
    base = next((r for r in rows if r["variant"] == "float32"), None)
    first = str(options.threads[0])
    for row in rows:
        row["size_ratio"] = row["bytes"] / base["bytes"] if base else None
        row["latency_ratio"] = row["latency"][first]["p50_ms"] / base["latency"][first]["p50_ms"] if base else None
    return {
        "bundle": str(bundle_dir),
        "name": meta.get("name"),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "litert": meta.get("versions", {}).get("ai-edge-litert")},
        "options": {"threads": list(options.threads), "iterations": options.iterations, "warmup": options.warmup, "rounds": options.rounds},
        "primary_metric": key_metric,
        "keras": meta["evaluation"].get("keras", {}),
        "evaluation": {"split": meta["evaluation"].get("split"), "count": meta["evaluation"].get("count")},
        "rows": rows,
    }


def _task_metrics(meta: dict):
    """The bundle's task's extra columns per variant (``Task.bundle_metrics``, e.g. detection's AP50 and AP), else none."""
    from tlkeras.core.tasks import get_task

    try:
        task = get_task(str((meta.get("task") or {}).get("name")))
    except TLKerasError:  # an older bundle or a task name this version does not know
        return lambda info: {}
    return getattr(task, "bundle_metrics", lambda info: {})


def _f(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def format_markdown(result: dict[str, Any]) -> str:
    """The benchmark as a Markdown table with a short header."""
    key = result["primary_metric"]
    threads = result["options"]["threads"]
    head = ["variant", "size KB", "gzip KB", "× float32 size"]
    for t in threads:
        head += [f"p50 ms ({t}T)", f"p90 ms ({t}T)"]
    extra = list(dict.fromkeys(k for r in result["rows"] for k in r.get("task_metrics") or {}))
    head += [f"× float32 p50 ({threads[0]}T)", key, "agreement", "drop (points)"] + [k for k in extra if k != key]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [r["variant"], f"{r['bytes'] / 1024:.0f}", f"{r['gzip_bytes'] / 1024:.0f}", _f(r["size_ratio"], ".3f")]
        for t in threads:
            lat = r["latency"][str(t)]
            cells += [f"{lat['p50_ms']:.3f}", f"{lat['p90_ms']:.3f}"]
        cells += [_f(r["latency_ratio"], ".2f"), _f(r.get(key), ".3f"), _f(r.get("agreement"), ".3f"), _f(r.get("drop_points"), ".2f")]
        cells += [_f((r.get("task_metrics") or {}).get(k), ".3f") for k in extra if k != key]
        lines.append("| " + " | ".join(cells) + " |")
    machine = result["machine"]
    keras_value = result["keras"].get(key)
    ev = result.get("evaluation", {})
    intro = (
        f"Bundle `{result['bundle']}` ({result.get('name')}), {result['created'][:10]}. "
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPU cores; LiteRT {machine.get('litert')} with XNNPACK. "
        f"Latency: `invoke()` on one image, {result['options']['iterations']} timed calls per cell after "
        f"{result['options']['warmup']} warm-up calls, in {result['options']['rounds']} round-robin rounds. "
        f"Keras {key} on {ev.get('split')} ({ev.get('count')} images): {_f(keras_value, '.3f')}."
    )
    return intro + "\n\n" + "\n".join(lines) + "\n"


def plot_size_vs_accuracy(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Writes a PNG scatter of file size (KB) against the primary metric, one labelled point per variant."""
    from tlkeras.core.plots import figure
    from tlkeras.runs import atomic_path

    key = result["primary_metric"]
    fig = figure(figsize=(6.5, 4.5))  # object API: leaves a notebook's inline backend alone
    ax = fig.subplots()
    # Variants that land on the same point (int8 with float, int8 or uint8 I/O) share one label.
    points: dict[tuple[int, float], list[str]] = {}
    for r in result["rows"]:
        if r.get(key) is not None:
            points.setdefault((round(r["bytes"] / 1024), round(float(r[key]), 4)), []).append(r["variant"])
    for (x, y), names in points.items():
        ax.scatter([x], [y], s=40)
        ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    keras_value = result["keras"].get(key)
    if keras_value is not None:
        ax.axhline(keras_value, color="grey", linestyle="--", linewidth=1, label=f"Keras float ({keras_value:.3f})")
        ax.legend(loc="lower right")
    ax.set_xlabel("file size (KB)")
    ax.set_ylabel(f"{key} ({result.get('evaluation', {}).get('split', 'test')})")
    ax.set_title(f"{result.get('name')}: size vs {key}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_benchmark(result: dict[str, Any], output_dir: str | os.PathLike) -> dict[str, Path]:
    """Writes ``benchmark.md``, ``benchmark.json`` and ``size_vs_accuracy.png`` (atomically).

    Returns:
        The written paths by kind (``markdown``, ``json``, ``plot``).

    Raises:
        TLKerasError: if ``output_dir`` cannot be created or written.
    """
    from tlkeras.runs import atomic_write_text, write_json

    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TLKerasError(f"cannot create {output_dir}: {exc.strerror}; pass a writable --output-dir") from None
    if not os.access(output_dir, os.W_OK):
        raise TLKerasError(f"{output_dir} is not writable; pass a writable --output-dir")
    paths = {"markdown": output_dir / "benchmark.md", "json": output_dir / "benchmark.json", "plot": output_dir / "size_vs_accuracy.png"}
    atomic_write_text(paths["markdown"], "# Benchmark\n\n" + format_markdown(result))
    write_json(paths["json"], result)
    plot_size_vs_accuracy(result, paths["plot"])
    return paths
