"""The quickstart run: real photos, real ImageNet weights, train -> int8 export -> verified on the phone's runtime.

Both models see the same 100 labelled photos (20 per class) and are scored on the same 150 test
photos of :mod:`tlkeras.quickstart.sample`:

* transfer: MobileNetV2-1.0 with its ImageNet weights, the library's two-phase recipe at its
  defaults (phase 1 a linear probe on cached features, phase 2 fine-tuning the top blocks);
* from scratch: the same network from random weights, every layer trained (BatchNorm included) for
  the same wall-clock seconds the transfer run trained, on the same photos.

Then the transferred model is exported as an int8 ``.tflite`` with float input/output (the phone
variant), run on LiteRT against the Keras model, loaded in MediaPipe Tasks' ImageClassifier when
``mediapipe`` is installed, and timed on one thread; the run's report.html is written.

Measured in BENCHMARKS.md ("Quickstart"): transfer 0.78-0.81 test accuracy, scratch 0.20, about
80 s in all on 2 CPU cores.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Callable

from tlkeras._backend import keras
from tlkeras.errors import TLKerasError
from tlkeras.quickstart.sample import IMAGE_SIZE, Sample, load_sample

__all__ = ["TimeBudget", "quickstart_configs", "run_quickstart"]

# Fields the command line may change; the data, backbone and weights are the sample's own.
_FIXED = {"data.source", "data.image_size", "model.backbone", "model.alpha", "model.weights", "data.modality"}


class TimeBudget(keras.callbacks.Callback):
    """Stops training at the end of the first epoch that finishes after ``seconds`` of training.

    One budget spans every ``fit`` the callback is passed to (the clock starts at the first
    ``on_train_begin`` only), so phase 1 and phase 2 share it.

    Args:
        seconds: the budget.
        clock: returns the current time in seconds; ``time.perf_counter`` unless a test passes a
            fake one (the budget logic is then checked without reading the wall clock).

    Side effects: sets ``model.stop_training``; records ``epochs`` run, ``seconds`` spent and
    ``stopped`` (True once the budget ended training, False when the schedule ran out first).
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.budget, self.start, self.epochs, self.seconds = float(seconds), None, 0, 0.0
        self.clock, self.stopped = clock, False

    def on_train_begin(self, logs=None):
        if self.start is None:  # one budget across both phases
            self.start = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        self.seconds = self.clock() - self.start
        if self.seconds >= self.budget:
            self.model.stop_training = True
            self.stopped = True


def quickstart_configs(sample: Sample, base=None, explicit: set[str] | None = None):
    """The transfer and from-scratch RunConfigs of the quickstart.

    Transfer: the library's defaults for MobileNetV2 at the sample's 192 px with its ImageNet
    weights. Scratch: the same network with random weights, no phase 1, every layer (BatchNorm
    too) trained at 1e-3 with the transfer run's phase-2 epoch count as its schedule length (the
    time budget usually stops it first). Fields the user set on the command line (``explicit``:
    "section.field" names) apply to both, except the data, backbone and weights.
    """
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig, apply_explicit

    base = base or RunConfig()
    transfer = RunConfig(
        data=DataConfig(source=str(sample.photos), image_size=IMAGE_SIZE),
        model=ModelConfig(backbone="mobilenet_v2", alpha=1.0, weights=str(sample.weights)),
        train=TrainConfig(verbose=base.train.verbose),
        output_dir=base.output_dir, name=base.name, seed=base.seed,
    )
    apply_explicit(transfer, base, explicit, fixed=_FIXED)
    scratch = copy.deepcopy(transfer)
    scratch.model.weights = "none"
    scratch.train.phase1_epochs = 0
    scratch.train.phase1_lr = 1e-2  # phase 2 runs at phase1_lr * factor = 1e-3
    scratch.train.phase2_lr_factor = 0.1
    scratch.train.unfreeze = "all"
    scratch.train.batchnorm = "train"  # nothing pretrained to keep
    scratch.train.warmup_epochs = 0.0
    scratch.train.early_stopping_patience = 0
    scratch.train.verbose = 0
    return transfer.validate(), scratch.validate()


def _mediapipe_line(variant: dict[str, Any]) -> str:
    mp = variant.get("mediapipe")
    if mp is None:
        return ("not checked: mediapipe is not installed here "
                "(python -m pip install --no-deps -r requirements-mobile.txt, then rerun)")
    if not mp.get("loaded"):
        return f"REFUSED the file: {mp.get('error')}"
    verdict = "verified" if "mediapipe-tasks" in variant.get("verified_on", []) else "NOT verified"
    return f"top-1 agreement with LiteRT {mp['agreement']:.3f} ({verdict})"


def run_quickstart(base=None, explicit: set[str] | None = None, *, export_dir: str | Path | None = None,
                   data_dir: str | Path | None = None) -> dict[str, Any]:
    """Runs the quickstart and prints its table.

    Args:
        base: a RunConfig whose output_dir, name, seed and explicitly set fields apply.
        explicit: the "section.field" names the user set (see :func:`quickstart_configs`).
        export_dir: where the bundle goes (default ``export/<run name>``).
        data_dir: the sample folder (default: the package's own; tests pass a damaged copy).

    Returns:
        ``{"transfer": row, "scratch": row, "export": row, "run_dir", "report", "tflite", "seconds",
        "timings": wall seconds of each step}``.

    Raises:
        TLKerasError: a damaged sample (reinstall), an unwritable output folder or an existing bundle.

    Side effects: writes ``<output_dir>/<name>/`` (the transfer run with ``comparison.json`` /
    ``comparison.md`` and ``report.html``) and the bundle; prints progress and the table; seeds
    Python, NumPy and TensorFlow (see :func:`tlkeras.train.run.train_model`).
    """
    from tlkeras.core.litert import measure_latency
    from tlkeras.explain.report import write_train_report
    from tlkeras.export.bundle import ExportOptions, check_export_target, export_run
    from tlkeras.runs import atomic_write_text, default_run_name
    from tlkeras.train.run import train_model

    started = time.perf_counter()
    sample = load_sample(data_dir)
    transfer_cfg, scratch_cfg = quickstart_configs(sample, base, explicit)
    transfer_cfg.name = transfer_cfg.name or default_run_name("quickstart")
    target = Path(export_dir) if export_dir is not None else Path("export") / transfer_cfg.name
    try:
        check_export_target(target)  # before two trainings, not after
    except TLKerasError as exc:
        raise TLKerasError(f"the quickstart writes its bundle to {target}: {exc}") from None
    per_class = sample.counts["train"] // len(sample.class_names)
    print(f"quickstart: {len(sample.class_names)} kinds of flower ({', '.join(sample.class_names)}), {sample.counts['train']} labelled "
          f"photos ({per_class} per class), {sample.counts['test']} test photos; MobileNetV2 with its ImageNet weights "
          f"({sample.weights_bytes / 1e6:.1f} MB, shipped in the package). Nothing is downloaded.", flush=True)
    print("training with transfer (phase 1: frozen pretrained backbone, phase 2: fine-tuning)...", flush=True)
    transfer = train_model(transfer_cfg, write=True, report_writer=write_train_report)  # with Grad-CAM, as the CLI
    timings = {"transfer": time.perf_counter() - started}
    budget = transfer.timings["phase1"] + transfer.timings["phase2"]
    print(f"training the same network from scratch for the same {budget:.0f} s (the baseline)...", flush=True)
    scratch_cfg.train.phase2_epochs = max(1, transfer_cfg.train.phase2_epochs)
    timer = TimeBudget(budget)
    scratch = train_model(scratch_cfg, transfer.data, write=False, callbacks=[timer])
    timings["scratch"] = time.perf_counter() - started - sum(timings.values())
    run_dir = Path(transfer.run_dir)

    def row(result, seconds: float, **extra: Any) -> dict[str, Any]:
        return {"val_accuracy": result.metrics["val"]["accuracy"], "test_accuracy": result.metrics["final"]["accuracy"],
                "train_seconds": seconds, **extra}

    # stopped_by says which limit ended the baseline: the time budget, or its epoch schedule
    # (a short --phase2-epochs can run out before the budget does).
    rows = {"transfer (two-phase)": row(transfer, budget),
            "from scratch (same time)": row(scratch, scratch.timings["phase2"], epochs=timer.epochs,
                                            schedule_epochs=scratch_cfg.train.phase2_epochs,
                                            stopped_by="time budget" if timer.stopped else "schedule")}
    print("exporting int8 (float input/output) and checking it on LiteRT...", flush=True)
    bundle = export_run(run_dir, target, ExportOptions(variants=("int8_float_io",), micro=False, allow_drop=True))
    variant = bundle.metadata["variants"]["int8_float_io"]
    tflite = bundle.variant_path("int8_float_io")
    latency = measure_latency(tflite, num_threads=1, iterations=30, warmup=3)
    timings["export"] = time.perf_counter() - started - sum(timings.values())
    metrics = variant.get("metrics") or {}
    exported = {"file": str(tflite), "bytes": variant["bytes"], "test_accuracy": metrics.get("accuracy"),
                "agreement_with_keras": metrics.get("agreement"), "latency_p50_ms": latency["p50_ms"],
                "verified_on": variant.get("verified_on", []), "mediapipe": variant.get("mediapipe")}
    comparison = {"models": rows, "int8": exported, "sample": {"counts": sample.counts, "classes": list(sample.class_names)}}
    atomic_write_text(run_dir / "comparison.json", json.dumps(comparison, indent=2) + "\n")
    lines = ["| model | val accuracy | test accuracy | train seconds |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['val_accuracy']:.3f} | {r['test_accuracy']:.3f} | {r['train_seconds']:.1f} |" for name, r in rows.items()]
    atomic_write_text(run_dir / "comparison.md", "\n".join(lines) + "\n")
    report = run_dir / "report.html" if (run_dir / "report.html").is_file() else None  # written by train_model

    t, s = rows["transfer (two-phase)"], rows["from scratch (same time)"]
    print()
    print(f"{'':<34}{'test acc':>9}{'val acc':>9}{'train s':>9}")
    print(f"{'transfer (ImageNet, two-phase)':<34}{t['test_accuracy']:>9.3f}{t['val_accuracy']:>9.3f}{t['train_seconds']:>9.1f}")
    print(f"{'from scratch (same network, time)':<34}{s['test_accuracy']:>9.3f}{s['val_accuracy']:>9.3f}{s['train_seconds']:>9.1f}")
    print(f"{'int8 .tflite on LiteRT':<34}{exported['test_accuracy']:>9.3f}   {variant['bytes'] / 1024:,.0f} KB, "
          f"agrees with Keras on {exported['agreement_with_keras']:.1%} of test photos, {latency['p50_ms']:.1f} ms/photo (1 thread)")
    print(f"{'MediaPipe Tasks ImageClassifier':<34}{_mediapipe_line(variant)}")
    print(f"chance: {1 / len(sample.class_names):.3f}. Transfer {'wins' if t['test_accuracy'] > s['test_accuracy'] else 'does NOT win'} by "
          f"{100 * (t['test_accuracy'] - s['test_accuracy']):.1f} points; total {time.perf_counter() - started:.0f} s.")
    print()
    print(f"run:     {run_dir}")
    print(f"report:  {report if report is not None else '(not written)'}")
    print(f"tflite:  {tflite}  (labels and metadata inside; bundle README: {bundle.bundle_dir / 'model_card.md'})")
    print("next:    python -m tlkeras.train --data path/to/your/images --audit   (one folder per class)")
    print(f"         python -m tlkeras.export runs/<name>   (photos: {sample.attribution})")
    return {"transfer": t, "scratch": s, "export": exported, "run_dir": str(run_dir), "report": None if report is None else str(report),
            "tflite": str(tflite), "seconds": time.perf_counter() - started, "timings": timings}
