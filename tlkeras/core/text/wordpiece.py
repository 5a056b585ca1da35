"""The BERT tokenizer MediaPipe's TextClassifier runs on the device, as a Keras layer for training.

MediaPipe's ``BertPreprocessorCalculator`` (rules in :mod:`tlkeras.export.text_metadata`, checked
against MediaPipe itself by the tests): the text ends at its first NUL; ASCII letters are
lower-cased and nothing else is (no accent stripping, no Unicode case folding: ``Café`` -> ``café``,
``É`` stays ``É``); the text splits on ASCII whitespace (space, tab, CR, LF, FF), and ASCII
punctuation, Unicode punctuation (``\\p{P}``) and CJK ideographs become tokens of their own;
greedy longest-match WordPiece with ``##`` (a word with no full match, or over 100 bytes, is one
``[UNK]``); ``[CLS]`` + pieces[:L - 2] + ``[SEP]``, zero padding, mask 1 over the tokens, segment
ids 0.

:class:`MediaPipeBertTokenizer` does the same with TensorFlow Text's ``regex_split`` and
``WordpieceTokenizer`` (the ops TensorFlow Text's ``BertTokenizer`` is made of, with MediaPipe's
split pattern and ASCII-only lower-casing instead of its Unicode case folding and accent
stripping), so a model trained on its ids sees on the phone exactly the ids it was trained on.
A cased checkpoint (``lower_case=False``) keeps case here, and MediaPipe cannot serve it (the
export says so).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.errors import TLKerasError

__all__ = ["MediaPipeBertTokenizer", "SPLIT_PATTERN", "KEEP_PATTERN"]

_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
KEEP_PATTERN = (r"[!-/:-@\[-`{-~]|\p{P}|[" + "".join(f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in _CJK_RANGES) + "]")
SPLIT_PATTERN = r"[ \t\n\f\r]+|" + KEEP_PATTERN  # RE2's \s would be the same ASCII set; spelled out for clarity
_MAX_BYTES_PER_WORD = 100


def _text_ops():
    try:
        import tensorflow_text
    except ImportError:
        raise TLKerasError("hf: text encoders tokenize with tensorflow-text; pip install tensorflow-text (same version as tensorflow)") from None
    return tensorflow_text


@keras.saving.register_keras_serializable(package="tlkeras")
class MediaPipeBertTokenizer(keras.layers.Layer):
    """Raw strings -> ``[input_word_ids, input_mask, input_type_ids]`` int32 ``[batch, sequence_length]``.

    Args:
        vocab: the WordPiece vocabulary by id (must hold ``[CLS]``, ``[SEP]``, ``[UNK]``).
        sequence_length: tokens per text, ``[CLS]`` and ``[SEP]`` included.
        lower_case: lower-case ASCII letters (MediaPipe always does; a cased model keeps case).
    """

    def __init__(self, vocab: Sequence[str], sequence_length: int, lower_case: bool = True, **kwargs):
        kwargs["trainable"] = False
        kwargs.setdefault("dtype", "string")
        super().__init__(**kwargs)
        self.vocab, self.sequence_length, self.lower_case = [str(t) for t in vocab], int(sequence_length), bool(lower_case)
        if self.sequence_length < 2:
            raise TLKerasError(f"a BERT input holds [CLS] and [SEP]: sequence_length {self.sequence_length} is below 2")
        index = {t: i for i, t in enumerate(self.vocab)}
        missing = [t for t in ("[CLS]", "[SEP]", "[UNK]") if t not in index]
        if missing:
            raise TLKerasError(f"the WordPiece vocabulary lacks {', '.join(missing)}; pass the checkpoint's own vocabulary")
        self._cls, self._sep = index["[CLS]"], index["[SEP]"]
        text = _text_ops()
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(self.vocab), tf.range(len(self.vocab), dtype=tf.int64)), default_value=-1)
        self._wordpiece = text.WordpieceTokenizer(table, suffix_indicator="##", max_bytes_per_word=_MAX_BYTES_PER_WORD,
                                                  token_out_type=tf.int64, unknown_token="[UNK]", split_unknown_characters=False)

    def _pieces(self, texts):
        text = _text_ops()
        texts = tf.strings.regex_replace(tf.reshape(texts, [-1]), r"\x00[\s\S]*", "")  # MediaPipe's text ends at NUL
        if self.lower_case:
            texts = tf.strings.lower(texts, encoding="")  # ASCII only, as MediaPipe
        words = text.regex_split(texts, SPLIT_PATTERN, KEEP_PATTERN)
        return self._wordpiece.tokenize(words).merge_dims(1, 2)

    def call(self, texts):
        pieces = tf.cast(self._pieces(texts), tf.int32)[:, : self.sequence_length - 2]
        rows = tf.reshape(tf.cast(pieces.nrows(), tf.int32), [1])
        first = tf.RaggedTensor.from_tensor(tf.fill(tf.concat([rows, [1]], 0), self._cls))
        last = tf.RaggedTensor.from_tensor(tf.fill(tf.concat([rows, [1]], 0), self._sep))
        tokens = tf.concat([first, pieces, last], axis=1)
        shape = [None, self.sequence_length]
        ids = tokens.to_tensor(default_value=0, shape=shape)
        mask = tf.ones_like(tokens).to_tensor(default_value=0, shape=shape)
        return [ids, mask, tf.zeros_like(ids)]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], self.sequence_length)] * 3

    def count_truncated(self, texts: list[str], batch: int = 256) -> int:
        """Texts with more wordpieces than fit between ``[CLS]`` and ``[SEP]``."""
        over = 0
        for start in range(0, len(texts), batch):
            lengths = self._pieces(tf.constant([str(t) for t in texts[start:start + batch]])).row_lengths().numpy()
            over += int(np.sum(lengths > self.sequence_length - 2))
        return over

    def vocabulary(self) -> tuple[list[str], bool]:
        """(the WordPiece vocabulary, whether ASCII letters are lower-cased), for the export's metadata."""
        return list(self.vocab), self.lower_case

    def get_config(self):
        return {**super().get_config(), "vocab": self.vocab, "sequence_length": self.sequence_length, "lower_case": self.lower_case}
