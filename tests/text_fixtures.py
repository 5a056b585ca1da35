"""Offline stand-ins for TF-Hub text models, built in the test and saved as SavedModels.

No pretrained BERT weights are available offline, so the text tests build their own models with
the *same* SavedModel interface as TF-Hub's BERT pairs (``bert_en_uncased_preprocess/3`` with
``small_bert/bert_en_uncased_L-2_H-128_A-2/2``) and as ``nnlm-en-dim50``, and load them the way
users do: ``hub.KerasLayer(str(folder))``. See "Common SavedModel APIs for Text" on
tensorflow.org/hub for the interface mirrored here:

Preprocessor (``build_bert_pair(...)[0]``), a plain ``tf.saved_model.save`` of a trackable:

* ``preprocessor(strings)``: ``tf.string [batch]`` -> dict of ``input_word_ids``, ``input_mask``,
  ``input_type_ids``, each ``int32 [batch, seq_length]``: ``[CLS] tokens [SEP]`` then 0 padding,
  tokens truncated to ``seq_length - 2``.
* ``preprocessor.tokenize(strings)`` -> ``RaggedTensor int32 [batch, (words), (wordpieces)]``
  (``tensorflow_text.BertTokenizer`` over ``assets/vocab.txt``), with the attributes
  ``tokenize.vocab_file`` (a ``tf.saved_model.Asset``), ``tokenize.do_lower_case``
  (a ``tf.Variable`` of dtype bool) and ``tokenize.get_special_tokens_dict()`` (dict of int32
  scalars: ``vocab_size``, ``start_of_sequence_id``, ``end_of_segment_id``, ``padding_id``,
  ``mask_id``).
* ``preprocessor.bert_pack_inputs(segments, seq_length=<default seq_length>)``: a list of 1 or 2
  ragged int32 segments (ragged rank 1 or 2) -> the same dict (round-robin trimming, type id 1
  for the second segment).

Encoder (``build_bert_pair(...)[1]``), a reusable SavedModel (``__call__``, ``variables``,
``trainable_variables``, ``regularization_losses``):

* ``encoder(inputs, training=False)`` with ``inputs`` the dict above (int32 ``[batch, seq]``,
  any ``seq`` up to ``max(seq_length, 512)``) -> dict of ``pooled_output [batch, hidden]``,
  ``sequence_output [batch, seq, hidden]``, ``encoder_outputs`` (list, one
  ``[batch, seq, hidden]`` per layer) and ``default`` (= ``pooled_output``).
* ``vocab_file`` (Asset) and ``do_lower_case`` (bool Variable, listed in ``variables`` as a
  non-trainable variable, as in TF-Hub's Keras-exported encoders).
* The math uses only ops that TFLite lowers to TFLITE_BUILTINS (Gather, MatMul/BatchMatMul,
  Softmax, Add/Mul/Sub, Tanh, Mean/Rsqrt, Reshape/Transpose, StridedSlice, Cast); dropout only
  when ``training=True``.

Sentence encoder (``build_sentence_encoder``): ``tf.string [batch]`` -> ``float32 [batch, dim]``,
lower-cased whitespace tokens hashed into a trainable embedding table and combined with sqrt-n.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

_WORDS = """
the a an and or but if then so because as of to in on at by for with from about into over under
after before between through during without again very too also just only not no nor never
is are was were be been being am do does did doing have has had having will would can could should
may might must shall i me my we our you your he him his she her it its they them their this that
these those there here what which who whom whose when where why how all any both each few more
most other some such own same than up down out off once all
good bad great terrible awful excellent amazing wonderful horrible poor nice fine okay ok best
worst better worse love loved hate hated like liked enjoy enjoyed recommend happy sad disappointed
disappointing boring fun funny beautiful ugly perfect cheap expensive fast slow quick easy hard
fresh cold hot warm delicious tasty bland rude friendly helpful clean dirty broken quality
movie movies film films story plot actor actors acting scene scenes ending director character
characters book music sound song show series watch watched time times minutes hours
food meal dinner lunch breakfast restaurant service staff waiter waitress menu price prices table
pizza burger chicken coffee tea wine beer place order ordered dish dishes
phone phones battery screen camera app product products price item items buy bought money
work works worked working use used using charge charger case device quality size
day days night week year years people person man woman thing things way life world
make made get got go went come came see saw know knew think thought say said take took give gave
look looked feel felt want wanted try tried need needed find found keep kept
one two three four five first last new old big small long little high low
really well even still much many lot back again ever
""".split()

_SUBWORDS = ["##s", "##es", "##ing", "##ed", "##er", "##est", "##ly", "##y", "##n't", "##able", "##ful", "##less", "##ness"]
_PUNCT = list(".,!?'\"-:;()/&$%*+=#@")


def default_vocab() -> list[str]:
    """Special tokens, a few hundred common (review) words, subword pieces, letters, digits, punctuation.

    Every ASCII word tokenizes without ``[UNK]``: each letter and digit exists alone and as ``##x``.
    """
    vocab: list[str] = []
    seen: set[str] = set()
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    for token in SPECIAL_TOKENS + _WORDS + _SUBWORDS + chars + ["##" + c for c in chars] + _PUNCT:
        if token not in seen:
            seen.add(token)
            vocab.append(token)
    return vocab


def _tf():
    from tlkeras._backend import tf

    return tf


def _write_vocab(folder: Path, vocab: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def _build_preprocessor(vocab_path: Path, vocab: list[str], seq_length: int, lower_case: bool):
    tf = _tf()
    import tensorflow_text as text

    ids = {token: i for i, token in enumerate(vocab)}
    for token in ("[CLS]", "[SEP]", "[PAD]", "[UNK]"):
        if token not in ids:
            raise ValueError(f"vocab lacks {token}")
    cls_id, sep_id, pad_id = ids["[CLS]"], ids["[SEP]"], ids["[PAD]"]
    special = {"vocab_size": len(vocab), "start_of_sequence_id": cls_id, "end_of_segment_id": sep_id, "padding_id": pad_id}
    if "[MASK]" in ids:
        special["mask_id"] = ids["[MASK]"]

    init = tf.lookup.TextFileInitializer(
        str(vocab_path), key_dtype=tf.string, key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
        value_dtype=tf.int64, value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
    )
    table = tf.lookup.StaticHashTable(init, default_value=-1)
    tokenizer = text.BertTokenizer(table, token_out_type=tf.int64, lower_case=lower_case, unknown_token="[UNK]")

    def tokenize_fn(strings):
        tokens = tf.cast(tokenizer.tokenize(strings), tf.int32)
        # Keep the batch dimension static-friendly (as TF-Hub's tokenizer layer does).
        return tf.RaggedTensor.from_row_splits(tokens.values, tf.reshape(tokens.row_splits, [tf.shape(strings)[0] + 1]))

    def pack(segments, seq_length):
        segments = [s.merge_dims(-2, -1) if s.ragged_rank > 1 else s for s in segments]
        segments = [tf.cast(s, tf.int32) for s in segments]
        seq_length = tf.cast(seq_length, tf.int32)
        trimmed = text.RoundRobinTrimmer(max_seq_length=seq_length - len(segments) - 1).trim(segments)
        combined, type_ids = text.combine_segments(trimmed, start_of_sequence_id=cls_id, end_of_segment_id=sep_id)
        word_ids, mask = text.pad_model_inputs(combined, max_seq_length=seq_length, pad_value=pad_id)
        type_ids, _ = text.pad_model_inputs(type_ids, max_seq_length=seq_length, pad_value=0)
        return {
            "input_word_ids": tf.cast(word_ids, tf.int32),
            "input_mask": tf.cast(mask, tf.int32),
            "input_type_ids": tf.cast(type_ids, tf.int32),
        }

    tokenize = tf.train.Checkpoint()
    tokenize.table = table
    tokenize.vocab_file = tf.saved_model.Asset(str(vocab_path))
    tokenize.do_lower_case = tf.Variable(lower_case, trainable=False, name="do_lower_case")
    tokenize.__call__ = tf.function(tokenize_fn, input_signature=[tf.TensorSpec([None], tf.string)])
    get_special = tf.train.Checkpoint()
    get_special.__call__ = tf.function(lambda: {k: tf.constant(v, tf.int32) for k, v in special.items()}, input_signature=[])
    tokenize.get_special_tokens_dict = get_special

    bert_pack_inputs = tf.train.Checkpoint()

    @tf.function(autograph=False)
    def pack_fn(inputs, seq_length=seq_length):
        return pack(list(inputs), seq_length)

    for ragged_rank in (1, 2):
        for num_segments in (1, 2):
            pack_fn.get_concrete_function(
                [tf.RaggedTensorSpec([None] * (ragged_rank + 1), tf.int32, ragged_rank=ragged_rank) for _ in range(num_segments)],
                seq_length=tf.TensorSpec([], tf.int32),
            )
    bert_pack_inputs.__call__ = pack_fn

    root = tf.train.Checkpoint()
    root.tokenize = tokenize
    root.bert_pack_inputs = bert_pack_inputs
    root.__call__ = tf.function(lambda strings: pack([tokenize_fn(strings)], seq_length), input_signature=[tf.TensorSpec([None], tf.string)])
    # The reusable-SavedModel lists: a preprocessor has no weights.
    root.variables = []
    root.trainable_variables = []
    root.regularization_losses = []
    return root


class _Encoder:
    """A tiny BERT: embeddings + LayerNorm, ``layers`` post-LN transformer blocks, tanh pooler."""

    def __init__(self, vocab_size: int, hidden: int, layers: int, heads: int, max_positions: int, seed: int, dropout: float = 0.1):
        tf = _tf()
        if hidden % heads:
            raise ValueError(f"hidden={hidden} is not divisible by heads={heads}")
        rng = np.random.default_rng(seed)
        self.variables: list = []

        def var(name, shape, std=None, value=None):
            if value is None:
                value = rng.normal(0.0, std, shape)
            v = tf.Variable(np.asarray(value, dtype="float32"), name=name)
            self.variables.append(v)
            return v

        def dense(name, fan_in, fan_out):
            return var(f"{name}/kernel", (fan_in, fan_out), std=1.0 / math.sqrt(fan_in)), var(f"{name}/bias", (fan_out,), value=np.zeros(fan_out))

        def norm(name):
            return var(f"{name}/gamma", (hidden,), value=np.ones(hidden)), var(f"{name}/beta", (hidden,), value=np.zeros(hidden))

        self.hidden, self.heads, self.dropout = hidden, heads, dropout
        self.word = var("embeddings/word", (vocab_size, hidden), std=1.0)
        self.position = var("embeddings/position", (max_positions, hidden), std=0.5)
        self.type = var("embeddings/type", (2, hidden), std=0.5)
        self.embed_norm = norm("embeddings/layer_norm")
        ffn = 4 * hidden
        self.blocks = []
        for i in range(layers):
            p = f"transformer/layer_{i}"
            self.blocks.append({
                "q": dense(f"{p}/query", hidden, hidden), "k": dense(f"{p}/key", hidden, hidden),
                "v": dense(f"{p}/value", hidden, hidden), "o": dense(f"{p}/attention_output", hidden, hidden),
                "norm1": norm(f"{p}/attention_layer_norm"), "ffn1": dense(f"{p}/intermediate", hidden, ffn),
                "ffn2": dense(f"{p}/output", ffn, hidden), "norm2": norm(f"{p}/output_layer_norm"),
            })
        self.pooler = dense("pooler_transform", hidden, hidden)

    # --- builtins-only building blocks ---
    @staticmethod
    def _layer_norm(x, params):
        tf = _tf()
        gamma, beta = params
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        centered = x - mean
        variance = tf.reduce_mean(centered * centered, axis=-1, keepdims=True)
        return centered * tf.math.rsqrt(variance + 1e-12) * gamma + beta

    @staticmethod
    def _dense(x, params):
        tf = _tf()
        kernel, bias = params
        shape = tf.shape(x)
        flat = tf.matmul(tf.reshape(x, [-1, kernel.shape[0]]), kernel) + bias
        return tf.reshape(flat, tf.concat([shape[:-1], [kernel.shape[1]]], axis=0))

    @staticmethod
    def _gelu(x):
        tf = _tf()
        # tanh approximation, written with Mul/Add/Tanh only
        return 0.5 * x * (1.0 + tf.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))

    def _dropout(self, x, training):
        tf = _tf()
        return tf.nn.dropout(x, rate=self.dropout) if training and self.dropout > 0 else x

    def __call__(self, inputs, training=False):
        tf = _tf()
        word_ids = tf.cast(inputs["input_word_ids"], tf.int32)
        mask = tf.cast(inputs["input_mask"], tf.float32)
        type_ids = tf.cast(inputs["input_type_ids"], tf.int32)
        batch, seq = tf.shape(word_ids)[0], tf.shape(word_ids)[1]
        x = tf.gather(self.word, word_ids) + tf.gather(self.type, type_ids) + tf.expand_dims(self.position[:seq], 0)
        x = self._dropout(self._layer_norm(x, self.embed_norm), training)
        size = self.hidden // self.heads
        bias = tf.reshape((1.0 - mask) * -10000.0, [batch, 1, 1, seq])
        scale = 1.0 / math.sqrt(size)
        outputs = []
        for block in self.blocks:
            def heads(t):
                return tf.transpose(tf.reshape(t, [batch, seq, self.heads, size]), [0, 2, 1, 3])

            q, k, v = (heads(self._dense(x, block[n])) for n in ("q", "k", "v"))
            scores = tf.matmul(q * scale, k, transpose_b=True) + bias
            probs = self._dropout(tf.nn.softmax(scores, axis=-1), training)
            context = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), [batch, seq, self.hidden])
            attention = self._dropout(self._dense(context, block["o"]), training)
            x = self._layer_norm(x + attention, block["norm1"])
            ffn = self._dense(self._gelu(self._dense(x, block["ffn1"])), block["ffn2"])
            x = self._layer_norm(x + self._dropout(ffn, training), block["norm2"])
            outputs.append(x)
        pooled = tf.tanh(self._dense(x[:, 0, :], self.pooler))
        return {"pooled_output": pooled, "sequence_output": x, "encoder_outputs": outputs, "default": pooled}


def _build_encoder(vocab_path: Path, vocab_size: int, *, seq_length, hidden, layers, heads, lower_case, seed):
    tf = _tf()
    net = _Encoder(vocab_size, hidden, layers, heads, max(seq_length, 512), seed)

    @tf.function
    def call(inputs, training=False):
        return net(inputs, training=training)

    spec = {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in ("input_word_ids", "input_mask", "input_type_ids")}
    for training in (False, True):
        call.get_concrete_function(spec, training=training)

    @tf.function(input_signature=[spec])
    def serving(inputs):
        out = net(inputs, training=False)
        flat = {k: out[k] for k in ("pooled_output", "sequence_output", "default")}
        flat.update({f"encoder_outputs_{i}": t for i, t in enumerate(out["encoder_outputs"])})
        return flat

    root = tf.train.Checkpoint()
    root.__call__ = call
    root.vocab_file = tf.saved_model.Asset(str(vocab_path))
    root.do_lower_case = tf.Variable(lower_case, trainable=False, name="do_lower_case")
    root.trainable_variables = list(net.variables)
    root.variables = list(net.variables) + [root.do_lower_case]
    root.regularization_losses = []
    return root, serving


def build_bert_pair(
    root: Path,
    vocab: list[str] | None = None,
    *,
    seq_length: int = 128,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    lower_case: bool = True,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Builds and saves a BERT preprocessor/encoder pair under ``root``; returns their folders.

    ``root/bert_preprocess`` and ``root/bert_encoder`` are SavedModels with TF-Hub's interface
    (see the module docstring); both carry ``assets/vocab.txt`` (copied from ``root/_vocab/vocab.txt``). ``vocab`` defaults to
    :func:`default_vocab`. The encoder's weights are random (``seed``) but scaled so that the
    pooled output depends on the words (a classifier on top can learn).
    """
    tf = _tf()
    vocab = list(vocab) if vocab is not None else default_vocab()
    if seq_length < 3:
        raise ValueError("seq_length must be at least 3")
    root = Path(root)
    vocab_path = _write_vocab(root / "_vocab", vocab)
    pre_dir, enc_dir = root / "bert_preprocess", root / "bert_encoder"

    pre = _build_preprocessor(vocab_path, vocab, seq_length, lower_case)
    tf.saved_model.save(pre, str(pre_dir), signatures={"serving_default": pre.__call__.get_concrete_function()})

    enc, serving = _build_encoder(vocab_path, len(vocab), seq_length=seq_length, hidden=hidden, layers=layers, heads=heads, lower_case=lower_case, seed=seed)
    tf.saved_model.save(enc, str(enc_dir), signatures={"serving_default": serving})
    return pre_dir, enc_dir


def build_sentence_encoder(root: Path, dim: int = 16, seed: int = 0, buckets: int = 1000) -> Path:
    """Saves an nnlm-style sentence embedding (``tf.string [batch]`` -> ``float32 [batch, dim]``).

    Lower-cased whitespace tokens are hashed (``tf.strings.to_hash_bucket_fast``) into a trainable
    ``[buckets, dim]`` table; a sentence's vector is the sum of its tokens' rows divided by
    sqrt(number of tokens) (zeros for an empty string). Returns ``root/sentence_encoder``.
    """
    tf = _tf()
    rng = np.random.default_rng(seed)
    table = tf.Variable(rng.normal(0.0, 1.0, (buckets, dim)).astype("float32"), name="embeddings")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def call(strings):
        tokens = tf.strings.split(tf.strings.lower(strings))
        ids = tf.strings.to_hash_bucket_fast(tokens, buckets)
        vectors = tf.ragged.map_flat_values(tf.gather, table, ids)
        total = tf.reduce_sum(vectors, axis=1)
        count = tf.cast(tf.maximum(tokens.row_lengths(), 1), tf.float32)
        return total / tf.sqrt(count)[:, None]

    obj = tf.train.Checkpoint()
    obj.embeddings = table
    obj.__call__ = call
    obj.variables = [table]
    obj.trainable_variables = [table]
    obj.regularization_losses = []
    out = Path(root) / "sentence_encoder"
    tf.saved_model.save(obj, str(out), signatures={"serving_default": call})
    return out


# ---------------------------------------------------------------------------------------------
# Labelled sentences and a word-vectors file


POSITIVE = ["good", "great", "love", "excellent", "nice", "best", "happy", "perfect", "wonderful", "amazing"]
NEGATIVE = ["bad", "terrible", "hate", "awful", "worst", "poor", "sad", "broken", "boring", "horrible"]
FILLER = ["the", "food", "phone", "movie", "was", "is", "this", "it", "and", "service", "really", "very", "a", "story", "place"]


def make_sentences(n_per_class: int = 40, seed: int = 0) -> list[tuple[str, str]]:
    """Short review-like sentences whose label follows their sentiment word(s); some capitalized."""
    rng = random.Random(seed)
    rows = []
    for label, words in (("positive", POSITIVE), ("negative", NEGATIVE)):
        for _ in range(n_per_class):
            sentence = rng.sample(FILLER, rng.randint(3, 7)) + rng.sample(words, rng.randint(1, 2))
            rng.shuffle(sentence)
            text = " ".join(sentence)
            rows.append((text.capitalize() + rng.choice([".", "!", ""]), label))
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows, split: bool = True) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label", "split"] if split else ["text", "label"])
        for i, (text, label) in enumerate(rows):
            part = "test" if i % 5 == 0 else "val" if i % 5 == 1 else "train"
            w.writerow([text, label, part] if split else [text, label])
    return path


def tiny_vectors(path: Path, dim: int = 8, seed: int = 0) -> Path:
    """A GloVe-format file: sentiment words along one axis, the rest noise (and a cp1252 token)."""
    rng = np.random.default_rng(seed)
    lines = []
    for word in POSITIVE + NEGATIVE + FILLER:
        v = rng.normal(0, 0.1, dim)
        v[0] = 1.0 if word in POSITIVE else -1.0 if word in NEGATIVE else 0.0
        lines.append(word.encode() + b" " + " ".join(f"{x:.4f}" for x in v).encode())
    lines.append(b"caf\xe9 " + b" ".join(b"0.1" for _ in range(dim)))  # not UTF-8, as in GloVe 6B
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path
