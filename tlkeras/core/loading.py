"""Loading models that tlkeras saved: run directories and ``.keras`` files, QAT models included.

Every loader here checks a ``.keras`` file before Keras deserializes it
(:func:`check_keras_file`): Keras' safe mode refuses ``lambda`` layers, but it still *imports*
any module that a ``"module"`` field of the file's config names, and with ``python -m`` the
current folder is on ``sys.path``, so a run folder could ship the code it names. tlkeras accepts
only references into Keras/tf_keras, TensorFlow Hub, tensorflow-model-optimization and tlkeras
itself, and refuses everything else in one line, before any import happens.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

from tlkeras._backend import keras, tfmot
from tlkeras.core import backbones as _backbones  # noqa: F401  (registers HubBackbone for loading)
from tlkeras.core.text import encoders as _text_encoders  # noqa: F401  (registers the text layers)
from tlkeras.errors import ModelFileError, RunDirectoryError, TLKerasError, UnsafeModelError

__all__ = [
    "quantize_layer_class",
    "load_run_model",
    "load_model",
    "keras_load_scope",
    "tfmot_internal",
    "check_keras_file",
    "ALLOWED_MODULE_ROOTS",
]

# Top-level packages whose modules a .keras config may name (Keras 2 writes "keras.layers" for
# tf_keras' own classes). Everything else is refused before deserialization.
ALLOWED_MODULE_ROOTS = ("keras", "tf_keras", "tensorflow_hub", "tensorflow_model_optimization", "tlkeras")
_MAX_CONFIG_BYTES = 64 << 20  # config.json of a large model is a few MB


def _module_allowed(module: str) -> bool:
    parts = module.split(".")
    return parts[0] in ALLOWED_MODULE_ROOTS and all(p.isidentifier() for p in parts)


def _unsafe_reference(node: Any, depth: int = 0) -> str | None:
    """The first module/function reference in a Keras config that is not allowed, or None."""
    if depth > 200:
        return "a config nested more than 200 levels deep"
    if isinstance(node, dict):
        class_name = node.get("class_name")
        if class_name is not None:
            module = node.get("module")
            if class_name == "__lambda__":
                return "a lambda (Python bytecode)"
            if module is not None:
                if not isinstance(module, str) or not module:
                    return f"module {module!r}"
                if module == "builtins":
                    # Keras resolves built-in activations by name; a Python builtin (eval, exec,
                    # open, __import__) would be handed over as a function.
                    if class_name != "function" or not isinstance(node.get("config"), str) or node["config"] in vars(builtins):
                        return f"builtins.{node.get('config')}"
                elif not _module_allowed(module):
                    return f"module {module!r} (class {class_name!r})"
                elif class_name == "function" and isinstance(node.get("config"), str) and node["config"].startswith("_"):
                    return f"private function {module}.{node['config']}"
        for value in node.values():
            found = _unsafe_reference(value, depth + 1)
            if found:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _unsafe_reference(value, depth + 1)
            if found:
                return found
    return None


def check_keras_file(path: str | os.PathLike) -> None:
    """Checks a ``.keras`` file before Keras deserializes it; imports nothing.

    The file must be a zip with a ``config.json`` whose every ``module`` reference lies in
    :data:`ALLOWED_MODULE_ROOTS` (and no lambda or Python builtin).

    Raises:
        ModelFileError: not a readable ``.keras`` zip (corrupt, truncated, another format).
        UnsafeModelError: a reference outside the allowlist; the model is not loaded.
    """
    path = Path(path)
    fix = "restore it from a backup or retrain the run (python -m tlkeras.train --config <run>/config.yaml --name <new>)"
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("config.json")
            if info.file_size > _MAX_CONFIG_BYTES:
                raise ModelFileError(f"{path} has a {info.file_size >> 20} MB config.json; this is not a model tlkeras wrote")
            config = json.loads(archive.read(info).decode("utf-8"))
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError, RecursionError):
        raise ModelFileError(f"{path} is not a readable .keras model (corrupt, truncated or another format); {fix}") from None
    bad = _unsafe_reference(config)
    if bad:
        raise UnsafeModelError(
            f"{path} refers to {bad}, outside Keras, TF-Hub, tfmot and tlkeras; tlkeras refuses to load "
            f"it because loading would run that code. Use only model files from sources you trust"
        )


def _load_checked(path: Path, **kwargs):
    """``keras.models.load_model`` after :func:`check_keras_file`, errors as one line."""
    if path.suffix != ".keras":
        raise ModelFileError(f"{path} is not a .keras file; tlkeras saves and loads models in the .keras format")
    check_keras_file(path)
    try:
        return keras.models.load_model(path, safe_mode=True, **kwargs)
    except TLKerasError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure inside Keras means an unusable file
        first = (str(exc).splitlines() or [""])[0][:150]
        raise ModelFileError(
            f"cannot load {path} ({type(exc).__name__}: {first}); the file does not match this tlkeras/Keras "
            f"version or is damaged: retrain the run or restore model.keras"
        ) from None


def tfmot_internal(path: str):
    """A tfmot module outside its public API (registries, QuantizeLayer), imported after tfmot."""
    import importlib

    tfmot()
    return importlib.import_module(f"tensorflow_model_optimization.python.core.{path}")


def load_run_model(run_dir: str | os.PathLike):
    """Loads ``<run_dir>/model.keras`` after :func:`check_keras_file`, with Keras' safe mode on.

    When the run has a ``labels.txt``, the model's single output must have one unit per label.

    Raises:
        RunDirectoryError: the directory or its model is missing (or the path is a file).
        ModelFileError: a corrupt model, or labels.txt that does not match the model's outputs.
        UnsafeModelError: the model's config names code outside the allowlist.
    """
    from tlkeras.core import backbones  # noqa: F401  (registers HubBackbone for deserialization)

    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise RunDirectoryError(f"{run_dir} is a file; pass the run directory that holds model.keras (e.g. runs/<name>)")
    if not run_dir.is_dir():
        raise RunDirectoryError(f"run directory {run_dir} does not exist; pass a folder written by tlkeras.train (see ls runs/)")
    path = run_dir / "model.keras"
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir} has no model.keras; pass a directory written by tlkeras.train (an unfinished run is .<name>.partial)")
    scope = contextlib.nullcontext()
    if (run_dir / "optimization.json").is_file():
        # Runs written by tlkeras.optimize may hold tfmot's QAT layers, which Keras can only
        # deserialize inside tfmot's custom-object scope.
        scope = keras_load_scope()
    # compile=False: evaluation only predicts, and the saved optimizer has no state to load.
    with scope:
        model = _load_checked(path, compile=False)
    _check_labels(run_dir, model)
    return model


def _check_labels(run_dir: Path, model) -> None:
    """Refuses a labels.txt whose length differs from the model's (single) output width."""
    if not (run_dir / "labels.txt").is_file() or len(model.outputs) != 1:
        return
    from tlkeras.runs import read_labels

    labels = read_labels(run_dir)
    width = model.outputs[0].shape[-1]
    if width is not None and int(width) != len(labels):
        raise ModelFileError(
            f"{run_dir}/labels.txt names {len(labels)} classes but the model has {int(width)} outputs; "
            f"restore the labels.txt written with this model (one class per line)"
        )


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

    The file is checked first (:func:`check_keras_file`); nothing it names outside the allowlist
    is imported.

    Raises:
        ModelFileError: a missing, corrupt or non-``.keras`` model file.
        UnsafeModelError: the model's config names code outside the allowlist.
    """
    path = Path(path_or_run)
    if path.is_dir():
        with keras_load_scope():
            return load_run_model(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist; pass a run directory or a .keras file")
    with keras_load_scope():
        return _load_checked(path)
