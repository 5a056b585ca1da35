"""An ONNX copy of the model for desktop and server consumers, verified with onnxruntime.

Converted with ``tf2onnx`` (1.17.0 converts tf_keras models of TensorFlow 2.21; opset 17), input
``image`` N x S x S x 3 float32 raw 0..255 pixels (dynamic batch), output the head's values, like
the TFLite variants. Both packages are optional (``pip install tf2onnx onnxruntime``); asking for
ONNX without them is bad input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tlkeras.errors import TLKerasError

__all__ = ["available", "convert_onnx", "run_onnx", "OPSET"]

OPSET = 17
_MISSING = "the ONNX export needs tf2onnx and onnxruntime (pip install tf2onnx onnxruntime); or export without --onnx"


def available() -> bool:
    """Whether tf2onnx and onnxruntime can be imported."""
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def convert_onnx(model) -> bytes:
    """The ONNX model (bytes) of a single-input Keras model taking raw pixels.

    Raises:
        TLKerasError: tf2onnx is missing or fails (its first error line).
    """
    if not available():
        raise TLKerasError(_MISSING)
    import tf2onnx

    from tlkeras._backend import tf
    from tlkeras.export.convert import _quiet_converter

    spec = (tf.TensorSpec([None, *[int(d) for d in model.inputs[0].shape[1:]]], tf.float32, name="image"),)
    try:
        with _quiet_converter():
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TLKerasError(f"converting to ONNX failed: {first[:300]}") from None
    return proto.SerializeToString()


def run_onnx(content: bytes, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Runs the ONNX model with onnxruntime (CPU) on raw 0..255 images; N x K float32 outputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: np.asarray(images[i:i + batch_size], np.float32)})[0] for i in range(0, len(images), batch_size)]
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, 0), np.float32)


def versions() -> dict[str, Any]:
    from importlib.metadata import version

    return {"tf2onnx": version("tf2onnx"), "onnxruntime": version("onnxruntime"), "opset": OPSET}


# Top-1 agreement with Keras an ONNX model must reach (it runs the same float32 graph).
MIN_AGREEMENT = 0.999


def export_onnx(model, images: np.ndarray, compare) -> tuple[bytes, dict[str, Any]]:
    """Converts ``model`` to ONNX and verifies it on ``images`` with onnxruntime.

    Args:
        model: the Keras model.
        images: the evaluation images (raw 0..255).
        compare: turns ONNX outputs into the bundle's metrics (``agreement``, ``drop_points``...).

    Returns:
        ``(onnx bytes, entry for metadata.json)``; ``entry["passed"]`` is the agreement gate.
    """
    import hashlib

    content = convert_onnx(model)
    metrics = compare(run_onnx(content, images))
    agreement = metrics.get("agreement")
    entry = {"file": "model.onnx", "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest(), **versions(),
             "input": {"name": "image", "shape": ["N", *[int(d) for d in model.inputs[0].shape[1:]]], "dtype": "float32",
                       "value_range": [0, 255]},
             "metrics": metrics, "verified_on": ["onnxruntime"],
             "passed": agreement is None or agreement >= MIN_AGREEMENT}
    return content, entry
