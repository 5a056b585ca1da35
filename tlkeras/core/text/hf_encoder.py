"""A BERT-layout encoder in tf_keras, loaded from a Hugging Face checkpoint and checked against NumPy.

:class:`BertEncoder` is one Keras layer, ``[ids, mask, segment ids]`` -> the pooled sentence vector
(masked mean, ``[CLS]`` or the pooler: :mod:`tlkeras.core.text.hf`). Its ops are matmuls on 2-D
reshapes (TFLite ``FULLY_CONNECTED``, which dynamic-range int8 quantizes), batched matmuls for
attention, ``GELU``, softmax and a hand-written layer norm: TFLite builtins only, so the exported
file runs in MediaPipe. :func:`build_hf_encoder` builds it, copies the checkpoint's tensors in and
compares its output with :func:`tlkeras.core.text.hf.numpy_forward` on a few sentences.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.core.text.hf import HFCheckpoint, numpy_forward
from tlkeras.errors import TLKerasError

__all__ = ["BertEncoder", "build_hf_encoder", "check_against_numpy", "CHECK_SENTENCES", "CHECK_TOLERANCE"]

CHECK_SENTENCES = ("The movie was great, I loved it!", "Terrible service; never again.", "Café crème à Zürich — très bon.",
                   "日本語のテキスト and emoji 🙂")
# Both passes are float32/float64 from the same tensors; 1e-3 leaves room for summation order over
# 12 layers while a wrong transpose, head split or layer norm gives differences of ~0.1 or more.
CHECK_TOLERANCE = 1e-3
_LAYER_PARTS = ("q", "k", "v", "attention_output", "attention_norm", "intermediate", "output", "output_norm")


@keras.saving.register_keras_serializable(package="tlkeras")
class BertEncoder(keras.layers.Layer):
    """A BERT encoder as one layer: ``[ids, mask, type_ids]`` (int32 ``[B, L]``) -> ``[B, hidden]``.

    Args:
        bert_config: the architecture (:data:`tlkeras.core.text.hf.BERT_FIELDS`, ``hidden_act``,
            ``layer_norm_eps``, dropout rates).
        pooling: ``mean`` (over the mask), ``cls`` or ``pooler`` (tanh dense over ``[CLS]``).
    """

    def __init__(self, bert_config: dict[str, Any], pooling: str = "mean", **kwargs):
        super().__init__(**kwargs)
        self.bert_config, self.pooling = dict(bert_config), str(pooling)
        if self.pooling not in ("mean", "cls", "pooler"):
            raise TLKerasError(f"pooling {self.pooling!r} is not mean, cls or pooler")
        c = self.bert_config
        self._heads = int(c["num_attention_heads"])
        self._size = int(c["hidden_size"]) // self._heads

    def build(self, input_shape):
        c = self.bert_config
        h, i = int(c["hidden_size"]), int(c["intermediate_size"])

        def weight(name, shape, init="zeros"):
            return self.add_weight(name=name, shape=shape, initializer=init, trainable=True)

        self.word_embeddings = weight("word_embeddings", (c["vocab_size"], h), "glorot_uniform")
        self.position_embeddings = weight("position_embeddings", (c["max_position_embeddings"], h), "glorot_uniform")
        self.type_embeddings = weight("type_embeddings", (c["type_vocab_size"], h), "glorot_uniform")
        self.embedding_norm = (weight("embedding_norm_gamma", (h,), "ones"), weight("embedding_norm_beta", (h,)))
        shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "attention_output": (h, h), "intermediate": (h, i), "output": (i, h)}
        self.blocks = []
        for n in range(int(c["num_hidden_layers"])):
            block = {}
            for part in _LAYER_PARTS:
                if part.endswith("norm"):
                    block[part] = (weight(f"layer_{n}_{part}_gamma", (h,), "ones"), weight(f"layer_{n}_{part}_beta", (h,)))
                else:
                    shape = shapes[part]
                    block[part] = (weight(f"layer_{n}_{part}_kernel", shape, "glorot_uniform"), weight(f"layer_{n}_{part}_bias", (shape[1],)))
            self.blocks.append(block)
        self.pooler = (weight("pooler_kernel", (h, h), "glorot_uniform"), weight("pooler_bias", (h,))) if self.pooling == "pooler" else None
        super().build(input_shape)

    def _norm(self, x, params):
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + float(self.bert_config["layer_norm_eps"])) * params[0] + params[1]

    @staticmethod
    def _dense(x, params):
        kernel, bias = params
        flat = tf.reshape(x, [-1, int(kernel.shape[0])])  # 2-D: TFLite FULLY_CONNECTED
        out = tf.matmul(flat, kernel) + bias
        return tf.reshape(out, tf.concat([tf.shape(x)[:-1], [int(kernel.shape[1])]], 0))

    def _act(self, x):
        kind = self.bert_config["hidden_act"]
        if kind == "relu":
            return tf.nn.relu(x)
        return tf.nn.gelu(x, approximate=kind != "gelu")

    def _drop(self, x, rate, training):
        return tf.nn.dropout(x, rate=rate) if training and rate > 0 else x

    @staticmethod
    def _trim(ids, mask, types):
        """Drops the columns after the batch's last real token.

        Exact, not an approximation: a padded key gets weight exp(-10000) = 0, and no real token's
        state or the pooled vector depends on padded positions. Review sentences are short (median
        15 wordpieces on data/sentences), so a batch at sequence length 64 computes ~40 columns
        instead of 64. Not at batch size 1: the export traces batch 1 at the fixed length, so the
        TFLite graph keeps static shapes.
        """
        if ids.shape[0] == 1:
            return ids, mask, types
        positions = tf.range(1, tf.shape(mask)[1] + 1)[None, :]
        keep = tf.maximum(tf.reduce_max(tf.where(mask > 0, positions, tf.zeros_like(positions))), 1)
        return ids[:, :keep], mask[:, :keep], types[:, :keep]

    def call(self, inputs, training=None):
        ids, mask, types = self._trim(*inputs)
        batch, length = tf.shape(ids)[0], tf.shape(ids)[1]
        hidden_rate = float(self.bert_config.get("hidden_dropout_prob", 0.0))
        attention_rate = float(self.bert_config.get("attention_probs_dropout_prob", 0.0))
        x = tf.gather(self.word_embeddings, ids) + tf.gather(self.type_embeddings, types) + self.position_embeddings[None, :length]
        x = self._drop(self._norm(x, self.embedding_norm), hidden_rate, training)
        maskf = tf.cast(mask, x.dtype)
        # -10000 as in BERT: exp(-10000) is 0 in float32, so padded keys get exactly no weight.
        bias = (1.0 - maskf)[:, None, None, :] * -10000.0

        def heads(t):
            return tf.transpose(tf.reshape(t, [batch, length, self._heads, self._size]), [0, 2, 1, 3])

        for block in self.blocks:
            q, k, v = (heads(self._dense(x, block[p])) for p in ("q", "k", "v"))
            scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(self._size)) + bias
            probs = self._drop(tf.nn.softmax(scores, axis=-1), attention_rate, training)
            context = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), [batch, length, self._heads * self._size])
            attended = self._drop(self._dense(context, block["attention_output"]), hidden_rate, training)
            x = self._norm(x + attended, block["attention_norm"])
            out = self._drop(self._dense(self._act(self._dense(x, block["intermediate"])), block["output"]), hidden_rate, training)
            x = self._norm(x + out, block["output_norm"])
        if self.pooling == "mean":
            weights = maskf[:, :, None]
            return tf.reduce_sum(x * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1e-9)
        if self.pooling == "cls":
            return x[:, 0]
        return tf.tanh(tf.matmul(x[:, 0], self.pooler[0]) + self.pooler[1])

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], int(self.bert_config["hidden_size"]))

    def load_checkpoint(self, checkpoint: HFCheckpoint) -> None:
        """Copies the checkpoint's tensors into this (built) layer (HF dense kernels are ``[out, in]``).

        Side effect: assigns every weight.
        """
        w = checkpoint.weights
        self.word_embeddings.assign(w["embeddings.word_embeddings.weight"])
        self.position_embeddings.assign(w["embeddings.position_embeddings.weight"])
        self.type_embeddings.assign(w["embeddings.token_type_embeddings.weight"])
        for var, name in zip(self.embedding_norm, ("embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias")):
            var.assign(w[name])
        names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                 "attention_output": "attention.output.dense", "intermediate": "intermediate.dense", "output": "output.dense",
                 "attention_norm": "attention.output.LayerNorm", "output_norm": "output.LayerNorm"}
        for n, block in enumerate(self.blocks):
            for part, (first, second) in block.items():
                key = f"encoder.layer.{n}.{names[part]}"
                value = w[key + ".weight"]
                first.assign(value if part.endswith("norm") else value.T)
                second.assign(w[key + ".bias"])
        if self.pooler is not None:
            self.pooler[0].assign(w["pooler.dense.weight"].T)
            self.pooler[1].assign(w["pooler.dense.bias"])

    def get_config(self):
        return {**super().get_config(), "bert_config": self.bert_config, "pooling": self.pooling}


def check_against_numpy(encoder: BertEncoder, tokenizer, checkpoint: HFCheckpoint, texts: Sequence[str]) -> dict[str, Any]:
    """Runs ``texts`` through the Keras encoder and :func:`numpy_forward`; returns
    ``{"max_abs_diff", "sentences", "tolerance"}``.

    Raises:
        TLKerasError: the two disagree by more than :data:`CHECK_TOLERANCE` (times the vectors' scale).
    """
    ids, mask, types = (np.asarray(t) for t in tokenizer(tf.constant([str(t) for t in texts])))
    keras_out = encoder([ids, mask, types], training=False).numpy().astype(np.float64)
    reference = numpy_forward(checkpoint, ids, mask, types, encoder.pooling)
    diff = float(np.max(np.abs(keras_out - reference)))
    scale = max(1.0, float(np.max(np.abs(reference))))
    if not np.isfinite(diff) or diff > CHECK_TOLERANCE * scale:
        raise TLKerasError(f"the Keras encoder and the NumPy forward pass of {checkpoint.folder} differ by {diff:.3g} on {len(texts)} "
                           f"sentences (tolerance {CHECK_TOLERANCE * scale:.3g}); the checkpoint does not load correctly: check its config.json")
    return {"max_abs_diff": diff, "sentences": len(texts), "tolerance": CHECK_TOLERANCE * scale}


def build_hf_encoder(checkpoint: HFCheckpoint, tokenizer, texts: Sequence[str] = (), name: str = "backbone_hf") -> tuple[BertEncoder, dict[str, Any]]:
    """A :class:`BertEncoder` holding ``checkpoint``'s weights, checked against NumPy.

    Args:
        checkpoint: from :func:`tlkeras.core.text.hf.load_hf_checkpoint`.
        tokenizer: the model's tokenizer layer (makes the check's inputs).
        texts: extra sentences for the check (e.g. the first training texts), beside :data:`CHECK_SENTENCES`.

    Returns:
        (the layer, the check's result).
    """
    encoder = BertEncoder(checkpoint.config, checkpoint.pooling, name=name)
    length = int(tokenizer.sequence_length)
    if length > checkpoint.config["max_position_embeddings"]:
        raise TLKerasError(f"--sequence-length {length} is above the checkpoint's {checkpoint.config['max_position_embeddings']} positions; "
                           f"pass --sequence-length {checkpoint.config['max_position_embeddings']} or less")
    encoder.build([(None, length)] * 3)
    encoder.load_checkpoint(checkpoint)
    check = check_against_numpy(encoder, tokenizer, checkpoint, list(CHECK_SENTENCES) + [str(t) for t in texts][:4])
    return encoder, check
