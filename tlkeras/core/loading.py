"""Loading models that tlkeras saved: run directories and ``.keras`` files, QAT models included.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from tlkeras._backend import keras, tfmot
from tlkeras.errors import TLKerasError

__all__ = ["quantize_layer_class", 'load_run_model', 'load_model', 'keras_load_scope', 'tfmot_internal']


def tfmot_internal(path: str):
    """A tfmot module outside its public API (registries, QuantizeLayer), imported after tfmot."""
    import importlib

    tfmot()
    return importlib.import_module(f"tensorflow_model_optimization.python.core.{path}")


def load_run_model(run_dir: str | os.PathLike):
    """Loads ``<run_dir>/model.keras`` with Keras' safe mode on.

    Raises:
        TLKerasError: if the directory or model is missing or unreadable.
    """
    from tlkeras._backend import keras
    from tlkeras.core import backbones  # noqa: F401  (registers HubBackbone for deserialization)

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TLKerasError(f"run directory {run_dir} does not exist")
    path = run_dir / "model.keras"
    if not path.is_file():
        raise TLKerasError(f"{run_dir} has no model.keras; pass a directory written by tlkeras.train")
    scope = contextlib.nullcontext()
    if (run_dir / "optimization.json").is_file():
        # Runs written by tlkeras.optimize may hold tfmot's QAT layers, which Keras can only
        # deserialize inside tfmot's custom-object scope.
        from tlkeras.core.loading import keras_load_scope

        scope = keras_load_scope()
    try:
        # compile=False: evaluation only predicts, and the saved optimizer has no state to load.
        with scope:
            return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001
        raise TLKerasError(f"cannot load {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:150]}") from None


def quantize_layer_class():
    """tfmot's QuantizeLayer with an idempotent ``build`` (it does not set ``built``, so a
    ``.keras`` load builds it twice and finds 5 variables where 3 were saved)."""
    base = tfmot_internal("quantization.keras.quantize_layer").QuantizeLayer
    cls = _cache.get("QuantizeLayer")
    if cls is None:

        class QuantizeLayer(base):  # the saver keys files by the snake-cased class name
            def build(self, input_shape):
                if self.built:
                    return
                super().build(input_shape)
                self.built = True

        cls = _cache["QuantizeLayer"] = QuantizeLayer
    return cls


_cache: dict[str, Any] = {}


@contextlib.contextmanager
def keras_load_scope() -> Iterator[None]:
    """Custom-object scope in which Keras can load (or rebuild) tlkeras' QAT models.

    It adds tfmot's quantization classes (``quantize_scope``) and tlkeras' fixed QuantizeLayer.
    Harmless for models without QAT layers.
    """
    qk = tfmot().quantization.keras
    with qk.quantize_scope(), keras.utils.custom_object_scope({"QuantizeLayer": quantize_layer_class()}):
        yield


def load_model(path_or_run: str | os.PathLike):
    """Loads a model saved by tlkeras (a run directory or a ``.keras`` file), QAT models included.

    Raises:
        TLKerasError: a missing or unreadable model.
    """
    path = Path(path_or_run)
    if path.is_dir():
        with keras_load_scope():
            return load_run_model(path)
    if not path.is_file():
        raise TLKerasError(f"model file {path} does not exist")
    try:
        with keras_load_scope():
            return keras.models.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001
        raise TLKerasError(f"cannot load {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:150]}") from None
