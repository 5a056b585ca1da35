"""tlkeras: transfer learning for Keras/TensorFlow with verified edge export.

The public API is loaded on first use (``tlkeras.build_model`` imports TensorFlow then), so the
command-line tools can start, parse flags and set up logging before TensorFlow loads.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "BackboneSpec": "tlkeras.backbones",
    "get_backbone": "tlkeras.backbones",
    "list_backbones": "tlkeras.backbones",
    "register_backbone": "tlkeras.backbones",
    "DataConfig": "tlkeras.config",
    "ModelConfig": "tlkeras.config",
    "RunConfig": "tlkeras.config",
    "TrainConfig": "tlkeras.config",
    "load_config": "tlkeras.config",
    "save_config": "tlkeras.config",
    "TLKerasError": "tlkeras.errors",
    "build_model": "tlkeras.models",
    "freeze_backbone": "tlkeras.models",
    "unfreeze_backbone": "tlkeras.models",
    "DataBundle": "tlkeras.data",
    "load_data": "tlkeras.data",
    "from_arrays": "tlkeras.data",
    "train_model": "tlkeras.training",
    "fit_two_phase": "tlkeras.training",
    "TrainResult": "tlkeras.training",
    "evaluate_run": "tlkeras.evaluation",
    "load_run_model": "tlkeras.evaluation",
    "compute_metrics": "tlkeras.evaluation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tlkeras' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
