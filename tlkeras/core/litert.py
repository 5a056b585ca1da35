"""Running and inspecting ``.tflite`` models with LiteRT, without TensorFlow.

Everything here imports only NumPy and ``ai_edge_litert`` (the LiteRT interpreter and its
flatbuffer schema), so it is what an app-side script can use too. Exporting (which needs
TensorFlow's converter) lives in :mod:`tlkeras.export`; this module is the runtime side:

- :func:`load_interpreter`, :func:`io_details`, :func:`run_model`: run a model on uint8 images,
  quantizing inputs and dequantizing outputs from the model's own scale and zero point.
- :func:`measure_latency`: p50/p90 of ``invoke()`` with a given number of threads (LiteRT applies
  its default XNNPACK delegate to the ops it supports).
- :func:`inspect_model`: operators and tensors read from the flatbuffer, for the microcontroller
  checks (:func:`micro_problems`) and the tensor-arena estimate (:func:`estimate_arena`).

No function here writes files.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlkeras.errors import TLKerasError

__all__ = [
    "load_interpreter",
    "io_details",
    "describe_tensor",
    "quantize",
    "dequantize",
    "run_model",
    "measure_latency",
    "set_random_input",
    "time_invokes",
    "TensorInfo",
    "OperatorInfo",
    "ModelInfo",
    "inspect_model",
    "micro_problems",
    "micro_resolver_calls",
    "estimate_arena",
    "ArenaEstimate",
    "micro_arena_bytes",
    "measure_micro_arena",
]


def _read(model: bytes | str | os.PathLike) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    try:
        with open(model, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise TLKerasError(f"model file {model} does not exist; pass a .tflite file from an exported bundle") from None


@contextlib.contextmanager
def _quiet_stderr():
    """Hides LiteRT's C++ start-up line ("INFO: Created TensorFlow Lite XNNPACK delegate")."""
    if os.environ.get("TLKERAS_SHOW_TF_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_interpreter(model: bytes | str | os.PathLike, num_threads: int | None = None):
    """Returns an allocated ``ai_edge_litert.interpreter.Interpreter`` for a ``.tflite`` model.

    Args:
        model: the model bytes or a path to a ``.tflite`` file.
        num_threads: CPU threads for the kernels and the XNNPACK delegate (None: LiteRT's default).

    Raises:
        TLKerasError: if the file is missing or LiteRT cannot load or prepare the model.
    """
    from ai_edge_litert.interpreter import Interpreter

    content = _read(model)
    try:
        with _quiet_stderr():
            interpreter = Interpreter(model_content=content, num_threads=num_threads)
            interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TLKerasError(f"LiteRT cannot load the model ({first}); the .tflite file is damaged or not a TFLite model: re-export it with python -m tlkeras.export") from None
    return interpreter


def describe_tensor(detail: dict) -> dict[str, Any]:
    """One interpreter tensor detail as JSON-safe facts: name, index, shape, dtype, scale, zero_point."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    dtype = np.dtype(detail["dtype"]).name
    return {
        "name": detail["name"],
        "index": int(detail["index"]),
        "shape": [int(d) for d in detail["shape"]],
        "dtype": dtype,
        # LiteRT reports (0.0, 0) for tensors that are not quantized.
        "scale": float(scale) if scale else None,
        "zero_point": int(zero_point) if scale else None,
    }


def io_details(interpreter) -> dict[str, list[dict[str, Any]]]:
    """The model's inputs and outputs: name, shape, dtype name, scale and zero point (or None)."""
    return {
        "inputs": [describe_tensor(d) for d in interpreter.get_input_details()],
        "outputs": [describe_tensor(d) for d in interpreter.get_output_details()],
    }


def quantize(x: np.ndarray, dtype: str, scale: float | None, zero_point: int | None) -> np.ndarray:
    """Maps real values to a tensor's dtype: ``q = round(x / scale) + zero_point``, clipped.

    Float dtypes pass through as a cast. For the tlkeras int8 models the input scale is 1.0, so an
    int8 input is ``pixel - 128`` and a uint8 input is the raw pixel.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.asarray(x, dtype=dtype)
    if not scale:
        raise TLKerasError(f"a {dtype.name} tensor without a quantization scale cannot take real values")
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float64) / scale) + int(zero_point or 0)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float | None, zero_point: int | None) -> np.ndarray:
    """Maps a quantized tensor back to real values: ``(q - zero_point) * scale`` (float32)."""
    q = np.asarray(q)
    if q.dtype.kind == "f" or not scale:
        return q.astype(np.float32)
    return ((q.astype(np.float32) - float(zero_point or 0)) * float(scale)).astype(np.float32)


def run_model(model, images: np.ndarray, num_threads: int | None = None) -> np.ndarray:
    """Runs a single-input, single-output model on images one at a time (batch 1, as apps do).

    Args:
        model: an allocated interpreter, model bytes or a ``.tflite`` path.
        images: N x H x W x 3 raw pixels (uint8 or float in 0..255); quantized with the input's
            scale and zero point when the model takes integers.
        num_threads: threads when ``model`` is not already an interpreter.

    Returns:
        N x K float32 outputs, dequantized when the model's output is an integer tensor.

    Raises:
        TLKerasError: if the images do not match the model's input shape.
    """
    interpreter = model if hasattr(model, "invoke") else load_interpreter(model, num_threads)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    i_desc, o_desc = describe_tensor(inp), describe_tensor(out)
    images = np.asarray(images)
    expected = tuple(i_desc["shape"][1:])
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise TLKerasError(f"images have shape {tuple(images.shape)}, the model takes N x {' x '.join(map(str, expected))}")
    results = []
    for image in images:
        x = quantize(image[None].astype(np.float32), i_desc["dtype"], i_desc["scale"], i_desc["zero_point"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        results.append(dequantize(y, o_desc["scale"], o_desc["zero_point"])[0])
    return np.stack(results) if results else np.zeros((0,) + tuple(o_desc["shape"][1:]), np.float32)


def set_random_input(interpreter, seed: int = 0) -> None:
    """Fills the model's first input with random pixels (quantized if the input is integer)."""
    detail = interpreter.get_input_details()[0]
    desc = describe_tensor(detail)
    pixels = np.random.default_rng(seed).integers(0, 256, size=desc["shape"]).astype(np.float32)
    interpreter.set_tensor(detail["index"], quantize(pixels, desc["dtype"], desc["scale"], desc["zero_point"]))


def time_invokes(interpreter, iterations: int) -> np.ndarray:
    """Milliseconds of each of ``iterations`` back-to-back ``invoke()`` calls."""
    times = np.empty(iterations, np.float64)
    for i in range(iterations):
        start = time.perf_counter_ns()
        interpreter.invoke()
        times[i] = (time.perf_counter_ns() - start) / 1e6
    return times


def measure_latency(
    model: bytes | str | os.PathLike,
    num_threads: int = 1,
    iterations: int = 100,
    warmup: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Times ``invoke()`` of a model on one random input.

    The input is set once and left in place, so only the interpreter is timed (not NumPy).
    LiteRT applies its default XNNPACK delegate to supported ops; int16x8 models run on the
    builtin kernels.

    Returns:
        ``{"p50_ms", "p90_ms", "mean_ms", "min_ms", "iterations", "threads"}``.
    """
    if iterations < 1:
        raise TLKerasError(f"iterations must be >= 1, got {iterations}")
    interpreter = load_interpreter(model, num_threads)
    set_random_input(interpreter, seed)
    time_invokes(interpreter, max(0, warmup))
    times = time_invokes(interpreter, iterations)
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": float(times.mean()),
        "min_ms": float(times.min()),
        "iterations": int(iterations),
        "threads": int(num_threads),
    }


# ---------------------------------------------------------------------------------------------
# Flatbuffer inspection (operators, tensors) for microcontroller checks


_ITEMSIZE = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2,
             "INT8": 1, "FLOAT64": 8, "UINT64": 8, "UINT32": 4, "UINT16": 2, "BFLOAT16": 2}


@dataclass
class TensorInfo:
    """One tensor of the model's main subgraph."""

    index: int
    name: str
    dtype: str
    shape: list[int]
    constant: bool
    channels: int = 0  # number of per-channel scales (0 or 1: per-tensor)
    scale: float | None = None  # the first quantization scale (the only one when per-tensor)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape or [1])) * _ITEMSIZE.get(self.dtype, 4)


@dataclass
class OperatorInfo:
    """One operator: its builtin name (or the custom code) and tensor indices."""

    index: int
    name: str
    custom: bool
    inputs: list[int]
    outputs: list[int]


@dataclass
class ModelInfo:
    """What :func:`inspect_model` reads from a ``.tflite`` flatbuffer."""

    tensors: list[TensorInfo]
    operators: list[OperatorInfo]
    inputs: list[int]
    outputs: list[int]
    subgraphs: int
    size: int

    @property
    def op_names(self) -> list[str]:
        """Distinct operator names in order of first use."""
        return list(dict.fromkeys(op.name for op in self.operators))


def inspect_model(model: bytes | str | os.PathLike) -> ModelInfo:
    """Reads operators and tensors of subgraph 0 from a ``.tflite`` flatbuffer.

    Raises:
        TLKerasError: if the bytes are not a TFLite flatbuffer.
    """
    from ai_edge_litert import schema_py_generated as schema

    content = _read(model)
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise TLKerasError("not a TFLite model (the flatbuffer identifier TFL3 is missing)")
    fb = schema.Model.GetRootAs(content, 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = []
    for i in range(fb.OperatorCodesLength()):
        code = fb.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            codes.append(((custom or b"?").decode("utf-8", "replace"), True))
        else:
            codes.append((op_names.get(builtin, f"BUILTIN_{builtin}"), False))
    graph = fb.Subgraphs(0)

    def constant(buffer_index: int) -> bool:
        if buffer_index <= 0 or buffer_index >= fb.BuffersLength():
            return False
        buf = fb.Buffers(buffer_index)
        # Large models may keep buffer data outside the flatbuffer (offset/size).
        return buf.DataLength() > 0 or buf.Size() > 0

    tensors = []
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        quant = tensor.Quantization()
        channels = quant.ScaleLength() if quant is not None else 0
        tensors.append(TensorInfo(
            index=t,
            name=(tensor.Name() or b"").decode("utf-8", "replace"),
            dtype=type_names.get(tensor.Type(), str(tensor.Type())),
            shape=[int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else [],
            constant=constant(tensor.Buffer()),
            channels=channels,
            scale=float(quant.Scale(0)) if channels else None,
        ))
    operators = []
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        name, custom = codes[op.OpcodeIndex()]
        operators.append(OperatorInfo(
            index=o, name=name, custom=custom,
            inputs=[int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else [],
            outputs=[int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else [],
        ))
    return ModelInfo(
        tensors=tensors,
        operators=operators,
        inputs=[int(i) for i in graph.InputsAsNumpy()],
        outputs=[int(i) for i in graph.OutputsAsNumpy()],
        subgraphs=fb.SubgraphsLength(),
        size=len(content),
    )


# Builtin ops with a TFLite Micro kernel, and the MicroMutableOpResolver method that registers it.
# Not exhaustive (TFLM grows), but it covers what image classifiers use.
_MICRO_RESOLVER = {
    "ABS": "AddAbs", "ADD": "AddAdd", "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize",
    "EXPAND_DIMS": "AddExpandDims", "FULLY_CONNECTED": "AddFullyConnected", "HARD_SWISH": "AddHardSwish",
    "LEAKY_RELU": "AddLeakyRelu", "LOGISTIC": "AddLogistic", "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D", "MEAN": "AddMean", "MINIMUM": "AddMinimum", "MUL": "AddMul",
    "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2", "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize", "REDUCE_MAX": "AddReduceMax", "RELU": "AddRelu", "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "SHAPE": "AddShape", "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPLIT": "AddSplit", "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub", "SUM": "AddSum", "TANH": "AddTanh",
    "TRANSPOSE": "AddTranspose", "UNPACK": "AddUnpack",
}
# Tensor types an int8 microcontroller model may carry: int8 activations and weights, int32
# biases and shape operands, int16 only where TFLM kernels take it (not used by our variants).
_MICRO_TYPES = {"INT8", "INT32"}


def micro_problems(info: ModelInfo) -> list[str]:
    """Reasons a model is not a pure builtin-int8 model for TFLite Micro (empty list: it is).

    Checks: one subgraph; no custom or Flex ops; every tensor an operator reads or writes is int8
    (int32 for biases and shapes); every op has a TFLM kernel in tlkeras' table.
    """
    problems = []
    if info.subgraphs != 1:
        problems.append(f"{info.subgraphs} subgraphs (TFLM models should have one)")
    for op in info.operators:
        if op.custom:
            kind = "Flex (TensorFlow) op" if op.name.startswith("Flex") else "custom op"
            problems.append(f"operator {op.index} is a {kind} {op.name}, which TFLite Micro cannot run")
            continue
        if op.name not in _MICRO_RESOLVER:
            problems.append(f"operator {op.index} {op.name} has no kernel in tlkeras' list of TFLite Micro ops")
        for t in op.inputs + op.outputs:
            if t < 0:
                continue  # optional operand left out
            tensor = info.tensors[t]
            if tensor.dtype not in _MICRO_TYPES:
                problems.append(
                    f"operator {op.index} {op.name} uses {tensor.dtype} tensor {tensor.name!r}; "
                    f"a microcontroller model must be full-integer int8"
                )
                break
        if op.name == "SOFTMAX" and op.inputs and op.inputs[0] >= 0:
            scale = info.tensors[op.inputs[0]].scale
            # TFLM's int8 softmax turns beta * input_scale * 2^26 into a multiplier it requires to
            # be > 1 (PreprocessSoftmaxScaling -> QuantizeMultiplierGreaterThanOne) and aborts the
            # process otherwise. Full TFLite copes. Seen on networks trained from random weights for
            # an epoch or two: their logits hardly vary, so the calibrated scale is tiny.
            if scale is not None and scale * 2.0 ** 26 <= 1.0:
                problems.append(
                    f"operator {op.index} SOFTMAX's input scale {scale:.3g} is at or under 2^-26 (1.5e-8): TFLite Micro's int8 "
                    f"softmax aborts on it; the logits hardly vary (an untrained or collapsed model): train it further")
    return problems


def micro_resolver_calls(info: ModelInfo) -> list[str]:
    """``MicroMutableOpResolver`` registration calls for the model's ops (``AddConv2D()`` ...)."""
    return [_MICRO_RESOLVER.get(name, f"Add{name.title().replace('_', '')}") + "()" for name in info.op_names]


@dataclass
class ArenaEstimate:
    """A TFLite Micro tensor-arena estimate, in bytes.

    Attributes:
        activations: peak of the activation buffers as a greedy planner packs them by lifetime
            (what TFLM's GreedyMemoryPlanner does), 16-byte aligned.
        persistent: per-tensor and per-op bookkeeping plus per-channel quantization data that
            kernels keep for the whole run (an approximation).
        total: ``(activations + persistent) * 1.25``, rounded up to a KiB; a starting
            ``kTensorArenaSize`` that TFLM's ``arena_used_bytes()`` on the device refines.
            (TFLM's own planner packs less tightly: on MobileNet-0.25 at 224 it needed 3% more
            than ``activations + persistent``, at 32 px 5% less.)
        tensors: the number of activation tensors planned.
    """

    activations: int
    persistent: int
    total: int
    tensors: int = 0
    plan: list[tuple[int, int, int, int, int]] = field(default_factory=list, repr=False)


def _align(n: int, to: int = 16) -> int:
    return (n + to - 1) // to * to


def estimate_arena(info: ModelInfo) -> ArenaEstimate:
    """Estimates the TFLite Micro tensor arena a model needs.

    Activation tensors (not constant) live from the op that writes them (or the start, for model
    inputs) to the last op that reads them (or the end, for outputs). They are placed largest first
    at the lowest offset that does not collide with a tensor alive at the same time; the highest
    end offset is the activation arena. Constant tensors stay in flash and cost nothing.
    """
    n_ops = len(info.operators)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in info.inputs:
        first[t] = 0
        last[t] = 0
    for op in info.operators:
        for t in op.outputs:
            if t >= 0:
                first.setdefault(t, op.index)
                last[t] = max(last.get(t, op.index), op.index)
        for t in op.inputs:
            if t >= 0 and not info.tensors[t].constant:
                first.setdefault(t, op.index)
                last[t] = max(last.get(t, op.index), op.index)
    for t in info.outputs:
        last[t] = n_ops
    live = [t for t in first if not info.tensors[t].constant]
    live.sort(key=lambda t: (-info.tensors[t].nbytes, t))
    placed: list[tuple[int, int, int, int, int]] = []  # (tensor, offset, size, first, last)
    peak = 0
    for t in live:
        size = _align(info.tensors[t].nbytes)
        start, end = first[t], last[t]
        clashes = sorted((off, off + sz) for _, off, sz, s, e in placed if not (e < start or s > end))
        offset = 0
        for lo, hi in clashes:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        placed.append((t, offset, size, start, end))
        peak = max(peak, offset + size)
    # TFLM keeps a TfLiteEvalTensor (~16 B) per tensor, node and registration structs per op, and
    # conv/depthwise/FC kernels keep an int32 multiplier and shift per output channel.
    per_channel = 0
    for op in info.operators:
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and op.outputs:
            out = info.tensors[op.outputs[0]]
            per_channel += 8 * (out.shape[-1] if out.shape else 1) + 64
    persistent = 16 * len(info.tensors) + 96 * n_ops + per_channel + 1024
    total = int(np.ceil((peak + persistent) * 1.25 / 1024.0) * 1024)
    return ArenaEstimate(activations=int(peak), persistent=int(persistent), total=total, tensors=len(live), plan=placed)



def micro_arena_bytes(model: bytes | str | os.PathLike, limit: int = 16 * 1024 * 1024, resolution: int = 256) -> int | None:
    """The smallest tensor arena with which TFLite Micro's own interpreter runs the model.

    Measured in a child process (:func:`measure_micro_arena`); None when it could not be measured.
    """
    return measure_micro_arena(model, limit, resolution)[0]


def measure_micro_arena(model: bytes | str | os.PathLike, limit: int = 16 * 1024 * 1024, resolution: int = 256,
                        timeout: float = 300.0) -> tuple[int | None, str | None]:
    """The smallest tensor arena TFLite Micro's interpreter runs the model with, and why not when not.

    Uses the optional ``tflite-micro`` package (its Python interpreter is TFLM's C++ runtime) and
    bisects the arena size between 1 KiB and ``limit``, in a **child process**: TFLM aborts the whole
    process on some models (a failed check in its kernels ends in SIGABRT), and an optional
    measurement must not take the export down with it.

    Returns:
        ``(bytes, None)``, or ``(None, reason)``: the package is missing, the model does not run
        even with ``limit`` bytes, the child crashed (its signal) or ran past ``timeout`` seconds.

    Side effects: writes the model to a temporary file for the child; removed afterwards.
    """
    import importlib.util
    import signal
    import subprocess
    import tempfile

    if importlib.util.find_spec("tflite_micro") is None:
        return None, "the tflite-micro package is not installed"
    content = _read(model)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    code = ("import sys; from tlkeras.core.litert import _arena_in_this_process as m; "
            "print(m(open(sys.argv[1], 'rb').read(), int(sys.argv[2]), int(sys.argv[3])))")
    with tempfile.TemporaryDirectory(prefix="tlkeras-tflm-") as work:
        path = os.path.join(work, "model.tflite")
        with open(path, "wb") as fh:
            fh.write(content)
        try:
            done = subprocess.run([sys.executable, "-c", code, path, str(int(limit)), str(int(resolution))],
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return None, f"TFLite Micro's interpreter did not finish within {timeout:.0f} s"
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name if -done.returncode in signal.Signals._value2member_map_ else str(-done.returncode)
        return None, f"TFLite Micro's interpreter crashed ({name}) running this model; the arena is estimated instead"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1][:200]
        return None, f"TFLite Micro's interpreter failed ({last})"
    value = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "None"
    if value == "None":
        return None, f"TFLite Micro did not run the model with {int(limit)} bytes of arena"
    return int(value), None


def _arena_in_this_process(content: bytes, limit: int, resolution: int) -> int | None:
    from tflite_micro.python.tflite_micro import runtime

    def runs(size: int) -> bool:
        try:
            with _quiet_stderr():
                interpreter = runtime.Interpreter.from_bytes(content, arena_size=int(size))
                detail = interpreter.get_input_details(0)
                interpreter.set_input(np.zeros(detail["shape"], detail["dtype"]), 0)
                interpreter.invoke()
            return True
        except Exception:  # noqa: BLE001 - TFLM reports a too-small arena as a RuntimeError
            return False

    low, high = 1024, int(limit)
    if not runs(high):
        return None
    while high - low > resolution:
        mid = (low + high) // 2
        if runs(mid):
            high = mid
        else:
            low = mid
    return high
