"""Environment checks behind ``python -m tlkeras.doctor``.

Each check returns a :class:`Check` with a status (``ok``, ``warn``, ``fail``), what was found,
and, for problems, what to do about it. Checks only read: they never download or install.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Check", "run_checks"]


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    found: str
    fix: str = ""


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _packages() -> list[Check]:
    checks = []
    required = {
        "tensorflow": "pip install 'tensorflow>=2.21,<2.22'",
        "tf-keras": "pip install 'tf-keras>=2.21,<2.22' (its minor version must match TensorFlow's)",
        "tensorflow-hub": "pip install tensorflow-hub",
        "keras-tuner": "pip install keras-tuner",
        "tensorflow-model-optimization": "pip install tensorflow-model-optimization",
        "ai-edge-litert": "pip install ai-edge-litert",
        "scikit-learn": "pip install scikit-learn",
    }
    for dist, fix in required.items():
        version = _version(dist)
        checks.append(Check(dist, "ok" if version else "fail", version or "not installed", "" if version else fix))
    tf_version, tfk_version = _version("tensorflow"), _version("tf-keras")
    if tf_version and tfk_version and tf_version.split(".")[:2] != tfk_version.split(".")[:2]:
        checks.append(Check(
            "tf-keras matches tensorflow", "fail", f"tensorflow {tf_version}, tf-keras {tfk_version}",
            f"pip install 'tf-keras=={'.'.join(tf_version.split('.')[:2])}.*'",
        ))
    micro = _version("tflite-micro")
    checks.append(Check(
        "tflite-micro (optional)", "ok" if micro else "warn", micro or "not installed",
        "" if micro else "pip install tflite-micro to measure microcontroller tensor arenas",
    ))
    return checks


def _keras_world() -> list[Check]:
    checks = []
    legacy = os.environ.get("TF_USE_LEGACY_KERAS")
    from tlkeras._backend import keras, tf

    is_tf_keras = keras.__name__.startswith("tf_keras")
    checks.append(Check(
        "Keras world", "ok" if is_tf_keras and legacy == "1" else "fail",
        f"tlkeras uses {keras.__name__.split('.')[0]} (TF_USE_LEGACY_KERAS={legacy})",
        "" if is_tf_keras else "import tlkeras before tensorflow, or set TF_USE_LEGACY_KERAS=1 before starting Python",
    ))
    keras3 = _version("keras")
    if keras3:
        checks.append(Check("Keras 3 (not used by tlkeras)", "ok", f"keras {keras3} installed; tlkeras models are tf_keras models"))
    try:
        from tlkeras._backend import keras_tuner

        kt = keras_tuner()
        checks.append(Check("KerasTuner mode", "ok", f"keras-tuner {kt.__version__} bound to tf_keras"))
    except Exception as exc:  # noqa: BLE001 - report, do not crash the doctor
        checks.append(Check("KerasTuner mode", "fail", str(exc).splitlines()[0], "restart Python and import tlkeras before keras_tuner"))
    try:
        from tlkeras._backend import tfmot

        tfmot()
        checks.append(Check("tensorflow-model-optimization", "ok", "imports with tf_keras"))
    except Exception as exc:  # noqa: BLE001
        checks.append(Check("tensorflow-model-optimization", "fail", str(exc).splitlines()[0][:120], "pip install 'tensorflow-model-optimization>=0.8.1'"))
    gpus = tf.config.list_physical_devices("GPU")
    checks.append(Check(
        "GPUs", "ok", f"{len(gpus)} visible" + (f": {', '.join(g.name for g in gpus)}" if gpus else " (training runs on the CPU)"),
    ))
    return checks


def _caches(output_dir: Path) -> list[Check]:
    checks = []
    keras_cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    weights = sorted(keras_cache.glob("*.h5")) if keras_cache.is_dir() else []
    checks.append(Check(
        "ImageNet weights cache", "ok" if weights else "warn",
        f"{len(weights)} file(s) in {keras_cache}" + (f" ({', '.join(w.name for w in weights[:3])}{'...' if len(weights) > 3 else ''})" if weights else ""),
        "" if weights else "offline, --weights imagenet fails: pre-fill the cache where there is network "
        "(build the backbone once with weights='imagenet'), or pass --weights path/to/file.h5 or none",
    ))
    hub_cache = os.environ.get("TFHUB_CACHE_DIR")
    checks.append(Check("TF-Hub cache", "ok", hub_cache or "TFHUB_CACHE_DIR not set (TF-Hub uses a temporary folder); hub:<local SavedModel dir> works offline"))
    demo_cache = Path(os.environ.get("TLKERAS_CACHE") or Path.home() / ".cache" / "tlkeras") / "demo"
    demo = sorted(demo_cache.glob("*.h5")) if demo_cache.is_dir() else []
    checks.append(Check("demo backbone", "ok", f"cached in {demo_cache}" if demo else "not cached yet (the first `python -m tlkeras.train` pretrains it in about a minute)"))
    checks.append(_output_folder(output_dir))
    return checks


def _output_folder(output_dir: Path) -> Check:
    """Whether runs can be written under ``output_dir``: a folder (or creatable), writable, with room."""
    existing = output_dir if output_dir.exists() else next((p for p in output_dir.parents if p.exists()), Path.cwd())
    if not existing.is_dir():
        # A regular file where the folder (or one of its parents) should be: nothing can go under it.
        return Check(
            "output folder", "fail", f"{output_dir} ({existing} is a file, not a folder)",
            f"choose another --output-dir, or move the file {existing} away",
        )
    free = shutil.disk_usage(existing).free
    writable = os.access(existing, os.W_OK | os.X_OK)
    status = "ok" if writable and free > 1 << 30 else ("fail" if not writable else "warn")
    return Check(
        "output folder", status, f"{output_dir} ({'writable' if writable else 'not writable'}, {free / 2**30:.1f} GB free)",
        "" if status == "ok" else ("choose a writable --output-dir" if not writable else "free some disk space: runs and checkpoints need room"),
    )


def run_checks(output_dir: str | os.PathLike = "runs") -> list[Check]:
    """Runs every check; returns them in display order. Imports TensorFlow."""
    python_ok = (3, 10) <= sys.version_info[:2] <= (3, 12)
    checks = [Check(
        "python", "ok" if python_ok else "warn", sys.version.split()[0],
        "" if python_ok else "tlkeras is tested on Python 3.10-3.12",
    )]
    checks += _packages()
    if all(c.status != "fail" for c in checks if c.name in ("tensorflow", "tf-keras")):
        checks += _keras_world()
    checks += _caches(Path(output_dir))
    return checks
