"""The word model's tokenizer: the regex tokenizer of MediaPipe's TextClassifier, inside the model.

MediaPipe Tasks' ``TextClassifier`` runs an average-word-embedding model with RegexTokenizer
metadata (checked against MediaPipe 1.2.3 itself, tests/test_text_metadata.py): the text ends at
its first NUL; it is split on the delimiter regex (RE2: ``\\w`` is ASCII letters, digits and
``_``); ``<START>`` comes first; each token maps through the vocabulary file as written (no
lower-casing; ``<UNKNOWN>`` when absent); then it is truncated or padded with ``<PAD>`` to the
model's fixed length. The vocabulary here is lower-case words, and each word's Capitalized and
UPPER-CASE forms map to its id too (:func:`vocabulary_index`; MediaPipe's vocabulary file may
map several tokens to one id), so "Great", "GREAT" and "great" are one word on both sides and
"gReAt" is unknown on both. :class:`RegexTokenizer` does this with core TensorFlow string ops, so
the Keras model takes raw strings and its TFLite export, which starts after this layer, takes the
ids MediaPipe computes. :func:`text_ids` is the same rule in Python.
"""

from __future__ import annotations

import collections
import re
from typing import Iterable, Sequence

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.errors import TLKerasError

__all__ = ["DELIMITER", "PAD", "START", "UNKNOWN", "SPECIAL_TOKENS", "RegexTokenizer", "tokenize", "build_vocabulary", "token_counts",
           "vocabulary_index", "text_ids"]

DELIMITER = r"[^\w\']+"  # MediaPipe Model Maker's default: words are runs of ASCII letters, digits, _ and '
PAD, START, UNKNOWN = "<PAD>", "<START>", "<UNKNOWN>"
SPECIAL_TOKENS = (PAD, START, UNKNOWN)  # ids 0, 1, 2, as MediaPipe's RegexTokenizer metadata expects


_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_UPPER = {c + 32: c for c in range(ord("A"), ord("Z") + 1)}


def _ascii_lower(text: str) -> str:
    return text.translate(_LOWER)


def tokenize(text: str, delimiter: str = DELIMITER) -> list[str]:
    """The tokens of ``text`` as MediaPipe splits them (cut at NUL, split on ``delimiter``, case kept)."""
    return [t for t in re.split(delimiter, text.split("\0", 1)[0], flags=re.ASCII) if t]


def vocabulary_index(vocabulary: Sequence[str]) -> dict[str, int]:
    """Token -> id: each word, and its Capitalized and UPPER-CASE forms unless the vocabulary has them."""
    index = {t: i for i, t in enumerate(vocabulary)}
    for i, token in enumerate(vocabulary[3:], start=3):
        for variant in (token[:1].translate(_UPPER) + token[1:], token.translate(_UPPER)):
            index.setdefault(variant, i)
    return index


def text_ids(text: str, index: dict[str, int], length: int, delimiter: str = DELIMITER) -> list[int]:
    """The ids of ``text`` (``<START>`` first, truncated, padded with 0) by :func:`vocabulary_index`."""
    ids = [1] + [index.get(t, 2) for t in tokenize(text, delimiter)]
    return ids[:length] + [0] * max(0, length - len(ids))


def build_vocabulary(texts: Iterable[str], max_size: int, delimiter: str = DELIMITER, min_count: int = 1) -> list[str]:
    """The special tokens, then the ``max_size`` most frequent lower-cased tokens of ``texts``
    (ties: alphabetical). The list index is the token id.
    """
    counts = collections.Counter(_ascii_lower(t) for text in texts for t in tokenize(text, delimiter))
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
        index = {t: i for t, i in vocabulary_index(vocabulary).items() if i >= 3}
        # An empty vocabulary maps every token to <UNKNOWN> ("" never is a token: split drops it).
        keys = tf.constant(list(index) or [""], dtype=tf.string)
        values = tf.constant(list(index.values()) or [2], dtype=tf.int32)
        self._table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=2)

    def call(self, texts):
        texts = tf.strings.regex_replace(tf.reshape(texts, [-1]), r"\x00[\s\S]*", "")  # MediaPipe's text ends at NUL
        words = tf.strings.split(tf.strings.regex_replace(texts, self.delimiter, " "))
        ids = tf.ragged.map_flat_values(self._table.lookup, words)
        start = tf.RaggedTensor.from_tensor(tf.ones([tf.shape(texts)[0], 1], tf.int32))
        ids = tf.concat([start, ids], axis=1)
        return ids.to_tensor(default_value=0, shape=[None, self.sequence_length])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.sequence_length)

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary, "sequence_length": self.sequence_length, "delimiter": self.delimiter}
