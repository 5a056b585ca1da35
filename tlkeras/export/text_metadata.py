"""TFLite metadata for text classifiers, for MediaPipe Tasks' ``TextClassifier``.

MediaPipe Tasks' ``TextClassifier`` (Android, iOS, web, Python) takes raw text: it tokenizes the
text itself, with the tokenizer described in the model's TFLite metadata, and feeds int32 ids to
the model. Two model kinds are supported here, both with one classification output (softmax
probabilities, ``labels.txt`` packed inside the file):

- :func:`add_regex_metadata`: an "average word embedding" model, one int32 input ``[1, L]``, and
  a ``RegexTokenizer`` (delimiter regex + vocabulary file ``vocab.txt`` with ``token id`` lines).
- :func:`add_bert_metadata`: a BERT model, three int32 inputs ``[1, L]`` (word ids, mask, segment
  ids), and a ``BertTokenizer`` (WordPiece vocabulary ``vocab.txt``, one token a line).

:func:`verify_mediapipe_text` loads such a model in the real runtime and compares its scores with
expected ones (LiteRT's on the same ids).

What MediaPipe does with the text (read from its C++ sources, verified on mediapipe 1.2.3 by the
probe models in ``tests/test_text_metadata.py``); :func:`mediapipe_regex_ids` and
:func:`mediapipe_bert_ids` are the same rules in pure Python:

Regex models (``RegexPreprocessorCalculator``):

1. The text ends at its first NUL character (it crosses a C string boundary).
2. No case folding at all: ``Hello``, ``HELLO`` and ``hello`` are different tokens. A model
   trained on lower-cased text must get its case variants in the vocabulary
   (``case_variants=True``: only the Capitalized and UPPER forms) or lower-cased text from the app.
3. Tokens are the non-empty pieces between matches of the delimiter (RE2, UTF-8): with
   :data:`REGEX_DELIMITER`, ``\\w`` is ASCII only, so a token is a run of ASCII letters, digits,
   ``_`` and ``'``; every other character (``é``, ``ü``, CJK, emoji, full-width letters) splits.
   ``café`` gives ``caf``; ``日本`` gives nothing.
4. ids: ``<START>`` first (only if the vocabulary has it), each token's id (``<UNKNOWN>``'s when
   absent), truncated to ``L``, padded with ``<PAD>``'s id. ``<PAD>`` and ``<UNKNOWN>`` must be in
   the vocabulary or the model does not load.

:func:`tf_regex_ids` reproduces this with core TensorFlow ops (``regex_replace`` with the
delimiter, ``strings.split``, a hash table), without ``tf.strings.lower``.

BERT models (``BertPreprocessorCalculator``): the text ends at a NUL; ASCII letters are always
lower-cased (there is no option: cased BERT models cannot be served), non-ASCII characters are
left as they are (no accent stripping, unlike TensorFlow Text's ``lower_case=True``); split on
ASCII whitespace, with ASCII punctuation, Unicode punctuation and CJK ideographs as their own
tokens; greedy longest-match WordPiece (``##`` prefix, a word without a full match, or over 100
bytes, becomes ``[UNK]``); then ``[CLS]`` + pieces truncated to ``L - 2`` + ``[SEP]``. Ids of
absent tokens are 0; padding is 0 in all three inputs; mask 1 over ``[CLS]..[SEP]``; segment ids
all 0. The input tensors are matched by their TFLite names (:func:`tflite_input_names`): a
SavedModel or Keras signature input ``x`` becomes ``serving_default_x:0``.

Packaging note: MediaPipe's metadata populator asks a compiled helper for the metadata's minimum
parser version; ``mediapipe`` 1.2.3's wheel lacks it and :mod:`tlkeras.export.tflite_metadata`
provides an image-only stand-in. Text metadata uses later schema fields (vocabulary files 1.0.1,
BERT tokenizer and subgraph process units 1.1.0, regex tokenizer 1.2.1), so while writing text
metadata this module uses :func:`metadata_parser_version`, a port of MediaPipe's C++ rule.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import unicodedata
from typing import Any, Iterator, Sequence

import numpy as np

from tlkeras.core.text.tokenize import vocabulary_index
from tlkeras.errors import TLKerasError
from tlkeras.export.tflite_metadata import _import_writers, _minimum_parser_version, mediapipe_agreement, open_classifier, populate_metadata

__all__ = [
    "REGEX_DELIMITER",
    "PAD",
    "START",
    "UNKNOWN",
    "BERT_CLS",
    "BERT_SEP",
    "BERT_UNK",
    "add_regex_metadata",
    "add_bert_metadata",
    "regex_vocab_index",
    "tflite_input_names",
    "verify_mediapipe_text",
    "mediapipe_regex_ids",
    "mediapipe_bert_ids",
    "tf_regex_ids",
    "metadata_parser_version",
]

REGEX_DELIMITER = r"[^\w\']+"  # MediaPipe Model Maker's default (RE2: \w is [0-9A-Za-z_])
PAD, START, UNKNOWN = "<PAD>", "<START>", "<UNKNOWN>"  # ids 0, 1, 2
BERT_CLS, BERT_SEP, BERT_UNK = "[CLS]", "[SEP]", "[UNK]"

_HELPER = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
_VOCAB_FILE = "vocab.txt"
_BERT_MAX_BYTES_PER_TOKEN = 100
_BERT_MAX_CHARS_PER_SUBTOKEN = 100
# RE2's \s (what BertTokenizer splits on): ASCII space, \t, \n, \f, \r (not \v, not Unicode spaces).
_RE2_SPACE = frozenset(" \t\n\f\r")
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


# --------------------------------------------------------------------------- parser version


def metadata_parser_version(buffer: bytes) -> str:
    """The minimum metadata parser version able to read a metadata flatbuffer.

    A port of MediaPipe's ``GetMinimumMetadataParserVersion`` (``metadata_version.cc``): the
    largest version among the schema members present (1.0.0 when none).
    """
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema

    meta = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAsModelMetadata(bytes(buffer), 0))
    found = [(1, 0, 0)]

    def files(items) -> None:
        for item in items or []:
            if item.type == schema.AssociatedFileType.VOCABULARY:
                found.append((1, 0, 1))
            if item.type == schema.AssociatedFileType.SCANN_INDEX_FILE:
                found.append((1, 4, 0))
            if item.version is not None:
                found.append((1, 4, 1))

    def units(items) -> None:
        for item in items or []:
            if item.optionsType in (schema.ProcessUnitOptions.BertTokenizerOptions,
                                    schema.ProcessUnitOptions.SentencePieceTokenizerOptions):
                found.append((1, 1, 0))
            if item.optionsType == schema.ProcessUnitOptions.RegexTokenizerOptions:
                found.append((1, 2, 1))

    for sub in meta.subgraphMetadata or []:
        for tensor in list(sub.inputTensorMetadata or []) + list(sub.outputTensorMetadata or []):
            files(tensor.associatedFiles)
            units(tensor.processUnits)
            if tensor.content is not None and tensor.content.contentPropertiesType == schema.ContentProperties.AudioProperties:
                found.append((1, 3, 0))
        files(sub.associatedFiles)
        for present, version in ((sub.inputProcessUnits, (1, 1, 0)), (sub.outputProcessUnits, (1, 1, 0)),
                                 (sub.inputTensorGroups, (1, 2, 0)), (sub.outputTensorGroups, (1, 2, 0)),
                                 (sub.customMetadata, (1, 5, 0))):
            if present is not None:
                found.append(version)
        units(sub.inputProcessUnits)
        units(sub.outputProcessUnits)
    files(meta.associatedFiles)
    return ".".join(str(v) for v in max(found))


@contextlib.contextmanager
def _writers() -> Iterator[tuple[Any, Any]]:
    """MediaPipe's ``metadata_writer`` and ``metadata_info`` modules, with the text-aware parser
    version in place of tlkeras' image-only stand-in (restored on exit)."""
    writer_mod, info = _import_writers()
    helper = sys.modules.get(_HELPER)
    original = getattr(helper, "GetMinimumMetadataParserVersion", None)
    if original is not _minimum_parser_version:  # the wheel's own compiled helper: keep it
        yield writer_mod, info
        return
    helper.GetMinimumMetadataParserVersion = metadata_parser_version
    try:
        yield writer_mod, info
    finally:
        helper.GetMinimumMetadataParserVersion = original


# --------------------------------------------------------------------------- model checks


def _io(content: bytes) -> tuple[list[dict], list[dict]]:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=bytes(content))
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TLKerasError(f"LiteRT cannot read the model ({first}): pass the bytes of a .tflite file") from None
    return interpreter.get_input_details(), interpreter.get_output_details()


def tflite_input_names(content: bytes) -> list[str]:
    """The TFLite names of the model's input tensors, in input order.

    A model converted from a SavedModel or Keras signature names input ``x``
    ``serving_default_x:0`` (Keras: the ``keras.Input(name=...)``); these are the names
    :func:`add_bert_metadata` takes.

    Raises:
        TLKerasError: the bytes are not a TFLite model.
    """
    return [str(d["name"]) for d in _io(content)[0]]


def _signature(detail: dict) -> list[int]:
    sig = detail.get("shape_signature")
    return [int(v) for v in (sig if sig is not None and len(sig) else detail["shape"])]


def _check_inputs(inputs: list[dict], count: int, what: str) -> int:
    """Checks ``count`` int32 inputs of shape ``[1, L]`` (same L); returns L (-1 when dynamic)."""
    if len(inputs) != count:
        raise TLKerasError(f"a {what} text classifier takes {count} int32 input(s) [1, length]; this model has {len(inputs)}")
    lengths = set()
    for d in inputs:
        shape = [int(v) for v in d["shape"]]
        if np.dtype(d["dtype"]) != np.int32 or len(shape) != 2 or shape[0] != 1:
            raise TLKerasError(f"input {d['name']} is {np.dtype(d['dtype']).name} {shape}; MediaPipe's TextClassifier feeds int32 "
                               "[1, length] token ids: convert the model after its tokenizer layer, with batch size 1")
        lengths.add(_signature(d)[1])
    if len(lengths) != 1:
        raise TLKerasError(f"the {what} model's inputs have different lengths {sorted(lengths)}; MediaPipe feeds one length to all")
    return lengths.pop()


def _check_output(outputs: list[dict], class_names: Sequence[str]) -> list[str]:
    names = [str(n) for n in class_names]
    if not names or any(not n or "\n" in n or "\r" in n for n in names):
        raise TLKerasError("class_names must be non-empty strings without line breaks (they become labels.txt)")
    if len(outputs) != 1:
        raise TLKerasError(f"a text classifier has one output (class scores); this model has {len(outputs)}")
    size = int(np.prod(outputs[0]["shape"]))
    if size != len(names):
        raise TLKerasError(f"the model outputs {size} scores but {len(names)} class names were given: pass one name per output")
    return names


def _check_tokens(vocab: Sequence[str], what: str, forbid: str) -> list[str]:
    tokens = list(vocab)
    banned = "whitespace" if forbid == r"\s" else "line breaks"
    seen: set[str] = set()
    for i, token in enumerate(tokens):
        if not isinstance(token, str) or not token or re.search(forbid, token):
            raise TLKerasError(f"{what} vocabulary entry {i} ({token!r}) is not a usable token: tokens are non-empty strings "
                               f"without {banned}")
        if token in seen:
            raise TLKerasError(f"{what} vocabulary has {token!r} twice (again at id {i}): remove the duplicate")
        seen.add(token)
    return tokens


def _ascii_lower(text: str) -> str:
    return text.translate(_LOWER)


_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


# --------------------------------------------------------------------------- regex models


def regex_vocab_index(vocab: Sequence[str], *, case_variants: bool = False) -> dict[str, int]:
    """The token-to-id map written as the regex model's ``vocab.txt``.

    ``vocab[i]`` is the token of id ``i``; ``vocab[0:3]`` must be ``<PAD>``, ``<START>``,
    ``<UNKNOWN>``. With ``case_variants`` (a model trained on lower-cased text; MediaPipe does not
    lower-case), each token with ASCII letters also gets its Capitalized and UPPER-CASE forms
    (``hello`` -> ``Hello``, ``HELLO``) mapped to its id, unless the vocabulary has them already.

    Raises:
        TLKerasError: the special tokens are not first, or a token is empty, has whitespace, or
            appears twice.
    """
    tokens = _check_tokens(vocab, "the regex", r"\s")
    if tokens[:3] != [PAD, START, UNKNOWN]:
        raise TLKerasError(f"the regex vocabulary must start with {PAD}, {START}, {UNKNOWN} (ids 0, 1, 2), not {tokens[:3]}: "
                           "put the three special tokens first")
    # The case rule is the Keras tokenizer's own (RegexTokenizer looks tokens up in the same map).
    return vocabulary_index(tokens) if case_variants else {t: i for i, t in enumerate(tokens)}


def add_regex_metadata(
    content: bytes,
    *,
    vocab: Sequence[str],
    class_names: Sequence[str],
    name: str,
    description: str,
    version: str,
    author: str,
    delimiter: str = REGEX_DELIMITER,
    score_threshold: float | None = None,
    case_variants: bool = False,
) -> bytes:
    """Returns ``content`` with MediaPipe TextClassifier metadata for a regex-tokenized model.

    The model: one int32 input ``[1, L]`` (token ids as :func:`mediapipe_regex_ids` computes
    them), one output of ``len(class_names)`` softmax probabilities. Written: name, description,
    version, author; the input's ``RegexTokenizer`` (the delimiter, and ``vocab.txt`` packed into
    the file, ``token id`` a line); the output's labels (``labels.txt`` packed into the file) and
    the default score threshold. Writes nothing to disk except a temporary folder it removes.

    Args:
        content: the ``.tflite`` flatbuffer.
        vocab: ``vocab[i]`` is the token of id ``i``; ``vocab[0:3]`` are ``<PAD>``, ``<START>``,
            ``<UNKNOWN>``.
        class_names: the labels, in output order.
        name, description, version, author: the model's general information.
        delimiter: the regex (RE2 syntax) that separates tokens; must not match the empty string.
        score_threshold: the default score threshold apps apply; None writes none.
        case_variants: also map Capitalized and UPPER-CASE forms of each token to its id (see
            :func:`regex_vocab_index`), for a model trained on lower-cased text.

    Raises:
        TLKerasError: mediapipe is missing, the vocabulary, delimiter or class names are unusable,
            the model's inputs/outputs do not fit, or the writer rejects the model.
    """
    index = regex_vocab_index(vocab, case_variants=case_variants)
    try:
        if re.fullmatch(delimiter, ""):
            raise TLKerasError(f"the delimiter {delimiter!r} matches the empty string: it must match one character or more")
    except re.error as exc:
        raise TLKerasError(f"the delimiter {delimiter!r} is not a valid regular expression ({exc})") from None
    inputs, outputs = _io(content)
    length = _check_inputs(inputs, 1, "regex")
    if length < 2:
        raise TLKerasError(f"the regex model's input length is {length}; MediaPipe needs a fixed length of 2 or more: "
                           "convert with a fixed sequence length")
    labels = _check_output(outputs, class_names)
    lines = "".join(f"{token} {i}\n" for token, i in index.items())

    def inputs_md(writer, writer_mod, folder):
        path = os.path.join(folder, _VOCAB_FILE)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(lines)
        writer.add_regex_text_input(writer_mod.RegexTokenizer(delim_regex_pattern=delimiter, vocab_file_path=path),
                                    name="input_text", description=f"token ids of the text: {START}, then one id per token split by the "
                                    f"delimiter (no lower-casing), {UNKNOWN} for unknown tokens, padded with {PAD}")

    return _populate(content, inputs_md, labels, name, description, version, author, score_threshold)


def _populate(content, inputs_md, labels, name, description, version, author, score_threshold) -> bytes:
    """Writes general info, the inputs (``inputs_md(writer, writer_mod, folder)``) and the labelled output."""
    with _writers() as (writer_mod, info), tempfile.TemporaryDirectory(prefix="tlkeras-textmd-") as folder:

        def tensors(writer):
            inputs_md(writer, writer_mod, folder)
            thresholding = writer_mod.ScoreThresholding(float(score_threshold)) if score_threshold is not None else None
            writer.add_classification_output(writer_mod.Labels().add(list(labels)), score_thresholding=thresholding,
                                             name="probabilities", description="softmax probabilities over the classes in labels.txt")

        return populate_metadata(content, writer_mod, info, tensors, name=name, description=description, version=version, author=author,
                                 what="text TFLite metadata")


# --------------------------------------------------------------------------- BERT models


def add_bert_metadata(
    content: bytes,
    *,
    vocab: Sequence[str],
    lower_case: bool,
    class_names: Sequence[str],
    name: str,
    description: str,
    version: str,
    author: str,
    ids_name: str,
    mask_name: str,
    segment_name: str,
    score_threshold: float | None = None,
) -> bytes:
    """Returns ``content`` with MediaPipe TextClassifier metadata for a BERT model.

    The model: three int32 inputs ``[1, L]`` (word ids, input mask, segment ids), one output of
    ``len(class_names)`` softmax probabilities. Written: name, description, version, author; the
    inputs' metadata (named ``ids``, ``mask``, ``segment_ids``, which is how MediaPipe finds
    them) and the ``BertTokenizer`` with ``vocab.txt`` (one token a line) packed into the file;
    the output's labels (``labels.txt``) and the default score threshold. Writes nothing to disk
    except a temporary folder it removes.

    Args:
        content: the ``.tflite`` flatbuffer.
        vocab: the WordPiece vocabulary, ``vocab[i]`` the token of id ``i``; must hold ``[CLS]``,
            ``[SEP]`` and ``[UNK]``.
        lower_case: whether the model was trained on lower-cased text. Must be True: MediaPipe
            always lower-cases ASCII letters (see the module docstring).
        class_names: the labels, in output order.
        name, description, version, author: the model's general information.
        ids_name, mask_name, segment_name: the TFLite names of the three inputs (see
            :func:`tflite_input_names`; Model Maker's are ``serving_default_input_word_ids:0``,
            ``serving_default_input_mask:0``, ``serving_default_input_type_ids:0``).
        score_threshold: the default score threshold apps apply; None writes none.

    Raises:
        TLKerasError: mediapipe is missing, the model is cased, the vocabulary or class names are
            unusable, the names are not the model's inputs, the inputs/outputs do not fit, or the
            writer rejects the model.
    """
    if not lower_case:
        raise TLKerasError("MediaPipe's BertTokenizer always lower-cases the text, so a cased BERT model (lower_case=False) would "
                           "see other tokens than in training: use an uncased BERT for MediaPipe, or export without text metadata")
    tokens = _check_tokens(vocab, "the BERT", r"[\r\n]")
    missing = [t for t in (BERT_CLS, BERT_SEP, BERT_UNK) if t not in tokens]
    if missing:
        raise TLKerasError(f"the BERT vocabulary lacks {', '.join(missing)}: MediaPipe packs [CLS] text [SEP] and maps unknown "
                           "words to [UNK]; pass the model's own vocab.txt")
    inputs, outputs = _io(content)
    length = _check_inputs(inputs, 3, "BERT")
    if length != -1 and length < 2:
        raise TLKerasError(f"the BERT model's input length is {length}; MediaPipe needs 2 or more ([CLS] and [SEP])")
    model_names = [str(d["name"]) for d in inputs]
    given = [ids_name, mask_name, segment_name]
    if sorted(given) != sorted(model_names):
        raise TLKerasError(f"ids_name, mask_name, segment_name {given} are not the model's input names {model_names}: "
                           "pass those (tflite_input_names() lists them)")
    labels = _check_output(outputs, class_names)
    text = "".join(f"{token}\n" for token in tokens)

    def inputs_md(writer, writer_mod, folder):
        path = os.path.join(folder, _VOCAB_FILE)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        writer.add_bert_text_input(writer_mod.BertTokenizer(vocab_file_path=path), ids_name, mask_name, segment_name)

    return _populate(content, inputs_md, labels, name, description, version, author, score_threshold)


# --------------------------------------------------------------------------- MediaPipe's rules


def _pieces(text: str, delimiter: str) -> list[str]:
    """The non-empty pieces between delimiter matches (as RE2::FindAndConsume walks them)."""
    out, last = [], 0
    for match in re.finditer(delimiter, text, flags=re.ASCII):
        if match.end() == match.start():
            continue
        if match.start() > last:
            out.append(text[last:match.start()])
        last = match.end()
    if last < len(text):
        out.append(text[last:])
    return out


def mediapipe_regex_ids(text: str, vocab_index: dict[str, int], length: int, delimiter: str = REGEX_DELIMITER) -> np.ndarray:
    """The int32 ids ``[length]`` MediaPipe's TextClassifier feeds a regex model for ``text``.

    The reference for MediaPipe's ``RegexPreprocessorCalculator`` (see the module docstring):
    cut at NUL, no lower-casing, split on ``delimiter`` (ASCII ``\\w``), ``<START>`` first if in
    the vocabulary, ``<UNKNOWN>`` for absent tokens, truncate, pad with ``<PAD>``.

    Args:
        text: the text as the app passes it.
        vocab_index: token -> id, as in the model's ``vocab.txt`` (:func:`regex_vocab_index`).
        length: the model's input length.
        delimiter: the tokenizer metadata's delimiter regex.

    Raises:
        TLKerasError: the vocabulary lacks ``<PAD>`` or ``<UNKNOWN>`` (MediaPipe refuses it too).
    """
    if PAD not in vocab_index or UNKNOWN not in vocab_index:
        raise TLKerasError(f"the vocabulary lacks {PAD} or {UNKNOWN}: MediaPipe's RegexTokenizer needs both")
    text = text.split("\x00", 1)[0]
    ids = [vocab_index[START]] if START in vocab_index else []
    ids += [vocab_index.get(token, vocab_index[UNKNOWN]) for token in _pieces(text, delimiter)]
    ids = ids[:length] + [vocab_index[PAD]] * max(0, length - len(ids))
    return np.asarray(ids, np.int32)


def tf_regex_ids(texts, table, length: int, delimiter: str = REGEX_DELIMITER, start_id: int = 1, pad_id: int = 0):
    """:func:`mediapipe_regex_ids` with core TensorFlow ops, for a batch: ``[B]`` strings -> int32 ``[B, length]``.

    Args:
        texts: a string tensor ``[B]``.
        table: a ``tf.lookup`` table, token -> int32 id, whose default value is ``<UNKNOWN>``'s id.
        length: the output length.
        delimiter: the delimiter regex (TensorFlow uses RE2, like MediaPipe).
        start_id, pad_id: the ids of ``<START>`` and ``<PAD>``.
    """
    from tlkeras._backend import tf

    texts = tf.strings.regex_replace(texts, r"\x00[\s\S]*", "")  # MediaPipe's text ends at NUL
    words = tf.strings.split(tf.strings.regex_replace(texts, delimiter, " "))
    ids = tf.cast(table.lookup(words), tf.int32)
    starts = tf.fill([tf.shape(texts)[0], 1], tf.constant(start_id, tf.int32))
    ids = tf.concat([tf.RaggedTensor.from_tensor(starts), ids], axis=1)
    return ids.to_tensor(default_value=pad_id, shape=[None, length])


def _bert_words(text: str) -> list[str]:
    """BertTokenizer's pre-split: drop RE2 whitespace, keep punctuation and CJK as single tokens."""
    words, current = [], []
    for ch in text:
        code = ord(ch)
        alone = (0x21 <= code <= 0x2F or 0x3A <= code <= 0x40 or 0x5B <= code <= 0x60 or 0x7B <= code <= 0x7E
                 or unicodedata.category(ch).startswith("P") or any(lo <= code <= hi for lo, hi in _CJK))
        if ch in _RE2_SPACE or alone:
            if current:
                words.append("".join(current))
                current = []
            if alone:
                words.append(ch)
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


def _wordpiece(word: str, vocab: set[str]) -> list[str]:
    if len(word.encode("utf-8")) > _BERT_MAX_BYTES_PER_TOKEN:
        return [BERT_UNK]
    pieces, start = [], 0
    while start < len(word):
        end, piece = len(word), None
        while start < end:
            candidate = ("##" if start else "") + word[start:end]
            if end - start <= _BERT_MAX_CHARS_PER_SUBTOKEN and candidate in vocab:
                piece = candidate
                break
            end -= 1
        if piece is None:
            return [BERT_UNK]
        pieces.append(piece)
        start = end
    return pieces


def mediapipe_bert_ids(text: str, vocab: Sequence[str], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The int32 ``(ids, mask, segment_ids)``, each ``[length]``, MediaPipe feeds a BERT model.

    The reference for MediaPipe's ``BertPreprocessorCalculator`` (see the module docstring): cut
    at NUL, ASCII lower-casing, BERT pre-split, WordPiece, ``[CLS]`` + pieces[:length - 2] +
    ``[SEP]``, ids of absent tokens 0, zero padding, segment ids 0.
    """
    index = {token: i for i, token in enumerate(vocab)}
    known = set(index)
    text = _ascii_lower(text.split("\x00", 1)[0])
    pieces = [p for word in _bert_words(text) for p in _wordpiece(word, known)]
    tokens = [BERT_CLS] + pieces[: max(0, length - 2)] + [BERT_SEP]
    ids = np.zeros(length, np.int32)
    mask = np.zeros(length, np.int32)
    for i, token in enumerate(tokens[:length]):
        ids[i] = index.get(token, 0)
        mask[i] = 1
    return ids, mask, np.zeros(length, np.int32)


# --------------------------------------------------------------------------- MediaPipe check


def verify_mediapipe_text(content: bytes, texts: Sequence[str], expected: np.ndarray, class_names: Sequence[str],
                          head: str = "softmax") -> dict[str, Any]:
    """Runs a text model with metadata in MediaPipe Tasks' TextClassifier and compares its scores.

    Args:
        content: the ``.tflite`` bytes with text metadata.
        texts: the texts to classify.
        expected: ``[len(texts), len(class_names)]`` scores expected for them (e.g. LiteRT's on
            the ids :func:`mediapipe_regex_ids` computes).
        class_names: the labels, in output order.
        head: names the task whose agreement rule compares the scores.

    Returns:
        :func:`tlkeras.export.tflite_metadata.mediapipe_agreement`'s record (the same comparison as
        image bundles'). A model MediaPipe refuses gives ``loaded`` False and None for the measures
        (no exception).
    """
    from mediapipe.tasks.python import BaseOptions, text

    names = [str(n) for n in class_names]
    classifier, failure = open_classifier(text.TextClassifier, text.TextClassifierOptions, BaseOptions, content, len(names))
    if failure is not None:
        return failure
    return mediapipe_agreement(classifier, list(texts), expected, names, head)
