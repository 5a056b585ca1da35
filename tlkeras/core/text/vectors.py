"""Pretrained word vectors from text files: GloVe, word2vec and fastText text formats.

Real vector files are large (GloVe 840B: 5.6 GB) and not always clean UTF-8 (GloVe 6B holds a few
cp1252 tokens), so :func:`read_word_vectors` streams the file line by line, keeps only the words of
the vocabulary, decodes each token as UTF-8 with a cp1252 fallback, and refuses a file of the wrong
format or dimension with one line that says what to pass instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tlkeras.errors import TLKerasError

__all__ = ["WordVectors", "read_word_vectors", "embedding_matrix"]

_MAX_LINE = 1 << 20  # a 300-d vector line is ~3 KB; a longer "line" is not a text vectors file


@dataclass
class WordVectors:
    """Vectors of the vocabulary words found in a file.

    Attributes:
        vectors: ``{word: float32 vector}`` for the vocabulary words the file holds.
        dim: the vectors' width.
        lines: vector lines read.
        path: the file.
    """

    vectors: dict[str, np.ndarray]
    dim: int
    lines: int
    path: str


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def read_word_vectors(path: str | os.PathLike, vocabulary: Sequence[str], *, dim: int | None = None) -> WordVectors:
    """Reads the vectors of ``vocabulary``'s words from a text-format vectors file.

    Accepts GloVe (``word v1 ... vD`` per line) and word2vec / fastText text files (a first line
    ``count dim``). A vocabulary word matches a file token exactly, else the file's first token
    whose ASCII lower case equals it (the tokenizer lower-cases).

    Args:
        dim: the width the caller needs (None: the file's).

    Raises:
        TLKerasError: a missing or unreadable file, a binary (``.bin``) file, lines of different
            widths, values that are not numbers, no vector line at all, a width other than ``dim``.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise TLKerasError(f"word vectors {path} is a folder; pass the vectors file itself (e.g. glove.6B.100d.txt)")
    wanted = {w: i for i, w in enumerate(vocabulary)}
    found: dict[str, np.ndarray] = {}
    exact: set[str] = set()
    width, lines = None, 0
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise TLKerasError(f"word vectors file {path} does not exist; pass a GloVe / word2vec / fastText text file, or leave --word-vectors out") from None
    except OSError as exc:
        raise TLKerasError(f"cannot read word vectors file {path}: {exc.strerror}; check the path and its permissions") from None
    with fh:
        for number, raw in enumerate(iter(lambda: fh.readline(_MAX_LINE + 1), b""), start=1):
            if len(raw) > _MAX_LINE or b"\0" in raw:
                raise TLKerasError(
                    f"word vectors file {path} is not a text vectors file (line {number} is binary or longer than 1 MiB); "
                    f"pass the text format (GloVe .txt, word2vec/fastText .vec), not a .bin file"
                )
            parts = raw.rstrip(b"\r\n").split(b" ")
            while parts and parts[-1] == b"":
                parts.pop()
            if not parts:
                continue
            if number == 1 and len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                continue  # word2vec / fastText header: count dim
            if len(parts) < 2:
                raise TLKerasError(f"word vectors file {path} line {number} has a word but no vector; pass a GloVe / word2vec / fastText text file")
            if width is None:
                width = len(parts) - 1
                if dim is not None and width != dim:
                    raise TLKerasError(f"word vectors file {path} has {width}-d vectors but the model needs {dim}-d; pass a {dim}-d file or drop --embedding-dim")
            elif len(parts) - 1 != width:
                raise TLKerasError(
                    f"word vectors file {path} line {number} has {len(parts) - 1} values, earlier lines {width}; "
                    f"the file is damaged or not in the text format (one word and {width} numbers per line)"
                )
            lines += 1
            word = _decode(parts[0])
            key = word if word in wanted else word.lower() if word.lower() in wanted else None
            if key is None or key in exact or (key in found and key != word):
                continue
            try:
                vector = np.array([float(v) for v in parts[1:]], np.float32)
            except ValueError:
                raise TLKerasError(f"word vectors file {path} line {number} holds a value that is not a number; pass a text vectors file") from None
            if not np.all(np.isfinite(vector)):
                raise TLKerasError(f"word vectors file {path} line {number} holds NaN or infinite values; fix or replace the file")
            found[key] = vector
            if key == word:
                exact.add(key)
    if width is None:
        raise TLKerasError(f"word vectors file {path} holds no vectors; pass a GloVe / word2vec / fastText text file")
    return WordVectors(found, width, lines, str(path))


def embedding_matrix(vocabulary: Sequence[str], vectors: WordVectors | None, dim: int, seed: int) -> tuple[np.ndarray, int]:
    """An initial ``len(vocabulary) x dim`` embedding: the file's vectors where it has them.

    Row 0 (``<PAD>``) is zero. With a vectors file, words it lacks start at zero: they add nothing
    to the frozen average phase 1 fits on (random rows would be noise features there) and phase 2
    trains them from the head's gradient. Without a file, every row is small normal noise (all
    zeros would never train: the head would see no feature to give a gradient through).

    Returns:
        (matrix, number of vocabulary words with a pretrained vector).
    """
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 0.05, size=(len(vocabulary), dim)).astype(np.float32)
    if vectors is not None:
        matrix[:] = 0.0
    hits = 0
    if vectors is not None:
        for i, word in enumerate(vocabulary):
            vector = vectors.vectors.get(word)
            if vector is not None:
                matrix[i] = vector
                hits += 1
    matrix[0] = 0.0
    return matrix, hits
