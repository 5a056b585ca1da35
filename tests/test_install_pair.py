"""tensorflow-model-optimization and MediaPipe Tasks work in one process, with the absl-py the
documented install leaves (mediapipe's ``absl-py~=2.3``; tfmot 0.8.1's metadata still says
``~=1.2``, a stale pin: requirements-mobile.txt is installed with ``--no-deps`` so pip prints no
conflict ERROR). A tiny model is pruned, quantization-aware trained and converted; LiteRT and
MediaPipe's ImageClassifier then give the same answers on it."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

from tlkeras._backend import keras, tf
from tlkeras._backend import tfmot as load_tfmot

SIZE, CLASSES = 32, 3


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.integers(0, 80, (n, SIZE, SIZE, 3)).astype("float32")
    x[np.arange(n), :, :, y] += 150.0  # the class is the bright channel: learnable in a few steps
    return x, y


def test_tfmot_prunes_and_quantizes_and_mediapipe_runs_the_result():
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import BaseOptions, vision

    absl = importlib.metadata.version("absl-py")
    assert int(absl.split(".")[0]) >= 2, f"absl-py {absl}: mediapipe needs ~=2.3 (pip install --no-deps -r requirements-mobile.txt)"
    tfmot = load_tfmot()
    keras.utils.set_random_seed(0)
    x, y = _images(48, 0)
    inputs = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(h))

    # Pruning: half of every kernel is zero after stripping.
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1))
    pruned.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    for layer in stripped.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            zeros = float(np.mean(layer.get_weights()[0] == 0))
            assert 0.45 <= zeros <= 0.55, f"{layer.name}: {zeros:.2f} of the kernel is zero"

    # Quantization-aware training, then an int8 file with uint8 input (MediaPipe loads it without metadata).
    qat = tfmot.quantization.keras.quantize_model(stripped)
    qat.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    qat.fit(x, y, epochs=3, batch_size=16, verbose=0)
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in x[:16])
    converter.inference_input_type = tf.uint8
    content = converter.convert()

    from ai_edge_litert.interpreter import Interpreter

    test_x, _ = _images(8, 1)
    frames = np.clip(test_x, 0, 255).astype(np.uint8)
    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.uint8
    assert any(t["dtype"] == np.int8 for t in interpreter.get_tensor_details()), "the converted model is not int8"
    litert = []
    for frame in frames:
        interpreter.set_tensor(inp["index"], frame[None])
        interpreter.invoke()
        litert.append(np.array(interpreter.get_tensor(out["index"])[0], np.float64))
    litert = np.array(litert)

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_buffer=content), max_results=CLASSES)
    agree = 0
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for frame, scores in zip(frames, litert):
            categories = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame)))
            top = categories.classifications[0].categories[0]
            agree += scores[top.index] >= scores.max() - 1e-6  # ties: either answer is the same answer
            assert abs(float(top.score) - scores[top.index]) < 1e-3
    assert agree == len(frames), f"MediaPipe agreed with LiteRT on {agree}/{len(frames)} images"
