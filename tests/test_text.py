"""Text: readers, the MediaPipe-rule tokenizer, word vectors, the word model through the one engine,
export verified in MediaPipe's TextClassifier, BERT-family and sentence encoders built offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, needs_web_runtime
from text_fixtures import NEGATIVE, POSITIVE, make_sentences, tiny_vectors, write_csv  # noqa: F401

GLOVE = SHARED / "weights" / "glove.6B.50d.top2446.txt"
@pytest.fixture(scope="module")
def text_world(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    rows = make_sentences()
    return {"d": d, "csv": write_csv(d / "reviews.csv", rows), "plain_csv": write_csv(d / "plain.csv", rows, split=False),
            "vectors": tiny_vectors(d / "vectors.txt"), "rows": rows}


# ---------------------------------------------------------------------------------------------
# Data


def test_a_text_csv_is_detected_and_split(text_world):
    from tlkeras.config import DataConfig
    from tlkeras.core.data import load_data

    bundle = load_data(DataConfig(source=str(text_world["plain_csv"])), 224, seed=3)
    assert bundle.modality == "text" and bundle.class_names == ["negative", "positive"]
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 80
    assert isinstance(bundle.train.x[0], str) and bundle.train.x.ndim == 1
    assert abs(np.mean(bundle.train.y) - 0.5) < 0.05  # stratified
    again = load_data(DataConfig(source=str(text_world["plain_csv"])), 224, seed=3)
    assert list(again.test.x) == list(bundle.test.x)  # seeded
    given = load_data(DataConfig(source=str(text_world["csv"])), 224)
    assert (len(given.train), len(given.val), len(given.test)) == (48, 16, 16)  # the split column


def test_text_folders_with_and_without_splits_and_bad_files(tmp_path):
    from tlkeras.config import DataConfig
    from tlkeras.core.data import load_data
    from tlkeras.errors import TLKerasError

    rows = make_sentences(12)
    for root, splits in ((tmp_path / "flat", [""]), (tmp_path / "imdb", ["train", "test"])):
        for i, (text, label) in enumerate(rows):
            folder = root / splits[i % len(splits)] / label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.txt").write_text(text, encoding="utf-8")
    (tmp_path / "flat" / "positive" / "latin1.txt").write_bytes("tr\xe8s bien".encode("latin-1"))
    (tmp_path / "flat" / "negative" / "blank.txt").write_text("  \n\t ")
    with pytest.warns(UserWarning, match="skipped 2 text"):
        flat = load_data(DataConfig(source=str(tmp_path / "flat")), 224)
    assert flat.modality == "text" and len(flat.skipped) == 2
    assert any("latin1.txt (unreadable)" in s for s in flat.skipped)
    assert len(flat.train) + len(flat.val) + len(flat.test) == 24
    imdb = load_data(DataConfig(source=str(tmp_path / "imdb")), 224)
    assert len(imdb.test) == 12 and len(imdb.train) + len(imdb.val) == 12  # val split off train/
    (tmp_path / "flat" / "negative" / "blank.txt").unlink()
    with pytest.raises(TLKerasError, match="latin1.txt is not UTF-8 text"):
        load_data(DataConfig(source=str(tmp_path / "flat"), on_corrupt="error"), 224)


def test_modality_is_explicit_when_the_source_could_be_either(tmp_path):
    from tlkeras.config import DataConfig
    from tlkeras.core.data import load_data
    from tlkeras.errors import TLKerasError

    both = tmp_path / "both.csv"
    both.write_text("path,text,label\na.png,hello,x\n")
    with pytest.raises(TLKerasError, match="--modality"):
        load_data(DataConfig(source=str(both)), 224)
    no_text = tmp_path / "no_text.csv"
    no_text.write_text("sentence,label\nhello,x\n")
    with pytest.raises(TLKerasError, match="needs columns 'text' and 'label'"):
        load_data(DataConfig(source=str(no_text), modality="text"), 224)
    # --text-column names another column
    bundle = load_data(DataConfig(source=str(write_csv(tmp_path / "s.csv", make_sentences(10)))), 224)
    assert bundle.modality == "text"


def test_from_texts_keeps_explicit_splits_and_drops_empty_texts():
    from tlkeras.core.text.data import from_texts

    rows = make_sentences(10)
    texts, labels = [t for t, _ in rows], [lab for _, lab in rows]
    with pytest.warns(UserWarning, match="skipped 1"):
        bundle = from_texts(texts + ["   "], labels + ["positive"], val=(texts[:6], labels[:6]))
    assert len(bundle.train) == 20 and len(bundle.val) == 6 and bundle.test is None
    assert bundle.class_names == ["negative", "positive"]


# ---------------------------------------------------------------------------------------------
# Tokenizer and word vectors

EDGE_TEXTS = ["Hello HELLO hello hElLo", "don't it's  __init__ a1_b", "café über 日本 😀", "", "   ", "tab\tnew\nline",
              "before\x00after", "GREAT!!! great, Great?", "a " * 40]


def test_tokenizer_layer_equals_the_python_rule_and_mediapipes_reference():
    from tlkeras._backend import tf
    from tlkeras.core.text.tokenize import RegexTokenizer, build_vocabulary, text_ids, vocabulary_index
    from tlkeras.export.text_metadata import mediapipe_regex_ids, regex_vocab_index

    vocab = build_vocabulary(["hello world it's great a __init__ line"] + EDGE_TEXTS, 50)
    assert vocab[:3] == ["<PAD>", "<START>", "<UNKNOWN>"] and "hello" in vocab and "Hello" not in vocab
    layer = RegexTokenizer(vocab, 12)
    ids = layer(tf.constant(EDGE_TEXTS)).numpy()
    index = vocabulary_index(vocab)
    mediapipe_index = regex_vocab_index(vocab, case_variants=True)  # what the exported vocab.txt says
    assert index == mediapipe_index
    for text, row in zip(EDGE_TEXTS, ids):
        assert list(row) == text_ids(text, index, 12), text
        assert list(row) == list(mediapipe_regex_ids(text, mediapipe_index, 12)), text
    assert ids[0][1] == ids[0][2] == ids[0][3] == vocab.index("hello") and ids[0][4] == 2  # hElLo is unknown, as in MediaPipe
    assert list(ids[6][:3]) == [1, vocab.index("before"), 0]  # the text ends at NUL


def test_word_vectors_formats_and_errors(tmp_path, text_world):
    from tlkeras.core.text.vectors import embedding_matrix, read_word_vectors
    from tlkeras.errors import TLKerasError

    vocab = ["<PAD>", "<START>", "<UNKNOWN>", "good", "bad", "café", "zzz"]
    glove = read_word_vectors(text_world["vectors"], vocab)
    assert glove.dim == 8 and set(glove.vectors) == {"good", "bad", "café"}  # the cp1252 token decoded
    matrix, hits = embedding_matrix(vocab, glove, 8, seed=0)
    assert hits == 3 and np.allclose(matrix[0], 0) and np.allclose(matrix[3], glove.vectors["good"])
    w2v = tmp_path / "w2v.vec"
    w2v.write_text("2 3\nGood 1 2 3\ngood 4 5 6\n")
    assert list(read_word_vectors(w2v, vocab).vectors["good"]) == [4, 5, 6]  # the exact token wins over a case variant
    bad = {
        "ragged.txt": (b"good 1 2 3\nbad 1 2\n", "has 2 values, earlier lines 3"),
        "words.txt": (b"good 1 x 3\n", "not a number"),
        "binary.bin": (b"\x00\x01\x02good\x00\x00\x80?", "not a text vectors file"),
        "empty.txt": (b"", "holds no vectors"),
        "nan.txt": (b"good 1 nan 3\n", "NaN"),
    }
    for name, (content, needle) in bad.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(TLKerasError, match=needle):
            read_word_vectors(tmp_path / name, vocab)
    with pytest.raises(TLKerasError, match="has 8-d vectors but the model needs 50-d"):
        read_word_vectors(text_world["vectors"], vocab, dim=50)
    with pytest.raises(TLKerasError, match="does not exist"):
        read_word_vectors(tmp_path / "missing.txt", vocab)


def test_the_real_glove_file_reads_with_its_cp1252_tokens():
    if not GLOVE.is_file():
        pytest.skip("../shared/weights/glove.6B.50d.top2446.txt is not present")
    from tlkeras.core.text.vectors import read_word_vectors

    raw = [line.split(b" ", 1)[0] for line in GLOVE.read_bytes().splitlines()]
    words = [w.decode("utf-8", errors="replace") for w in raw]
    vectors = read_word_vectors(GLOVE, ["<PAD>", "<START>", "<UNKNOWN>", "the", "good"] + words[-50:])
    assert vectors.lines == 2446 and vectors.dim == 50 and {"the", "good"} <= set(vectors.vectors)


# ---------------------------------------------------------------------------------------------
# Training through the engine, report, reload


@pytest.fixture(scope="module")
def text_run(text_world):
    from tlkeras.train import __main__ as train_cli

    out = text_world["d"] / "runs"
    code = train_cli.main(["--data", str(text_world["csv"]), "--word-vectors", str(text_world["vectors"]), "--sequence-length", "16",
                           "--ngram-buckets", "512", "--phase2-epochs", "6", "--verbose", "0", "--output-dir", str(out), "--name", "words"])
    assert code == 0
    return out / "words"


def test_text_run_through_the_engine(text_run):
    from tlkeras.config import load_config

    info = json.loads((text_run / "run.json").read_text())
    metrics = json.loads((text_run / "metrics.json").read_text())
    history = json.loads((text_run / "history.json").read_text())
    config = load_config(text_run / "config.yaml")
    assert config.model.backbone == "word_embedding" and config.data.modality == "text" and config.data.augment == "off"
    assert info["modality"] == "text" and info["text"]["sequence_length"] == 16
    assert info["text"]["vocabulary"]["with_vectors"] == info["text"]["vocabulary"]["words"]  # every word has a vector here
    assert metrics["final"]["accuracy"] >= 0.85
    # The kept model is never worse on val than phase 1 (the linear probe on the frozen vectors).
    phase1 = [v for v, p in zip(history["val_loss"], history["phase"]) if p == 1][-1]
    assert info["selection"]["value"] <= phase1 + 1e-6
    page = (text_run / "report.html").read_text()
    assert "Misclassified texts" in page and "data:image/png" in page  # the charts stay images


def test_a_reloaded_text_model_predicts_the_same_on_raw_strings(text_run, text_world):
    from tlkeras._backend import tf
    from tlkeras.core.loading import load_run_model
    from tlkeras.core.text.encoders import count_truncated

    model = load_run_model(text_run)
    texts = [t for t, _ in text_world["rows"][:10]] + ["GOOD " * 30]
    first = model.predict(tf.constant(texts), verbose=0)
    second = load_run_model(text_run).predict(tf.constant(texts), verbose=0)
    assert np.allclose(first, second, atol=1e-6)
    assert count_truncated(model, texts) == 1


# ---------------------------------------------------------------------------------------------
# Export: MediaPipe TextClassifier loads every variant and agrees with Keras


@pytest.fixture(scope="module")
def text_bundle(text_run, text_world):
    pytest.importorskip("mediapipe")
    from tlkeras.export import __main__ as export_cli

    target = text_world["d"] / "bundle"
    assert export_cli.main([str(text_run), "--output-dir", str(target), "--quiet"]) == 0
    return target


def test_text_bundle_is_verified_in_mediapipe(text_bundle):
    meta = json.loads((text_bundle / "metadata.json").read_text())
    assert meta["modality"] == "text" and meta["input"]["kind"] == "average_word_embedding"
    assert set(meta["variants"]) == {"float32", "float16", "dynamic_range"}
    for name, variant in meta["variants"].items():
        assert variant["metrics"]["agreement"] >= 0.99, name
        assert variant["mediapipe"]["loaded"] and variant["mediapipe"]["agreement"] >= 0.99, (name, variant["mediapipe"])
        assert variant["mediapipe"]["names_match"]
        assert "mediapipe-text" in variant["verified_on"] and variant["latency"]["p50_ms"] > 0
    assert meta["variants"]["dynamic_range"]["bytes"] < meta["variants"]["float32"]["bytes"]
    vocab = (text_bundle / "vocab.txt").read_text().splitlines()
    assert vocab[:3] == ["<PAD>", "<START>", "<UNKNOWN>"]
    assert (text_bundle / "labels.txt").read_text().split() == ["negative", "positive"]


def test_text_bundle_has_the_image_bundles_schema(text_bundle):
    """One bundle format: the text bundle validates against bundle.schema.json with the same keys as an image bundle."""
    from tlkeras.export.pipeline import TOP_LEVEL_KEYS, VARIANT_KEYS, load_schema, validate_metadata

    meta = json.loads((text_bundle / "metadata.json").read_text())
    validate_metadata(meta)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(meta, load_schema())
    assert list(meta) == list(TOP_LEVEL_KEYS) and meta["format_version"] == 2
    for name, variant in meta["variants"].items():
        assert list(variant) == list(VARIANT_KEYS) and variant["file"] == f"{name}.tflite"
        assert (text_bundle / variant["file"]).is_file()
    assert meta["recommended"] == "dynamic_range" and (text_bundle / "model_card.md").is_file()


def test_text_bundle_runs_on_litert_from_the_vocabulary_alone(text_bundle, text_world):
    """An app without TensorFlow: tokenize by the bundle's vocab.txt rule, run LiteRT, get Keras' answer."""
    from ai_edge_litert.interpreter import Interpreter

    from tlkeras.core.text.tokenize import text_ids, vocabulary_index

    meta = json.loads((text_bundle / "metadata.json").read_text())
    index = vocabulary_index((text_bundle / "vocab.txt").read_text().splitlines())
    interpreter = Interpreter(model_path=str(text_bundle / meta["variants"]["float32"]["file"]))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    correct = 0
    rows = text_world["rows"][::5]
    for text, label in rows:
        interpreter.set_tensor(inp["index"], np.array([text_ids(text, index, meta["input"]["sequence_length"])], np.int32))
        interpreter.invoke()
        correct += meta["task"]["class_names"][int(np.argmax(interpreter.get_tensor(out["index"])[0]))] == label
    assert correct / len(rows) >= 0.85


# ---------------------------------------------------------------------------------------------
# BERT-family and sentence encoders, built offline with TF-Hub's SavedModel interface


@pytest.mark.slow
def test_bert_pair_trains_exports_and_agrees_in_mediapipe(tmp_path, text_world):
    pytest.importorskip("tensorflow_text")
    pytest.importorskip("mediapipe")
    from text_fixtures import build_bert_pair

    from tlkeras.export import __main__ as export_cli
    from tlkeras.train import __main__ as train_cli

    pre, enc = build_bert_pair(tmp_path / "hub", seq_length=32)
    code = train_cli.main(["--data", str(text_world["csv"]), "--backbone", f"hub:{enc}", "--preprocess", str(pre), "--sequence-length", "24",
                           "--phase1-epochs", "5", "--phase2-epochs", "1", "--verbose", "0", "--output-dir", str(tmp_path / "runs"), "--name", "bert"])
    assert code == 0
    run = tmp_path / "runs" / "bert"
    info = json.loads((run / "run.json").read_text())
    assert info["trainable_backbone_layers"] == ["backbone_hub"]  # the encoder was fine-tuned in phase 2
    assert export_cli.main([str(run), "--output-dir", str(tmp_path / "bundle"), "--quantize", "float32,dynamic_range", "--quiet"]) == 0
    meta = json.loads((tmp_path / "bundle" / "metadata.json").read_text())
    assert meta["input"]["kind"] == "bert" and meta["input"]["sequence_length"] == 24
    for name, variant in meta["variants"].items():
        assert variant["mediapipe"]["agreement"] >= 0.99, (name, variant["mediapipe"])
        assert variant["metrics"]["agreement"] >= 0.99, name


def test_sentence_encoder_trains_and_export_refuses_it_in_one_line(tmp_path, text_world, capsys):
    from text_fixtures import build_sentence_encoder

    from tlkeras.export import __main__ as export_cli
    from tlkeras.train import __main__ as train_cli

    enc = build_sentence_encoder(tmp_path / "hub")
    assert train_cli.main(["--data", str(text_world["csv"]), "--backbone", f"hub:{enc}", "--phase2-epochs", "1", "--verbose", "0",
                           "--output-dir", str(tmp_path / "runs"), "--name", "sent"]) == 0
    capsys.readouterr()
    assert export_cli.main([str(tmp_path / "runs" / "sent"), "--output-dir", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sentence encoder" in err[0] and "LiteRT" in err[0]
    assert not (tmp_path / "bundle").exists()


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


def _bad_cases(w):
    d = w["d"]
    (d / "v3.txt").write_text("good 1 2 3\nbad 3 2 1\n")
    (d / "empty_class.csv").write_text("text,label\n" + "hello there,a\n" * 5 + "  ,b\n" * 5)
    base = ["--data", str(w["csv"]), "--verbose", "0", "--output-dir", str(d / "bad_out"), "--name", "x"]
    return {
        "vectors of another width": (base + ["--word-vectors", str(d / "v3.txt"), "--embedding-dim", "16"], "has 3-d vectors but the model needs 16-d"),
        "missing vectors file": (base + ["--word-vectors", str(d / "nope.txt")], "does not exist"),
        "image backbone on text": (base + ["--backbone", "mobilenet"], "image backbone"),
        "hub handle offline": (base + ["--backbone", "small_bert"], "no network"),
        "a class with only empty texts": (["--data", str(d / "empty_class.csv")] + base[2:], "only one class"),
        "preprocess dir that is not a SavedModel": (base + ["--backbone", f"hub:{d}", "--preprocess", str(d)], "not a SavedModel"),
        "sequence length 1": (base + ["--sequence-length", "1"], "sequence_length"),
    }


def test_text_bad_inputs_are_one_line_exit_2(text_world, capsys):
    from tlkeras.train import __main__ as train_cli

    for case, (args, needle) in _bad_cases(text_world).items():
        capsys.readouterr()
        code = train_cli.main(args)
        err = capsys.readouterr().err.strip().splitlines()
        err = [line for line in err if "UserWarning" not in line and "warnings.warn" not in line and "skipped" not in line]
        assert code == 2, (case, err)
        assert len(err) == 1 and err[0].startswith("tlkeras.train: error: ") and needle in err[0], (case, err)
        assert not (text_world["d"] / "bad_out").exists(), case


def test_the_word_probe_written_into_the_model_is_the_fitted_classifier(text_world):
    """Phase 1 of the word model fits a logistic regression on vectors + bag of words; the model's own
    graph (embedding columns, weighted average, head) must then give exactly its probabilities."""
    from sklearn.metrics import log_loss

    from tlkeras.config import DataConfig, ModelConfig
    from tlkeras.core.data import load_data
    from tlkeras.core.features import feature_store
    from tlkeras.core.models import build_text_classifier, feature_extractor
    from tlkeras.core.text.probe import bag_of_words, fit_word_probe

    bundle = load_data(DataConfig(source=str(text_world["csv"])), 0)
    config = ModelConfig(backbone="word_embedding", word_vectors=str(text_world["vectors"]), ngram_buckets=128, dropout=0.0)
    model = build_text_classifier(config, 2, list(bundle.train.x), 16)
    before = model.get_layer("word_embedding").get_weights()[0].copy()
    feats = [feature_store(feature_extractor(model), split.x, 32) for split in (bundle.train, bundle.val)]
    assert bag_of_words(model, ["good good", ""]).sum(axis=1).round(6).tolist() == [[1.0], [0.0]]
    logs = fit_word_probe(model, bundle.train.x, bundle.train.y, bundle.val.x, bundle.val.y, feats[0], feats[1], 2, None)
    probs = model.predict(bundle.val.x.astype(object), verbose=0)
    assert abs(log_loss(bundle.val.y, probs, labels=[0, 1]) - logs["val_loss"][0]) < 1e-4
    assert np.array_equal(model.get_layer("word_embedding").get_weights()[0], before)  # the pretrained vectors are untouched
    assert not np.allclose(model.get_layer("word_probe").get_weights()[0], 0)  # the probe's per-word coefficients


def test_an_interrupted_text_run_resumes_to_the_same_model(tmp_path, text_world):
    """Phase 2 of the word model interrupted after two epochs, resumed: same history and weights."""
    from tlkeras._backend import keras
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tlkeras.core.loading import load_run_model
    from tlkeras.train.run import train_model

    def config(name):
        return RunConfig(data=DataConfig(source=str(text_world["csv"]), sequence_length=16),
                         model=ModelConfig(backbone="word_embedding", word_vectors=str(text_world["vectors"]), ngram_buckets=256, dropout=0.0),
                         train=TrainConfig(phase2_epochs=4, early_stopping_patience=0, verbose=0), output_dir=str(tmp_path), name=name)

    class Stop(keras.callbacks.Callback):
        epochs = 0

        def on_epoch_end(self, epoch, logs=None):
            Stop.epochs += 1
            if Stop.epochs == 2:
                raise KeyboardInterrupt

    whole = train_model(config("whole"))
    with pytest.raises(KeyboardInterrupt):
        train_model(config("cut"), callbacks=[Stop()])
    assert (tmp_path / ".cut.partial").is_dir() and not (tmp_path / "cut").exists()
    resumed = train_model(RunConfig(output_dir=str(tmp_path), name="cut"), resume=True)
    assert resumed.history["phase"] == whole.history["phase"] == [1] + [2] * 4
    np.testing.assert_allclose(resumed.history["val_loss"], whole.history["val_loss"], rtol=1e-4)
    for a, b in zip(load_run_model(tmp_path / "whole").get_weights(), load_run_model(tmp_path / "cut").get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_text_audit_finds_duplicates_leaks_and_conflicts(tmp_path):
    from tlkeras.audit import __main__ as audit_cli

    rows = make_sentences(12)
    text, label = rows[0]
    rows += [(text.upper() + "  ", label), (text, "positive" if label == "negative" else "negative")]
    data = tmp_path / "d.csv"
    with open(data, "w", encoding="utf-8") as fh:
        fh.write("text,label,split\n")
        for i, (t, lab) in enumerate(rows):
            part = "test" if i >= len(rows) - 2 else ("val" if i % 4 == 1 else "train")
            fh.write(f'"{t}",{lab},{part}\n')
    assert audit_cli.main([str(data), "--report-dir", str(tmp_path / "audit")]) == 0
    findings = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert findings["modality"] == "text"
    assert findings["leakage"]["train-test"]["texts"] == 2  # case and spacing do not hide a copy
    assert findings["conflicts"]["groups"] == 1
    assert "&lt;" not in text and "Text audit" in (tmp_path / "audit" / "audit.html").read_text()


@pytest.mark.slow
def test_a_preprocessing_model_that_does_not_fit_the_encoder_is_one_line(tmp_path, text_world, capsys):
    pytest.importorskip("tensorflow_text")
    from text_fixtures import build_bert_pair

    from tlkeras.train import __main__ as train_cli

    _, small_encoder = build_bert_pair(tmp_path / "small", vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"], seq_length=16)
    big_preprocess, _ = build_bert_pair(tmp_path / "big", seq_length=16)  # ids up to 430: beyond the small encoder's table
    code = train_cli.main(["--data", str(text_world["csv"]), "--backbone", f"hub:{small_encoder}", "--preprocess", str(big_preprocess),
                           "--sequence-length", "16", "--verbose", "0", "--output-dir", str(tmp_path / "runs"), "--name", "x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "fails on the training texts" in err[0] and "--preprocess" in err[0], err
    assert not (tmp_path / "runs" / "x").exists()


def test_a_text_run_loads_in_a_fresh_process(text_run):
    """The text layers must be registered by loading alone (no earlier import of the encoders)."""
    import subprocess
    import sys

    code = ("import sys; from tlkeras.core.loading import load_run_model; from tlkeras._backend import tf; "
            f"m = load_run_model({str(text_run)!r}); print(m.predict(tf.constant(['great food']), verbose=0).shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(Path(__file__).resolve().parents[1]))
    assert out.returncode == 0 and "(1, 2)" in out.stdout, out.stderr[-1500:]


def test_evaluate_takes_a_text_run(text_run, capsys):
    from tlkeras.evaluate import __main__ as evaluate_cli

    capsys.readouterr()
    assert evaluate_cli.main([str(text_run), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "val (16 texts): accuracy" in out
    assert "Misclassified texts" in (text_run / "report.html").read_text()


@pytest.mark.parametrize("flags, needle", [
    (["--trainable"], "not available for text runs"),
    (["--quantize", "int8"], "is image-only"),
])
def test_text_export_bad_inputs_are_one_line(text_run, tmp_path, capsys, flags, needle):
    from tlkeras.export import __main__ as export_cli

    code = export_cli.main([str(text_run), *flags, "--output-dir", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("tlkeras.export: error: ") and needle in err[0], err
    assert not (tmp_path / "b").exists()


def test_text_bundle_page_agrees_with_litert_in_chromium(text_run, tmp_path):
    """--web on a text run: MediaPipe Tasks for Web's TextClassifier (npm, Wasm) in headless Chromium,
    through the page's own classifyText, agrees with LiteRT on every test text."""
    needs_web_runtime("text")
    from tlkeras.core.browser import Browser, serve_directory
    from tlkeras.export.bundle import ExportOptions, export_run

    result = export_run(text_run, tmp_path / "b", ExportOptions(variants=("float32", "dynamic_range"), web=True))
    web = result.metadata["web"]
    assert web["mediapipe_web"]["package"] == "@mediapipe/tasks-text"
    for name, check in web["checks"].items():
        assert check["passed"] and check["agreement"] >= 0.99 and check["count"] == result.metadata["evaluation"]["count"], (name, check)
        assert "mediapipe-web" in result.metadata["variants"][name]["verified_on"]
    with serve_directory(result.bundle_dir) as base, Browser() as browser:
        browser.navigate(f"{base}/web/index.html")
        browser.evaluate("window.tlkeras.ready")
        assert browser.evaluate("window.tlkeras.classifyText('   ')") == {"error": "empty"}
        assert "Type or paste a text first" in browser.evaluate("document.getElementById('status').textContent")
