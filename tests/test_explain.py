"""Grad-CAM: agreement with CAM, localization of a trained model, overlays, gallery, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_config

from tlkeras._backend import keras, tf
from tlkeras.errors import TLKerasError
from tlkeras.explain.gradcam import cam_layer, gradcam, overlay


def test_gradcam_is_cam_for_a_pooled_linear_head():
    """With GAP + Dense on the last feature map, Grad-CAM reduces to CAM (Selvaraju et al., sec. 3.1)."""
    from tlkeras import build_model

    keras.utils.set_random_seed(3)
    model = build_model(tiny_config().model, 3, 64)
    dense = model.get_layer("head_dense")
    kernel, bias = dense.get_weights()
    dense.set_weights([np.random.default_rng(0).normal(size=kernel.shape).astype(np.float32), bias])
    images = np.random.default_rng(1).integers(0, 255, (4, 64, 64, 3)).astype(np.uint8)
    heat, classes, probs = gradcam(model, images, 1, layer="conv_pw_13_relu")
    assert heat.shape == (4, 64, 64) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    np.testing.assert_array_equal(classes, [1, 1, 1, 1])
    np.testing.assert_allclose(probs, model.predict(images.astype(np.float32), verbose=0), atol=1e-5)
    features = keras.Model(model.inputs, model.get_layer("conv_pw_13_relu").output).predict(images.astype(np.float32), verbose=0)
    cam = np.maximum(features @ dense.get_weights()[0][:, 1], 0.0)
    cam = cam / np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
    expected = tf.image.resize(cam[..., None], (64, 64), method="bilinear")[..., 0].numpy()
    np.testing.assert_allclose(heat, expected, atol=1e-4)
    # Another class gives another map; the default explains the predicted class.
    other, _, _ = gradcam(model, images, 2, layer="conv_pw_13_relu")
    assert not np.allclose(other, heat, atol=1e-3)
    _, predicted, _ = gradcam(model, images)
    np.testing.assert_array_equal(predicted, probs.argmax(1))
    # At 64 px the last map is 2 x 2; the default layer is the last one with >= 4 x 4 positions.
    assert cam_layer(model) == "conv_pw_11_relu"
    with pytest.raises(TLKerasError, match="no layer"):
        gradcam(model, images, layer="nope")
    with pytest.raises(TLKerasError, match="feature map"):
        gradcam(model, images, layer="head_dense")
    with pytest.raises(TLKerasError, match="class index"):
        gradcam(model, images, 3)
    with pytest.raises(TLKerasError, match="takes N x 64 x 64 x 3"):
        gradcam(model, images[:, :32, :32])


def _objects(n, size, box, seed):
    """Plain grey images; class 1 has one bright square at a random place, class 0 none."""
    rng = np.random.default_rng(seed)
    x = np.clip(90 + rng.normal(0, 3, (n, size, size, 3)), 0, 255)
    y = np.arange(n) % 2
    corners = rng.integers(0, size - box, (n, 2))
    for i in np.flatnonzero(y == 1):
        r, c = corners[i]
        x[i, r:r + box, c:c + box] = 250
    return x.astype(np.uint8), y, corners


def test_heatmap_peaks_inside_the_object(mobilenet_weights):
    from tlkeras.core.data import DataConfig, from_arrays
    from tlkeras.train.run import train_model

    size, box = 96, 28
    x, y, _ = _objects(80, size, box, seed=0)
    test_x, test_y, corners = _objects(40, size, box, seed=1)
    bundle = from_arrays(x, y, class_names=["empty", "object"], config=DataConfig(val_fraction=0.25, test_fraction=0.0))
    config = tiny_config(train__phase1_epochs=10, train__phase1_lr=1e-2, train__phase2_epochs=0)
    config.model.weights = str(mobilenet_weights)
    model = train_model(config, bundle, write=False).model
    positive = np.flatnonzero(test_y == 1)
    heat, _, probs = gradcam(model, test_x[positive], 1)
    assert np.mean(probs.argmax(1) == 1) >= 0.9  # the model found the objects
    hits = []
    for h, (r, c) in zip(heat, corners[positive]):
        i, j = np.unravel_index(np.argmax(h), h.shape)
        hits.append(r <= i < r + box and c <= j < c + box)
    # Chance (a uniformly random peak) is box^2 / size^2 = 8.5%.
    assert np.mean(hits) >= 0.8


def test_overlay_blends_and_resizes():
    image = np.full((30, 40, 3), 100, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[:4, :4] = 1.0
    out = overlay(image, heat, alpha=0.6)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    hot, cold = out[2, 2].astype(int), out[28, 38].astype(int)
    assert np.abs(hot - 100).sum() > np.abs(cold - 100).sum()  # more color where the map is high
    assert np.array_equal(overlay(image, heat, alpha=0.0), image)
    with pytest.raises(TLKerasError, match="alpha"):
        overlay(image, heat, alpha=2.0)


def test_cli_writes_overlays_and_a_gallery_of_mistakes(tiny_run, tmp_path, capsys):
    from PIL import Image

    from tlkeras.config import load_config
    from tlkeras.explain.__main__ import main

    source = load_config(tiny_run / "config.yaml").data.source
    folder = sorted(p for p in __import__("pathlib").Path(source).iterdir() if p.is_dir())[0]
    one = sorted(folder.glob("*.png"))[0]
    out = tmp_path / "overlays"
    gallery = tmp_path / "gallery.png"
    assert main([str(tiny_run), str(one), str(folder), "--output-dir", str(out), "--mistakes", "--split", "val",
                 "--gallery", str(gallery), "--top", "3"]) == 0
    printed = capsys.readouterr().out
    files = sorted(out.glob("*_gradcam.png"))
    assert len(files) == len(list(folder.glob("*.png")))  # the file given twice is explained once
    with Image.open(files[0]) as img:
        with Image.open(one) as original:
            assert img.size == (original.size[0], original.size[1] + 14)  # original size plus the caption strip
    assert "Grad-CAM layer" in printed
    listing = json.loads(gallery.with_suffix(".json").read_text())
    assert listing["split"] == "val" and listing["count"] > 0
    probabilities = [m["probability"] for m in listing["shown"]]
    assert probabilities == sorted(probabilities, reverse=True) and len(probabilities) <= 3
    assert all(m["true"] != m["predicted"] for m in listing["shown"])
    assert (listing["gallery"] is not None) == bool(listing["errors"])
    if listing["errors"]:
        assert gallery.is_file()
    assert not (tiny_run / "explanations").exists()
    # Bad input: one line on stderr, exit code 2.
    for argv, message in (([str(tiny_run)], "nothing to explain"), ([str(tiny_run), str(tmp_path / "missing.png")], "does not exist"),
                          ([str(tiny_run), str(one), "--class", "purple", "--output-dir", str(out)], "unknown class"),
                          ([str(tiny_run), str(one), "--layer", "nope", "--output-dir", str(out)], "no layer"),
                          ([str(tmp_path / "norun"), str(one)], "does not exist")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
