"""Bias correction: a copy of the model whose biases cancel the mean error of int8 rounding."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# ---------------------------------------------------------------------------------------------
# Bias correction


def _int8_weights(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """The kernel as TFLite's int8 weight quantizer rounds it (symmetric, per output channel).

    TFLite quantizes BatchNorm-folded kernels ``w * f`` per output channel with scale
    ``max|w * f| / 127``; that rounds ``w`` exactly as quantizing ``w`` itself does, so the
    unfolded Keras kernel gives the same rounding.
    """
    if depthwise:  # (kh, kw, in, multiplier): output channel = in * multiplier
        flat = kernel.reshape(kernel.shape[0] * kernel.shape[1], -1)
    else:
        flat = kernel.reshape(-1, kernel.shape[-1])
    scale = np.abs(flat).max(axis=0) / 127.0
    scale[scale == 0] = 1.0
    return (np.round(flat / scale) * scale).reshape(kernel.shape).astype(kernel.dtype)


def bias_correct(model, images: np.ndarray, batch_size: int = 32, activations: bool = True):
    """A copy of ``model`` whose biases cancel the mean error of int8 rounding.

    Rounding a kernel to int8 shifts each output channel's mean by ``E[conv(x, dw)]`` (``dw``
    is the rounding error), and a following BatchNorm multiplies that shift by
    ``gamma / sqrt(var)``, which is in the hundreds for the near-dead channels of MobileNet's
    depthwise layers. This is the bias correction of Nagel et al. 2019 ("Data-Free Quantization"),
    with ``E[x]`` measured on ``images`` (the representative set): the shift is computed exactly
    (convolution is linear) from the mean input and folded into the following BatchNorm's moving
    mean, or subtracted from the layer's bias. With ``activations`` the mean rounding error of
    each layer's int8 input (per-tensor, min/max range as calibration finds it) is included:
    near-constant channels round to a biased value. The float model itself changes by a small
    constant per channel, so only the quantized variants are converted from the copy.

    On flowers5 with MobileNet-0.25 this raised int8 top-1 agreement with the Keras model from
    0.91 to 0.95 and int16x8 from 0.91 to 0.97 (see benchmarks/export.md).

    Args:
        model: a Keras model (not modified).
        images: uint8 (or 0..255 float) images, N x S x S x 3.
        activations: also correct the mean int8 rounding error of each layer's input (for
            full-integer int8 variants); off for int16x8 and dynamic-range variants.

    Returns:
        ``(corrected_model, corrected_layer_names)``.
    """
    return bias_corrected(model, images, batch_size, (activations,))[activations]


def _correctable_layers(model) -> list:
    from tlkeras._backend import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    return [l for l in model.layers if isinstance(l, kinds) and l.get_weights()
            and getattr(l, "data_format", "channels_last") == "channels_last"
            and getattr(l, "groups", 1) == 1 and len(l.inbound_nodes) == 1]


def bias_corrected(model, images: np.ndarray, batch_size: int, modes: Sequence[bool]) -> dict[bool, tuple[Any, list[str]]]:
    """Bias-corrected copies of ``model``: ``{activations: (copy, layer names)}`` for each mode.

    The input statistics are measured once and shared by the modes.
    """
    from tlkeras._backend import keras, tf

    layers = _correctable_layers(model)
    if not layers:
        results = {}
        for mode in modes:
            clone = keras.models.clone_model(model)
            clone.set_weights(model.get_weights())
            results[mode] = (clone, [])
        return results
    probe = keras.Model(model.inputs, [l.input for l in layers])

    def batches():
        for start in range(0, len(images), batch_size):
            outs = probe(np.asarray(images[start:start + batch_size], np.float32), training=False)
            yield outs if isinstance(outs, (list, tuple)) else [outs]

    # Pass 1: each input tensor's range, as the converter calibrates it (min/max, 0 included).
    lows = [0.0] * len(layers)
    highs = [0.0] * len(layers)
    for outs in batches():
        for i, o in enumerate(outs):
            lows[i] = min(lows[i], float(tf.reduce_min(o)))
            highs[i] = max(highs[i], float(tf.reduce_max(o)))
    # Pass 2: per-channel means of the float input and of its int8 (asymmetric, per-tensor)
    # rounding: a near-constant channel rounds to a biased value that a following BatchNorm
    # amplifies just like the weight error.
    sums = [None] * len(layers)
    qsums = [None] * len(layers)
    count = 0
    for outs in batches():
        for i, o in enumerate(outs):
            scale = max(highs[i] - lows[i], 1e-8) / 255.0
            zero = np.round(-lows[i] / scale)
            q = (tf.clip_by_value(tf.round(o / scale) + zero, 0.0, 255.0) - zero) * scale
            total = tf.reduce_sum(o, axis=0, keepdims=True).numpy()
            qtotal = tf.reduce_sum(q, axis=0, keepdims=True).numpy()
            sums[i] = total if sums[i] is None else sums[i] + total
            qsums[i] = qtotal if qsums[i] is None else qsums[i] + qtotal
        count += int(outs[0].shape[0])
    results = {}
    for activations in modes:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        results[activations] = (clone, _apply_shifts(clone, layers, sums, qsums, count, activations))
    return results


def _apply_shifts(clone, layers, sums, qsums, count: int, activations: bool) -> list[str]:
    from tlkeras._backend import keras, tf

    corrected = []
    for layer, total, qtotal in zip(layers, sums, qsums):
        mean_in = (total / max(count, 1)).astype(np.float32)
        mean_q = (qtotal / max(count, 1)).astype(np.float32) if activations else mean_in
        target = clone.get_layer(layer.name)
        weights = target.get_weights()
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        kernel = weights[0]
        kernel_q = _int8_weights(kernel, depthwise)

        def apply(x, w):
            if isinstance(layer, keras.layers.Dense):
                return np.tensordot(x, w, axes=([-1], [0])).reshape(-1, w.shape[-1]).mean(axis=0)
            op = tf.nn.depthwise_conv2d if depthwise else tf.nn.conv2d
            return op(x, w, strides=[1, *layer.strides, 1], padding=layer.padding.upper(),
                      dilations=layer.dilation_rate).numpy().mean(axis=(0, 1, 2))

        # E[conv(q(x), q(w))] - E[conv(x, w)], exact by linearity given the two mean inputs.
        shift = apply(mean_q, kernel_q) - apply(mean_in, kernel)
        consumers = [node.outbound_layer for node in layer.outbound_nodes]
        follower = clone.get_layer(consumers[0].name) if len(consumers) == 1 else None
        if isinstance(follower, keras.layers.BatchNormalization) and follower.axis in ([-1], [3], -1, 3):
            bn = follower.get_weights()
            # BatchNorm weights are [gamma?, beta?, moving_mean, moving_variance]
            bn[-2] = bn[-2] + shift.astype(bn[-2].dtype)
            follower.set_weights(bn)
        elif getattr(layer, "use_bias", False):
            weights[1] = weights[1] - shift.astype(weights[1].dtype)
            target.set_weights(weights)
        else:
            continue
        corrected.append(layer.name)
    return corrected
