"""THE TFLite converter of tlkeras: a Keras model -> ``.tflite`` bytes for one variant.

Export and optimize both convert here. Conversion goes through a small SavedModel of a
``tf.Module`` that holds the model's variables and one serving function (input ``image``, batch
1): converting from a Keras model re-traces every layer for each variant (~40 s each on 2 cores),
this takes ~4 s. Running the result is :mod:`tlkeras.core.litert`'s job.

Also here: the stratified representative set that calibrates int8 activations, and the per-layer
int8 error report of TensorFlow's quantization debugger.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlkeras.errors import TLKerasError
from tlkeras.export.variants import VARIANTS, Variant

# ---------------------------------------------------------------------------------------------
# Data


def representative_indices(y: np.ndarray, size: int, seed: int = 42, head: str = "softmax") -> np.ndarray:
    """Indices of up to ``size`` training images, stratified by class.

    Each class gets a share proportional to its frequency (largest remainders, at least one
    image per class while ``size`` allows), drawn at random with ``seed``. The strata are the
    task's (:meth:`tlkeras.core.tasks.Task.strata`: the class for classification, the first positive
    label for multi-label); a task without strata (regression) draws uniformly.
    """
    from tlkeras.export.result import head_task

    rng = np.random.default_rng(seed)
    n = len(y)
    if n == 0 or size < 1:
        return np.zeros(0, np.int64)
    if size >= n:
        return rng.permutation(n)
    strata = head_task(head).strata(y)
    if strata is None:
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


def check_images(x: np.ndarray, size: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[0] == 0:
        raise TLKerasError(f"the {what} is empty or not a batch of images (shape {x.shape}); pass N x {size} x {size} x 3 pixels with N >= 1")
    if tuple(x.shape[1:]) != (size, size, 3):
        raise TLKerasError(f"the {what} has images of shape {tuple(x.shape[1:])}, the model takes {size} x {size} x 3; resize them or export with data at the model's size")
    if x.dtype != np.uint8 and float(np.max(x)) <= 1.0:
        warnings.warn(f"the {what} looks scaled to 0..1, but the model takes raw 0..255 pixels", stacklevel=3)
    return x


# ---------------------------------------------------------------------------------------------
# Conversion


def save_serving_model(model, directory: str | os.PathLike, head: str = "softmax", batch: int | None = 1) -> Path:
    """Saves a SavedModel with one ``serving_default`` signature: ``image`` -> outputs.

    The SavedModel holds a ``tf.Module`` with the model's variables and a ``tf.function`` that
    calls the model in inference mode, not the Keras object graph, so saving and converting
    skip re-tracing every layer.

    Args:
        model: a single-input Keras model taking N x S x S x 3 raw pixels.
        directory: where to write (created).
        head: the task's head value; the output is named by the task (``probabilities`` or ``predictions``).
        batch: the batch dimension (1 for TFLite, None for a serving SavedModel).

    Side effects: writes ``directory``.
    """
    from tlkeras._backend import tf

    shape = [batch] + [int(d) for d in model.inputs[0].shape[1:]]
    from tlkeras.export.result import head_task

    out_name = head_task(head).output_name()
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


def _converter(saved_model_dir: Path, variant: Variant, representative: np.ndarray | None, allow_float_ops: bool = False):
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
            if allow_float_ops:  # ops without an int8 kernel stay float
                converter.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
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


def convert_variant(saved_model_dir: str | os.PathLike, variant: str | Variant, representative: np.ndarray | None = None,
                    *, allow_float_ops: bool = False) -> bytes:
    """Converts a serving SavedModel (see :func:`save_serving_model`) into one variant.

    Args:
        saved_model_dir: the SavedModel directory.
        variant: a name from :data:`VARIANTS` or a :class:`Variant`.
        representative: uint8 training images (N x S x S x 3) for int8/int16x8 calibration.
        allow_float_ops: for int8 variants, keep ops without an int8 kernel in float instead of
            failing (the model is then not full-integer).

    Returns:
        The ``.tflite`` flatbuffer bytes.

    Raises:
        TLKerasError: naming the TensorFlow op(s) TFLite cannot express, or the converter's first
            error line.
    """
    spec = VARIANTS[variant] if isinstance(variant, str) else variant
    converter = _converter(Path(saved_model_dir), spec, representative, allow_float_ops)
    try:
        with _quiet_converter():
            return bytes(converter.convert())
    except TLKerasError:
        raise
    except Exception as exc:  # noqa: BLE001 - ConverterError and friends
        raise _conversion_error(exc, spec.name) from None


def convert_model(model, variant: str | Variant = "int8_float_io", representative: np.ndarray | None = None, *,
                  head: str = "softmax", allow_float_ops: bool = False) -> tuple[bytes, bool]:
    """Converts a Keras model (QAT models included) into one variant, through a temporary SavedModel.

    For an int8 variant with ``allow_float_ops``, a strict full-integer conversion is tried first
    and, if it fails, ops without an int8 kernel are kept in float.

    Returns:
        ``(flatbuffer bytes, whether the conversion is the strict one)``: False when ops were left
        in float.

    Raises:
        TLKerasError: as :func:`convert_variant`.
    """
    spec = VARIANTS[variant] if isinstance(variant, str) else variant
    with tempfile.TemporaryDirectory(prefix="tlkeras-convert-") as work:
        saved = save_serving_model(model, Path(work) / "serving", head, batch=1)
        try:
            return convert_variant(saved, spec, representative), True
        except TLKerasError:
            if not (allow_float_ops and spec.ops == "int8"):
                raise
        return convert_variant(saved, spec, representative, allow_float_ops=True), False


def quantization_debugger(saved_model_dir: str | os.PathLike, representative: np.ndarray, debug_images: np.ndarray):
    """TensorFlow's quantization debugger for the int8 conversion of a serving SavedModel, run.

    The debugger calibrates once; :func:`debugger_rows` reads its per-layer statistics and
    :func:`selective_int8` re-quantizes the calibrated model with some layers kept in float.
    """
    from tlkeras._backend import tf

    converter = _converter(Path(saved_model_dir), VARIANTS["int8_float_io"], representative, allow_float_ops=True)
    images = debug_images

    def dataset():
        for image in images:
            yield [image[None].astype(np.float32)]

    with _quiet_converter():
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
        debugger.run()
    return debugger


def debugger_rows(debugger) -> list[dict[str, Any]]:
    """Per-layer rows of a run :func:`quantization_debugger`, worst first (see :func:`quantization_report`)."""
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
            "node": tensor,  # the op's full output tensor name: what selective quantization denylists
        })
    rows.sort(key=lambda r: -(r["rmse_over_scale"] if np.isfinite(r["rmse_over_scale"]) else -1))
    return rows


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
        ``rmse_over_scale``, ``mean_error``, ``max_abs_error``, ``scale``, ``node``.
    """
    return debugger_rows(quantization_debugger(saved_model_dir, representative, debug_images))


def selective_int8(debugger, float_nodes: Sequence[str]) -> bytes:
    """The debugger's int8 model (float32 input/output) with the ops writing ``float_nodes`` kept in float.

    This is the quantization debugger's selective quantization (``denylisted_nodes``): the
    calibration is reused, only the quantization pass runs again.
    """
    from tlkeras._backend import tf

    with _quiet_converter():
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_nodes))
        return bytes(debugger.get_nondebug_quantized_model())


def _layer_name(tensor_name: str) -> str:
    """``model/conv_pw_13_relu/Relu6;model/...`` -> ``conv_pw_13_relu`` (the Keras layer)."""
    first = tensor_name.split(";")[0]
    parts = [p for p in first.split("/") if p]
    return parts[1] if len(parts) > 2 else (parts[0] if parts else tensor_name)
