"""The word model's tokenizer: the regex tokenizer of MediaPipe's TextClassifier, inside the model.

MediaPipe Tasks' ``TextClassifier`` runs an average-word-embedding model with RegexTokenizer
metadata: it lower-cases the text (ASCII letters only), splits it on the delimiter regex, puts
``<START>`` first, maps each token through the vocabulary (``<UNKNOWN>`` when absent), then
truncates or pads with ``<PAD>`` to the model's fixed length. :class:`RegexTokenizer` does the
same with core TensorFlow string ops (RE2, like MediaPipe: ``\\w`` is ASCII), so the Keras model
takes raw strings and its TFLite export, which starts after this layer, takes the ids MediaPipe
computes. :func:`tokenize` is the same rule in Python (for vocabularies and truncation counts).
"""

from __future__ import annotations

import collections
import re
from typing import Iterable, Sequence

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.errors import TLKerasError

__all__ = ["DELIMITER", "PAD", "START", "UNKNOWN", "SPECIAL_TOKENS", "RegexTokenizer", "tokenize", "build_vocabulary", "token_counts"]

DELIMITER = r"[^\w\']+"  # MediaPipe Model Maker's default: words are runs of ASCII letters, digits, _ and '
PAD, START, UNKNOWN = "<PAD>", "<START>", "<UNKNOWN>"
SPECIAL_TOKENS = (PAD, START, UNKNOWN)  # ids 0, 1, 2, as MediaPipe's RegexTokenizer metadata expects


def _ascii_lower(text: str) -> str:
    return text.translate(_LOWER)


_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def tokenize(text: str, delimiter: str = DELIMITER) -> list[str]:
    """The tokens of ``text`` by MediaPipe's rule (ASCII lower-casing, split on ``delimiter``)."""
    return [t for t in re.split(delimiter, _ascii_lower(text), flags=re.ASCII) if t]


def build_vocabulary(texts: Iterable[str], max_size: int, delimiter: str = DELIMITER, min_count: int = 1) -> list[str]:
    """The special tokens, then the ``max_size`` most frequent tokens of ``texts`` (ties: alphabetical).

    The list index is the token id.
    """
    counts = collections.Counter(t for text in texts for t in tokenize(text, delimiter))
    for special in SPECIAL_TOKENS:
        counts.pop(special.lower(), None)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))[:max_size]
    return list(SPECIAL_TOKENS) + words


def token_counts(texts: Sequence[str], delimiter: str = DELIMITER) -> np.ndarray:
    """Tokens per text (without ``<START>``)."""
    return np.array([len(tokenize(t, delimiter)) for t in texts], np.int64)


@keras.saving.register_keras_serializable(package="tlkeras")
class RegexTokenizer(keras.layers.Layer):
    """Raw strings -> int32 token ids ``[batch, sequence_length]``, MediaPipe's RegexTokenizer rule.

    Args:
        vocabulary: tokens by id; the first three are ``<PAD>``, ``<START>``, ``<UNKNOWN>``.
        sequence_length: ids per text, ``<START>`` included; longer texts are truncated.
        delimiter: the RE2 pattern between tokens.
    """

    def __init__(self, vocabulary: Sequence[str], sequence_length: int, delimiter: str = DELIMITER, **kwargs):
        kwargs["trainable"] = False
        kwargs.setdefault("dtype", "string")
        super().__init__(**kwargs)
        vocabulary = [str(v) for v in vocabulary]
        if tuple(vocabulary[:3]) != SPECIAL_TOKENS:
            raise TLKerasError(f"a word vocabulary starts with {', '.join(SPECIAL_TOKENS)} (ids 0-2); rebuild it with build_vocabulary()")
        if len(set(vocabulary)) != len(vocabulary):
            raise TLKerasError("the word vocabulary lists a token twice; rebuild it with build_vocabulary()")
        self.vocabulary, self.sequence_length, self.delimiter = vocabulary, int(sequence_length), str(delimiter)
        words = vocabulary[3:]
        # An empty vocabulary maps every token to <UNKNOWN> ("" never is a token: split drops it).
        keys = tf.constant(words or [""], dtype=tf.string)
        values = tf.range(3, 3 + len(words), dtype=tf.int32) if words else tf.constant([2], tf.int32)
        self._table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=2)

    def call(self, texts):
        texts = tf.reshape(texts, [-1])
        words = tf.strings.split(tf.strings.regex_replace(tf.strings.lower(texts), self.delimiter, " "))
        ids = tf.ragged.map_flat_values(self._table.lookup, words)
        start = tf.RaggedTensor.from_tensor(tf.ones([tf.shape(texts)[0], 1], tf.int32))
        ids = tf.concat([start, ids], axis=1)
        return ids.to_tensor(default_value=0, shape=[None, self.sequence_length])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.sequence_length)

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary, "sequence_length": self.sequence_length, "delimiter": self.delimiter}
