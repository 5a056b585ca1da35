"""Edge export: a trained model -> a verified TFLite bundle (``export/<name>/``).

A bundle holds one ``.tflite`` per variant, ``labels.txt``, ``metadata.json`` (input/output
contract, quantization parameters, class names, source run, measured accuracy of every variant),
a model card (``model_card.md``), optionally a SavedModel, and for the int8 variant a C array for
microcontrollers (``micro/``). ``export/README.md`` documents the format.

Every variant is run with the LiteRT interpreter on the evaluation split (test, else val) and
compared with the Keras model: accuracy, macro F1, top-1 agreement and the drop in points. A drop
over ``max_drop`` fails the export (:class:`ExportCheckError`, exit code 3 in the CLI) unless
allowed; for int8 variants that fail, TensorFlow's quantization debugger writes a per-layer error
report that names the layers responsible.

Variants (:data:`VARIANTS`): ``float32``, ``dynamic_range`` (int8 weights, float activations),
``float16`` (float16 weights), ``int8_float_io`` (full-integer, float input/output), ``int8``
(full-integer with int8 input/output, for microcontrollers), ``uint8_io`` (full-integer with
uint8 input/output, for accelerators that want raw uint8 pixels) and ``int16x8`` (int16
activations, int8 weights).

Conversion goes through a small SavedModel of a ``tf.Module`` that holds the model's variables
and one serving function (input ``image``, batch 1), written once per export: converting from a
Keras model re-traces every layer for each variant (~40 s each on 2 cores), this takes ~4 s.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import gzip
import hashlib
import io
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tlkeras.core import litert
from tlkeras.core.data import DataBundle
from tlkeras.core.versions import versions
from tlkeras.errors import ExportCheckFailed, TLKerasError

__all__ = [
    "Variant",
    "VARIANTS",
    "DEFAULT_VARIANTS",
    "ExportOptions",
    "ExportResult",
    "ExportCheckError",
    "parse_variants",
    "representative_indices",
    "save_serving_model",
    "convert_variant",
    "quantization_report",
    "write_c_array",
    "micro_export",
    "export_model",
    "export_run",
    "load_run_for_export",
]

BUNDLE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Variant:
    """One kind of ``.tflite`` file a bundle can hold.

    Attributes:
        name: file stem and key in metadata.json.
        description: one line for the model card and README.
        optimize: apply ``tf.lite.Optimize.DEFAULT`` (weight quantization).
        float16: quantize weights to float16.
        ops: ``float`` (TFLite builtins), ``int8`` (builtins, int8 only) or ``int16x8``.
        io: input/output dtype: ``float32``, ``int8`` or ``uint8``.
        tolerance: the largest output difference from Keras (probabilities) this kind of
            conversion is expected to produce on a trained model; used by the tests.
    """

    name: str
    description: str
    optimize: bool = False
    float16: bool = False
    ops: str = "float"
    io: str = "float32"
    tolerance: float = 1e-4

    @property
    def needs_data(self) -> bool:
        """Whether conversion calibrates activations on a representative dataset."""
        return self.ops in ("int8", "int16x8")


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("float32", "float32 weights and activations; the reference conversion"),
        Variant("dynamic_range", "int8 weights, float activations (dynamic-range quantization)", optimize=True, tolerance=0.15),
        Variant("float16", "float16 weights, float32 compute (GPU delegates run it in float16)", optimize=True, float16=True, tolerance=0.02),
        Variant("int8_float_io", "full-integer int8 ops with float32 input/output (CPU, XNNPACK)", optimize=True, ops="int8", tolerance=0.25),
        Variant("int8", "full-integer int8 with int8 input/output (microcontrollers, Edge TPU)", optimize=True, ops="int8", io="int8", tolerance=0.25),
        Variant("uint8_io", "full-integer int8 ops with uint8 input/output (raw uint8 pixels in)", optimize=True, ops="int8", io="uint8", tolerance=0.25),
        Variant("int16x8", "int16 activations, int8 weights (more precise than int8; slower on CPU)", optimize=True, ops="int16x8", tolerance=0.2),
    )
}
DEFAULT_VARIANTS: tuple[str, ...] = tuple(VARIANTS)

_ALIASES = {"fp32": "float32", "float": "float32", "dynamic": "dynamic_range", "drq": "dynamic_range",
            "fp16": "float16", "int8_float": "int8_float_io", "full_int8": "int8", "uint8": "uint8_io",
            "16x8": "int16x8", "int16": "int16x8"}


def parse_variants(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """Turns ``"all"``, ``"float32,int8"`` or a list of names (``-`` or ``_``) into variant names.

    Raises:
        TLKerasError: on an unknown name (listing the known ones) or an empty list.
    """
    if spec is None:
        return DEFAULT_VARIANTS
    items = re.split(r"[,\s]+", spec) if isinstance(spec, str) else [p for s in spec for p in re.split(r"[,\s]+", s)]
    names: list[str] = []
    for raw in items:
        key = raw.strip().lower().replace("-", "_")
        if not key:
            continue
        if key == "all":
            names.extend(DEFAULT_VARIANTS)
            continue
        key = _ALIASES.get(key, key)
        if key not in VARIANTS:
            raise TLKerasError(f"unknown variant {raw!r}; choose from all, {', '.join(VARIANTS)}")
        names.append(key)
    names = list(dict.fromkeys(names))
    if not names:
        raise TLKerasError(f"no variant given; pass --quantize all or some of {', '.join(VARIANTS)}")
    return tuple(n for n in VARIANTS if n in names)  # canonical order


@dataclass
class ExportOptions:
    """How to export and verify a bundle.

    Attributes:
        variants: variant names (see :data:`VARIANTS`).
        representative_size: images drawn from the training split, stratified by class, to
            calibrate int8/int16x8 activations.
        max_drop: the largest allowed drop of the primary metric from the Keras model, in points
            (accuracy for softmax heads, subset accuracy for sigmoid, relative MAE increase in
            percent for regression).
        allow_drop: write the bundle and return even when a variant drops more than
            ``max_drop`` (the CLI's ``--allow-drop``).
        debug_quantization: write the per-layer quantization error report for every int8
            variant, not only for those over ``max_drop``.
        debug_images: evaluation images the quantization debugger runs.
        top_layers: layers named in the report summary and in the error message.
        saved_model: also write a SavedModel (dynamic batch) into ``saved_model/``.
        micro: write the C array (``micro/``) when the ``int8`` variant is exported.
        c_name: C identifier prefix of the micro files and symbols.
        overwrite: replace an existing bundle directory.
        seed: seeds the representative-set draw.
        bias_correction: convert the quantized variants from a bias-corrected copy of the
            model (:func:`bias_correct`), which cancels the mean error of int8 rounding.
    """

    variants: tuple[str, ...] = DEFAULT_VARIANTS
    representative_size: int = 200
    max_drop: float = 2.0
    allow_drop: bool = False
    debug_quantization: bool = False
    debug_images: int = 32
    top_layers: int = 5
    saved_model: bool = False
    micro: bool = True
    c_name: str = "tlkeras_model"
    overwrite: bool = False
    seed: int = 42
    bias_correction: bool = True

    def validate(self) -> "ExportOptions":
        self.variants = parse_variants(self.variants)
        if self.representative_size < 1 and any(VARIANTS[v].needs_data for v in self.variants):
            raise TLKerasError(f"representative_size must be >= 1 for {', '.join(v for v in self.variants if VARIANTS[v].needs_data)}, got {self.representative_size}")
        if self.max_drop < 0:
            raise TLKerasError(f"max_drop must be >= 0 points, got {self.max_drop}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.c_name or ""):
            raise TLKerasError(f"c_name {self.c_name!r} is not a C identifier; use letters, digits and _")
        if self.debug_images < 1 or self.top_layers < 1:
            raise TLKerasError("debug_images and top_layers must be >= 1")
        return self


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and measured.

    Attributes:
        bundle_dir: the bundle directory.
        metadata: the content of metadata.json.
        failed: variants whose drop exceeded ``max_drop`` or that LiteRT could not run, with why.
        reports: quantization-report CSV paths by variant.
    """

    bundle_dir: Path
    metadata: dict[str, Any]
    failed: dict[str, str] = field(default_factory=dict)
    reports: dict[str, Path] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failed

    def variant_path(self, name: str) -> Path:
        return self.bundle_dir / self.metadata["variants"][name]["file"]


class ExportCheckError(ExportCheckFailed):
    """A variant lost more than ``max_drop`` points (or did not run); the bundle was written.

    ``result`` holds the :class:`ExportResult`; the CLI exits with code 3.
    """

    def __init__(self, message: str, result: ExportResult):
        super().__init__(message, exit_code=3)
        self.result = result


# ---------------------------------------------------------------------------------------------
# Data


def representative_indices(y: np.ndarray, size: int, seed: int = 42, head: str = "softmax") -> np.ndarray:
    """Indices of up to ``size`` training images, stratified by class.

    Each class gets a share proportional to its frequency (largest remainders, at least one
    image per class while ``size`` allows), drawn at random with ``seed``; sigmoid heads stratify
    by the first positive label, regression heads draw uniformly.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    if n == 0 or size < 1:
        return np.zeros(0, np.int64)
    if size >= n:
        return rng.permutation(n)
    if head == "softmax":
        strata = np.asarray(y).astype(np.int64).reshape(-1)
    elif head == "sigmoid":
        y2 = np.asarray(y).reshape(n, -1)
        strata = np.where(y2.any(axis=1), y2.argmax(axis=1), -1)
    else:
        return np.sort(rng.choice(n, size, replace=False))
    classes, counts = np.unique(strata, return_counts=True)
    quota = counts / n * size
    take = np.floor(quota).astype(int)
    if size >= len(classes):
        take = np.maximum(take, 1)
    for i in np.argsort(-(quota - np.floor(quota))):
        if take.sum() >= size:
            break
        take[i] += 1
    while take.sum() > size:  # the max(1) above may overshoot: trim the largest classes
        take[np.argmax(take)] -= 1
    chosen = [rng.choice(np.flatnonzero(strata == c), min(t, cnt), replace=False) for c, t, cnt in zip(classes, take, counts)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _check_images(x: np.ndarray, size: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[0] == 0:
        raise TLKerasError(f"the {what} is empty or not a batch of images (shape {x.shape}); pass N x {size} x {size} x 3 pixels with N >= 1")
    if tuple(x.shape[1:]) != (size, size, 3):
        raise TLKerasError(f"the {what} has images of shape {tuple(x.shape[1:])}, the model takes {size} x {size} x 3; resize them or export with data at the model's size")
    if x.dtype != np.uint8 and float(np.max(x)) <= 1.0:
        warnings.warn(f"the {what} looks scaled to 0..1, but the model takes raw 0..255 pixels", stacklevel=3)
    return x


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
    return _bias_corrected(model, images, batch_size, (activations,))[activations]


def _correctable_layers(model) -> list:
    from tlkeras._backend import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    return [l for l in model.layers if isinstance(l, kinds) and l.get_weights()
            and getattr(l, "data_format", "channels_last") == "channels_last"
            and getattr(l, "groups", 1) == 1 and len(l.inbound_nodes) == 1]


def _bias_corrected(model, images: np.ndarray, batch_size: int, modes: Sequence[bool]) -> dict[bool, tuple[Any, list[str]]]:
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


# ---------------------------------------------------------------------------------------------
# Conversion


def _output_name(head: str) -> str:
    return {"softmax": "probabilities", "sigmoid": "probabilities"}.get(head, "predictions")


def save_serving_model(model, directory: str | os.PathLike, head: str = "softmax", batch: int | None = 1) -> Path:
    """Saves a SavedModel with one ``serving_default`` signature: ``image`` -> outputs.

    The SavedModel holds a ``tf.Module`` with the model's variables and a ``tf.function`` that
    calls the model in inference mode, not the Keras object graph, so saving and converting
    skip re-tracing every layer.

    Args:
        model: a single-input Keras model taking N x S x S x 3 raw pixels.
        directory: where to write (created).
        head: names the output ``probabilities`` (softmax/sigmoid) or ``predictions``.
        batch: the batch dimension (1 for TFLite, None for a serving SavedModel).

    Side effects: writes ``directory``.
    """
    from tlkeras._backend import tf

    shape = [batch] + [int(d) for d in model.inputs[0].shape[1:]]
    out_name = _output_name(head)
    module = tf.Module()
    module.variables_ = list(model.variables)  # tracked, so the SavedModel stores the weights

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="image")])
    def serve(image):
        return {out_name: model(image, training=False)}

    module.serve = serve
    tf.saved_model.save(module, str(directory), signatures={"serving_default": serve})
    return Path(directory)


_OP_ERROR = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_LAYER_OF_OP = re.compile(r'fused\["(\w+):", "(?:[\w.]+/)?([\w.]+)/')


def _conversion_error(exc: Exception, variant: str) -> TLKerasError:
    text = str(exc)
    ops = list(dict.fromkeys(_OP_ERROR.findall(text)))
    if ops:
        layers = {}
        for op, layer in _LAYER_OF_OP.findall(text):
            layers.setdefault(op, layer)
        where = ", ".join(f"{op} (layer {layers[op]})" if op in layers else op for op in ops)
        return TLKerasError(
            f"the model uses TensorFlow op(s) {where} that TFLite builtins cannot express; replace that "
            f"layer with supported ops (see the LiteRT op compatibility list) or retrain without it"
        )
    first = next((line.strip() for line in text.splitlines() if "error" in line.lower()), text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
    return TLKerasError(f"converting the {variant} variant failed: {first[:300]}")


def _converter(saved_model_dir: Path, variant: Variant, representative: np.ndarray | None):
    from tlkeras._backend import tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if variant.optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant.float16:
        converter.target_spec.supported_types = [tf.float16]
    if variant.needs_data:
        if representative is None or len(representative) == 0:
            raise TLKerasError(f"the {variant.name} variant needs a representative dataset; it is empty")
        images = representative

        def dataset():
            for image in images:
                yield [image[None].astype(np.float32)]

        converter.representative_dataset = dataset
        if variant.ops == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        else:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        io_type = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[variant.io]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    return converter


@contextlib.contextmanager
def _quiet_converter():
    """Hides the converter's stdout/stderr chatter (MLIR pass logs, calibration warnings)."""
    import sys

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            if not os.environ.get("TLKERAS_SHOW_TF_LOGS"):
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved + [devnull]:
                os.close(fd)


def convert_variant(saved_model_dir: str | os.PathLike, variant: str | Variant, representative: np.ndarray | None = None) -> bytes:
    """Converts a serving SavedModel (see :func:`save_serving_model`) into one variant.

    Args:
        saved_model_dir: the SavedModel directory.
        variant: a name from :data:`VARIANTS` or a :class:`Variant`.
        representative: uint8 training images (N x S x S x 3) for int8/int16x8 calibration.

    Returns:
        The ``.tflite`` flatbuffer bytes.

    Raises:
        TLKerasError: naming the TensorFlow op(s) TFLite cannot express, or the converter's first
            error line.
    """
    spec = VARIANTS[variant] if isinstance(variant, str) else variant
    converter = _converter(Path(saved_model_dir), spec, representative)
    try:
        with _quiet_converter():
            return bytes(converter.convert())
    except TLKerasError:
        raise
    except Exception as exc:  # noqa: BLE001 - ConverterError and friends
        raise _conversion_error(exc, spec.name) from None


def quantization_report(
    saved_model_dir: str | os.PathLike,
    representative: np.ndarray,
    debug_images: np.ndarray,
) -> list[dict[str, Any]]:
    """Per-layer int8 error, from TensorFlow's quantization debugger.

    The debugger runs a model in which every quantized op's output is compared with the float
    op's output on the same input. ``rmse_over_scale`` is the RMS error in units of the
    tensor's quantization step: about 0.3 is ideal rounding noise, values >> 1 mark the layers
    that lose information.

    Returns:
        Rows sorted by ``rmse_over_scale`` descending: ``layer``, ``op``, ``tensor``,
        ``rmse_over_scale``, ``mean_error``, ``max_abs_error``, ``scale``.
    """
    from tlkeras._backend import tf

    converter = _converter(Path(saved_model_dir), VARIANTS["int8_float_io"], representative)
    images = debug_images

    def dataset():
        for image in images:
            yield [image[None].astype(np.float32)]

    with _quiet_converter():
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
        debugger.run()
        buffer = io.StringIO()
        debugger.layer_statistics_dump(buffer)
    rows = []
    for row in csv.DictReader(io.StringIO(buffer.getvalue())):
        scale = float(row.get("scale") or 0.0)
        mse = float(row.get("mean_squared_error") or 0.0)
        tensor = row.get("tensor_name", "")
        rows.append({
            "layer": _layer_name(tensor),
            "op": row.get("op_name", ""),
            "tensor": tensor.split(";")[0],
            "rmse_over_scale": float(np.sqrt(mse) / scale) if scale else float("nan"),
            "mean_error": float(row.get("mean_error") or 0.0),
            "max_abs_error": float(row.get("max_abs_error") or 0.0),
            "scale": scale,
        })
    rows.sort(key=lambda r: -(r["rmse_over_scale"] if np.isfinite(r["rmse_over_scale"]) else -1))
    return rows


def _layer_name(tensor_name: str) -> str:
    """``model/conv_pw_13_relu/Relu6;model/...`` -> ``conv_pw_13_relu`` (the Keras layer)."""
    first = tensor_name.split(";")[0]
    parts = [p for p in first.split("/") if p]
    return parts[1] if len(parts) > 2 else (parts[0] if parts else tensor_name)


# ---------------------------------------------------------------------------------------------
# Microcontroller C array


def write_c_array(model: bytes, cc_path: str | os.PathLike, header_path: str | os.PathLike, c_name: str, header_text: str = "", labels: Sequence[str] = ()) -> None:
    """Writes ``model`` as a 16-byte-aligned C++ byte array (``.cc``) with its header (``.h``).

    Defines ``<c_name>_data`` and ``<c_name>_data_len`` (and ``<c_name>_labels`` when labels
    are given); ``header_text`` goes into the header after the declarations (constants,
    comments). Both files are written atomically.
    """
    from tlkeras.runs import atomic_write_text

    cc_path, header_path = Path(cc_path), Path(header_path)
    guard = re.sub(r"\W", "_", header_path.name).upper() + "_"
    lines = []
    for start in range(0, len(model), 12):
        lines.append("  " + ", ".join(f"0x{b:02x}" for b in model[start:start + 12]) + ",")
    escaped = [label.replace("\\", "\\\\").replace('"', '\\"') for label in labels]
    label_defs = ""
    label_decl = ""
    if labels:
        label_defs = (f"\nconst char* const {c_name}_labels[{len(labels)}] = {{\n"
                      + "".join(f'  "{label}",\n' for label in escaped) + "};\n")
        label_decl = f"extern const char* const {c_name}_labels[{len(labels)}];\n"
    cc = (
        f"// Generated by tlkeras: a TFLite model as a C array (edit the .tflite, not this file).\n"
        f'#include "{header_path.name}"\n\n'
        f"// TFLite Micro reads the flatbuffer in place; 16-byte alignment keeps buffers aligned.\n"
        f"alignas(16) const unsigned char {c_name}_data[] = {{\n" + "\n".join(lines) + "\n};\n"
        f"const unsigned int {c_name}_data_len = {len(model)};\n" + label_defs
    )
    header = (
        f"// Generated by tlkeras. Model bytes: {len(model)}.\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        f"extern const unsigned char {c_name}_data[];\n"
        f"extern const unsigned int {c_name}_data_len;\n" + label_decl + "\n" + header_text
        + f"\n#endif  // {guard}\n"
    )
    atomic_write_text(cc_path, cc)
    atomic_write_text(header_path, header)


def micro_export(model: bytes, out_dir: str | os.PathLike, c_name: str = "tlkeras_model", labels: Sequence[str] = ()) -> dict[str, Any]:
    """Writes ``<c_name>.cc`` and ``<c_name>.h`` for TFLite Micro and checks the model.

    The check (:func:`tlkeras.litert.micro_problems`) requires builtin ops only, int8 tensors
    (int32 biases) and ops with TFLM kernels. The header carries the input/output quantization,
    the op-resolver calls to register and a tensor-arena estimate
    (:func:`tlkeras.litert.estimate_arena`).

    Returns:
        ``{"ok", "problems", "ops", "resolver", "arena_bytes", "arena": {...}, "files": [...]}``.
    """
    info = litert.inspect_model(model)
    problems = litert.micro_problems(info)
    arena = litert.estimate_arena(info)
    # With the optional tflite-micro package, TFLM itself says what it needs.
    measured = litert.micro_arena_bytes(model) if not problems else None
    arena_bytes = int(np.ceil(measured * 1.1 / 1024.0) * 1024) if measured else arena.total
    resolver = litert.micro_resolver_calls(info)
    inp = info.tensors[info.inputs[0]]
    out = info.tensors[info.outputs[0]]
    interpreter = litert.load_interpreter(model)
    details = litert.io_details(interpreter)
    i, o = details["inputs"][0], details["outputs"][0]
    upper = c_name.upper()
    text = (
        f"// Input  {inp.dtype} {inp.shape}: q = round(pixel / {i['scale']}) + ({i['zero_point']}), pixel = raw RGB 0..255.\n"
        f"// Output {out.dtype} {out.shape}: value = (q - ({o['zero_point']})) * {o['scale']}.\n"
        f"// Register these ops: tflite::MicroMutableOpResolver<{len(resolver)}> resolver; "
        + " ".join(f"resolver.{call};" for call in resolver) + "\n"
        + (f"// Tensor arena: TFLite Micro's interpreter (tflite-micro package) ran the model with {measured} B; +10% here.\n"
           if measured else
           f"// Tensor arena: an estimate (activations {arena.activations} B planned greedily + "
           f"{arena.persistent} B bookkeeping, +25%); check interpreter.arena_used_bytes() on the device.\n")
        + f"constexpr int {upper}_TENSOR_ARENA_SIZE = {arena_bytes};\n"
        f"constexpr int {upper}_NUM_CLASSES = {int(np.prod(out.shape[1:]) if len(out.shape) > 1 else 1)};\n"
        f"constexpr float {upper}_INPUT_SCALE = {float(i['scale'] or 1.0)!r}f;\n"
        f"constexpr int {upper}_INPUT_ZERO_POINT = {int(i['zero_point'] or 0)};\n"
        f"constexpr float {upper}_OUTPUT_SCALE = {float(o['scale'] or 1.0)!r}f;\n"
        f"constexpr int {upper}_OUTPUT_ZERO_POINT = {int(o['zero_point'] or 0)};\n"
    )
    out_dir = Path(out_dir)
    cc, h = out_dir / f"{c_name}.cc", out_dir / f"{c_name}.h"
    write_c_array(model, cc, h, c_name, text, labels)
    return {
        "ok": not problems,
        "problems": problems,
        "ops": info.op_names,
        "resolver": resolver,
        "arena_bytes": arena_bytes,
        "arena": {"estimate": arena.total, "measured_tflm": measured, "activations": arena.activations,
                  "persistent": arena.persistent, "tensors": arena.tensors},
        "files": [f"micro/{cc.name}", f"micro/{h.name}"],
        "c_name": c_name,
    }


# ---------------------------------------------------------------------------------------------
# Evaluation


def _primary(head: str) -> str:
    return {"softmax": "accuracy", "sigmoid": "subset_accuracy"}.get(head, "mae")


def _compare(y: np.ndarray, keras_out: np.ndarray, out: np.ndarray, class_names: list[str], head: str, keras_metrics: dict) -> dict[str, Any]:
    from tlkeras.core.metrics import compute_metrics

    metrics = compute_metrics(y, out, class_names, head)
    key = _primary(head)
    result: dict[str, Any] = {k: metrics[k] for k in ("accuracy", "subset_accuracy", "f1_macro", "f1_micro", "mae", "rmse", "count") if k in metrics}
    if head == "softmax":
        result["agreement"] = float(np.mean(out.argmax(1) == keras_out.argmax(1)))
        result["drop_points"] = 100.0 * (keras_metrics[key] - metrics[key])
    elif head == "sigmoid":
        result["agreement"] = float(np.mean(np.all((out >= 0.5) == (keras_out >= 0.5), axis=1)))
        result["drop_points"] = 100.0 * (keras_metrics[key] - metrics[key])
    else:
        base = max(keras_metrics[key], 1e-12)
        result["agreement"] = None
        result["drop_points"] = 100.0 * (metrics[key] - keras_metrics[key]) / base
    result["max_abs_diff"] = float(np.max(np.abs(out - keras_out))) if len(out) else 0.0
    if "confusion_matrix" in metrics:
        result["confusion_matrix"] = metrics["confusion_matrix"]
    return result


# ---------------------------------------------------------------------------------------------
# Bundle


def _check_writable(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not overwrite:
        raise TLKerasError(f"{output_dir} already exists; pass --overwrite or choose another --output-dir")
    if output_dir.exists() and not output_dir.is_dir():
        raise TLKerasError(f"{output_dir} exists and is not a directory; choose another --output-dir")
    parent = output_dir.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise TLKerasError(f"cannot write the bundle under {output_dir.parent}: {parent} is not a writable directory; pass --output-dir")


def _io_meta(desc: dict[str, Any]) -> dict[str, Any]:
    return {k: desc[k] for k in ("name", "shape", "dtype", "scale", "zero_point")}


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _model_card(meta: dict[str, Any]) -> str:
    ev = meta["evaluation"]
    key = ev["primary_metric"]
    source = meta.get("source_run") or {}
    rows = []
    for name, v in meta["variants"].items():
        m = v.get("metrics") or {}
        status = "ok" if v.get("within_threshold") else ("FAILED: " + v["error"] if v.get("error") else "over threshold")
        rows.append(
            f"| {name} | {v.get('bytes', 0) / 1024:.0f} KB | {v['input']['dtype'] if v.get('input') else '—'} | "
            f"{_fmt(m.get(key))} | {_fmt(m.get('f1_macro'))} | {_fmt(m.get('agreement'))} | {_fmt(m.get('drop_points'), 2)} | {status} |"
        )
    classes = ", ".join(meta["task"]["class_names"])
    micro = meta.get("micro")
    micro_text = ""
    if micro:
        micro_text = (
            f"\n## Microcontrollers\n\n`{', '.join(micro['files'])}`: the int8 model as a C array. "
            f"Builtin int8 only: {'yes' if micro['ok'] else 'no — ' + '; '.join(micro['problems'][:3])}. "
            f"Ops: {', '.join(micro['ops'])}. Tensor arena estimate: {micro['arena_bytes']} bytes.\n"
        )
    keras_metric = ev["keras"].get(key)
    return f"""# Model card: {meta['name']}

Image classifier exported by tlkeras {meta['versions']['tlkeras']} on {meta['created'][:10]}.

## Task and model

- Head: {meta['task']['head']} over {len(meta['task']['class_names'])} classes: {classes}.
- Backbone: {source.get('backbone', 'unknown')}{f" (alpha {source['alpha']})" if source.get('alpha') else ''}, weights: {source.get('weights', 'unknown')}.
- Source run: `{source.get('path', 'n/a')}`; training data: `{source.get('data', 'n/a')}`.
- Input: {meta['input']['shape']} RGB pixels 0..255 ({meta['input']['preprocessing']}).
- Output: {meta['output']['meaning']}.

## Verification

Every variant was run with the LiteRT interpreter on the {ev['split']} split ({ev['count']} images of
`{ev['data']}`) and compared with the Keras model ({key} {_fmt(keras_metric)}). The export fails when a
variant drops more than {ev['max_drop_points']} points of {key}.

| variant | size | input | {key} | macro F1 | top-1 agreement | drop (points) | status |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{micro_text}
## Intended use and limits

Use on images like the training data (same classes, similar cameras and framing). The
{ev['split']} split is small ({ev['count']} images), so accuracy has a standard error of about
{100 * np.sqrt(max(keras_metric or 0.5, 1e-3) * (1 - min(keras_metric or 0.5, 1 - 1e-3)) / max(ev['count'], 1)):.1f} points;
one image is {100 / max(ev['count'], 1):.1f} points. Images of other classes still get one of
these labels: set a confidence threshold in the app if that matters.
"""


def export_model(
    model,
    data: DataBundle,
    output_dir: str | os.PathLike,
    options: ExportOptions | None = None,
    *,
    name: str | None = None,
    source_run: dict[str, Any] | None = None,
    representative: np.ndarray | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Converts ``model`` to every requested variant, verifies each with LiteRT, writes a bundle.

    Args:
        model: a tlkeras model (one input of raw pixels, one output).
        data: its data; the representative set comes from ``data.train``, evaluation uses
            ``data.eval_split`` (test, else val).
        output_dir: the bundle directory (must not exist unless ``options.overwrite``).
        options: see :class:`ExportOptions`.
        name: the bundle's name in metadata (default: the directory's name).
        source_run: facts about the run the model came from, copied into metadata.json.
        representative: images to calibrate with instead of the stratified draw from
            ``data.train`` (N x S x S x 3, 0..255).
        progress: called with one line per step (the CLI prints them).

    Returns:
        An :class:`ExportResult`.

    Raises:
        TLKerasError: bad input (empty or wrongly shaped representative set, unconvertible op,
            unwritable directory); nothing is left behind.
        ExportCheckError: a variant dropped more than ``max_drop`` points or did not run on
            LiteRT, and ``allow_drop`` is off; the bundle was written and is in ``.result``.

    Side effects: writes ``output_dir`` atomically (assembled in a hidden temporary sibling and
    renamed when complete); every ``.tflite`` is itself written to a temporary name and renamed.
    """
    from tlkeras.core.metrics import compute_metrics, predict
    from tlkeras.runs import atomic_write_bytes, atomic_write_text, staged_directory, write_json

    options = (options or ExportOptions()).validate()
    say = progress or (lambda line: None)
    output_dir = Path(output_dir)
    name = name or output_dir.name
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise TLKerasError(f"the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; export needs one of each")
    size = int(model.inputs[0].shape[1])
    head = data.head
    class_names = list(data.class_names)
    _check_writable(output_dir, options.overwrite)

    needs_data = any(VARIANTS[v].needs_data or _correction_mode(VARIANTS[v], options) != "none" for v in options.variants)
    if representative is None:
        idx = representative_indices(data.train.y, options.representative_size, options.seed, head)
        representative = data.train.x[idx]
        rep_what = f"{len(representative)} training images, stratified by class"
    else:
        rep_what = f"{len(representative)} images given by the caller"
    if needs_data:
        representative = _check_images(representative, size, "representative dataset")
    split_name, split = data.eval_split
    if split is None or len(split) == 0:
        raise TLKerasError("the data has no test or validation images to verify the export on")
    eval_x = _check_images(split.x, size, f"{split_name} split")

    say(f"Keras reference on {split_name} ({len(split)} images)")
    keras_out = predict(model, eval_x)
    keras_metrics = compute_metrics(split.y, keras_out, class_names, head)
    key = _primary(head)

    failed: dict[str, str] = {}
    reports: dict[str, Path] = {}
    variants_meta: dict[str, Any] = {}
    report_rows: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="tlkeras-export-") as work, staged_directory(output_dir, overwrite=options.overwrite) as stage:
        work = Path(work)
        saved = {"none": save_serving_model(model, work / "serving", head, batch=1)}
        modes = {_correction_mode(VARIANTS[v], options) for v in options.variants} - {"none"}
        if modes:
            say(f"bias correction ({', '.join(sorted(modes))}) on {len(representative)} representative images")
            copies = _bias_corrected(model, representative, 32, [m == "weights+activations" for m in sorted(modes)])
            for mode in modes:
                clone, _ = copies[mode == "weights+activations"]
                saved[mode] = save_serving_model(clone, work / f"serving-{mode.replace('+', '-')}", head, batch=1)
        for vname in options.variants:
            variant = VARIANTS[vname]
            mode = _correction_mode(variant, options)
            say(f"converting {vname}")
            content = convert_variant(saved[mode], variant, representative if variant.needs_data else None)
            entry: dict[str, Any] = {"file": f"{vname}.tflite", "description": variant.description,
                                     "bytes": len(content), "gzip_bytes": len(gzip.compress(content, 9)),
                                     "sha256": hashlib.sha256(content).hexdigest()}
            if variant.needs_data:
                entry["representative"] = rep_what
            entry["bias_correction"] = None if mode == "none" else mode
            try:
                interpreter = litert.load_interpreter(content, num_threads=os.cpu_count())
            except TLKerasError as exc:
                # A model LiteRT cannot prepare is useless to an app: record why, keep no file.
                entry.update(file=None, error=str(exc), within_threshold=False)
                failed[vname] = f"LiteRT cannot run it ({exc})"
                variants_meta[vname] = entry
                say(f"  {vname}: {exc}")
                continue
            details = litert.io_details(interpreter)
            entry["input"] = _io_meta(details["inputs"][0])
            entry["output"] = _io_meta(details["outputs"][0])
            out = litert.run_model(interpreter, eval_x)
            metrics = _compare(split.y, keras_out, out, class_names, head, keras_metrics)
            entry["metrics"] = metrics
            entry["ops"] = litert.inspect_model(content).op_names
            entry["within_threshold"] = metrics["drop_points"] <= options.max_drop + 1e-9
            if not entry["within_threshold"]:
                failed[vname] = f"dropped {metrics['drop_points']:.1f} points of {key}"
            atomic_write_bytes(stage / entry["file"], content)
            variants_meta[vname] = entry
            agreement = metrics.get("agreement")
            say(f"  {vname}: {len(content) / 1024:.0f} KB, {key} {metrics[key]:.3f}, agreement "
                f"{'n/a' if agreement is None else f'{agreement:.3f}'}, drop {metrics['drop_points']:.2f} points")
            if variant.ops == "int8" and (options.debug_quantization or not entry["within_threshold"]) and "int8" not in report_rows:
                # One report serves every int8 variant: they share weights and activation ranges.
                say("  per-layer quantization error report (TensorFlow quantization debugger)")
                report_rows["int8"] = quantization_report(saved[mode], representative, eval_x[: options.debug_images])
            if variant.ops == "int8" and "int8" in report_rows:
                path = stage / "quantization_report.csv"
                if not path.exists():
                    _write_report(path, report_rows["int8"])
                reports[vname] = output_dir / path.name
                entry["quantization_report"] = path.name
                entry["worst_layers"] = [
                    {"layer": r["layer"], "op": r["op"], "rmse_over_scale": r["rmse_over_scale"]}
                    for r in report_rows["int8"][: options.top_layers]
                ]
        micro = None
        if options.micro and "int8" in variants_meta and "error" not in variants_meta["int8"]:
            say("micro: C array of the int8 variant")
            content = (stage / "int8.tflite").read_bytes()
            micro = micro_export(content, stage / "micro", options.c_name, class_names)
            micro["variant"] = "int8"
        if options.saved_model:
            say("SavedModel (dynamic batch)")
            save_serving_model(model, stage / "saved_model", head, batch=None)
        recommended = next(
            (v for v in ("int8_float_io", "float16", "dynamic_range", "float32", "int16x8")
             if v in variants_meta and variants_meta[v].get("within_threshold")), None)
        input_desc = (next(iter(variants_meta.values())).get("input") or {}) if variants_meta else {}
        meta = {
            "format": "tlkeras-bundle",
            "format_version": BUNDLE_FORMAT_VERSION,
            "name": name,
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "versions": versions(),
            "source_run": source_run or {},
            "task": {"head": head, "num_outputs": len(class_names), "class_names": class_names, "labels_file": "labels.txt"},
            "input": {
                "name": "image",
                "shape": [1, size, size, 3],
                "layout": "NHWC",
                "color": "RGB",
                "dtype": "float32",
                "value_range": [0, 255],
                "tflite_name": input_desc.get("name"),
                "preprocessing": f"none outside the model: resize to {size}x{size} (bilinear, no crop), RGB, raw 0..255 values; normalization is inside the model",
                "quantized_inputs": "int8/uint8 variants: q = round(pixel / scale) + zero_point with the variant's input scale and zero_point",
            },
            "output": {
                "name": _output_name(head),
                "shape": [1, len(class_names)],
                "meaning": {
                    "softmax": "softmax probabilities over task.class_names (sum to 1); argmax is the label",
                    "sigmoid": "independent sigmoid probabilities per class in task.class_names; >= 0.5 means present",
                    "regression": "regression values, one per target in task.class_names",
                }[head],
                "quantized_outputs": "int8/uint8 variants: value = (q - zero_point) * scale",
            },
            "evaluation": {
                "split": split_name,
                "count": int(len(split)),
                "data": data.source,
                "primary_metric": key,
                "max_drop_points": options.max_drop,
                "keras": {k: keras_metrics[k] for k in ("accuracy", "subset_accuracy", "f1_macro", "f1_micro", "mae", "rmse") if k in keras_metrics},
                "representative": rep_what if needs_data else None,
            },
            "variants": variants_meta,
            "recommended": recommended,
            "micro": micro,
            "saved_model": "saved_model" if options.saved_model else None,
            "passed": not failed,
            "failed": failed,
        }
        atomic_write_text(stage / "labels.txt", "\n".join(class_names) + "\n")
        write_json(stage / "metadata.json", meta)
        atomic_write_text(stage / "model_card.md", _model_card(meta))
    result = ExportResult(output_dir, meta, failed, reports)
    if failed and not options.allow_drop:
        raise ExportCheckError(_failure_message(result, options), result)
    return result


def _correction_mode(variant: Variant, options: ExportOptions) -> str:
    """Which model a variant converts from: ``none``, ``weights`` or ``weights+activations``."""
    if not options.bias_correction or not variant.optimize or variant.float16:
        return "none"
    return "weights+activations" if variant.ops == "int8" else "weights"


def _write_report(path: Path, rows: list[dict[str, Any]]) -> None:
    from tlkeras.runs import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["layer", "op", "rmse_over_scale", "mean_error", "max_abs_error", "scale", "tensor"])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _failure_message(result: ExportResult, options: ExportOptions) -> str:
    parts = "; ".join(f"{v} {why}" for v, why in result.failed.items())
    message = f"{parts} (limit {options.max_drop:g})"
    worst = next((result.metadata["variants"][v].get("worst_layers") for v in result.failed
                  if result.metadata["variants"][v].get("worst_layers")), None)
    if worst:
        layers = ", ".join(f"{w['layer']} ({w['rmse_over_scale']:.1f})" for w in worst[:3])
        report = next(p.name for v, p in result.reports.items() if v in result.failed)
        message += (f"; largest int8 errors (RMSE in quantization steps): {layers}, see {result.bundle_dir / report}; "
                    f"try a larger --representative-size, quantization-aware training, or a float variant")
    return message + f"; bundle written to {result.bundle_dir}; pass --allow-drop to accept"


# ---------------------------------------------------------------------------------------------
# From a run directory


def load_run_for_export(run_dir: str | os.PathLike, data_source: str | None = None):
    """Loads a run's model, config, labels and data for export.

    The data is ``data_source`` (or the run's own ``config.data.source``) at the model's input
    size; runs of the embedded demo (``source: null``) regenerate the demo's images.

    Returns:
        ``(model, config, bundle)``.

    Raises:
        TLKerasError: no model.keras, data whose classes differ from the run's labels.
    """
    from tlkeras.config import load_config
    from tlkeras.core.data import load_data
    from tlkeras.core.loading import load_run_model
    from tlkeras.runs import read_labels

    run_dir = Path(run_dir)
    model = load_run_model(run_dir)
    config = load_config(run_dir / "config.yaml")
    labels = read_labels(run_dir)
    size = int(model.inputs[0].shape[1])
    if data_source is not None:
        config.data.source = data_source
    if config.data.source is None:
        bundle = _demo_bundle(config, size, run_dir)
    else:
        bundle = load_data(config.data, size, config.model.head, config.seed)
    if list(bundle.class_names) != labels:
        raise TLKerasError(f"the data's classes {bundle.class_names} differ from the run's {labels}; pass --data with the run's classes")
    return model, config, bundle


def _demo_bundle(config, size: int, run_dir: Path) -> DataBundle:
    try:
        from tlkeras.core.demo_data import make_demo_task
    except ImportError:
        raise TLKerasError(f"{run_dir} was trained on the embedded demo and this tlkeras has no demo data; pass --data <folder>") from None
    from tlkeras.core.data import from_arrays

    task = make_demo_task(config.seed)
    (xt, yt), (xv, yv), (xs, ys) = task["train"], task["val"], task["test"]
    return from_arrays(xt, yt, class_names=task["class_names"], val=(xv, yv), test=(xs, ys),
                       image_size=size, config=config.data, seed=config.seed, source="tlkeras demo (generated shapes)")


def export_run(
    run_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    options: ExportOptions | None = None,
    *,
    data_source: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Exports a run directory to a bundle (default ``export/<run name>/``).

    See :func:`export_model` for what is written, raised and checked.
    """
    run_dir = Path(run_dir)
    options = (options or ExportOptions()).validate()
    target = Path(output_dir) if output_dir is not None else Path("export") / run_dir.resolve().name
    # Fail on the cheap checks before loading TensorFlow models and data.
    if not (run_dir / "model.keras").is_file():
        if not run_dir.is_dir():
            raise TLKerasError(f"run directory {run_dir} does not exist")
        raise TLKerasError(f"{run_dir} has no model.keras; pass a directory written by tlkeras.train")
    _check_writable(target, options.overwrite)
    model, config, bundle = load_run_for_export(run_dir, data_source)
    source = {
        "path": str(run_dir),
        "name": config.name or run_dir.name,
        "backbone": config.model.backbone,
        "alpha": config.model.alpha,
        "weights": config.model.weights,
        "head": config.model.head,
        "data": bundle.source,
        "seed": config.seed,
    }
    return export_model(model, bundle, target, options, name=run_dir.resolve().name, source_run=source, progress=progress)
