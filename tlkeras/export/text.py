"""Text bundles: TFLite variants that MediaPipe Tasks' ``TextClassifier`` loads as they are.

A text model takes raw strings in Keras; on a phone, MediaPipe tokenizes from the model's TFLite
metadata and feeds int32 ids. So the exported graph is the model after its tokenizer
(:func:`tlkeras.core.text.encoders.ids_model`) at batch 1 and the run's fixed sequence length:

- word model: one input ``input_ids`` [1, L] with RegexTokenizer metadata (the vocabulary inside
  the file), MediaPipe's average-word-embedding kind;
- BERT family: ``input_word_ids``, ``input_mask``, ``input_type_ids`` [1, L] with BertTokenizer
  metadata (the preprocessing model's wordpiece vocabulary inside the file).

Each variant (float32, float16, dynamic-range int8) goes through the shared export pipeline
(:mod:`tlkeras.export.pipeline`) and is verified three ways on the evaluation split: LiteRT on the
ids the Keras tokenizer makes against Keras (accuracy drop, the task's agreement); MediaPipe's
``TextClassifier`` on the raw texts against LiteRT (the task's agreement rule, >= 99% required: this
proves MediaPipe tokenizes as the model was trained); and the p50 latency per text on LiteRT with
one thread. Sentence encoders that take raw strings need TensorFlow string ops that LiteRT's
builtin ops lack, so they are refused with one line.
"""

from __future__ import annotations

import datetime as _dt
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlkeras._backend import tf
from tlkeras.core.bundle import DataBundle
from tlkeras.core.litert import load_interpreter, time_invokes
from tlkeras.core.metrics import predict
from tlkeras.core.text.encoders import ids_model, text_kind, tokenizer_layer
from tlkeras.core.versions import versions
from tlkeras.errors import TLKerasError
from tlkeras.export import text_metadata, tflite_metadata
from tlkeras.export.pipeline import (
    Reference,
    convert_step,
    describe,
    has_classes,
    head_task,
    mediapipe_step,
    new_variant,
    output_entry,
    recommend,
    verify_step,
    write_bundle,
)
from tlkeras.export.result import ExportResult, finish_export, unknown_threshold
from tlkeras.export.variants import VARIANTS
from tlkeras.export.web import add_web_page, check_web_options, text_calls

__all__ = ["TEXT_VARIANTS", "export_text_model", "text_inputs", "run_text_model"]

# Full-integer variants need integer activations for an embedding lookup and a representative set
# of token ids; the float and dynamic-range variants already give the 4x smaller file for text.
TEXT_VARIANTS = ("float32", "float16", "dynamic_range")
BERT_INPUTS = ("input_word_ids", "input_mask", "input_type_ids")
MEDIAPIPE_MIN_AGREEMENT = 0.99
# Variants an app should pick first, in order, among those that passed (the bundle's "recommended").
TEXT_PREFERENCE = ("dynamic_range", "float16", "float32")


def text_inputs(model, texts) -> list[np.ndarray]:
    """The int32 arrays the exported graph takes for ``texts``, made by the model's own tokenizer."""
    layer = tokenizer_layer(model)
    out = []
    for start in range(0, len(texts), 256):
        batch = layer(tf.constant([str(t) for t in texts[start:start + 256]]))
        out.append([np.asarray(b, np.int32) for b in (batch if isinstance(batch, (list, tuple)) else [batch])])
    return [np.concatenate(parts) for parts in zip(*out)]


def run_text_model(content: bytes, inputs: list[np.ndarray], num_threads: int | None = None) -> np.ndarray:
    """Runs a text variant on LiteRT one text at a time (batch 1, as apps do); returns N x K."""
    interpreter = load_interpreter(content, num_threads)
    details = interpreter.get_input_details()
    order = _input_order(details, len(inputs))
    out = interpreter.get_output_details()[0]
    rows = []
    for i in range(len(inputs[0])):
        for detail, k in zip(details, order):
            interpreter.set_tensor(detail["index"], inputs[k][i:i + 1])
        interpreter.invoke()
        rows.append(np.array(interpreter.get_tensor(out["index"])[0], np.float32))
    return np.stack(rows) if rows else np.zeros((0, int(out["shape"][-1])), np.float32)


def _input_order(details, count: int) -> list[int]:
    """Which of our inputs (ids, mask, type ids) feeds each interpreter input, by tensor name."""
    if count == 1:
        return [0]
    order = []
    for detail in details:
        name = detail["name"]
        match = [k for k, key in enumerate(BERT_INPUTS) if key in name]
        if len(match) != 1:
            raise TLKerasError(f"internal error: cannot tell which BERT input the TFLite tensor {name} is")
        order.append(match[0])
    return order


def _latency(content: bytes, inputs: list[np.ndarray], iterations: int = 200) -> dict[str, float]:
    interpreter = load_interpreter(content, 1)
    for detail, k in zip(interpreter.get_input_details(), _input_order(interpreter.get_input_details(), len(inputs))):
        interpreter.set_tensor(detail["index"], inputs[k][:1])
    time_invokes(interpreter, 20)
    times = time_invokes(interpreter, iterations)
    return {"p50_ms": float(np.percentile(times, 50)), "p90_ms": float(np.percentile(times, 90)), "threads": 1, "iterations": iterations}


def _serving_model(model, kind: str, length: int, directory: Path) -> Path:
    """Saves the ids-in part of ``model`` as a batch-1 SavedModel with named int32 inputs."""
    graph = ids_model(model)
    if kind == "word":
        @tf.function(input_signature=[tf.TensorSpec([1, length], tf.int32, name="input_ids")])
        def serve(input_ids):
            return {"probabilities": graph(input_ids, training=False)}
    else:
        @tf.function(input_signature=[tf.TensorSpec([1, length], tf.int32, name=n) for n in BERT_INPUTS])
        def serve(input_word_ids, input_mask, input_type_ids):
            return {"probabilities": graph([input_word_ids, input_mask, input_type_ids], training=False)}
    tf.saved_model.save(graph, str(directory), signatures={"serving_default": serve})
    return directory


def _with_metadata(content: bytes, model, kind: str, variant: str, name: str, class_names, threshold, source: dict) -> bytes:
    common = dict(
        class_names=list(class_names), name=f"{name} ({variant})", score_threshold=threshold,
        description=(f"text classifier over {len(class_names)} classes exported by tlkeras ({VARIANTS[variant].description}); "
                     f"the tokenizer runs from this metadata (MediaPipe TextClassifier)"),
        version=f"tlkeras {versions().get('tlkeras', '?')}, {_dt.date.today().isoformat()}",
        author=f"tlkeras run {source.get('name') or name}",
    )
    layer = tokenizer_layer(model)
    if kind == "word":
        # case_variants: the vocabulary file maps each word's Capitalized and UPPER-CASE forms to its
        # id, exactly the table RegexTokenizer looks tokens up in (MediaPipe does not lower-case).
        return text_metadata.add_regex_metadata(content, vocab=list(layer.vocabulary), delimiter=layer.delimiter, case_variants=True, **common)
    vocab, lower = layer.vocabulary()
    names = text_metadata.tflite_input_names(content)
    pick = {key: next(n for n in names if key in n) for key in BERT_INPUTS}
    return text_metadata.add_bert_metadata(content, vocab=vocab, lower_case=lower, ids_name=pick["input_word_ids"],
                                           mask_name=pick["input_mask"], segment_name=pick["input_type_ids"], **common)


def export_text_model(model, bundle: DataBundle, output_dir: Path, options, *, name: str, source_run: dict[str, Any] | None = None,
                      calibration: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None):
    """Exports a text run's model as a verified bundle of TFLite variants with MediaPipe metadata.

    The steps of :mod:`tlkeras.export.pipeline` with the text modality's parts: the ids-in serving
    graph, the tokenizer metadata, LiteRT on the Keras tokenizer's ids, MediaPipe's TextClassifier
    on the raw texts (against LiteRT, by the task's agreement rule; a disagreement fails the
    export, since it means the phone would tokenize differently).

    Args:
        model: a text model from :func:`tlkeras.core.models.build_text_classifier` (raw strings in).
        bundle: the data; the evaluation split (test, else val) verifies every variant.
        options: :class:`tlkeras.export.bundle.ExportOptions`; only the text variants of
            ``variants`` are made (the image default means all three), ``max_drop``,
            ``metadata``, ``verify_mediapipe`` and ``overwrite`` apply.

    Returns:
        An :class:`tlkeras.export.bundle.ExportResult`.

    Raises:
        TLKerasError: a sentence encoder (string ops LiteRT lacks), a full-integer variant asked
            for, a model that does not convert with builtin ops, mediapipe missing with
            ``metadata=on``. ExportCheckError (exit 3) after writing, when a variant drops more
            than ``max_drop`` or MediaPipe disagrees, unless ``allow_drop``.

    Side effects: writes ``output_dir`` atomically (staged in a hidden sibling, then renamed).
    """
    from tlkeras.runs import atomic_write_text, staged_directory

    say = progress or (lambda line: None)
    kind, variants, use_metadata = _check_text_export(model, bundle, options)
    layer = tokenizer_layer(model)
    length = int(layer.sequence_length)
    split_name, split = bundle.eval_split
    texts = [str(t) for t in split.x]
    class_names = list(bundle.class_names)
    keras_out = predict(model, split.x, 64)
    task = head_task(bundle.head)
    reference = Reference(bundle.head, split_name, split.y, keras_out, class_names, task.metrics(split.y, keras_out, class_names), bundle.source)
    inputs = text_inputs(model, texts)
    threshold = unknown_threshold(calibration)
    failed: dict[str, str] = {}
    entries: dict[str, dict[str, Any]] = {}
    litert_outs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="tlkeras-export-") as work, staged_directory(output_dir, overwrite=options.overwrite) as stage:
        say(f"saving the ids-in graph ({kind}, sequence length {length})")
        saved = _serving_model(model, kind, length, Path(work) / "serving")
        for variant in variants:
            writer = (lambda content, v=variant: _with_metadata(content, model, kind, v, name, class_names, threshold, source_run or {})) \
                if use_metadata else None
            entries[variant], litert_outs[variant] = _export_text_variant(
                variant, saved, writer, inputs, texts, reference, options, failed, stage, say)
            if entries[variant]["tflite_metadata"]:
                entries[variant]["tflite_metadata"]["score_threshold"] = threshold
        vocab = list(layer.vocabulary) if kind == "word" else layer.vocabulary()[0]
        atomic_write_text(stage / "vocab.txt", "\n".join(vocab) + "\n")
        extras = {"recommended": recommend(entries, TEXT_PREFERENCE)}
        if options.web:
            extras["web"] = add_web_page(stage, name=name, class_names=class_names, variants_meta=entries, recommended=extras["recommended"],
                                         threshold=threshold, calls=text_calls(texts), litert_outs=litert_outs, verify=options.verify_web,
                                         modality="text", say=say)
        meta = describe(
            name=name, modality="text", source_run=source_run, unknown_threshold=threshold, calibration=calibration,
            task={"name": task.name, "head": bundle.head, "num_outputs": len(class_names), "class_names": class_names,
                  "labels_file": "labels.txt", "tasks": None},
            input={
                "kind": "average_word_embedding" if kind == "word" else "bert", "sequence_length": length, "dtype": "int32", "batch": 1,
                "tensors": ["input_ids"] if kind == "word" else list(BERT_INPUTS),
                "tokenizer": ({"type": "regex", "delimiter": layer.delimiter, "vocabulary": "vocab.txt", "lower_case": "ascii",
                               "start_token": "<START>", "pad_id": 0, "unknown_id": 2} if kind == "word" else {"type": "bert_wordpiece", "vocabulary": "vocab.txt"}),
            },
            outputs=[output_entry(task, "probabilities", class_names)],
            evaluation={"split": split_name, "count": len(texts), "data": bundle.source, "primary_metric": reference.key,
                        "max_drop_points": options.max_drop, "keras": reference.keras_summary(), "representative": None},
            variants=entries, failed=failed, recommended=extras.pop("recommended"), extras=extras,
        )
        write_bundle(stage, meta, {"labels.txt": class_names})
    return finish_export(ExportResult(Path(output_dir), meta, failed), options)


def _check_text_export(model, bundle: DataBundle, options) -> tuple[str, tuple[str, ...], bool]:
    """Refuses what a text bundle cannot hold, before any work; returns (kind, variants, write metadata)."""
    kind = text_kind(model)
    if kind == "sentence":
        raise TLKerasError(
            "this run's sentence encoder takes raw strings through TensorFlow string ops that LiteRT's builtin ops (and MediaPipe's "
            "TextClassifier) cannot run; use its SavedModel on a server, or train --backbone word_embedding or a BERT-family encoder for phones"
        )
    if kind not in ("word", "bert"):
        raise TLKerasError("internal error: export_text_model got an image model")
    if getattr(options, "trainable", False):
        raise TLKerasError("--trainable exports an image model that keeps learning on the device; it is not available for text runs yet")
    asked = tuple(options.variants)
    variants = TEXT_VARIANTS if set(asked) == set(VARIANTS) else asked
    unsupported = [v for v in variants if v not in TEXT_VARIANTS]
    if unsupported:
        raise TLKerasError(f"text bundles have the variants {', '.join(TEXT_VARIANTS)}; {', '.join(unsupported)} is image-only: pass --quantize {','.join(TEXT_VARIANTS)}")
    use_metadata = options.metadata == "on" or (options.metadata == "auto" and tflite_metadata.available())
    if (options.metadata == "on" or options.web) and not tflite_metadata.available():
        raise TLKerasError(f"--{'web' if options.web else 'metadata on'} needs the mediapipe package (pip install mediapipe) for its metadata writers")
    if options.web:
        check_web_options(options, bundle.head, "text")  # fail before converting anything
    return kind, variants, use_metadata


def _export_text_variant(variant: str, saved: Path, writer, inputs: list[np.ndarray], texts: list[str], reference: Reference, options,
                         failed: dict[str, str], stage: Path, say) -> tuple[dict[str, Any], np.ndarray]:
    """convert -> verify for one text variant; writes its file. Returns its entry and LiteRT outputs."""
    from tlkeras.core.litert import inspect_model, io_details
    from tlkeras.runs import atomic_write_bytes

    say(f"{variant}: converting")
    entry = new_variant(variant, VARIANTS[variant].description)
    content = convert_step(saved, variant, None, writer)
    out = run_text_model(content, inputs)
    metrics = verify_step(entry, content, out, reference, options.max_drop, failed, variant)
    details = io_details(load_interpreter(content))
    entry.update(input={k: details["inputs"][0][k] for k in ("name", "shape", "dtype", "scale", "zero_point")},
                 output={k: details["outputs"][0][k] for k in ("name", "shape", "dtype", "scale", "zero_point")},
                 ops=inspect_model(content).op_names, latency=_latency(content, inputs))
    if writer is not None:
        entry["tflite_metadata"] = {"writer": f"mediapipe {tflite_metadata.mediapipe_version()}", "labels": "labels.txt (packed in the .tflite)",
                                    "tokenizer": "vocab.txt (packed in the .tflite)", "score_threshold": None}
    if writer is not None and options.verify_mediapipe and has_classes(reference.task):
        check = text_metadata.verify_mediapipe_text(content, texts, out, reference.class_names, reference.head)
        if not mediapipe_step(entry, check, "mediapipe-text", MEDIAPIPE_MIN_AGREEMENT):
            failed[variant] = f"MediaPipe TextClassifier: {check.get('error') or 'agreement %.3f' % (check.get('agreement') or 0.0)}"
            entry["within_threshold"] = False
    say(f"{variant}: {len(content) / 1024:.0f} KB, {reference.key} {metrics.get(reference.key, float('nan')):.3f}, agreement {metrics['agreement']:.3f}"
        + (f", MediaPipe agreement {entry['mediapipe'].get('agreement')}" if entry["mediapipe"] else ""))
    atomic_write_bytes(stage / entry["file"], content)
    return entry, out
