"""One training run: strategy and precision, the two-phase fit, evaluation and the run directory.

:func:`train_model` is what ``python -m tlkeras.train`` and :func:`tlkeras.train` call. It seeds
everything, loads the data, fills the recipe fields the user left unset from the backbone family's
defaults (:func:`tlkeras.core.backbones.apply_recipe_defaults`), trains both phases with
:func:`tlkeras.train.recipe.fit_two_phase` and writes ``<output_dir>/<name>/`` atomically, with a
checkpoint after every epoch so ``resume=True`` continues a killed run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tlkeras._backend import keras, tf
from tlkeras.config import TASK_OF_HEAD, RunConfig, save_config
from tlkeras.core.backbones import apply_recipe_defaults
from tlkeras.core.calibration import calibrate_model
from tlkeras.core.data import DataBundle, load_data, worker_shard
from tlkeras.core.metrics import evaluate_model
from tlkeras.core.models import build_model, build_text_classifier, check_model_config, trainable_backbone_layers
from tlkeras.core.pending import wait_for_decoding
from tlkeras.core.plots import write_reports
from tlkeras.core.results import TrainResult
from tlkeras.core.stream import shard_count
from tlkeras.core.tasks import get_task, task_for_data
from tlkeras.core.text.data import detect_modality
from tlkeras.core.versions import versions
from tlkeras.errors import TLKerasError
from tlkeras.report.html import write_result_report
from tlkeras.runs import atomic_path, atomic_write_text, default_run_name, directory_lock, ensure_unlocked, write_json
from tlkeras.train.recipe import fit_two_phase, uses_feature_cache

__all__ = ["TrainResult", "train_model", "write_report", "select_strategy", "precision_policy", "is_chief"]


def select_strategy(mode: str = "auto"):
    """Picks a tf.distribute strategy.

    ``auto``: MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster, MirroredStrategy
    with two or more GPUs, else the default (no-op) strategy.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if mode == "multiworker" or (mode == "auto" and os.environ.get("TF_CONFIG")):
        try:
            cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster")
        except json.JSONDecodeError:
            raise TLKerasError("TF_CONFIG is not valid JSON; see tf.distribute docs for its format") from None
        if not cluster:
            raise TLKerasError("distribute=multiworker needs TF_CONFIG with a cluster spec")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if mode == "mirrored" or (mode == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """Whether this process writes the run directory (the chief, or worker 0 without a chief)."""
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except json.JSONDecodeError:
        return True
    task = tf_config.get("task") or {}
    kind = task.get("type")
    if kind is None or kind == "chief":
        return True
    return kind == "worker" and int(task.get("index", 0)) == 0 and "chief" not in tf_config.get("cluster", {})


@contextlib.contextmanager
def precision_policy(enabled: bool):
    """Sets the ``mixed_float16`` policy inside the block when ``enabled``, then restores the old one."""
    if not enabled:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def train_model(
    config: RunConfig,
    data: DataBundle | None = None,
    *,
    write: bool = True,
    callbacks: list | None = None,
    extra_files: dict[str, Callable[[Path], None]] | None = None,
    model=None,
    resume: bool = False,
    report_writer: Callable[[Path, "TrainResult"], Path] | None = None,
) -> TrainResult:
    """Loads data, builds the model, trains both phases, evaluates, and writes the run directory.

    Args:
        config: the run's settings (validated here).
        data: a ready DataBundle (e.g. from :func:`tlkeras.core.data.from_arrays`); default: load
            ``config.data.source``.
        write: write ``<output_dir>/<name>/`` (config.yaml, model.keras, labels.txt,
            history.json, metrics.json, plots, TensorBoard logs).
        callbacks: extra Keras callbacks.
        extra_files: ``{filename: writer(path)}`` for more artifacts in the run directory.
        model: a prebuilt model to train instead of building one from ``config.model``.
        resume: continue the interrupted run ``<output_dir>/.<name>.partial`` from its last
            completed epoch, with the config stored there (only ``output_dir`` and ``name`` of
            ``config`` are used).
        report_writer: what writes ``report.html`` when ``config.report`` is on: a function of
            (run folder, this run's TrainResult) that returns the page's path; None writes the
            page of :func:`write_report` (with the misclassified examples, without Grad-CAM:
            :func:`tlkeras.explain.report.write_train_report` adds it and the CLI passes it).

    Returns:
        A :class:`TrainResult`.

    Raises:
        TLKerasError: for bad input; nothing is left in ``output_dir`` then.

    Side effects: seeds Python, NumPy and TensorFlow from ``config.seed``; writes
    ``report.html`` unless ``config.report`` is off (a page that cannot be written is said in
    one line on stderr; the run stays complete). The run is assembled
    in ``<output_dir>/.<name>.partial/`` with a checkpoint after every epoch, and renamed to
    ``<output_dir>/<name>/`` when complete. If training dies, the partial directory stays (when
    at least one epoch finished) so ``resume=True`` can continue it; a bad input leaves nothing.
    """
    owner = _pipeline_owner(config, data, resume)
    if owner is not None:
        # Detection and segmentation own their data, model, loop and evaluation; the task writes the
        # same run folder (config, model, metrics, report) through the same stage conventions.
        return owner.train(config, data, write=write, callbacks=callbacks, resume=resume, report_writer=report_writer)
    t0 = time.perf_counter()
    chief = is_chief()
    config, data, stage, strategy, text, size = _prepare_run(config, data, write=write and chief, resume=resume)
    workers = shard_count(data.train)
    recipe = _fill_recipe(config, data, workers)
    t_data = time.perf_counter() - t0

    with precision_policy(config.train.mixed_precision):
        model = _build(config, data, strategy, text, size) if model is None else model
        if text:
            data.text_stats.update(text_summary(model, data, config))
        with stage.open(config) as run_dir, _worker_scratch(write and not chief, stage, resume) as scratch:
            log_dir = run_dir / "logs" if run_dir else None
            # Checkpoint writes run collective ops under MultiWorkerMirroredStrategy, so every
            # worker must write them; non-chief workers write to a scratch folder (tf.distribute's
            # documented pattern) that is deleted at the end.
            checkpoints = run_dir / "checkpoints" if run_dir else scratch
            fitted = fit_two_phase(
                model, data, config, log_dir=log_dir, callbacks=callbacks, strategy=strategy, checkpoint_dir=checkpoints,
                lr_finder_dir=run_dir,
            )
            history, timings = fitted
            wait_for_decoding(data)  # val and test may still be decoding in the background
            # Temperature scaling lives in the last Dense layer: calibrate before evaluating and saving.
            calibration = _calibrate(model, data, config)
            metrics = _evaluate(model, data, config, calibration)
            timings["data"] = t_data
            timings["total"] = time.perf_counter() - t0
            metrics["timings"] = timings
            info = _run_info(model, data, config, fitted, recipe, workers, resume, text)
            if run_dir is not None:
                result = TrainResult(model, history, metrics, timings, Path(run_dir), config, info, data)
                _write_run(Path(run_dir), result, calibration, extra_files, report_writer)
                shutil.rmtree(checkpoints, ignore_errors=True)
            elif scratch is not None:
                # Saving a MultiWorkerMirroredStrategy model runs collective ops: every worker
                # must save, or the chief waits forever.
                scratch.mkdir(parents=True, exist_ok=True)
                model.save(scratch / "model.keras")
    return TrainResult(model, history, metrics, timings, stage.final if write and chief else None, config, info, data)


def _prepare_run(config: RunConfig, data: DataBundle | None, *, write: bool, resume: bool):
    """Validates the config (the stored one when resuming), seeds, picks the strategy and loads the data.

    Returns ``(config, data, stage, strategy, text, size)``; ``size`` is the image size or the
    text sequence length, also set in ``config.data``.
    """
    text = None if resume else _is_text(config, data)  # a resumed run decides on its stored config, below
    if text:
        _text_default_encoder(config)
    stage = _Stage(config, write=write, resume=resume)
    if resume:
        config = stage.stored_config()
    config.validate()
    keras.utils.set_random_seed(config.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    if text is None:
        text = _is_text(config, data)
    size = check_text_config(config) if text else check_model_config(config.model, config.data.image_size if data is None else data.image_size)
    # Before any TensorFlow op runs (load_data decodes with tf.data): MultiWorkerMirroredStrategy
    # must configure collective ops at program start.
    strategy = select_strategy(config.train.distribute)
    if data is None:
        # Under MultiWorkerMirroredStrategy each worker decodes only its shard of the training
        # files (val and test whole, so every worker reports the same metrics).
        shard = worker_shard() if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) else None
        data = load_data(config.data, size, config.model.head, config.seed, shard=shard)
    elif data.head != config.model.head:
        raise TLKerasError(f"the data is labelled for a {data.head} head but model.head is {config.model.head}")
    if text:
        config.data.modality, config.data.augment, config.data.sequence_length = "text", "off", size
    else:
        config.data.image_size = size
    return config, data, stage, strategy, text, size


def _fill_recipe(config: RunConfig, data: DataBundle, workers: int) -> dict[str, Any]:
    """Fills the recipe fields left unset from the backbone family's defaults; says them when verbose."""
    per_class = data.num_outputs if _task(data).exclusive_classes else None
    train_count = data.train.count_hint * workers  # does not wait for images decoding in the background
    recipe = apply_recipe_defaults(config, train_count=train_count, num_classes=per_class)
    if config.train.verbose:
        _say_recipe(recipe)
    return recipe


def _task(data: DataBundle):
    """The task of the data's labels (the classification family's ``head``)."""
    return get_task(TASK_OF_HEAD.get(data.head, data.head))


def _build(config: RunConfig, data: DataBundle, strategy, text: bool, size: int):
    """The model of ``config.model`` for the data's outputs, built under the strategy's scope."""
    with strategy.scope():
        if text:
            return build_text_classifier(config.model, data.num_outputs, list(data.train.x), size, seed=config.seed)
        return build_model(config.model, data.num_outputs, size)


def _evaluate(model, data: DataBundle, config: RunConfig, calibration: dict[str, Any] | None) -> dict[str, Any]:
    """metrics.json: val and the final split (test, else val), with the calibration's figures."""
    split_name, split = data.eval_split
    metrics = {
        "val": evaluate_model(model, data.val, data.class_names, data.head, config.data.batch_size),
        "final_split": split_name,
        "final": evaluate_model(model, split, data.class_names, data.head, config.data.batch_size),
    }
    if calibration is not None:
        metrics["calibration"] = {k: calibration[k] for k in ("temperature", "ece_before", "ece_after", "unknown_threshold")}
        metrics["calibration"].update({f"{split_name}_{k}": v for k, v in calibration.get("eval", {}).items() if k != "count"})
    return metrics


def _run_info(model, data: DataBundle, config: RunConfig, fitted, recipe: dict, workers: int, resume: bool, text: bool) -> dict[str, Any]:
    """run.json: versions, data counts, recipe, checkpoint selection, timings (and the text summary)."""
    info = {
        "versions": versions(),
        "data": {
            "source": data.source, "train": len(data.train) * workers, "val": len(data.val), "workers": workers,
            "test": len(data.test) if data.test is not None else 0, "skipped": data.skipped,
        },
        "modality": data.modality,
        "feature_cache": uses_feature_cache(config),
        "trainable_backbone_layers": trainable_backbone_layers(model),
        "resumed": resume,
        "recipe": recipe,
        "selection": fitted.selection,
        "timings": fitted.timings,
    }
    if text:
        info["text"] = data.text_stats
    if fitted.lr_finder is not None:
        info["lr_finder"] = fitted.lr_finder
    return info


def _write_run(run_dir: Path, result: "TrainResult", calibration, extra_files, report_writer) -> None:
    """Writes the model, labels, history, run.json, calibration, reports and extra files into the run folder."""
    model, data = result.model, result.data
    with atomic_path(run_dir / "model.keras") as tmp:
        model.save(tmp)
    atomic_write_text(run_dir / "labels.txt", "\n".join(data.class_names) + "\n")
    write_json(run_dir / "history.json", result.history)
    write_json(run_dir / "run.json", result.info)
    if calibration is not None:
        write_json(run_dir / "calibration.json", calibration)
    write_reports(run_dir, result.metrics, data.class_names, data.head, result.history)
    for filename, writer in (extra_files or {}).items():
        writer(run_dir / filename)
    if result.config.report:
        write_report(run_dir, result, report_writer)


def _pipeline_owner(config: RunConfig, data, resume: bool):
    """The task that trains this run on its own (detection, segmentation), or None for the shared engine."""
    model_config = config.model
    if resume and config.name:
        stored = Path(config.output_dir) / f".{config.name}.partial" / "config.yaml"
        if not stored.is_file():
            return None  # _Stage says what is wrong
        from tlkeras.config import load_config

        model_config = load_config(stored).model
    if data is not None and getattr(data, "task", None) is not None:
        return data.task if data.task.owns_pipeline else None
    task = task_for_data(model_config, None if data is not None else config.data.source)
    return task if task.owns_pipeline else None


def write_report(run_dir: Path, result: TrainResult, writer=None) -> Path | None:
    """Writes ``<run_dir>/report.html`` with ``writer(run_dir, result)``, by default
    :func:`tlkeras.report.html.write_result_report` (the evaluated split's misclassified examples).

    Returns the page's path, or None when it was not written: in a multi-worker run (predicting
    for the gallery is a collective op there: the chief alone would wait for workers that have
    already exited), or when the run folder lacks what the page needs (said on stderr).

    Side effects: writes ``report.html``.
    """
    if os.environ.get("TF_CONFIG"):
        print("report.html skipped in a multi-worker run; write it with python -m tlkeras.evaluate", file=sys.stderr)
        return None
    try:
        path = (writer or write_result_report)(run_dir, result)
    except TLKerasError as exc:  # the run itself is complete; say why its page is missing
        print(f"report.html not written: {exc}", file=sys.stderr)
        return None
    return path


def _is_text(config: RunConfig, data: DataBundle | None) -> bool:
    """Whether the run trains on text: the given data's modality, else its source's."""
    if data is not None:
        return data.modality == "text"
    return config.data.source is not None and detect_modality(config.data) == "text"


def _text_default_encoder(config: RunConfig) -> None:
    """Text data with the image default backbone: the text default encoder instead, said in one line.

    The dataclass default names an image backbone; a user who asked for an image backbone by
    name on text gets an error from :func:`check_text_config` instead.
    """
    from tlkeras.config import ModelConfig

    if config.model.backbone == ModelConfig.backbone and str(config.model.weights) == ModelConfig.weights:
        config.model.backbone = "word_embedding"
        if config.train.verbose:
            print("text data: the word_embedding encoder (the text default; --backbone picks another, e.g. small_bert or hub:<dir>)", flush=True)


def check_text_config(config: RunConfig) -> int:
    """Cheap checks of a text run before any data is read; returns the sequence length.

    Raises:
        TLKerasError: an image backbone for text, a missing word-vectors file or hub directory.
    """
    from tlkeras.core.text.encoders import resolve_text_encoder

    config.model.validate()
    encoder = resolve_text_encoder(config.model)
    vectors = config.model.word_vectors
    if vectors and not Path(vectors).expanduser().is_file():
        raise TLKerasError(f"word vectors file {vectors} does not exist; pass a GloVe / word2vec / fastText text file, or leave --word-vectors out")
    return int(config.data.sequence_length or encoder.default_length)


def text_summary(model, data: DataBundle, config: RunConfig) -> dict[str, Any]:
    """What a text run reports about its freshly built model's inputs: truncated texts per split, word-vector coverage.

    Side effect: prints one line when texts are truncated (when ``train.verbose``).
    """
    from tlkeras.core.text.encoders import count_truncated, word_vector_coverage

    length = config.data.sequence_length
    truncated = {name: count_truncated(model, list(split.x)) for name, split in (("train", data.train), ("val", data.val), ("test", data.test)) if split is not None}
    summary: dict[str, Any] = {"sequence_length": length, "truncated": truncated}
    coverage = word_vector_coverage(model, config.model)
    if coverage:
        summary["vocabulary"] = coverage
    if any(truncated.values()) and config.train.verbose:
        counts = ", ".join(f"{k} {v}" for k, v in truncated.items() if v)
        print(f"texts longer than the sequence length ({length} tokens) are truncated: {counts}; raise --sequence-length to keep more", flush=True)
    return summary


def _calibrate(model, data: DataBundle, config: RunConfig) -> dict[str, Any] | None:
    """Temperature and unknown threshold fitted on val (softmax heads); None when not applicable."""
    if not _task(data).exclusive_classes or len(data.val) == 0:
        return None
    _, held_out = data.eval_split
    try:
        return calibrate_model(model, data.val, data.head, batch_size=config.data.batch_size,
                               eval_split=held_out if held_out is not data.val else None)
    except TLKerasError as exc:  # a prebuilt model that does not end in Dense + softmax
        import warnings

        warnings.warn(f"the model is not calibrated: {exc}", stacklevel=3)
        return None


@contextlib.contextmanager
def _worker_scratch(active: bool, stage: "_Stage", resume: bool):
    """A temporary folder for a non-chief worker's checkpoints and model (None when inactive).

    On ``resume`` it starts as a copy of the chief's checkpoints (found when the workers share
    a file system), so every worker continues from the same epoch.
    """
    if not active:
        yield None
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tlkeras-worker-") as tmp:
        scratch = Path(tmp) / "checkpoints"
        chief_checkpoints = stage.partial / "checkpoints"
        if resume and chief_checkpoints.is_dir():
            shutil.copytree(chief_checkpoints, scratch)
        yield scratch


class _Stage:
    """The run directory's life cycle: ``.<name>.partial`` while training, ``<name>`` when done."""

    def __init__(self, config: RunConfig, *, write: bool, resume: bool):
        self.write, self.resume = write, resume
        if resume and not config.name:
            raise TLKerasError("--resume needs the --name of the interrupted run")
        name = config.name or default_run_name(config.model.backbone.replace("hub:", "hub-").split("/")[-1].split("\\")[-1])
        config.name = name
        self.final = Path(config.output_dir) / name
        self.partial = Path(config.output_dir) / f".{name}.partial"
        ensure_unlocked(self.partial)  # another process is training this run: neither start nor resume
        if resume:
            if self.final.exists():
                raise TLKerasError(f"{self.final} is already complete; nothing to resume")
            if not (self.partial / "config.yaml").is_file():
                raise TLKerasError(f"nothing to resume: no interrupted run {self.partial}; start it without --resume")
        elif write:
            if self.final.exists():
                raise TLKerasError(f"{self.final} already exists; choose another --name or remove it")
            if self.partial.exists():
                raise TLKerasError(
                    f"an interrupted run {self.partial} exists; continue it with --resume --name {name} "
                    f"or remove it"
                )

    def stored_config(self) -> RunConfig:
        from tlkeras.config import load_config

        stored = load_config(self.partial / "config.yaml")
        stored.output_dir, stored.name = str(self.final.parent), self.final.name
        return stored

    @contextlib.contextmanager
    def open(self, config: RunConfig):
        if not self.write:
            yield None
            return
        try:
            self.partial.mkdir(parents=True, exist_ok=self.resume)
        except OSError as exc:
            raise TLKerasError(f"cannot create a run directory under {self.final.parent}: {exc.strerror}") from None
        with directory_lock(self.partial):  # one process per run directory, released even by kill -9
            if not self.resume:
                save_config(config, self.partial / "config.yaml")
            try:
                yield self.partial
            except BaseException:
                # Keep what a resume can use (a completed epoch); otherwise leave nothing behind.
                if not any((self.partial / "checkpoints").glob("phase*/state.json")):
                    shutil.rmtree(self.partial, ignore_errors=True)
                raise
            os.replace(self.partial, self.final)


def _say_recipe(recipe: dict) -> None:
    if recipe["defaults"]:
        shown = ", ".join(f"{k} {v}" for k, v in recipe["defaults"].items())
        print(f"recipe defaults of the {recipe['family']} family: {shown}", flush=True)
    if recipe["small_data"]:
        print(recipe["small_data"], flush=True)
