"""Measurements of a compressed model: sparsity, unique weights, gzipped size, int8 TFLite accuracy.

The int8 model comes from the one converter (:func:`tlkeras.export.convert.convert_model`) and runs
on the one LiteRT runner (:func:`tlkeras.core.litert.run_model`).
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# ---------------------------------------------------------------------------------------------
# Measurements
from tlkeras.core import litert
from tlkeras.core.data import DataBundle
from tlkeras.core.metrics import compute_metrics
from tlkeras.export.convert import convert_model
from tlkeras.optimize.qat import _var_key, save_model
from tlkeras.optimize.scope import _kernel_names


def _kernel_variable(layer):
    """The main weight variable of ``layer`` (kernel, depthwise kernel...), QAT wrappers included.

    A QAT wrapper replaces its inner layer's ``kernel`` attribute with the fake-quantized tensor,
    so the variable is looked up among the weights instead.
    """
    inner = getattr(layer, "layer", layer)
    names = _kernel_names(inner)
    if not names:
        return inner.name, None
    for v in layer.weights:
        if _var_key(v) == names[0]:
            return inner.name, v
    return inner.name, None


def weight_sparsity(model, layers: Sequence[str] | None = None) -> dict[str, Any]:
    """Share of exactly-zero values in the kernels of ``model``.

    Args:
        model: a Keras model (stripped, or QAT: wrappers are looked through).
        layers: names to report (default: every layer with a kernel).

    Returns:
        ``{"layers": {name: {"sparsity", "weights"}}, "overall": zeros/weights over those
        kernels, "weights": their count, "overall_all_weights": zeros/parameters of the whole
        model}``.
    """
    rows, zeros, total = {}, 0, 0
    for layer in model.layers:
        name, variable = _kernel_variable(layer)
        if variable is None or (layers is not None and name not in layers):
            continue
        value = variable.numpy()
        z = int(np.count_nonzero(value == 0))
        rows[name] = {"sparsity": z / max(1, value.size), "weights": int(value.size)}
        zeros += z
        total += int(value.size)
    params = _float_params(model)
    all_zero = sum(int(np.count_nonzero(w.numpy() == 0)) for w in params)
    all_total = sum(int(np.prod(w.shape)) for w in params)
    return {"layers": rows, "overall": zeros / max(1, total), "weights": total, "overall_all_weights": all_zero / max(1, all_total)}


def _float_params(model) -> list:
    """The model's parameters: kernels, biases, BN parameters (no quantizer or pruning state)."""
    keep = ("kernel", "depthwise_kernel", "pointwise_kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance", "embeddings")
    seen, out = set(), []
    for v in model.weights:
        if _var_key(v) in keep and id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def unique_weights(model, layers: Sequence[str] | None = None, per_channel: bool = False) -> dict[str, int]:
    """Number of distinct values in each layer's kernel (per output channel: the maximum).

    Args:
        model: a Keras model (QAT wrappers are looked through).
        layers: names to report (default: every layer with a kernel).
        per_channel: count per output channel and report the largest count.
    """
    out = {}
    for layer in model.layers:
        name, variable = _kernel_variable(layer)
        if variable is None or (layers is not None and name not in layers):
            continue
        value = variable.numpy()
        if per_channel and value.ndim > 1:
            flat = value.reshape(-1, value.shape[-1])
            out[name] = int(max(len(np.unique(flat[:, c])) for c in range(flat.shape[1])))
        else:
            out[name] = int(len(np.unique(value)))
    return out


def gzipped_size(data: bytes | str | os.PathLike) -> int:
    """Bytes of ``data`` (or of the file at that path) after gzip at level 9."""
    if not isinstance(data, (bytes, bytearray)):
        data = Path(data).read_bytes()
    return len(gzip.compress(bytes(data), compresslevel=9, mtime=0))


def _keras_bytes(model) -> bytes:
    """The ``.keras`` file of ``model`` as bytes (what model.keras in a run directory holds)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        save_model(model, path)
        return path.read_bytes()


def evaluate_tflite(flat: bytes, split, class_names: list[str], head: str) -> dict[str, Any]:
    """Runs a TFLite model with the LiteRT interpreter on ``split`` and returns its metrics."""
    return compute_metrics(split.y, litert.run_model(flat, split.x, num_threads=os.cpu_count()), class_names, head)


def tflite_weight_sparsity(flat: bytes) -> dict[str, Any]:
    """Share of zeros in the weight tensors of CONV_2D and FULLY_CONNECTED ops of a TFLite model.

    Returns:
        ``{"layers": {tensor name: {"sparsity", "weights", "dtype"}}, "overall": zeros/weights}``.
    """
    interpreter = litert.load_interpreter(flat)
    info = litert.inspect_model(flat)  # the flatbuffer's op table tells weights from activations
    rows, zeros, total = {}, 0, 0
    for op in info.operators:
        if op.name not in ("CONV_2D", "FULLY_CONNECTED") or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        index = op.inputs[1]
        try:
            value = interpreter.get_tensor(index)
        except ValueError:
            continue
        z = int(np.count_nonzero(value == 0))
        rows[info.tensors[index].name] = {"sparsity": z / max(1, value.size), "weights": int(value.size), "dtype": str(value.dtype)}
        zeros += z
        total += int(value.size)
    return {"layers": rows, "overall": zeros / max(1, total), "weights": total}


def _int8_block(model, data: DataBundle, representative: np.ndarray, split) -> tuple[bytes, dict[str, Any]]:
    flat, integer = convert_model(model, "int8_float_io", representative, head=data.head, allow_float_ops=True)
    metrics = evaluate_tflite(flat, split, data.class_names, data.head)
    return flat, {"metrics": metrics, "full_integer": integer, "bytes": len(flat), "gzip_bytes": gzipped_size(flat)}
