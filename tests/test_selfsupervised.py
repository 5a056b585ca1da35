"""Self-supervised: the NT-Xent loss, SimCLR views, linear probes and a SimCLR run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import make_bundle, tiny_config

from tlkeras._backend import tf
from tlkeras.adapt.simclr import SimCLROptions, nt_xent_loss, simclr_view, train_simclr
from tlkeras.core.loading import load_run_model
from tlkeras.errors import TLKerasError


def _bundle(n=36, size=32, classes=3, seed=0):
    return make_bundle(n, size, classes, seed, test_fraction=0.25)


def test_nt_xent_is_lower_for_matched_pairs_than_for_shuffled_pairs():
    rng = np.random.default_rng(0)
    z1 = rng.normal(size=(16, 8)).astype("float32")
    z2 = z1 + 0.1 * rng.normal(size=(16, 8)).astype("float32")
    matched = float(nt_xent_loss(z1, z2, 0.2))
    shuffled = float(nt_xent_loss(z1, z2[rng.permutation(16)], 0.2))
    assert matched < 1.0 and shuffled > math.log(31) > matched + 2.0  # log(2N-1): chance
    # Embeddings that carry no information: every candidate is equally likely, loss = log(2N - 1).
    same = np.ones((16, 8), "float32")
    assert float(nt_xent_loss(same, same, 0.5)) == pytest.approx(math.log(31), rel=1e-5)
    # Lower temperature sharpens: matched pairs get an even lower loss.
    assert float(nt_xent_loss(z1, z2, 0.05)) < matched
    with pytest.raises(TLKerasError, match="temperature"):
        nt_xent_loss(z1, z2, 0.0)


def test_simclr_views_differ_and_stay_in_range():
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32"))
    a, b = simclr_view(x), simclr_view(x)
    assert a.shape == x.shape and float(tf.reduce_min(a)) >= 0.0 and float(tf.reduce_max(a)) <= 255.0
    assert float(tf.reduce_mean(tf.abs(a - b))) > 5.0


def test_simclr_trains_the_top_of_the_backbone_then_fine_tunes(tmp_path):
    bundle = _bundle()
    config = tiny_config(output_dir=str(tmp_path / "runs"), name="simclr", train__phase1_epochs=1,
                         train__phase2_epochs=0, train__unfreeze="blocks:1")
    unlabeled = _bundle(n=24, seed=4).train.x
    import h5py

    with h5py.File(config.model.weights, "r") as f:  # the starting point: the "pretrained" weights
        start = {name: f[name][name]["kernel:0"][()] for name in ("conv_pw_5", "conv_pw_13")}
        start_mean = f["conv_pw_13_bn"]["conv_pw_13_bn"]["moving_mean:0"][()]
    result = train_simclr(config, unlabeled, SimCLROptions(epochs=2, batch_size=8), data=bundle)
    model = result.model
    # Phase 2 is off, so a change in the top block can only come from SimCLR; below it nothing moves.
    assert not np.allclose(model.get_layer("conv_pw_13").get_weights()[0], start["conv_pw_13"])
    np.testing.assert_array_equal(model.get_layer("conv_pw_5").get_weights()[0], start["conv_pw_5"])
    np.testing.assert_array_equal(model.get_layer("conv_pw_13_bn").moving_mean.numpy(), start_mean)
    assert {"phase1", "phase2", "simclr", "total"} <= set(result.timings)
    probe = result.metrics["linear_probe"]
    assert probe["split"] == "test" and probe["before"]["test"] == len(bundle.test)
    for key in ("before", "after"):
        assert 0.0 <= probe[key]["accuracy"] <= 1.0
    reloaded = load_run_model(result.run_dir)  # the plain classifier: no projection head
    assert reloaded.output_shape == (None, 3) and not [l for l in reloaded.layers if "projection" in l.name]
    history = json.loads((result.run_dir / "history.json").read_text())
    assert history["phase"][:2] == [0, 0] and history["simclr_loss"][0] > 0
    assert json.loads((result.run_dir / "unlabeled.json").read_text())["method"] == "simclr"


def test_simclr_bad_inputs():
    bundle = _bundle()
    with pytest.raises(TLKerasError, match="needs trainable backbone layers"):
        train_simclr(tiny_config(train__unfreeze="none"), bundle.train.x, data=bundle, write=False)
    with pytest.raises(TLKerasError, match="no unlabeled images"):
        train_simclr(tiny_config(), np.zeros((0, 32, 32, 3), np.uint8), data=bundle, write=False)
    with pytest.raises(TLKerasError, match="batch_size must be >= 2"):
        SimCLROptions(batch_size=1).validate()
