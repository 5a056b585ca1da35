"""Shared fixtures: tiny synthetic image folders and a tiny trained run, all made offline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FLOWERS5 = SHARED / "data" / "flowers5"
MOBILENET_025 = SHARED / "weights" / "mobilenet_0.25_224_imagenet_no_top.h5"


def make_image_folder(root: Path, classes=("red", "green", "blue"), per_class: int = 12, size: int = 40, seed: int = 0, ext: str = ".png") -> Path:
    """Writes a learnable folder dataset: each class is a colour with noise and a bright stripe."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    palette = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (200, 200, 40), (160, 40, 200)]
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(np.array(palette[c % len(palette)]) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype("uint8")
            row = rng.integers(0, size - 4)
            img[row : row + 3] = 255
            Image.fromarray(img).save(folder / f"{name}_{i:03d}{ext}")
    return root


def make_bundle(n: int = 36, size: int = 32, classes: int = 3, seed: int = 0, test_fraction: float = 0.0):
    """A tiny in-memory DataBundle whose classes differ by a colour channel (learnable in a few steps)."""
    from tlkeras import DataConfig, from_arrays

    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 80, (n, size, size, 3)).astype(np.uint8)
    for c in range(classes):
        x[y == c, :, :, c] += 150  # the colour cue
    return from_arrays(x, y, config=DataConfig(val_fraction=0.25, test_fraction=test_fraction), seed=seed)


_CALIBRATED: dict[int, Path] = {}


def calibrated_weights(size: int = 32) -> Path:
    """A MobileNet-0.25 weights file whose BatchNorm statistics fit its random weights.

    Random-init weights with the initial BatchNorm statistics (mean 0, variance 1) make the
    activations vanish through 13 blocks, so a "pretrained" backbone made that way learns nothing
    in tests. One step with momentum 0 and learning rate 0 sets every moving statistic to the
    batch statistics, which gives a frozen backbone with healthy activations, offline, in seconds.
    """
    if size in _CALIBRATED:
        return _CALIBRATED[size]
    import atexit
    import shutil
    import tempfile

    from tlkeras._backend import keras

    keras.utils.set_random_seed(123)
    net = keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None, input_shape=(size, size, 3))
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    pixels = np.random.default_rng(5).uniform(-1, 1, (64, size, size, 3)).astype("float32")
    net.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    net.fit(pixels, net.predict(pixels, verbose=0), batch_size=64, epochs=1, verbose=0)
    folder = Path(tempfile.mkdtemp(prefix="tlkeras-test-weights-"))
    atexit.register(shutil.rmtree, folder, True)  # the suite leaves nothing in the temp directory
    path = folder / f"mobilenet_0.25_{size}_calibrated.h5"
    net.save_weights(str(path))
    _CALIBRATED[size] = path
    return path


def make_hub_module(path: Path, dim: int = 8, offset: float = 0.0) -> Path:
    """Writes a tiny reusable SavedModel in TF-Hub's convention (``__call__``, ``variables``,
    ``trainable_variables``): ``relu((mean pixel per channel) * 4 + offset) @ kernel``, ``dim``
    features, one trainable 3 x ``dim`` kernel."""
    from tlkeras._backend import tf

    kernel = tf.Variable(tf.random.stateless_normal([3, dim], seed=[1, 2]), name="kernel")

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def call(images):
        return tf.nn.relu(tf.matmul(tf.reduce_mean(images, axis=[1, 2]) * 4.0 + offset, kernel))

    root = tf.train.Checkpoint()
    root.kernel = kernel
    root.variables = [kernel]
    root.trainable_variables = [kernel]
    root.__call__ = call
    tf.saved_model.save(root, str(path))
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A 3-class folder (12 PNGs of 40x40 per class), no split subfolders."""
    return make_image_folder(tmp_path / "images")


def tiny_config(**overrides):
    """A RunConfig for fast tests: MobileNet-0.25 with calibrated random weights, 32 px, short phases."""
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    config = RunConfig(
        data=DataConfig(image_size=32, batch_size=16, augment="off"),
        model=ModelConfig(backbone="mobilenet", alpha=0.25, weights=str(calibrated_weights(32)), dropout=0.0),
        train=TrainConfig(phase1_epochs=2, phase2_epochs=1, verbose=0, early_stopping_patience=0),
        report=False,  # the page costs seconds per run; the tests that check it turn it on
    )
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            setattr(getattr(config, section), name, value)
        else:
            setattr(config, key, value)
    return config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A trained run directory (3 classes, 32 px MobileNet-0.25, calibrated weights) with a test split."""
    from tlkeras.train.run import train_model

    root = tmp_path_factory.mktemp("tiny_run")
    data = make_image_folder(root / "images", per_class=16)
    config = tiny_config(output_dir=str(root / "runs"), name="tiny")
    config.data.source = str(data)
    result = train_model(config)
    return result.run_dir


@pytest.fixture
def flowers5() -> Path:
    if not FLOWERS5.is_dir():
        pytest.skip("../shared/data/flowers5 is not present")
    return FLOWERS5


@pytest.fixture
def mobilenet_weights() -> Path:
    if not MOBILENET_025.is_file():
        pytest.skip("../shared/weights/mobilenet_0.25_224_imagenet_no_top.h5 is not present")
    return MOBILENET_025


def needs_web_runtime(modality: str = "image") -> None:
    """Skips the calling test without Chromium, websocket-client, mediapipe (the metadata writers)
    or the MediaPipe Tasks for Web npm package (``npm ci`` in the checkout)."""
    from tlkeras.core.browser import BrowserUnavailable, find_chromium
    from tlkeras.errors import TLKerasError

    try:
        find_chromium()
    except BrowserUnavailable as exc:
        pytest.skip(str(exc))
    pytest.importorskip("mediapipe")
    from tlkeras.export.web import find_mediapipe_web

    try:
        find_mediapipe_web(modality)
    except TLKerasError as exc:
        pytest.skip(str(exc))


# Files whose tests are long and share only cheap fixtures: under pytest-xdist each of their tests
# may run on any worker. Every other file stays on one worker (its module fixtures, such as the
# hostile-input world or the browser bundles, are built once).
_SPREAD = {"test_notebooks", "test_quickstart", "test_resume"}
# The longest files start first, so no worker is left alone with one at the end.
_FIRST = ["test_notebooks", "test_quickstart", "test_resume", "test_detection", "test_optimize", "test_segmentation", "test_text",
          "test_hf_bert", "test_web", "test_tune", "test_export"]


def pytest_collection_modifyitems(config, items):
    def module(item) -> str:
        return item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""

    for item in items:
        name = module(item)
        item.add_marker(pytest.mark.xdist_group(item.nodeid if name in _SPREAD else name))
    items.sort(key=lambda item: _FIRST.index(module(item)) if module(item) in _FIRST else len(_FIRST))
