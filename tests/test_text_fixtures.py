"""Checks of the offline TF-Hub text stand-ins in tests/text_fixtures.py."""

from __future__ import annotations

import numpy as np
import pytest
from text_fixtures import build_bert_pair, build_sentence_encoder, default_vocab

SEQ = 16
NAMES = ("input_word_ids", "input_mask", "input_type_ids")
TEXTS = ["This movie was great!", "Terrible food, not good at all.", "", "the phone battery died " * 6]


@pytest.fixture(scope="module")
def bert_pair(tmp_path_factory):
    return build_bert_pair(tmp_path_factory.mktemp("bert"), seq_length=SEQ)


@pytest.fixture(scope="module")
def loaded(bert_pair):
    import tensorflow_text  # noqa: F401  (registers the ops the preprocessor uses)

    from tlkeras._backend import tf

    return tf.saved_model.load(str(bert_pair[0])), tf.saved_model.load(str(bert_pair[1]))


def test_default_vocab_covers_ascii_words():
    vocab = default_vocab()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(vocab) == len(set(vocab)) > 300
    for token in ("good", "bad", "great", "terrible", "love", "not", "food", "phone", "movie", "##s", "##ing", "##ed", "q", "##z"):
        assert token in vocab


def test_preprocessor_packs_cls_tokens_sep_padding(loaded):
    from tlkeras._backend import tf

    pre, _ = loaded
    out = pre(tf.constant(TEXTS))
    assert set(out) == set(NAMES)
    for name in NAMES:
        assert out[name].dtype == tf.int32 and out[name].shape == (len(TEXTS), SEQ)
    ids, mask, types = (out[n].numpy() for n in NAMES)
    tokens = pre.tokenize(tf.constant(TEXTS)).merge_dims(-2, -1).row_lengths().numpy()
    assert tokens[2] == 0 and tokens[3] > SEQ
    np.testing.assert_array_equal(mask.sum(axis=1), np.minimum(tokens + 2, SEQ))
    for row, n in zip(range(len(TEXTS)), mask.sum(axis=1)):
        assert ids[row, 0] == 2 and ids[row, n - 1] == 3  # [CLS] ... [SEP]
        assert (ids[row, n:] == 0).all() and (mask[row, n:] == 0).all()
    assert (types == 0).all()
    assert 1 not in ids[0]  # no [UNK]: every ASCII word tokenizes


def test_tokenize_and_bert_pack_inputs_interface(loaded):
    from tlkeras._backend import tf

    pre, _ = loaded
    tokens = pre.tokenize(tf.constant(["Loved it", "foods"]))
    assert isinstance(tokens, tf.RaggedTensor) and tokens.dtype == tf.int32 and tokens.shape.rank == 3
    vocab = default_vocab()
    assert [vocab[i] for i in tokens[1, 0].numpy()] == ["food", "##s"]
    assert bool(pre.tokenize.do_lower_case.numpy()) is True
    with open(pre.tokenize.vocab_file.asset_path.numpy().decode(), encoding="utf-8") as f:
        assert f.read().split("\n")[:3] == vocab[:3]
    special = {k: int(v) for k, v in pre.tokenize.get_special_tokens_dict().items()}
    assert special == {"vocab_size": len(vocab), "start_of_sequence_id": 2, "end_of_segment_id": 3, "padding_id": 0, "mask_id": 4}

    second = pre.tokenize(tf.constant(["the food was cold and the service slow", "ok"]))
    packed = pre.bert_pack_inputs([tokens, second], seq_length=8)
    ids, mask, types = (packed[n].numpy() for n in NAMES)
    assert ids.shape == (2, 8) and mask[0].sum() == 8  # trimmed round-robin to fit
    assert list(ids[1][:6]) == [2, *tokens[1].flat_values.numpy(), 3, vocab.index("ok"), 3] and list(types[1][:6]) == [0, 0, 0, 0, 1, 1]
    assert pre.bert_pack_inputs([tokens])["input_word_ids"].shape == (2, SEQ)  # default seq_length


def test_encoder_in_keras_model_fine_tunes(bert_pair, loaded):
    from tlkeras._backend import hub, keras, tf

    pre, _ = loaded
    inputs = {n: keras.Input(shape=(SEQ,), dtype=tf.int32, name=n) for n in NAMES}
    encoder = hub().KerasLayer(str(bert_pair[1]), trainable=True)
    outputs = encoder(inputs)
    assert outputs["pooled_output"].shape.as_list() == [None, 32]
    assert outputs["sequence_output"].shape.as_list() == [None, SEQ, 32]
    assert len(outputs["encoder_outputs"]) == 2
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(outputs["pooled_output"]))
    x = pre(tf.constant(TEXTS))
    pooled = keras.Model(inputs, outputs["pooled_output"])(x).numpy()
    assert np.abs(pooled[0] - pooled[1]).max() > 0.05  # the words matter
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy([0, 1, 2, 0], model(x, training=True)))
    grads = tape.gradient(loss, encoder.trainable_weights)
    assert len(grads) > 10 and all(g is not None for g in grads)


def test_tflite_builtins_only_matches_keras(bert_pair, loaded):
    from ai_edge_litert.interpreter import Interpreter

    from tlkeras._backend import hub, keras, tf

    pre, _ = loaded
    inputs = {n: keras.Input(shape=(SEQ,), dtype=tf.int32, name=n) for n in NAMES}
    pooled = hub().KerasLayer(str(bert_pair[1]), trainable=True)(inputs)["pooled_output"]
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))

    @tf.function(input_signature=[tf.TensorSpec([1, SEQ], tf.int32, name=n) for n in NAMES])
    def serve(input_word_ids, input_mask, input_type_ids):
        return model({"input_word_ids": input_word_ids, "input_mask": input_mask, "input_type_ids": input_type_ids}, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "FULLY_CONNECTED" in ops and "SOFTMAX" in ops and not any("FLEX" in op or "CUSTOM" in op for op in ops)
    details = interpreter.get_input_details()
    assert sorted(d["name"] for d in details) == sorted(f"serving_default_{n}:0" for n in NAMES)
    x = {k: v.numpy() for k, v in pre(tf.constant(TEXTS)).items()}
    for i in range(len(TEXTS)):
        for d in details:
            interpreter.set_tensor(d["index"], x[d["name"][len("serving_default_") : -2]][i : i + 1])
        interpreter.invoke()
        lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_allclose(lite, model({k: v[i : i + 1] for k, v in x.items()}).numpy(), atol=1e-4)


def test_sentence_encoder_loads_and_trains(tmp_path):
    from tlkeras._backend import hub, keras, tf

    path = build_sentence_encoder(tmp_path, dim=8)
    layer = hub().KerasLayer(str(path), input_shape=[], dtype=tf.string, trainable=True)
    model = keras.Sequential([layer, keras.layers.Dense(2)])
    out = model(tf.constant(["Good food", "good FOOD", "", "bad phone"])).numpy()
    assert out.shape == (4, 2) and np.isfinite(out).all()
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # lower-cased
    assert len(layer.trainable_weights) == 1


def test_raw_string_model_trains_and_saves_as_keras(bert_pair, tmp_path):
    from tlkeras._backend import hub, keras, tf

    text = tf.constant(TEXTS)
    inp = keras.Input(shape=(), dtype=tf.string)
    encoder_inputs = hub().KerasLayer(str(bert_pair[0]))(inp)
    pooled = hub().KerasLayer(str(bert_pair[1]), trainable=True)(encoder_inputs)["pooled_output"]
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(pooled))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    weights = [w.numpy().copy() for w in model.trainable_weights]
    model.fit(text, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    assert all(not np.allclose(a, w.numpy()) for a, w in zip(weights, model.trainable_weights))
    model.save(str(tmp_path / "m.keras"))
    # the .keras file keeps each KerasLayer's handle (the folder) plus the fine-tuned weights
    restored = keras.models.load_model(str(tmp_path / "m.keras"), custom_objects={"KerasLayer": hub().KerasLayer})
    np.testing.assert_allclose(restored.predict(text, verbose=0), model.predict(text, verbose=0), atol=1e-6)
