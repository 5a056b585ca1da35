"""Text classifier metadata for MediaPipe Tasks' TextClassifier, checked in the real runtime.

Probe models expose the token ids MediaPipe feeds them: their output ``j`` is ``(ids[j] + 1) / 1000``
(one "class" per position), so the categories MediaPipe returns spell the ids back. They pin the
tokenization rules (:func:`mediapipe_regex_ids`, :func:`mediapipe_bert_ids`, :func:`tf_regex_ids`)
to what MediaPipe does; tiny classifiers then check that a metadata-carrying model agrees with
LiteRT on the same ids.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("mediapipe")

from tlkeras._backend import keras, tf  # noqa: E402
from tlkeras.errors import TLKerasError  # noqa: E402
from tlkeras.export import text_metadata as tm  # noqa: E402
from tlkeras.export import tflite_metadata  # noqa: E402

INFO = dict(name="tiny text", description="a test model", version="v7", author="tlkeras tests")

REGEX_LEN = 12
REGEX_VOCAB = [tm.PAD, tm.START, tm.UNKNOWN, "hello", "Hello", "world", "don't", "it's", "123", "a1_b", "_", "caf", "s", "ber",
               "x", "e", "na", "ve", "it''s", "__init__", "3", "14", "START", "PAD", "tab", "sep", "vt", "ff", "stra", "stanbul", "İ"]
# (text, what it pins)
REGEX_PROBES = [
    ("hello world", "plain words"),
    ("Hello HELLO hello", "no lower-casing: three different lookups"),
    ("don't it's 'x'", "apostrophes are word characters"),
    ("123 a1_b _", "digits and underscores are word characters"),
    ("café über 日本", "non-ASCII letters split (\\w is ASCII)"),
    ("cafés naïve", "accented letters split inside a word"),
    ("", "empty text: <START> then padding"),
    ("   \t\n ", "whitespace only"),
    ("😀hello😀world😀", "emoji split"),
    ("a b c d e f g h i j k l m n o", "truncation to the length (START + 11 tokens)"),
    ("hello\x00world", "the text ends at NUL"),
    ("x x x", "repeated tokens"),
    ("e\u0301", "combining accent splits"),
    ("ＨＥＬＬＯ ｗｏｒｌｄ", "full-width letters are not \\w"),
    ("hello-world,x.x", "punctuation splits"),
    ("tab\tsep\vvt\fff", "ASCII control whitespace splits"),
    ("it''s __init__ 3.14", "double apostrophe, leading underscores, decimals"),
    ("hello\u00a0world", "no-break space splits"),
    ("<START> <PAD>", "special tokens are not produced from text"),
    ("straße İstanbul", "ß and İ split; no Unicode case mapping"),
    ("''", "a token of apostrophes only"),
    ("   hello   ", "leading and trailing delimiters"),
]

BERT_LEN = 8
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s", "un", "##aff", "##able", ",", "!", "caf", "##é", "é", "日",
              "本", "'", "cafe", "Hello", "x", "-", "##x", "。", "«", "»", "na", "##ï", "##ve", "stra", "##ße"]
BERT_PROBES = [
    "hello world", "Hello WORLD", "unaffable hellos", "hello,world!", "café Café CAFÉ", "日本", "xyz", "", "a b c d e f g h i",
    "hello'world", "hello\x00world", "x-x xx", "hello\u00a0world", "hello\vworld", "hello。world", "«hello»", "unaffablex",
    "naïve Straße",
]


def _convert_keras(model) -> bytes:
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _image_model() -> bytes:
    image = keras.Input((4, 4, 3), batch_size=1)
    return _convert_keras(keras.Model(image, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(image))))


def _probe_regex_model() -> bytes:
    ids = keras.Input((REGEX_LEN,), batch_size=1, dtype="int32", name="ids")
    out = keras.layers.Lambda(lambda t: (tf.cast(t, tf.float32) + 1.0) * 1e-3)(ids)
    return _convert_keras(keras.Model(ids, out))


def _classifier():
    from mediapipe.tasks.python import BaseOptions, text

    def make(content: bytes, n: int):
        options = text.TextClassifierOptions(base_options=BaseOptions(model_asset_buffer=bytes(content)), max_results=n,
                                             score_threshold=1e-9)
        return text.TextClassifier.create_from_options(options)

    return make


def _read_ids(classifier, text: str, n: int) -> np.ndarray:
    out = np.full(n, -99, np.int64)
    for c in classifier.classify(text).classifications[0].categories:
        out[c.index] = int(round(c.score * 1000)) - 1
    return out


def _litert(content: bytes, inputs_by_name: dict[str, np.ndarray]) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    for d in interpreter.get_input_details():
        interpreter.set_tensor(d["index"], inputs_by_name[d["name"]][None].astype(np.int32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]


@pytest.fixture(scope="module")
def regex_probe_raw() -> bytes:
    return _probe_regex_model()


@pytest.fixture(scope="module")
def regex_probe(regex_probe_raw) -> bytes:
    return tm.add_regex_metadata(regex_probe_raw, vocab=REGEX_VOCAB, class_names=[f"pos{i}" for i in range(REGEX_LEN)], **INFO)


def test_regex_tokenization_matches_mediapipe(regex_probe):
    index = tm.regex_vocab_index(REGEX_VOCAB)
    keys = tf.constant(list(index), tf.string)
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, tf.constant(list(index.values()), tf.int32)),
                                      default_value=index[tm.UNKNOWN])
    texts = [t for t, _ in REGEX_PROBES]
    from_tf = tm.tf_regex_ids(tf.constant(texts), table, REGEX_LEN).numpy()
    with _classifier()(regex_probe, REGEX_LEN) as classifier:
        got = {text: _read_ids(classifier, text, REGEX_LEN) for text in texts}
    for row, (text, why) in zip(from_tf, REGEX_PROBES):
        expected = tm.mediapipe_regex_ids(text, index, REGEX_LEN)
        assert got[text].tolist() == expected.tolist(), f"{why}: {text!r}"
        assert row.tolist() == expected.tolist(), f"TF pipeline, {why}: {text!r}"
    # The rules, spelled out (so a reference that drifted with MediaPipe cannot hide it).
    v = index.__getitem__
    assert got["Hello HELLO hello"][:4].tolist() == [v(tm.START), v("Hello"), v(tm.UNKNOWN), v("hello")]
    assert got["café über 日本"][:4].tolist() == [1, v("caf"), v("ber"), 0]
    assert got[""].tolist() == [1] + [0] * (REGEX_LEN - 1)
    assert got["hello\x00world"][:3].tolist() == [1, v("hello"), 0]
    assert got["a b c d e f g h i j k l m n o"].tolist() == [1, 2, 2, 2, 2, v("e")] + [2] * 6
    assert got["don't it's 'x'"][:4].tolist() == [1, v("don't"), v("it's"), 2]
    assert got["straße İstanbul"][:5].tolist() == [1, v("stra"), v("e"), v("stanbul"), 0]


def test_regex_case_variants_reach_lower_case_ids(regex_probe_raw):
    vocab = [tm.PAD, tm.START, tm.UNKNOWN, "hello", "world", "don't"]
    index = tm.regex_vocab_index(vocab, case_variants=True)
    assert index["Hello"] == index["HELLO"] == 3 and index["DON'T"] == index["Don't"] == 5 and "hELLO" not in index
    content = tm.add_regex_metadata(regex_probe_raw, vocab=vocab, class_names=[f"p{i}" for i in range(REGEX_LEN)], case_variants=True,
                                    **INFO)
    with _classifier()(content, REGEX_LEN) as classifier:
        for text in ("Hello WORLD hello", "DON'T World hELLO"):
            ids = _read_ids(classifier, text, REGEX_LEN)
            assert ids.tolist() == tm.mediapipe_regex_ids(text, index, REGEX_LEN).tolist()
            if text == "Hello WORLD hello":
                assert ids[:4].tolist() == [1, 3, 4, 3]


def test_regex_metadata_contents(regex_probe):
    from mediapipe.tasks.python.metadata import metadata

    meta = json.loads(metadata.MetadataDisplayer.with_model_buffer(regex_probe).get_metadata_json())
    assert (meta["name"], meta["version"], meta["author"], meta["description"]) == ("tiny text", "v7", "tlkeras tests", "a test model")
    assert meta["min_parser_version"] == "1.2.1"  # RegexTokenizerOptions, not the image stand-in's 1.0.0
    unit = meta["subgraph_metadata"][0]["input_tensor_metadata"][0]["process_units"][0]
    assert unit["options"]["delim_regex_pattern"] == tm.REGEX_DELIMITER
    displayer = metadata.MetadataDisplayer.with_model_buffer(regex_probe)
    assert sorted(displayer.get_packed_associated_file_list()) == ["labels.txt", "vocab.txt"]
    # The text-aware parser version is only in place while text metadata is written.
    helper = sys.modules["mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"]
    assert helper.GetMinimumMetadataParserVersion is not tm.metadata_parser_version
    image = tflite_metadata.add_metadata(_image_model(), class_names=["a", "b"], **INFO)
    assert json.loads(metadata.MetadataDisplayer.with_model_buffer(image).get_metadata_json())["min_parser_version"] == "1.0.0"


def test_regex_classifier_agrees_with_litert():
    vocab = [tm.PAD, tm.START, tm.UNKNOWN, "bad", "awful", "ok", "fine", "good", "great", "movie"]
    classes = ["neg", "neutral", "pos"]
    length = 10
    ids = keras.Input((length,), batch_size=1, dtype="int32", name="ids")
    emb = keras.layers.Embedding(len(vocab), 3, name="emb")
    x = keras.layers.GlobalAveragePooling1D()(emb(ids))
    out = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(ids, out)
    table = np.zeros((len(vocab), 3), np.float32)
    for word, cls in (("bad", 0), ("awful", 0), ("ok", 1), ("fine", 1), ("good", 2), ("great", 2)):
        table[vocab.index(word), cls] = 4.0
    table[vocab.index("movie")] = [0.3, 0.6, 0.1]
    emb.set_weights([table])
    model.get_layer("head").set_weights([np.eye(3, dtype=np.float32) * 3.0, np.zeros(3, np.float32)])
    content = tm.add_regex_metadata(_convert_keras(model), vocab=vocab, class_names=classes, score_threshold=0.05, **INFO)
    texts = ["a bad movie", "awful, just awful!", "it was ok", "fine movie, fine", "good", "Great great movie", "movie",
             "bad but good good", "", "géod"]
    index = tm.regex_vocab_index(vocab)
    name = tm.tflite_input_names(content)[0]
    expected = np.stack([_litert(content, {name: tm.mediapipe_regex_ids(t, index, length)}) for t in texts])
    # The test texts really span the classes (LiteRT on the reference ids).
    assert set(np.argmax(expected, 1)[:6].tolist()) == {0, 1, 2}
    assert np.argmax(expected[5]) == 2  # "Great" (unknown: no lower-casing) then "great"
    assert np.allclose(expected[-2:], 1 / 3)  # only <START>, <UNKNOWN>, <PAD>: a three-way tie, any top-1 is right
    report = tm.verify_mediapipe_text(content, texts, expected, classes)
    assert report["loaded"] and report["error"] is None, report
    assert report["agreement"] == 1.0 and report["names_match"] and report["count"] == len(texts), report
    assert report["max_score_diff"] < 1e-5, report
    # Wrong expectations are caught: swapped rows lower the agreement.
    swapped = tm.verify_mediapipe_text(content, texts, expected[::-1], classes)
    assert swapped["agreement"] < 1.0 and swapped["max_score_diff"] > 0.1


def _bert_probe_model() -> bytes:
    inputs = {n: keras.Input((BERT_LEN,), batch_size=1, dtype="int32", name=n) for n in ("input_word_ids", "input_mask", "input_type_ids")}
    out = keras.layers.Lambda(lambda d: (tf.cast(tf.concat([d["input_word_ids"], d["input_mask"], d["input_type_ids"]], 1), tf.float32)
                                         + 1.0) * 1e-3)(inputs)
    return _convert_keras(keras.Model(inputs, out))


MODEL_MAKER_NAMES = dict(ids_name="serving_default_input_word_ids:0", mask_name="serving_default_input_mask:0",
                         segment_name="serving_default_input_type_ids:0")


def test_bert_tokenization_matches_mediapipe():
    raw = _bert_probe_model()
    assert sorted(tm.tflite_input_names(raw)) == sorted(MODEL_MAKER_NAMES.values())
    n = 3 * BERT_LEN
    content = tm.add_bert_metadata(raw, vocab=BERT_VOCAB, lower_case=True, class_names=[f"c{i}" for i in range(n)], **MODEL_MAKER_NAMES,
                                   **INFO)
    from mediapipe.tasks.python.metadata import metadata

    meta = json.loads(metadata.MetadataDisplayer.with_model_buffer(content).get_metadata_json())
    assert meta["min_parser_version"] == "1.1.0" and meta["version"] == "v7"
    assert [t["name"] for t in meta["subgraph_metadata"][0]["input_tensor_metadata"]] == ["ids", "segment_ids", "mask"]
    with _classifier()(content, n) as classifier:
        got = {text: _read_ids(classifier, text, n).reshape(3, BERT_LEN) for text in BERT_PROBES}
    for text in BERT_PROBES:
        assert got[text].tolist() == [a.tolist() for a in tm.mediapipe_bert_ids(text, BERT_VOCAB, BERT_LEN)], repr(text)
    v = BERT_VOCAB.index
    assert got["Hello WORLD"][0].tolist() == [v("[CLS]"), v("hello"), v("world"), v("[SEP]"), 0, 0, 0, 0]
    assert got["Hello WORLD"][1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0] and not got["Hello WORLD"][2].any()
    assert got["café Café CAFÉ"][0].tolist() == [2, v("caf"), v("##é"), v("caf"), v("##é"), 1, 3, 0]  # ASCII-only lower-casing
    assert got["a b c d e f g h i"][0].tolist() == [2, 1, 1, 1, 1, 1, 1, 3]  # [CLS] + 6 pieces + [SEP]
    assert got[""][0].tolist() == [2, 3, 0, 0, 0, 0, 0, 0]
    assert got["hello\u00a0world"][0].tolist()[:3] == [2, 1, 3]  # no-break space is not a split
    # No accent stripping or Unicode case folding (TensorFlow Text's lower_case=True gives "naive", "strasse").
    assert got["naïve Straße"][0].tolist()[:7] == [2, v("na"), v("##ï"), v("##ve"), v("stra"), v("##ße"), 3]


def test_bert_classifier_agrees_with_litert():
    classes = ["a", "b", "c", "d"]
    ins = {n: keras.Input((BERT_LEN,), batch_size=1, dtype="int32", name=n) for n in ("input_word_ids", "input_mask", "input_type_ids")}
    rng = np.random.default_rng(0)
    emb = keras.layers.Embedding(len(BERT_VOCAB), 4, embeddings_initializer=keras.initializers.Constant(rng.normal(0, 2, (len(BERT_VOCAB), 4))))
    seg = keras.layers.Embedding(2, 4)
    mask = keras.layers.Lambda(lambda m: tf.cast(m, tf.float32)[..., None])(ins["input_mask"])
    x = keras.layers.Add()([emb(ins["input_word_ids"]), seg(ins["input_type_ids"])])
    pooled = keras.layers.Lambda(lambda t: tf.reduce_sum(t[0] * t[1], 1) / tf.reduce_sum(t[1], 1))([x, mask])
    out = keras.layers.Softmax()(pooled)
    content = tm.add_bert_metadata(_convert_keras(keras.Model(ins, out)), vocab=BERT_VOCAB, lower_case=True, class_names=classes,
                                   **MODEL_MAKER_NAMES, **INFO)
    texts = ["hello world", "unaffable", "café!", "x-x", "日本 hello", "cafe cafe cafe", "HELLO,", "«»"]
    names = {"ids_name": 0, "mask_name": 1, "segment_name": 2}
    expected = []
    for t in texts:
        arrays = tm.mediapipe_bert_ids(t, BERT_VOCAB, BERT_LEN)
        expected.append(_litert(content, {MODEL_MAKER_NAMES[k]: arrays[i] for k, i in names.items()}))
    expected = np.stack(expected)
    assert len(set(np.argmax(expected, 1).tolist())) >= 2  # the texts do not all land in one class
    report = tm.verify_mediapipe_text(content, texts, expected, classes)
    assert report["loaded"] and report["agreement"] == 1.0 and report["names_match"] and report["max_score_diff"] < 1e-5, report


def test_bad_inputs(regex_probe_raw):
    names = [f"p{i}" for i in range(REGEX_LEN)]
    with pytest.raises(TLKerasError, match=r"must start with <PAD>, <START>, <UNKNOWN>"):
        tm.add_regex_metadata(regex_probe_raw, vocab=["hello", "world", "x"], class_names=names, **INFO)
    with pytest.raises(TLKerasError, match="twice"):
        tm.add_regex_metadata(regex_probe_raw, vocab=[tm.PAD, tm.START, tm.UNKNOWN, "a", "a"], class_names=names, **INFO)
    with pytest.raises(TLKerasError, match="whitespace"):
        tm.add_regex_metadata(regex_probe_raw, vocab=[tm.PAD, tm.START, tm.UNKNOWN, "a b"], class_names=names, **INFO)
    with pytest.raises(TLKerasError, match="empty string"):
        tm.add_regex_metadata(regex_probe_raw, vocab=REGEX_VOCAB, class_names=names, delimiter=r"\s*", **INFO)
    with pytest.raises(TLKerasError, match="12 scores but 3 class names"):
        tm.add_regex_metadata(regex_probe_raw, vocab=REGEX_VOCAB, class_names=["a", "b", "c"], **INFO)
    with pytest.raises(TLKerasError, match="takes 3 int32 input"):
        tm.add_bert_metadata(regex_probe_raw, vocab=BERT_VOCAB, lower_case=True, class_names=names, **MODEL_MAKER_NAMES, **INFO)
    with pytest.raises(TLKerasError, match="always lower-cases"):
        tm.add_bert_metadata(regex_probe_raw, vocab=BERT_VOCAB, lower_case=False, class_names=names, **MODEL_MAKER_NAMES, **INFO)
    with pytest.raises(TLKerasError, match=r"lacks \[CLS\]"):
        tm.add_bert_metadata(regex_probe_raw, vocab=["[PAD]", "[UNK]", "[SEP]", "a"], lower_case=True, class_names=names,
                             **MODEL_MAKER_NAMES, **INFO)
    bert = _bert_probe_model()
    with pytest.raises(TLKerasError, match="not the model's input names"):
        tm.add_bert_metadata(bert, vocab=BERT_VOCAB, lower_case=True, class_names=[f"c{i}" for i in range(3 * BERT_LEN)],
                             ids_name="input_word_ids", mask_name="input_mask", segment_name="input_type_ids", **INFO)
    with pytest.raises(TLKerasError, match="not a TFLite model|LiteRT cannot read"):
        tm.tflite_input_names(b"not a model")
    with pytest.raises(TLKerasError, match="lacks <PAD> or <UNKNOWN>"):
        tm.mediapipe_regex_ids("x", {"x": 1}, 4)
    # A model without metadata: MediaPipe refuses it, reported without an exception.
    report = tm.verify_mediapipe_text(regex_probe_raw, ["hello"], np.zeros((1, REGEX_LEN)), names)
    assert report["loaded"] is False and report["error"] and "\n" not in report["error"] and report["agreement"] is None

