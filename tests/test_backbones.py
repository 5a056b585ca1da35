"""Backbone registry, model building and the unfreeze invariants."""

from __future__ import annotations

import numpy as np
import pytest

from tlkeras import ModelConfig, TLKerasError, build_model, get_backbone, list_backbones
from tlkeras._backend import keras
from tlkeras.core.backbones import block_ids
from tlkeras.core.models import backbone_layers, trainable_backbone_layers, unfreeze_backbone

FAMILIES = {
    # name: smallest convenient test size
    "mobilenet": 32,
    "mobilenet_v2": 32,
    "mobilenet_v3_small": 32,
    "mobilenet_v3_large": 32,
    "inception_v3": 75,
    "resnet50": 32,
    "resnet50_v2": 32,
    "efficientnet_b0": 32,
    "efficientnet_b1": 32,
    "efficientnet_b2": 32,
    "efficientnet_b3": 32,
    "efficientnet_v2_b0": 32,
}


def test_registry_lists_every_family():
    assert set(FAMILIES) == set(list_backbones())
    assert get_backbone("MobileNet-V2").name == "mobilenet_v2"
    assert get_backbone("efficientnetb0").name == "efficientnet_b0"
    assert get_backbone("inception_v3").default_size == 299


def test_unknown_backbone_suggests_close_matches():
    with pytest.raises(TLKerasError, match="did you mean .*mobilenet_v2"):
        get_backbone("mobilnet_v2")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_builds_flat_and_blocks_unfreeze_from_top(name):
    size = FAMILIES[name]
    model = build_model(ModelConfig(backbone=name, weights="none"), num_outputs=3, image_size=size)
    # One flat graph: no nested Model, so tfmot sees every layer.
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    out = model.predict(np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32"), verbose=0)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-4)
    # Phase 1: the whole backbone is frozen.
    assert trainable_backbone_layers(model) == []
    opened = unfreeze_backbone(model, name, "blocks:1")
    layers = backbone_layers(model)
    ids = block_ids(get_backbone(name), [l.name for l in layers])
    top_block = ids[-1]
    assert opened, "the top block has weights to train"
    for layer, block in zip(layers, ids):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable
        elif layer.weights:
            assert layer.trainable == (block == top_block), layer.name
    assert len(set(ids)) > 3, "a backbone splits into several blocks"


def test_input_size_below_minimum_is_refused():
    with pytest.raises(TLKerasError, match="at least 75x75"):
        build_model(ModelConfig(backbone="inception_v3", weights="none"), 3, image_size=64)


def test_unfreeze_top_layers_keeps_batchnorm_frozen():
    model = build_model(ModelConfig(backbone="mobilenet", alpha=0.25, weights="none"), 4, 32)
    layers = backbone_layers(model)
    unfreeze_backbone(model, "mobilenet", "layers:10")
    for i, layer in enumerate(layers):
        expected = i >= len(layers) - 10 and not isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable == expected, layer.name
    assert all(l.trainable for l in model.layers if l.name.startswith("head_"))
    unfreeze_backbone(model, "mobilenet", "all")
    assert all(l.trainable != isinstance(l, keras.layers.BatchNormalization) for l in layers)
    unfreeze_backbone(model, "mobilenet", "none")
    assert trainable_backbone_layers(model) == []


def test_preprocessing_inside_the_model_matches_keras_applications():
    from tlkeras._backend import keras as k

    model = build_model(ModelConfig(backbone="resnet50", weights="none"), 2, 32)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    inner = k.Model(model.inputs, model.get_layer("preprocess_caffe").output)
    expected = k.applications.resnet50.preprocess_input(pixels.copy())
    np.testing.assert_allclose(inner.predict(pixels, verbose=0), expected, atol=1e-3)
    mobile = build_model(ModelConfig(backbone="mobilenet_v2", weights="none"), 2, 32)
    scaled = k.Model(mobile.inputs, mobile.get_layer("preprocess_scale").output).predict(pixels, verbose=0)
    np.testing.assert_allclose(scaled, k.applications.mobilenet_v2.preprocess_input(pixels.copy()), atol=1e-5)


def test_heads_and_hidden_layers():
    for head, activation in (("softmax", "softmax"), ("sigmoid", "sigmoid"), ("regression", "linear")):
        model = build_model(ModelConfig(backbone="mobilenet", alpha=0.25, weights="none", head=head, hidden_units=[16, 8], dropout=0.3), 2, 32)
        assert model.get_layer("head_output").activation.__name__ == activation
        assert model.get_layer("head_hidden_0").units == 16 and model.get_layer("head_hidden_1").units == 8
        assert model.get_layer("head_dropout").rate == pytest.approx(0.3)


def test_real_mobilenet_weights_load_and_wrong_width_is_refused(mobilenet_weights):
    model = build_model(ModelConfig(backbone="mobilenet", alpha=0.25, weights=str(mobilenet_weights)), 5, 224)
    reference = keras.applications.MobileNet(alpha=0.25, include_top=False, weights=str(mobilenet_weights), input_shape=(224, 224, 3))
    np.testing.assert_array_equal(model.get_layer("conv_pw_13").get_weights()[0], reference.get_layer("conv_pw_13").get_weights()[0])
    with pytest.raises(TLKerasError, match="does not fit mobilenet alpha=0.5"):
        build_model(ModelConfig(backbone="mobilenet", alpha=0.5, weights=str(mobilenet_weights)), 5, 224)
    with pytest.raises(TLKerasError, match="does not fit mobilenet_v2"):
        build_model(ModelConfig(backbone="mobilenet_v2", weights=str(mobilenet_weights)), 5, 224)


def test_weights_file_that_is_not_hdf5(tmp_path):
    bogus = tmp_path / "weights.h5"
    bogus.write_bytes(b"not an hdf5 file")
    with pytest.raises(TLKerasError, match="does not fit"):
        build_model(ModelConfig(backbone="mobilenet", alpha=0.25, weights=str(bogus)), 2, 32)
    with pytest.raises(TLKerasError, match="does not exist"):
        build_model(ModelConfig(backbone="mobilenet", alpha=0.25, weights=str(tmp_path / "missing.h5")), 2, 32)


def test_imagenet_offline_names_the_alternatives(monkeypatch, tmp_path):
    # An empty KERAS_HOME makes sure no cached file hides the download; this machine is offline.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: no_network())
    with pytest.raises(TLKerasError, match="could not download ImageNet weights.*--weights none"):
        build_model(ModelConfig(backbone="mobilenet", alpha=0.25, weights="imagenet"), 2, 128)
