"""Distillation of a text teacher (word model, ``hf:`` BERT, TF-Hub encoder) into a word-model student.

The teacher reads raw strings, so there is no resolution to lower: the student is the small word
model (``--backbone word_embedding``), built and trained with the word model's own recipe. Phase 1
is its closed-form bag-of-words probe on the labels (:mod:`tlkeras.core.text.probe`); phase 2
fine-tunes the whole student with the distillation loss of :mod:`tlkeras.distill.distillation`
(temperature-softened teacher probabilities plus the hard labels), on the training texts and on
unlabelled texts when given. An unlabelled text has no hard label, so its hard-label target is the
teacher's own probability vector. Text has no augmentation, so the teacher's logits are computed
once, before training, and the student trains on ``((texts, teacher_logits), labels)`` batches.
Phase 2 keeps the phase-1 model whenever it does not beat it on hard-label validation accuracy.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tlkeras._backend import tf
from tlkeras.config import RunConfig, save_config
from tlkeras.core.data import DataBundle
from tlkeras.distill.split import inherit_teacher_split
from tlkeras.errors import TLKerasError

__all__ = ["is_text_model", "read_unlabelled", "distill_text"]


def is_text_model(model) -> bool:
    """Whether ``model`` takes raw strings (a tlkeras text classifier)."""
    return len(model.inputs) == 1 and model.inputs[0].dtype == tf.string


def read_unlabelled(path: str | Path) -> list[str]:
    """Unlabelled texts for the teacher to label: one per line of a UTF-8 text file (blank lines skipped).

    Raises:
        TLKerasError: the file is missing, unreadable or holds no text.
    """
    from tlkeras.core.text.data import clean_text

    p = Path(path).expanduser()
    if not p.is_file():
        raise TLKerasError(f"unlabelled texts file {p} does not exist; pass a UTF-8 text file with one text per line")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TLKerasError(f"unlabelled texts file {p} is not UTF-8; save it as UTF-8 text, one text per line") from None
    texts = [t for t in (clean_text(line) for line in lines) if t]
    if not texts:
        raise TLKerasError(f"unlabelled texts file {p} holds no text; put one text per line")
    return texts


def _logits(logits_model, model, texts, batch_size: int) -> np.ndarray:
    out = logits_model(model).predict(tf.constant([str(t) for t in texts]), batch_size=batch_size, verbose=0)
    return np.asarray(out, np.float32)


def _check_student(config: RunConfig) -> None:
    from tlkeras.core.text.encoders import resolve_text_encoder

    try:
        kind = resolve_text_encoder(config.model).kind
    except TLKerasError:
        kind = "image"
    if kind != "word":
        raise TLKerasError(f"a text teacher distils into the word model; --backbone {config.model.backbone} is not it: "
                           f"pass --backbone word_embedding")


def _fit(student, teacher, data: DataBundle, config: RunConfig, options, extra: list[str], callbacks, parts) -> tuple[dict, dict, Any]:
    """Phase 1 (word probe on the labels) and phase 2 (distillation) of the student; returns (history, timings, selection)."""
    from tlkeras.core.data import class_weights, encode_labels
    from tlkeras.core.models import feature_extractor, freeze_backbone
    from tlkeras.core.text.probe import fit_word_probe
    from tlkeras.train.optim import compile_model, epoch_seed, final_learning_rate, make_optimizer, steps_per_epoch
    from tlkeras.train.phase import PhaseHistory
    from tlkeras.train.recipe import fine_tune, open_and_fine_tune

    distiller, logits_model = parts
    tc, bs, n = config.train, config.data.batch_size, data.num_outputs
    weights = class_weights(data, config.data.class_weight)
    history, timings = PhaseHistory(), {}
    start = time.perf_counter()
    if tc.phase1_epochs > 0:  # the word model's phase 1, as tlkeras.train fits it (closed form, labels only)
        freeze_backbone(student)
        extractor = feature_extractor(student)
        feats = [extractor.predict(tf.constant([str(t) for t in s.x]), batch_size=bs, verbose=0) for s in (data.train, data.val)]
        logs = fit_word_probe(student, data.train.x, data.train.y, data.val.x, data.val.y, feats[0], feats[1], n, weights)
        if tc.verbose:
            print(f"phase 1 word probe (C={logs['probe_C'][0]}) - val_accuracy {logs['val_accuracy'][0]:.4f}", flush=True)
        history.add(logs, 1)
    timings["phase1"] = time.perf_counter() - start
    texts = [str(t) for t in data.train.x] + list(extra)
    t_train = _logits(logits_model, teacher, texts, bs)
    y = encode_labels(data.train.y, "softmax", n).astype(np.float32)
    if extra:  # no label: the hard term's target is the teacher's own (T = 1) probability vector
        soft = tf.nn.softmax(t_train[len(data.train):]).numpy()
        y = np.concatenate([y, soft.astype(np.float32)])
    train = tf.data.Dataset.from_tensor_slices(((tf.constant(texts), t_train), y))
    val_texts = [str(t) for t in data.val.x]
    val_ds = tf.data.Dataset.from_tensor_slices(((tf.constant(val_texts), _logits(logits_model, teacher, val_texts, bs)),
                                                 encode_labels(data.val.y, "softmax", n).astype(np.float32))).batch(bs)
    steps = steps_per_epoch(len(texts), bs)
    # As the image distillation: select on hard-label val accuracy (a soft-target student's val
    # cross-entropy is calibrated unlike a cross-entropy one's).
    monitor = tc.select_metric if tc.select_metric != "val_loss" else "val_accuracy"

    def make_ds(epoch):
        return train.shuffle(len(texts), seed=epoch_seed(config.seed, 2, epoch)).batch(bs).prefetch(tf.data.AUTOTUNE)

    def fit2():
        trainer = distiller(logits_model(student), None, None, options, tc.label_smoothing)
        return fine_tune(trainer, make_ds, val_ds, config, history, steps=steps,
                         compile=lambda lr: trainer.compile(optimizer=make_optimizer(tc.optimizer, lr, tc.weight_decay)),
                         monitor=monitor, class_weight=None, callbacks=callbacks)

    selection, opened = open_and_fine_tune(student, config, timings, fit2)
    compile_model(student, config, n, final_learning_rate(config, bool(opened)), jit=False)
    return history.values, timings, selection


def distill_text(teacher_run: Path, teacher, teacher_cfg: RunConfig, labels: list[str], config: RunConfig, options, *,
                 data: DataBundle | None = None, unlabelled: list[str] | None = None, write: bool = True, callbacks: list | None = None,
                 parts):
    """Distils a loaded text teacher into a word-model student and writes its run directory.

    Args:
        teacher_run, teacher, teacher_cfg, labels: the teacher's run directory, model, config and classes.
        config: the student's run config (``model.backbone`` must be the word model).
        options: :class:`tlkeras.distill.distillation.DistillOptions`.
        data: the labelled texts (default: ``config.data.source`` with the teacher's split).
        unlabelled: extra texts the teacher labels for phase 2 (also in the student's vocabulary).
        write: write ``<output_dir>/<name>/`` like ``tlkeras.train`` (``metrics.json`` holds ``distillation``).
        parts: ``(trainer class, logits_model)`` of :mod:`tlkeras.distill.distillation`, passed in by
            its ``distill`` (which calls this), so this module does not import it back.

    Returns:
        A :class:`tlkeras.train.run.TrainResult` for the student.

    Raises:
        TLKerasError: a student that is not the word model, classes that differ, no data.

    Side effects: seeds Python, NumPy and TensorFlow from ``config.seed``; writes the run directory atomically.
    """
    from tlkeras._backend import keras
    from tlkeras.core.backbones import apply_recipe_defaults
    from tlkeras.core.metrics import evaluate_model
    from tlkeras.core.models import build_text_classifier
    from tlkeras.core.text.data import load_text_data
    from tlkeras.runs import default_run_name
    from tlkeras.train.run import TrainResult, check_text_config

    _check_student(config)
    config.name = config.name or default_run_name(f"{Path(teacher_run).resolve().name}-student")
    t0 = time.perf_counter()
    config.data.modality, config.data.augment = "text", "off"
    length = check_text_config(config)
    keras.utils.set_random_seed(config.seed)
    if data is None:
        if config.data.source is None:
            raise TLKerasError(f"no data source: pass --data (the teacher {teacher_run} names none)")
        inherit_teacher_split(config, teacher_cfg)
        data = load_text_data(replace(config.data), "softmax", config.seed)
    if data.class_names != labels:
        raise TLKerasError(f"the data's classes {data.class_names} differ from the teacher's {labels}")
    config.data.sequence_length = length
    extra = list(unlabelled or [])
    recipe = apply_recipe_defaults(config, train_count=len(data.train) + len(extra), num_classes=data.num_outputs)
    t_data = time.perf_counter() - t0
    student = build_text_classifier(config.model, data.num_outputs, [str(t) for t in data.train.x] + extra, length, seed=config.seed)
    history, timings, selection = _fit(student, teacher, data, config, options, extra, callbacks, parts)
    bs = config.data.batch_size
    split_name, split = data.eval_split
    metrics: dict[str, Any] = {
        "val": evaluate_model(student, data.val, labels, "softmax", bs),
        "final_split": split_name,
        "final": evaluate_model(student, split, labels, "softmax", bs),
    }
    teacher_final = evaluate_model(teacher, split, labels, "softmax", bs)
    train_texts = tf.constant([str(t) for t in data.train.x])
    agree = float(np.mean(np.argmax(student.predict(train_texts, batch_size=bs, verbose=0), 1)
                          == np.argmax(teacher.predict(train_texts, batch_size=bs, verbose=0), 1)))
    metrics["distillation"] = {
        "teacher_run": str(teacher_run), "temperature": options.temperature, "soft_weight": options.soft_weight,
        "modality": "text", "teacher_backbone": teacher_cfg.model.backbone, "student_backbone": config.model.backbone,
        "unlabelled_texts": len(extra), "train_agreement": agree,
        "teacher_final": {k: teacher_final[k] for k in ("accuracy", "f1_macro")},
        "teacher_params": int(teacher.count_params()), "student_params": int(student.count_params()),
    }
    timings["data"] = t_data
    timings["total"] = time.perf_counter() - t0
    metrics["timings"] = timings
    run_dir = None
    if write:
        run_dir = Path(config.output_dir) / config.name
        info = {"distillation": metrics["distillation"], "recipe": recipe, "selection": selection, "timings": timings,
                "data": {"source": data.source, "train": len(data.train), "val": len(data.val),
                         "test": len(data.test) if data.test is not None else 0, "unlabelled": len(extra)}}
        write_student_run(run_dir, config, student, labels, history, metrics, info)
    return TrainResult(student, history, metrics, timings, run_dir, config, {"teacher": str(teacher_run)})


def write_student_run(run_dir: Path, config, student, labels: list[str], history: dict, metrics: dict, info: dict) -> None:
    """Writes a student's run folder (config, model, labels, history, run.json, metrics and plots).

    Side effects: assembles the folder beside ``run_dir`` and renames it into place, so an
    interrupted write leaves no half-written run.
    """
    from tlkeras.core.plots import write_reports
    from tlkeras.runs import atomic_path, atomic_write_text, staged_directory, write_json

    with staged_directory(run_dir) as stage:
        save_config(config, stage / "config.yaml")
        with atomic_path(stage / "model.keras") as tmp:
            student.save(tmp)
        atomic_write_text(stage / "labels.txt", "\n".join(labels) + "\n")
        write_json(stage / "history.json", history)
        write_json(stage / "run.json", info)
        write_reports(stage, metrics, labels, "softmax", history)
