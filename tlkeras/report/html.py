"""One self-contained HTML page per run (``report.html``) or export bundle, rendered with Jinja2.

A run's page shows the config, metrics, per-class precision/recall/F1, the confusion matrix, the
training curves of both phases (phase boundary and kept epoch marked), the most confused class
pairs with thumbnails, a gallery of misclassified images (with Grad-CAM overlays when the caller
passes them), calibration (reliability diagram, ECE before/after, the "unknown" threshold) and
rejection of unknown images when measured. A bundle's page adds the variants table and the
size-versus-accuracy plot.

Everything is inline: images are base64 ``data:`` URIs, the style sheet is in the page, there is
no script, and a Content-Security-Policy forbids loading anything else, so the page opens offline
and leaks nothing. The report reads files the run already holds; images and predictions, which a
run does not store, come in as :class:`Examples`. Grad-CAM lives in a higher layer
(``tlkeras.explain``), so overlays come in from the caller too (a mapping or a callable).

Side effects: :func:`write_run_report` and :func:`write_bundle_report` write one HTML file each,
atomically; everything else only computes.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

from tlkeras.core.bundle import is_text
from tlkeras.core.data import Split
from tlkeras.core.tasks import task_of
from tlkeras.errors import TLKerasError
from tlkeras.report import figures

__all__ = [
    "Examples",
    "OverlayMaker",
    "examples_from",
    "write_result_report",
    "misclassified",
    "confused_pairs",
    "render",
    "run_report_html",
    "write_run_report",
    "bundle_report_html",
    "write_bundle_report",
]

TEMPLATES = Path(__file__).resolve().parent / "templates"

#: ``(images N x S x S x 3 uint8, predicted classes N) -> N overlay images``, e.g. Grad-CAM.
OverlayMaker = Callable[[np.ndarray, np.ndarray], Sequence[np.ndarray]]
Overlays = Union[Mapping[int, np.ndarray], OverlayMaker, None]


@dataclass
class Examples:
    """The evaluated split's images with the model's outputs, for thumbnails and the gallery.

    Attributes:
        images: N x S x S x 3 uint8 images the model saw, or N texts (a 1-D object array of
            ``str``: the gallery then quotes the misclassified texts).
        y_true: N integer labels.
        probs: N x K softmax outputs.
        paths: where each image came from (optional; shown under gallery images).
        split: the split's name (``test``, ``val``...).
    """

    images: np.ndarray
    y_true: np.ndarray
    probs: np.ndarray
    paths: Sequence[str] = field(default_factory=list)
    split: str = "test"

    def __post_init__(self):
        self.y_true = np.asarray(self.y_true).astype(np.int64).reshape(-1)
        self.probs = np.asarray(self.probs, np.float64)
        if len(self.images) != len(self.y_true) or self.probs.shape[0] != len(self.y_true):
            raise TLKerasError(f"examples disagree: {len(self.images)} images, {len(self.y_true)} labels, {self.probs.shape[0]} outputs")

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def is_text(self) -> bool:
        return is_text(np.asarray(self.images))


def examples_from(model, split: Split, split_name: str = "test", batch_size: int = 64) -> Examples:
    """Predicts ``split`` with ``model`` (softmax head) and wraps the result as :class:`Examples`."""
    from tlkeras.core.metrics import predict

    return Examples(split.x, split.y, predict(model, split.x, batch_size), list(split.paths), split_name)


def misclassified(examples: Examples, top: int = 24) -> list[int]:
    """Indices of misclassified examples, most confident mistakes first, at most ``top``."""
    pred = examples.predicted
    wrong = np.flatnonzero(pred != examples.y_true)
    order = np.argsort(-examples.probs[wrong, pred[wrong]], kind="stable")
    return [int(i) for i in wrong[order][:top]]


def confused_pairs(matrix: Sequence[Sequence[int]], class_names: Sequence[str], top: int = 5) -> list[tuple[int, int, int]]:
    """The ``top`` off-diagonal cells of a confusion matrix: ``(true, predicted, count)``, most first."""
    m = np.asarray(matrix, np.int64)
    cells = [(int(m[i, j]), i, j) for i in range(m.shape[0]) for j in range(m.shape[1]) if i != j and m[i, j] > 0]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(i, j, n) for n, i, j in cells[:top]]


# ---------------------------------------------------------------------------------------------
# Rendering


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "—" if not np.isfinite(value) else f"{float(value):.{digits}f}"
    return str(value)


def render(context: Mapping[str, Any]) -> str:
    """Renders the report template with ``context`` (autoescaped: names and paths cannot inject HTML)."""
    import jinja2

    from tlkeras import __version__

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    base = {
        "version": __version__, "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "title": "tlkeras report", "subtitle": "", "nav": [], "cards": [], "notes": [], "metric_tables": [],
        "per_class": None, "confusion": None, "curves": None, "pairs": [], "pairs_split": "", "gallery": None,
        "calibration": None, "variants": None, "config_text": None, "run_info": None,
    }
    base.update(context)
    return env.get_template("report.html.j2").render(**base)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TLKerasError(f"{path} is not valid JSON ({exc}); rerun the stage that wrote it") from None


def _metric_rows(sections: list[tuple[str, dict]]) -> dict[str, Any] | None:
    keys: list[str] = []
    for _, values in sections:
        keys += [k for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in keys]
    if not keys:
        return None
    return {"columns": [name for name, _ in sections], "rows": [[k] + [_fmt(v.get(k)) for _, v in sections] for k in keys]}


def _per_class(final: dict, split: str) -> dict | None:
    per = final.get("per_class")
    if not isinstance(per, dict):
        return None
    rows = []
    for name, v in per.items():
        if isinstance(v, dict):
            rows.append({"name": name, "precision": _fmt(v.get("precision")), "recall": _fmt(v.get("recall")),
                         "f1": _fmt(v.get("f1")), "support": _fmt(v.get("support"))})
        else:  # sigmoid heads store one F1 per class
            rows.append({"name": name, "precision": "—", "recall": "—", "f1": _fmt(v), "support": "—"})
    return {"split": split, "rows": rows}


def _confusion(matrix, names: Sequence[str], split: str) -> dict:
    m = np.asarray(matrix, np.int64)
    rows = []
    for i, name in enumerate(names):
        total = max(int(m[i].sum()), 1)
        cells = []
        for j in range(len(names)):
            share = m[i, j] / total
            rgb = "31, 111, 180" if i == j else "180, 35, 24"  # diagonal blue, mistakes red
            cells.append({"value": int(m[i, j]), "rgb": rgb, "alpha": f"{0.08 + 0.85 * share:.2f}" if m[i, j] else "0",
                          "fg": "#fff" if share > 0.55 else "#1d2330"})
        rows.append({"name": name, "cells": cells})
    return {"split": split, "names": list(names), "rows": rows}


def _resolve_overlays(examples: Examples, indices: list[int], overlays: Overlays) -> tuple[dict[int, np.ndarray], str | None]:
    if overlays is None or not indices or examples.is_text:
        return {}, None
    if callable(overlays):
        try:
            made = overlays(examples.images[indices], examples.predicted[indices])
        except TLKerasError as exc:  # e.g. a TF-Hub backbone has no feature map to explain
            return {}, f"no overlays: {exc}"
        return dict(zip(indices, made)), None
    return {int(k): v for k, v in overlays.items()}, None


def _gallery(examples: Examples, names: Sequence[str], overlays: Overlays, top: int) -> dict:
    indices = misclassified(examples, top)
    made, problem = _resolve_overlays(examples, indices, overlays)
    items = []
    for i in indices:
        p = int(examples.predicted[i])
        overlay = made.get(i)
        items.append({
            "text": _quote(examples.images[i]) if examples.is_text else None,
            "image": None if examples.is_text else _b64(figures.image_png(examples.images[i])),
            "overlay": _b64(figures.image_png(overlay)) if overlay is not None else None,
            "true": names[int(examples.y_true[i])], "predicted": names[p], "score": f"{examples.probs[i, p]:.2f}",
            "name": _shown_name(examples.paths[i]) if i < len(examples.paths) and examples.paths[i] else "",
        })
    wrong = int((examples.predicted != examples.y_true).sum())
    kind = "texts" if examples.is_text else "images"
    note = f"{wrong} of {len(examples.y_true)} {kind} misclassified; the {len(items)} most confident mistakes are shown"
    if made:
        note += ", each beside its Grad-CAM overlay for the predicted class"
    if problem:
        note += f" ({problem})"
    return {"split": examples.split, "entries": items, "note": note + ".", "kind": kind}


def _shown_name(path) -> str:
    """A file's name for the page; bytes that are not UTF-8 (latin-1 names) show as U+FFFD."""
    return Path(path).name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _quote(text, limit: int = 400) -> str:
    """A misclassified text for the gallery: whitespace collapsed, cut at ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pairs(examples: Examples | None, matrix, names: Sequence[str], top: int = 5, thumbs: int = 6) -> list[dict]:
    out = []
    for t, p, count in confused_pairs(matrix, names, top):
        images = []
        if examples is not None:
            idx = np.flatnonzero((examples.y_true == t) & (examples.predicted == p))
            idx = idx[np.argsort(-examples.probs[idx, p], kind="stable")][:thumbs]
            if examples.is_text:
                out.append({"true": names[t], "predicted": names[p], "count": count, "thumbs": [], "texts": [_quote(examples.images[i], 160) for i in idx[:3]]})
                continue
            images = [_b64(figures.image_png(examples.images[i], 96)) for i in idx]
        out.append({"true": names[t], "predicted": names[p], "count": count, "thumbs": images, "texts": []})
    return out


def _calibration(calib: dict | None, examples: Examples | None, unknown: dict | None) -> dict | None:
    from tlkeras.core.calibration import expected_calibration_error, reliability_bins

    if not calib and examples is None and not unknown:
        return None
    rows, figs, notes = [], [], []
    if calib:
        rows += [
            ("temperature T (logits / T, stored in the model)", _fmt(calib.get("temperature"))),
            (f"ECE on val ({calib.get('val_count', '?')} images), before → after", f"{_fmt(calib.get('ece_before'))} → {_fmt(calib.get('ece_after'))}"),
            ("val NLL, before → after", f"{_fmt(calib.get('nll_before'))} → {_fmt(calib.get('nll_after'))}"),
        ]
        if calib.get("eval"):
            ev = calib["eval"]
            rows.append((f"ECE on the held-out split ({ev.get('count')} images), before → after", f"{_fmt(ev.get('ece_before'))} → {_fmt(ev.get('ece_after'))}"))
        rows += [
            ("unknown threshold (top score below it: answer “unknown”)", _fmt(calib.get("unknown_threshold"), 4)),
            ("target recall of known classes / achieved on val", f"{_fmt(calib.get('target_recall'), 2)} / {_fmt(calib.get('val_recall_at_threshold'))}"),
        ]
        rel = calib.get("reliability") or {}
        png = figures.reliability_diagram([("val, before scaling", rel.get("before")), ("val, after scaling", rel.get("after"))],
                                          "Reliability on val")
        if png:
            figs.append({"title": "Reliability on val (temperature fitted here)", "png": _b64(png)})
    if examples is not None and examples.probs.shape[1] > 1:
        bins = int(calib.get("bins", 15)) if calib else 15
        ece = expected_calibration_error(examples.probs, examples.y_true, bins)
        rows.append((f"ECE of the saved model on {examples.split} ({len(examples.y_true)} images)", _fmt(ece)))
        png = figures.reliability_diagram([(f"{examples.split}, saved model", reliability_bins(examples.probs, examples.y_true, bins))],
                                          f"Reliability on {examples.split}")
        if png:
            figs.append({"title": f"Reliability on {examples.split} (the saved model)", "png": _b64(png)})
    if unknown:
        rows += [
            (f"unknown images rejected: AUROC known vs unknown ({unknown.get('known')} / {unknown.get('unknown')} images)", _fmt(unknown.get("auroc"))),
            ("false-accept rate of unknown images at the threshold", _fmt(unknown.get("false_accept_rate"))),
            ("known recall at the threshold (this split)", _fmt(unknown.get("known_recall"))),
        ]
        if unknown.get("source"):
            notes.append(f"Unknown images: {unknown['source']}; threshold from {unknown.get('threshold_source', 'calibration.json')}.")
    if not calib:
        notes.append("This run has no calibration.json: it was not temperature-scaled.")
    return {"rows": rows, "figures": figs, "notes": notes}


def _summary_cards(final: dict, calib: dict | None, timings: dict | None) -> list[dict]:
    cards = []
    for key, label in (("accuracy", "accuracy"), ("f1_macro", "macro F1"), ("subset_accuracy", "subset accuracy"),
                       ("mae", "MAE"), ("r2", "R²")):
        if isinstance(final.get(key), (int, float)):
            cards.append({"label": label, "value": _fmt(final[key])})
    if calib:
        cards.append({"label": "ECE val (after scaling)", "value": _fmt(calib.get("ece_after"))})
        cards.append({"label": "unknown threshold", "value": _fmt(calib.get("unknown_threshold"))})
    if timings and isinstance(timings.get("total"), (int, float)):
        cards.append({"label": "training time", "value": f"{timings['total']:.1f} s"})
    return cards


def run_report_html(run_dir: str | os.PathLike, examples: Examples | None = None, overlays: Overlays = None, *,
                    metrics_file: str = "metrics.json", unknown: dict | None = None, title: str | None = None,
                    gallery_size: int = 24) -> str:
    """The HTML of a run's report (see :func:`write_run_report`); writes nothing."""
    from tlkeras.runs import read_labels

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TLKerasError(f"run directory {run_dir} does not exist; pass a folder written by python -m tlkeras.train (runs/<name>)")
    names = read_labels(run_dir)
    metrics = _read_json(run_dir / metrics_file)
    if metrics is None:
        raise TLKerasError(f"{run_dir} has no {metrics_file}; train or evaluate the run first")
    history = _read_json(run_dir / "history.json") or {}
    calib = _read_json(run_dir / "calibration.json")
    info = _read_json(run_dir / "run.json")
    final = metrics.get("final", metrics)
    split = metrics.get("final_split") or metrics.get("split") or (examples.split if examples else "test")
    sections = []
    if isinstance(metrics.get("val"), dict):
        sections.append(("val", metrics["val"]))
    sections.append((split, final))
    table = _metric_rows(sections)
    nav = []
    data = metrics.get("data") or ((info or {}).get("data") or {}).get("source") or ""
    data = f"data {data}" if data else ""
    context: dict[str, Any] = {
        "title": title or f"Run {run_dir.resolve().name}",
        "subtitle": " · ".join(s for s in (f"{len(names)} classes: {', '.join(names)}", f"metrics from {metrics_file}", data) if s),
        "cards": _summary_cards(final, calib, metrics.get("timings")),
        "metric_tables": [{"title": f"{metrics_file}", **table}] if table else [],
        "per_class": _per_class(final, split),
    }
    nav += [("summary", "summary"), ("metrics", "metrics")] + ([("per-class", "per class")] if context["per_class"] else [])
    if "confusion_matrix" in final:
        context["confusion"] = _confusion(final["confusion_matrix"], names, split)
        context["pairs"] = _pairs(examples, final["confusion_matrix"], names)
        context["pairs_split"] = split
        nav.append(("confusion", "confusion matrix"))
    selection = (info or {}).get("selection")
    png = figures.training_curves(history, selection)
    if png:
        _, final_epoch = figures.kept_epochs(history, selection)
        boundary = sum(1 for p in history.get("phase", []) if p == 1)
        note = (f"Phase 1 (frozen backbone): epochs 1–{boundary}; phase 2 (fine-tuning) after the dashed line. "
                if boundary and boundary < len(history.get("loss", [])) else "One phase. ")
        if final_epoch:
            note += f"The saved model holds epoch {final_epoch} (circled in red; grey: each phase's best)."
        if selection and selection.get("message"):
            note += f" {selection['message'][0].upper()}{selection['message'][1:]}."
        context["curves"] = {"png": _b64(png), "note": note}
        nav.append(("curves", "training curves"))
    if context.get("pairs"):
        nav.append(("confused-pairs", "confused pairs"))
    if examples is not None and examples.probs.ndim == 2 and examples.probs.shape[1] > 1:
        context["gallery"] = _gallery(examples, names, overlays, gallery_size)
        nav.append(("gallery", "misclassified"))
    context["calibration"] = _calibration(calib, examples, unknown or final.get("unknown") or metrics.get("unknown"))
    if context["calibration"]:
        nav.append(("calibration", "calibration"))
    if (run_dir / "config.yaml").is_file():
        context["config_text"] = (run_dir / "config.yaml").read_text(encoding="utf-8")
        context["run_info"] = json.dumps(info, indent=2) if info else None
        nav.append(("config", "config"))
    context["nav"] = nav
    return render(context)


def write_result_report(run_dir: str | os.PathLike, result=None, overlays_for: Callable[[Any], Overlays] | None = None) -> Path:
    """Writes ``<run_dir>/report.html`` for a finished training ``result`` (a
    :class:`tlkeras.train.run.TrainResult`; None: from the run folder's files alone).

    A softmax run that kept its data gets the gallery of its evaluated split's misclassified
    examples; ``overlays_for(model)`` (image runs only) adds an overlay per example, e.g.
    Grad-CAM (:func:`tlkeras.explain.report.write_train_report`).

    Side effects: runs the model on the evaluated split; writes ``report.html`` atomically.
    """
    examples = overlays = None
    if result is not None and task_of(result.config.model).exclusive_classes and result.data is not None:
        name, split = result.data.eval_split
        examples = examples_from(result.model, split, name, result.config.data.batch_size)
        if overlays_for is not None and result.data.modality != "text":  # a text gallery quotes the texts
            overlays = overlays_for(result.model)
    return write_run_report(run_dir, examples, overlays)


def write_run_report(run_dir: str | os.PathLike, examples: Examples | None = None, overlays: Overlays = None, *,
                     metrics_file: str = "metrics.json", unknown: dict | None = None, path: str | os.PathLike | None = None,
                     title: str | None = None, gallery_size: int = 24) -> Path:
    """Writes ``<run_dir>/report.html``: one self-contained page about a run.

    It reads ``labels.txt``, ``metrics_file``, and when present ``history.json``,
    ``calibration.json``, ``run.json`` and ``config.yaml``.

    Args:
        run_dir: a run directory written by ``tlkeras.train``.
        examples: the evaluated split's images and outputs (:func:`examples_from`); without them
            the page has no thumbnails, gallery or held-out reliability diagram.
        overlays: Grad-CAM (or other) overlays of misclassified images: ``{example index:
            image}``, or a callable ``(images, predicted classes) -> overlays`` called on the
            gallery's images only. A callable raising TLKerasError leaves the gallery plain.
        metrics_file: ``metrics.json`` (training) or ``eval_metrics.json`` (evaluate).
        unknown: the result of :func:`tlkeras.core.calibration.unknown_rejection` to show
            (default: an ``unknown`` entry of the metrics file, if any).
        path: where to write (default ``<run_dir>/report.html``).
        title: the page title (default: ``Run <name>``).
        gallery_size: at most this many misclassified images.

    Returns:
        The written path.

    Raises:
        TLKerasError: a missing run directory, labels or metrics file; unreadable JSON.

    Side effects: writes one file atomically.
    """
    from tlkeras.runs import atomic_write_text

    html = run_report_html(run_dir, examples, overlays, metrics_file=metrics_file, unknown=unknown, title=title,
                           gallery_size=gallery_size)
    target = Path(path) if path is not None else Path(run_dir) / "report.html"
    atomic_write_text(target, html)
    return target


def _variants(meta: dict, benchmark: dict | None) -> dict:
    key = (meta.get("evaluation") or {}).get("primary_metric", "accuracy")
    rows_by_name = {r["variant"]: r for r in (benchmark or {}).get("rows", [])}
    columns = ["variant", "size KB", "gzip KB", key, "agreement", "drop (points)", "within threshold"]
    threads = [str(t) for t in (benchmark or {}).get("options", {}).get("threads", [])]
    columns += [f"p50 ms ({t} threads)" for t in threads]
    rows = []
    for name, v in (meta.get("variants") or {}).items():
        m = v.get("metrics") or {}
        bench = rows_by_name.get(name, {})
        row = [name, _fmt((v.get("bytes") or 0) / 1024, 0), _fmt((v.get("gzip_bytes") or 0) / 1024, 0), _fmt(m.get(key)),
               _fmt(m.get("agreement")), _fmt(m.get("drop_points"), 2),
               "FAILED: " + v["error"] if v.get("error") else _fmt(bool(v.get("within_threshold")))]
        row += [_fmt(bench.get("latency", {}).get(t, {}).get("p50_ms")) for t in threads]
        rows.append(row)
    notes = []
    if meta.get("recommended"):
        notes.append(f"Recommended variant: {meta['recommended']}.")
    if meta.get("unknown_threshold") is not None:
        notes.append(f"Unknown threshold (answer “unknown” below this top score): {_fmt(meta['unknown_threshold'], 4)}.")
    trainable = meta.get("trainable")
    if trainable:
        lat = trainable.get("latency") or {}
        notes.append(f"On-device training: trainable.tflite, {_fmt((trainable.get('bytes') or 0) / 1024, 0)} KB, {trainable.get('slots')} class slots "
                     f"({trainable.get('free_slots')} free); embed {_fmt(lat.get('embed_ms'), 2)} ms, one train step on 32 features "
                     f"{_fmt(lat.get('train_32_ms'), 2)} ms (LiteRT, 1 thread).")
    if not benchmark:
        notes.append("No latency measured; run python -m tlkeras.benchmark on the bundle for the timing columns.")
    return {"columns": columns, "rows": rows, "notes": notes, "metric": key}


def bundle_report_html(bundle_dir: str | os.PathLike, *, benchmark: dict | None = None,
                       size_vs_accuracy: bytes | str | os.PathLike | None = None, title: str | None = None) -> str:
    """The HTML of a bundle's report (see :func:`write_bundle_report`); writes nothing."""
    bundle_dir = Path(bundle_dir)
    meta = _read_json(bundle_dir / "metadata.json")
    if not isinstance(meta, dict) or meta.get("format") != "tlkeras-bundle":
        raise TLKerasError(f"{bundle_dir} has no tlkeras metadata.json; pass a bundle written by tlkeras.export")
    if benchmark is None:
        benchmark = _read_json(bundle_dir / "benchmark.json")
    plot = size_vs_accuracy
    if plot is None and (bundle_dir / "size_vs_accuracy.png").is_file():
        plot = bundle_dir / "size_vs_accuracy.png"
    if plot is not None and not isinstance(plot, bytes):
        plot = Path(plot).read_bytes()
    variants = _variants(meta, benchmark)
    variants["plot"] = _b64(plot)
    ev = meta.get("evaluation") or {}
    task = meta.get("task") or {}
    keras_metrics = ev.get("keras") or {}
    cards = [{"label": f"Keras {k}", "value": _fmt(v)} for k, v in keras_metrics.items()]
    cards.append({"label": "variants", "value": str(len(variants["rows"]))})
    context = {
        "title": title or f"Bundle {meta.get('name') or bundle_dir.resolve().name}",
        "subtitle": f"{len(task.get('class_names', []))} classes · evaluated on {ev.get('split')} ({ev.get('count')} "
                    f"{'texts' if meta.get('modality') == 'text' else 'images'}) · "
                    f"{'passed' if meta.get('passed') else 'some variants failed'}",
        "cards": cards,
        "notes": [f"Classes: {', '.join(task.get('class_names', []))}."],
        "variants": variants,
        "config_text": json.dumps({k: meta.get(k) for k in ("input", "outputs", "source_run", "versions")}, indent=2),
        "nav": [("summary", "summary"), ("variants", "variants"), ("config", "metadata")],
    }
    return render(context)


def write_bundle_report(bundle_dir: str | os.PathLike, *, benchmark: dict | None = None,
                        size_vs_accuracy: bytes | str | os.PathLike | None = None, path: str | os.PathLike | None = None,
                        title: str | None = None) -> Path:
    """Writes ``<bundle_dir>/report.html``: the variants table and the size-versus-accuracy plot.

    Args:
        bundle_dir: a bundle written by ``tlkeras.export`` (``metadata.json``).
        benchmark: ``tlkeras.benchmark.bundle.benchmark_bundle``'s result (default: the bundle's
            ``benchmark.json``, if any) for latency columns.
        size_vs_accuracy: the plot as PNG bytes or a file (default: the bundle's
            ``size_vs_accuracy.png``, if any), e.g. from ``plot_size_vs_accuracy``.
        path: where to write (default ``<bundle_dir>/report.html``).
        title: the page title.

    Returns:
        The written path.

    Raises:
        TLKerasError: a directory without tlkeras bundle metadata.

    Side effects: writes one file atomically.
    """
    from tlkeras.runs import atomic_write_text

    html = bundle_report_html(bundle_dir, benchmark=benchmark, size_vs_accuracy=size_vs_accuracy, title=title)
    target = Path(path) if path is not None else Path(bundle_dir) / "report.html"
    atomic_write_text(target, html)
    return target
