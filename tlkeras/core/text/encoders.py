"""Text encoders as one flat Keras model that takes raw strings: word model, BERT pairs, sentence encoders.

Every text model has the image models' shape and layer-naming rules, so the one engine trains it:
``text -> preprocess_* (tokenizer, no weights) -> encoder layers -> head_pool (the pooled feature
vector) -> head_*``. Phase 1 fits the head on cached ``head_pool`` features of the frozen encoder
(the linear probe); phase 2 unfreezes the encoder (``unfreeze``, from the registry's recipe).

- ``word_embedding``: :class:`~tlkeras.core.text.tokenize.RegexTokenizer` (MediaPipe's rule), a
  word embedding (optionally initialized from ``--word-vectors``), hashed word bigrams computed
  from the ids, and the average of each over the real tokens. Exported, it is MediaPipe's
  average-word-embedding model kind: one int32 input of ids.
- BERT family (TF-Hub / Kaggle handle or local SavedModel with a preprocessing model): the
  preprocessing model's ``tokenize`` and ``bert_pack_inputs`` give ids / mask / segment ids at the
  run's sequence length; the encoder's ``pooled_output`` is the feature vector.
- Hugging Face BERT-family checkpoint (``hf:DIR``, :mod:`tlkeras.core.text.hf`): MediaPipe's own
  BERT tokenizer rule (:class:`~tlkeras.core.text.wordpiece.MediaPipeBertTokenizer`) with the
  checkpoint's vocabulary gives ids / mask / segment ids; :class:`~tlkeras.core.text.hf_encoder.BertEncoder`
  (checked against a NumPy forward pass at load) pools them as the checkpoint's files say.
- Sentence encoders (nnlm, Universal Sentence Encoder): raw strings in, a vector out.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.config import ModelConfig
from tlkeras.core.backbones import HUB_URL_PREFIXES, get_backbone, hub_location, is_hub_url
from tlkeras.core.text.hf_encoder import BertEncoder  # noqa: F401  (registers the hf: encoder layer for loading)
from tlkeras.core.text.tokenize import DELIMITER, RegexTokenizer, build_vocabulary, text_ids, token_counts, vocabulary_index
from tlkeras.core.text.vectors import embedding_matrix, read_word_vectors
from tlkeras.core.text.wordpiece import MediaPipeBertTokenizer
from tlkeras.errors import TLKerasError

__all__ = [
    "TextEncoder", "resolve_text_encoder", "build_text_model", "text_kind", "tokenizer_layer", "ids_model",
    "count_truncated", "WordBigrams", "WeightedAverage", "idf_weights", "BertPreprocess", "TextHubEncoder", "DEFAULT_SEQUENCE_LENGTH",
]

DEFAULT_SEQUENCE_LENGTH = 128
_BIGRAM_MULTIPLIER = 2039  # a prime; ids stay below 2**31 for vocabularies up to 1M words (int32, TFLite builtins)
_DEFAULT_EMBEDDING_DIM = 64


class TextEncoder:
    """A resolved text encoder: ``kind`` (word, bert, sentence), its handles and its name."""

    def __init__(self, kind: str, name: str, handle: str = "", preprocess: str = "", default_length: int = DEFAULT_SEQUENCE_LENGTH):
        self.kind, self.name, self.handle, self.preprocess, self.default_length = kind, name, handle, preprocess, default_length


def _local_or_url(handle: str, what: str) -> str:
    """A URL as is, or a local SavedModel directory resolved; one-line errors otherwise."""
    kind, resolved = hub_location(handle)
    if kind == "missing":
        raise TLKerasError(f"{what} {handle} is neither a URL nor an existing SavedModel directory; pass a TF-Hub handle or the folder with saved_model.pb")
    if kind == "not_saved_model":
        raise TLKerasError(f"{what} {handle} is not a SavedModel directory (no saved_model.pb); pass the folder that holds saved_model.pb")
    return resolved


def resolve_text_encoder(config: ModelConfig) -> TextEncoder:
    """The text encoder ``config.backbone`` names (a registered text encoder or ``hub:<handle>``).

    A ``hub:`` handle is a BERT-family encoder when a preprocessing model is given (or the handle
    is an official BERT one with a known pairing), else a sentence encoder that takes strings.

    Raises:
        TLKerasError: an image backbone, an unknown name, a local path that is not a SavedModel.
    """
    backbone = str(config.backbone)
    if backbone.startswith("hf:"):
        return _resolve_hf(config, backbone)
    if backbone.startswith("hub:"):
        handle = backbone[4:]
        preprocess = config.preprocess or _default_preprocess(handle)
        kind = "bert" if preprocess else "sentence"
        name = "hub"
    else:
        spec = get_backbone(backbone)
        if spec.modality != "text":
            from tlkeras.core.backbones import list_backbones

            raise TLKerasError(
                f"{spec.name} is an image backbone and the data is text; pass --backbone with a text encoder "
                f"({', '.join(list_backbones('text'))}, or hub:<handle-or-dir>)"
            )
        handle, name = spec.handle, spec.name
        preprocess = config.preprocess or spec.preprocess
        kind = "word" if not handle else ("bert" if preprocess else "sentence")
    if kind != "word":
        handle = _local_or_url(handle, "text encoder")
    if kind == "bert":
        preprocess = _local_or_url(preprocess, "preprocessing model")
    if kind != "word" and config.word_vectors:
        raise TLKerasError(f"--word-vectors initializes the word_embedding encoder; {name} has its own embeddings: drop --word-vectors or use --backbone word_embedding")
    return TextEncoder(kind, name, handle, preprocess)


def _resolve_hf(config: ModelConfig, backbone: str) -> TextEncoder:
    """An ``hf:`` checkpoint: its folder found (a zip extracted once), its options checked."""
    from tlkeras.core.text.hf import hf_folder

    if config.word_vectors:
        raise TLKerasError("--word-vectors initializes the word_embedding encoder; an hf: checkpoint has its own embeddings: drop --word-vectors")
    if config.preprocess:
        raise TLKerasError("--preprocess pairs a TF-Hub encoder with its preprocessing model; an hf: checkpoint tokenizes with its own "
                           "vocabulary: drop --preprocess")
    return TextEncoder("hf", "hf", str(hf_folder(backbone)))


def _default_preprocess(handle: str) -> str:
    """The official preprocessing model of an official BERT handle, or '' (unknown pairing)."""
    low = handle.lower()
    if "bert" not in low or not low.startswith(HUB_URL_PREFIXES):
        return ""
    for marker, pre in (("_cased", "https://tfhub.dev/tensorflow/bert_en_cased_preprocess/3"),
                        ("multi_cased", "https://tfhub.dev/tensorflow/bert_multi_cased_preprocess/3"),
                        ("uncased", "https://tfhub.dev/tensorflow/bert_en_uncased_preprocess/3")):
        if marker in low:
            return pre
    return ""


def text_kind(model) -> str:
    """``word``, ``bert`` or ``sentence`` for a text model built here; ``image`` otherwise."""
    names = {layer.name for layer in model.layers}
    if "preprocess_tokenizer" in names:
        return "word"
    if "preprocess_bert" in names:
        return "bert"
    if model.inputs and model.inputs[0].dtype == tf.string:
        return "sentence"
    return "image"


def tokenizer_layer(model):
    """The model's tokenizer layer (``preprocess_tokenizer`` or ``preprocess_bert``: TF-Hub's
    :class:`BertPreprocess` or an ``hf:`` model's :class:`MediaPipeBertTokenizer`), or None."""
    for name in ("preprocess_tokenizer", "preprocess_bert"):
        try:
            return model.get_layer(name)
        except ValueError:
            continue
    return None


def ids_model(model):
    """The part of a word or BERT model after its tokenizer: token ids in, class scores out.

    Its layers are ``model``'s (shared weights). This is what TFLite gets: MediaPipe tokenizes.
    """
    layer = tokenizer_layer(model)
    if layer is None:
        raise TLKerasError("this text model takes raw strings all the way (a sentence encoder); it has no token-id part to export")
    return keras.Model(layer.output, model.output, name=f"{model.name}_ids")


def count_truncated(model, texts: Sequence[str]) -> int:
    """How many ``texts`` hold more tokens than the model's sequence length takes."""
    layer = tokenizer_layer(model)
    if layer is None or not len(texts):
        return 0
    if isinstance(layer, RegexTokenizer):
        return int(np.sum(token_counts(list(texts), layer.delimiter) > layer.sequence_length - 1))
    return layer.count_truncated(list(texts))


# ---------------------------------------------------------------------------------------------
# Layers (no Lambda layers: models load with Keras' safe mode on)


@keras.saving.register_keras_serializable(package="tlkeras")
class WordBigrams(keras.layers.Layer):
    """Word ids ``[batch, L]`` -> hashed bigram ids ``[batch, L - 1]`` in ``1..buckets`` (0: padding).

    Integer multiply, add and floor-mod only, so the exported model computes its bigrams from the
    ids MediaPipe gives it, with TFLite builtin ops.
    """

    def __init__(self, buckets: int, **kwargs):
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.buckets = int(buckets)

    def call(self, ids):
        first, second = ids[:, :-1], ids[:, 1:]
        hashed = tf.math.floormod(first * _BIGRAM_MULTIPLIER + second, self.buckets) + 1
        return hashed * tf.cast((first > 0) & (second > 0), ids.dtype)

    def get_config(self):
        return {**super().get_config(), "buckets": self.buckets}


@keras.saving.register_keras_serializable(package="tlkeras")
class WeightedAverage(keras.layers.Layer):
    """Parts ``(embeddings, ids)`` -> one vector: the average of all their embeddings, each weighted
    by its token's fixed weight (the training texts' inverse document frequency).

    Part ``k`` looks its weights up in table ``tables[k]`` and fills the columns from
    ``offsets[k]`` on of a ``width``-wide result; the denominator counts each table's tokens once
    (two parts may embed the same ids: the word vectors and the word probe columns). Separate
    embedding tables keep separate int8 scales when the model is quantized: the probe's
    coefficients (up to ~40) would otherwise coarsen the word vectors (up to ~4) to nothing.

    ``sum_t w[id] e / sum_t w[id]``: padding, ``<START>`` and ``<UNKNOWN>`` weigh 0, rare words more
    than frequent ones, as in TF-IDF with L1 normalization. Measured on data/sentences with a
    logistic regression on these bag-of-words features: 0.845 test with the idf weights against
    0.809 for the plain average (docs/text.md). The weights are non-trainable; an empty text gives
    zeros.

    Args:
        sizes: the number of ids of each weight table.
        tables, offsets: per part, its weight table and its first column.
        width: the result's width.
        initial: each table's weights (a freshly built model; a loaded one restores them).
    """

    def __init__(self, sizes: Sequence[int], tables: Sequence[int], offsets: Sequence[int], width: int,
                 initial: Sequence[np.ndarray] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.sizes, self.tables, self.offsets, self.width = [int(n) for n in sizes], [int(t) for t in tables], [int(o) for o in offsets], int(width)
        self.token_weights = [
            self.add_weight(name=f"token_weights_{k}", shape=(n,), trainable=False,
                            initializer=keras.initializers.Constant(initial[k]) if initial is not None else "ones")
            for k, n in enumerate(self.sizes)
        ]

    def call(self, inputs):
        total, weight, counted = 0.0, 0.0, set()
        for k, (embeddings, ids) in enumerate(zip(inputs[0::2], inputs[1::2])):
            w = tf.gather(self.token_weights[self.tables[k]], ids)[:, :, None]
            part = tf.reduce_sum(embeddings * w, axis=1)
            columns = int(embeddings.shape[-1])
            total = total + tf.pad(part, [[0, 0], [self.offsets[k], self.width - self.offsets[k] - columns]])
            if self.tables[k] not in counted:
                counted.add(self.tables[k])
                weight = weight + tf.reduce_sum(w, axis=1)
        return total / tf.maximum(weight, 1e-6)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.width)

    def get_config(self):
        return {**super().get_config(), "sizes": self.sizes, "tables": self.tables, "offsets": self.offsets, "width": self.width}


def bigram_ids(ids: np.ndarray, buckets: int) -> np.ndarray:
    """:class:`WordBigrams` in NumPy (for the idf counts)."""
    first, second = ids[..., :-1].astype(np.int64), ids[..., 1:].astype(np.int64)
    return ((first * _BIGRAM_MULTIPLIER + second) % buckets + 1) * ((first > 0) & (second > 0))


def idf_weights(vocabulary: Sequence[str], texts: Sequence[str], length: int, buckets: int, delimiter: str) -> list[np.ndarray]:
    """Smoothed idf (``ln((1 + n) / (1 + df)) + 1``, scikit-learn's) of each word id and bigram
    bucket over ``texts``; 0 for padding, ``<START>`` and ``<UNKNOWN>``."""
    index = vocabulary_index(vocabulary)
    ids = np.array([text_ids(t, index, length, delimiter) for t in texts], np.int64).reshape(len(texts), length)
    n = len(texts)

    def idf(rows: np.ndarray, size: int) -> np.ndarray:
        df = np.zeros(size, np.float64)
        for row in rows:
            df[np.unique(row)] += 1
        return (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)

    words = idf(ids, len(vocabulary))
    words[:3] = 0.0
    out = [words]
    if buckets:
        pairs = idf(bigram_ids(ids, buckets), buckets + 1)
        pairs[0] = 0.0
        out.append(pairs)
    return out


def _hub_error(handle: str, what: str, exc: Exception) -> TLKerasError:
    if is_hub_url(handle):
        return TLKerasError(
            f"could not load {what} {handle} (no network?); download it where there is network and pass the local SavedModel "
            f"directory (hub:<dir>, --preprocess <dir>), set TFHUB_CACHE_DIR to a pre-filled cache, or use --backbone word_embedding offline"
        )
    first = " ".join(str(exc).split())[:200]
    return TLKerasError(f"could not load {what} {handle}: {first}; pass a TF-Hub SavedModel directory")


def _hub_load(handle: str, what: str):
    hub = __import__("tlkeras._backend", fromlist=["hub"]).hub()
    try:
        import tensorflow_text  # noqa: F401  (registers the tokenizer ops BERT preprocessing models use)
    except ImportError:
        pass
    try:
        return hub.load(handle)
    except Exception as exc:  # noqa: BLE001 - hub raises many types
        raise _hub_error(handle, what, exc) from None


@keras.saving.register_keras_serializable(package="tlkeras")
class BertPreprocess(keras.layers.Layer):
    """Raw strings -> ``[input_word_ids, input_mask, input_type_ids]`` at ``sequence_length``, by a
    TF-Hub BERT preprocessing model (its ``tokenize`` and ``bert_pack_inputs``)."""

    def __init__(self, handle: str, sequence_length: int, **kwargs):
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.handle, self.sequence_length = str(handle), int(sequence_length)
        self._module = _hub_load(self.handle, "BERT preprocessing model")
        for attr in ("tokenize", "bert_pack_inputs"):
            if not hasattr(self._module, attr):
                raise TLKerasError(f"{self.handle} is not a BERT preprocessing model (no .{attr}); pass --preprocess with the encoder's preprocessing model")

    def call(self, texts):
        tokens = self._module.tokenize(tf.reshape(texts, [-1]))
        packed = self._module.bert_pack_inputs([tokens], seq_length=self.sequence_length)
        return [tf.cast(packed[k], tf.int32) for k in ("input_word_ids", "input_mask", "input_type_ids")]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], self.sequence_length)] * 3

    def count_truncated(self, texts: list[str], batch: int = 256) -> int:
        """Texts with more wordpieces than fit between [CLS] and [SEP]."""
        over = 0
        for start in range(0, len(texts), batch):
            tokens = self._module.tokenize(tf.constant(texts[start:start + batch]))
            lengths = tokens.merge_dims(1, -1).row_lengths().numpy()
            over += int(np.sum(lengths > self.sequence_length - 2))
        return over

    def vocabulary(self) -> tuple[list[str], bool]:
        """(the wordpiece vocabulary, whether the model lower-cases), from the model's assets."""
        tokenize = self._module.tokenize
        vocab_file = getattr(tokenize, "vocab_file", None)
        if vocab_file is None:
            raise TLKerasError(f"{self.handle} does not expose tokenize.vocab_file; MediaPipe needs the wordpiece vocabulary to tokenize")
        path = vocab_file.asset_path.numpy().decode() if hasattr(vocab_file, "asset_path") else str(vocab_file)
        lower = getattr(tokenize, "do_lower_case", None)
        lower = bool(lower.numpy()) if lower is not None and hasattr(lower, "numpy") else bool(lower if lower is not None else True)
        with open(path, encoding="utf-8") as fh:
            return [line.rstrip("\n") for line in fh], lower

    def get_config(self):
        return {**super().get_config(), "handle": self.handle, "sequence_length": self.sequence_length}


@keras.saving.register_keras_serializable(package="tlkeras")
class TextHubEncoder(keras.layers.Layer):
    """A TF-Hub text encoder as one layer: BERT (``[ids, mask, type_ids]`` -> ``pooled_output``)
    or a sentence encoder (strings -> vector). Trainable when unfrozen in phase 2."""

    def __init__(self, handle: str, kind: str, **kwargs):
        super().__init__(**kwargs)
        self.handle, self.kind = str(handle), str(kind)
        hub = __import__("tlkeras._backend", fromlist=["hub"]).hub()
        try:
            if kind == "sentence":
                self._hub_layer = hub.KerasLayer(self.handle, trainable=True, input_shape=[], dtype=tf.string, name=f"{self.name}_module")
            else:
                self._hub_layer = hub.KerasLayer(self.handle, trainable=True, name=f"{self.name}_module")
        except Exception as exc:  # noqa: BLE001
            raise _hub_error(self.handle, "text encoder", exc) from None

    def call(self, inputs, training=None):
        if self.kind == "bert":
            ids, mask, types = inputs
            out = self._hub_layer({"input_word_ids": ids, "input_mask": mask, "input_type_ids": types}, training=training)
            if not isinstance(out, dict) or "pooled_output" not in out:
                raise TLKerasError(f"{self.handle} is not a BERT-family encoder (no pooled_output); pass the encoder as --backbone hub:<encoder>")
            return out["pooled_output"]
        out = self._hub_layer(tf.reshape(inputs, [-1]), training=training)
        if isinstance(out, dict):
            out = out.get("default", out.get("outputs", next(iter(out.values()))))
        return out

    def get_config(self):
        return {**super().get_config(), "handle": self.handle, "kind": self.kind}


# ---------------------------------------------------------------------------------------------
# Building


def build_text_model(config: ModelConfig, num_outputs: int, train_texts: Sequence[str], sequence_length: int | None,
                     *, seed: int = 42, head_layers=None) -> keras.Model:
    """Builds tokenizer + encoder + new head as one flat model from raw strings to scores.

    Args:
        config: the encoder (``backbone``) and its text options (``word_vectors``, ``preprocess``,
            ``vocab_size``, ``embedding_dim``, ``ngram_buckets``) and the head.
        train_texts: the training texts (the word model's vocabulary comes from them).
        sequence_length: tokens per text (None: 128).
        head_layers: ``fn(config, num_outputs) -> layers`` of the head after ``head_pool``.

    Returns:
        An uncompiled model named ``tlkeras_text_<encoder>``, its encoder frozen (phase 1).

    Raises:
        TLKerasError: an image backbone, a bad vectors file, a hub model that cannot be loaded.
    """
    encoder = resolve_text_encoder(config)
    length = int(sequence_length or encoder.default_length)
    text = keras.Input(shape=(), dtype=tf.string, name="text")
    if encoder.kind == "word":
        features = _word_encoder(config, text, train_texts, length, seed, num_outputs)
    elif encoder.kind == "hf":
        features = _hf_encoder(encoder, text, train_texts, length)
    elif encoder.kind == "bert":
        packed = BertPreprocess(encoder.preprocess, length, name="preprocess_bert")(text)
        pooled = TextHubEncoder(encoder.handle, "bert", name="backbone_hub", trainable=False)(packed)
        features = keras.layers.Activation("linear", name="head_pool")(pooled)
    else:
        pooled = TextHubEncoder(encoder.handle, "sentence", name="backbone_hub", trainable=False)(text)
        features = keras.layers.Activation("linear", name="head_pool")(pooled)
    if len(features.shape) != 2:
        raise TLKerasError(f"text encoder {encoder.handle or encoder.name} returns shape {tuple(features.shape)}; use an encoder that returns (batch, features)")
    y = features
    for layer in head_layers(config, num_outputs):
        y = layer(y)
    model = keras.Model(text, y, name=f"tlkeras_text_{encoder.name}")
    for layer in model.layers:  # phase 1: the encoder is frozen
        layer.trainable = layer.name.startswith("head_")
    if encoder.kind not in ("word", "hf"):  # hf: checked against NumPy at load instead
        _probe(model, encoder, list(train_texts[:8]) or ["a"])
    return model


def _hf_encoder(encoder: TextEncoder, text, train_texts: Sequence[str], length: int):
    """``text -> preprocess_bert -> backbone_hf -> head_pool`` for an ``hf:`` checkpoint.

    Side effect: prints one line with the checkpoint's shape, pooling and the NumPy check's result.
    """
    from tlkeras.core.text.hf import load_hf_checkpoint
    from tlkeras.core.text.hf_encoder import build_hf_encoder

    checkpoint = load_hf_checkpoint(encoder.handle)
    tokenizer = MediaPipeBertTokenizer(checkpoint.vocab, length, checkpoint.lower_case, name="preprocess_bert")
    packed = tokenizer(text)
    layer, check = build_hf_encoder(checkpoint, tokenizer, [str(t) for t in train_texts[:4]])
    c = checkpoint.config
    print(f"hf checkpoint {checkpoint.folder}: BERT {c['num_hidden_layers']} layers x {c['hidden_size']}, {len(checkpoint.vocab)} wordpieces, "
          f"{'uncased' if checkpoint.lower_case else 'cased'}, pooling {checkpoint.pooling} ({checkpoint.pooling_source}); "
          f"Keras vs NumPy max abs difference {check['max_abs_diff']:.2g} on {check['sentences']} sentences", flush=True)
    return keras.layers.Activation("linear", name="head_pool")(layer(packed))


def _probe(model, encoder: TextEncoder, texts: list[str]) -> None:
    """Runs a few training texts through a TF-Hub model now, so a preprocessing model that does not
    match the encoder (ids beyond its vocabulary, other input names) fails here in one line."""
    try:
        out = model(tf.constant([str(t) for t in texts]), training=False)
    except TLKerasError:
        raise
    except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types
        first = " ".join(str(exc).split())[:160]
        pair = f" with preprocessing model {encoder.preprocess}" if encoder.preprocess else ""
        raise TLKerasError(f"text encoder {encoder.handle}{pair} fails on the training texts ({first}); pass the encoder's own "
                           f"preprocessing model with --preprocess") from None
    if not np.all(np.isfinite(out.numpy())):
        raise TLKerasError(f"text encoder {encoder.handle} gives NaN or infinite outputs on the training texts; check the model files")


def _word_encoder(config: ModelConfig, text, train_texts: Sequence[str], length: int, seed: int, num_outputs: int):
    vocabulary = build_vocabulary(train_texts, int(config.vocab_size))
    vectors = read_word_vectors(config.word_vectors, vocabulary, dim=config.embedding_dim) if config.word_vectors else None
    dim = vectors.dim if vectors is not None else int(config.embedding_dim or _DEFAULT_EMBEDDING_DIM)
    matrix, _ = embedding_matrix(vocabulary, vectors, dim, seed)
    ids = RegexTokenizer(vocabulary, length, name="preprocess_tokenizer")(text)
    words = keras.layers.Embedding(len(vocabulary), dim, embeddings_initializer=keras.initializers.Constant(matrix), name="word_embedding")(ids)
    # One column per output after the word vectors: phase 1's bag-of-words probe writes each word's
    # coefficients there (tlkeras.core.text.probe), zero until then; bigrams have only these columns.
    probe = keras.layers.Embedding(len(vocabulary), num_outputs, embeddings_initializer="zeros", name="word_probe")(ids)
    parts, sizes, tables, offsets = [words, ids, probe, ids], [len(vocabulary)], [0, 0], [0, dim]
    buckets = default_buckets(num_outputs) if config.ngram_buckets is None else int(config.ngram_buckets)
    if buckets:
        pair_ids = WordBigrams(buckets, name="word_bigrams")(ids)
        bigrams = keras.layers.Embedding(buckets + 1, num_outputs, embeddings_initializer="zeros", name="bigram_embedding")(pair_ids)
        parts += [bigrams, pair_ids]
        sizes.append(buckets + 1)
        tables.append(1)
        offsets.append(dim)
    weights = idf_weights(vocabulary, list(train_texts), length, buckets, DELIMITER)
    return WeightedAverage(sizes, tables, offsets, dim + num_outputs, weights, name="head_pool")(parts)


def default_buckets(num_outputs: int) -> int:
    """Bigram buckets when unset: 100,000 (measured on data/sentences: val loss 0.376 vs 0.390 with
    20,000), fewer when the table (one weight per bucket and class) would pass 2M weights."""
    return max(1000, min(100_000, 2_000_000 // max(1, num_outputs)))


def word_vector_coverage(model, config: ModelConfig) -> dict | None:
    """``{"words", "with_vectors", "dim", "file"}`` of a word model freshly built from ``config``
    (before training), else None.

    Read off the embedding instead of the vectors file a second time: with a file, the words it
    lacks start at zero (:func:`tlkeras.core.text.vectors.embedding_matrix`), so the non-zero rows
    are the words it has.
    """
    layer = tokenizer_layer(model)
    if not isinstance(layer, RegexTokenizer):
        return None
    table = model.get_layer("word_embedding").get_weights()[0]
    info = {"words": len(layer.vocabulary) - 3, "dim": int(table.shape[1])}
    if config.word_vectors:
        info.update(with_vectors=int(np.count_nonzero(np.any(table[3:] != 0, axis=1))), file=str(config.word_vectors))
    return info
