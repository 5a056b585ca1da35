"""The one place where tlkeras imports TensorFlow, Keras, TF-Hub, tfmot and KerasTuner.

tensorflow-model-optimization 0.8 and tensorflow-hub 0.16 only work with Keras 2 (``tf_keras``),
while TensorFlow 2.21 ships Keras 3 as ``keras``. The whole project therefore lives in the tf_keras
world, and every other module imports ``tf`` and ``keras`` from here. When tfmot gains Keras 3
support, this is the file to change.

Side effects on import: sets ``TF_USE_LEGACY_KERAS=1`` (so ``tf.keras`` is tf_keras) and, unless
the user chose otherwise, ``TF_CPP_MIN_LOG_LEVEL=2`` to keep TensorFlow's C++ start-up chatter out
of the CLIs' stderr.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from tlkeras.errors import TLKerasError  # noqa: E402

__all__ = ["tf", "keras", "hub", "tfmot", "keras_tuner"]

_cache: dict[str, object] = {}


def hub():
    """Returns the ``tensorflow_hub`` module (imported on first use; its layers are tf_keras layers)."""
    if "hub" not in _cache:
        try:
            import tensorflow_hub
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise TLKerasError(
                "tensorflow-hub is not installed; install it with `pip install tensorflow-hub`"
            ) from exc
        _cache["hub"] = tensorflow_hub
    return _cache["hub"]


def tfmot():
    """Returns ``tensorflow_model_optimization`` (imported on first use)."""
    if "tfmot" not in _cache:
        import tensorflow_model_optimization

        _cache["tfmot"] = tensorflow_model_optimization
    return _cache["tfmot"]


def keras_tuner():
    """Returns ``keras_tuner`` bound to tf_keras.

    KerasTuner decides at import time which Keras it drives: if ``import keras`` gives Keras 3 it
    rejects tf_keras models (keras-tuner issue #1039). We import it while ``sys.modules["keras"]``
    is tf_keras (which has no ``version()``, so KerasTuner falls back to ``tensorflow.keras``, i.e.
    tf_keras under ``TF_USE_LEGACY_KERAS=1``) and restore ``sys.modules["keras"]`` afterwards.

    Raises:
        TLKerasError: if the process imported KerasTuner in Keras 3 mode before tlkeras could.
    """
    if "kt" in _cache:
        return _cache["kt"]
    already = sys.modules.get("keras_tuner")
    if already is None:
        saved = sys.modules.get("keras")
        sys.modules["keras"] = keras
        try:
            import keras_tuner
        finally:
            if saved is not None:
                sys.modules["keras"] = saved
            else:
                sys.modules.pop("keras", None)
    else:
        keras_tuner = already
    from keras_tuner.src.backend import config as kt_config

    if kt_config.multi_backend():
        raise TLKerasError(
            "keras_tuner was imported in Keras 3 mode before tlkeras; import tlkeras (or call "
            "tlkeras.tuning functions) before importing keras_tuner, or restart the Python process"
        )
    _cache["kt"] = keras_tuner
    return keras_tuner
