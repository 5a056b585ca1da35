"""Phase 1 of the word model in closed form: a logistic regression over the words themselves.

The image recipe's phase 1 fits the head as a logistic regression on the frozen backbone's pooled
features. For the word model those features (an average of pretrained word vectors) leave most of
what a text says unused: on data/sentences the probe on averaged GloVe vectors reaches 0.69 test,
TF-IDF + logistic regression 0.84. So the word model's probe fits one L2-regularized logistic
regression on the frozen vectors' average *and* the idf-weighted bag of words and bigrams that the
model's own pooling computes (its ``head_pool`` weights, L1-normalized, as TfidfVectorizer with
``norm="l1"``), with the L2 strength chosen by validation log-loss. Its solution is then written into
the model, which computes exactly that classifier:

- the vector coefficients become the head's kernel rows, as in the image probe;
- each word's (and bigram bucket's) coefficients go into the ``word_probe`` (and
  ``bigram_embedding``) table, one column per class, zero until now, whose weighted average fills
  the pooled vector's last columns: the bag-of-words logits;
- the head passes those columns through unchanged (an identity block in its kernel).

The pretrained vector columns are not changed. Phase 2 fine-tunes all of it from there, and keeps
this model whenever it does not beat it on validation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tlkeras.core.probe import fit_logistic
from tlkeras.core.text.encoders import bigram_ids
from tlkeras.core.text.tokenize import text_ids, vocabulary_index

__all__ = ["is_word_model", "bag_of_words", "fit_word_probe", "WORD_PROBE_C"]

# The bag-of-words features are L1-normalized (each row sums to 1), so useful C values are larger
# than for dense features (measured on data/sentences: best 100-300).
WORD_PROBE_C = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
DENSE_SCALE = 0.1


def is_word_model(model) -> bool:
    """Whether ``model`` is the word model (tokenizer, word embedding, weighted average pooling)."""
    names = {layer.name for layer in model.layers}
    return {"preprocess_tokenizer", "word_embedding", "head_pool"} <= names


def bag_of_words(model, texts: Sequence[str]):
    """The idf-weighted, L1-normalized bag of words (and bigram buckets) the model's pooling averages over.

    Returns:
        A ``len(texts) x (words + buckets + 1)`` scipy CSR matrix; column ``i`` is word id ``i``,
        column ``words + j`` bigram bucket ``j``.
    """
    from scipy import sparse

    tokenizer = model.get_layer("preprocess_tokenizer")
    pool = model.get_layer("head_pool")
    weights = [np.asarray(w.numpy(), np.float64) for w in pool.token_weights]
    index = vocabulary_index(tokenizer.vocabulary)
    length, words = tokenizer.sequence_length, len(tokenizer.vocabulary)
    ids = np.array([text_ids(str(t), index, length, tokenizer.delimiter) for t in texts], np.int64).reshape(len(texts), length)
    columns, values = [ids], [weights[0][ids]]
    if len(weights) > 1:
        buckets = len(weights[1]) - 1
        pairs = bigram_ids(ids, buckets)
        columns.append(pairs + words)
        values.append(weights[1][pairs])
    cols, vals = np.concatenate(columns, axis=1), np.concatenate(values, axis=1)
    vals = vals / np.maximum(vals.sum(axis=1, keepdims=True), 1e-6)
    rows = np.repeat(np.arange(len(texts)), cols.shape[1])
    width = words + (len(weights[1]) if len(weights) > 1 else 0)
    matrix = sparse.csr_matrix((vals.ravel(), (rows, cols.ravel())), shape=(len(texts), width))
    matrix.sum_duplicates()  # repeated words add up
    return matrix


def fit_word_probe(model, train_texts, train_y, val_texts, val_y, train_feats, val_feats, num_classes: int, class_weight) -> dict[str, list]:
    """Fits the word model's phase 1 (see the module docstring) and writes it into ``model``.

    Args:
        train_feats, val_feats: the frozen encoder's pooled features (``head_pool``) of the texts.

    Returns:
        Phase-1 logs like :func:`tlkeras.train.recipe.fit_linear_probe` (``probe_C`` included).

    Side effect: sets the weights of ``head_dense``, ``word_probe`` and ``bigram_embedding``.
    """
    from scipy import sparse

    dim = int(train_feats.shape[1]) - num_classes  # the pretrained columns; the rest are the probe's
    # The dense vector features are scaled down to the bag of words' magnitude (its rows sum to 1),
    # so one L2 strength suits both (measured: 0.1 best of 0, 0.03, 0.1, 0.3 on data/sentences).
    x_train = sparse.hstack([sparse.csr_matrix(DENSE_SCALE * train_feats[:, :dim]), bag_of_words(model, train_texts)]).tocsr()
    x_val = sparse.hstack([sparse.csr_matrix(DENSE_SCALE * val_feats[:, :dim]), bag_of_words(model, val_texts)]).tocsr()
    coef, intercept, logs = fit_logistic(x_train, train_y, x_val, val_y, num_classes, class_weight, WORD_PROBE_C, max_iter=3000)
    kernel = np.concatenate([DENSE_SCALE * coef[:, :dim].T, np.eye(num_classes)], axis=0).astype(np.float32)
    model.get_layer("head_dense").set_weights([kernel, intercept.astype(np.float32)])
    words = len(model.get_layer("preprocess_tokenizer").vocabulary)
    for name, block in (("word_probe", coef[:, dim:dim + words]), ("bigram_embedding", coef[:, dim + words:])):
        if block.size:
            model.get_layer(name).set_weights([block.T.astype(np.float32)])
    return logs
