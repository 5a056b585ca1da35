"""Temperature scaling, expected calibration error and the "unknown" threshold (tlkeras.core.calibration)."""

from __future__ import annotations

import numpy as np
import pytest


def _overconfident_model(scale: float = 25.0, classes: int = 3, fused: bool = False):
    """A tiny softmax classifier whose logits are ``scale`` times too large: right most of the time,
    but nearly certain even when wrong."""
    from tlkeras._backend import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if fused:
        outputs = keras.layers.Dense(classes, activation="softmax", name="head_dense")(x)
    else:
        x = keras.layers.Dense(classes, name="head_dense")(x)
        outputs = keras.layers.Activation("softmax", name="head_output")(x)
    model = keras.Model(inputs, outputs)
    # Class c's logit is the mean of colour channel c (plus bias 0), scaled up.
    kernel = np.eye(3, classes, dtype="float32") * scale
    model.get_layer("head_dense").set_weights([kernel, np.zeros(classes, "float32")])
    return model


def _noisy_split(n: int = 300, seed: int = 0, noise: float = 0.35):
    """Images whose brightest channel is their label, with noise, so ~15-25% are misread."""
    from tlkeras.core.data import Split

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    base = np.full((n, 3), 0.3) + rng.normal(0, noise, (n, 3))
    base[np.arange(n), y] += 0.35
    x = np.clip(base, 0, 1)[:, None, None, :] * np.ones((1, 4, 4, 1))
    return Split((x * 255).astype("uint8"), y)


@pytest.mark.parametrize("fused", [False, True], ids=["dense+activation", "dense-softmax"])
def test_temperature_scaling_lowers_val_nll_of_an_overconfident_model(fused, tmp_path):
    from tlkeras._backend import keras
    from tlkeras.core.calibration import calibrate_model, model_logits, negative_log_likelihood
    from tlkeras.core.metrics import predict

    model = _overconfident_model(fused=fused)
    val, test = _noisy_split(seed=1), _noisy_split(seed=2)
    before = predict(model, val.x)
    layers_before = len(model.layers)
    accuracy = float(np.mean(before.argmax(1) == val.y))
    assert 0.6 < accuracy < 0.95  # right mostly, wrong sometimes: the over-confidence shows
    result = calibrate_model(model, val, "softmax", eval_split=test)
    after = predict(model, val.x)
    assert result["temperature"] > 2.0  # logits 25x too large must be cooled down
    assert result["nll_after"] < result["nll_before"] - 0.1
    assert result["ece_after"] < result["ece_before"]
    assert result["eval"]["ece_after"] < result["eval"]["ece_before"]  # holds on held-out data too
    # The model itself is calibrated: its outputs are the NLL-optimal ones, with no new layer
    # and unchanged decisions.
    y = val.y
    nll_model = float(-np.mean(np.log(np.maximum(after[np.arange(len(y)), y], 1e-12))))
    assert nll_model == pytest.approx(result["nll_after"], abs=1e-3)
    assert len(model.layers) == layers_before
    assert np.array_equal(after.argmax(1), before.argmax(1))
    assert negative_log_likelihood(model_logits(model, val.x), y) == pytest.approx(result["nll_after"], abs=1e-4)
    # ... and stays so after saving and loading.
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(predict(loaded, val.x), after, atol=1e-6)


def test_fit_temperature_recovers_a_known_temperature():
    from tlkeras.core.calibration import fit_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 5))
    true_t = 2.5
    p = np.exp(logits / true_t)
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p])  # labels drawn from softmax(logits / 2.5)
    assert fit_temperature(logits, y) == pytest.approx(true_t, rel=0.08)
    # Labels that always follow the argmax make sharpening optimal, up to the bound.
    assert fit_temperature(logits, logits.argmax(1)) == pytest.approx(0.1, rel=0.02)


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95, 1.0])
def test_threshold_gives_the_recall_it_promises(target):
    from tlkeras.core.calibration import unknown_threshold

    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.uniform(0.3, 1.0, 97), [0.7, 0.7, 0.7]])  # ties too
    t = unknown_threshold(scores, target)
    assert np.mean(scores >= t) >= target
    # It is the tightest such threshold: the next higher score keeps fewer than promised.
    higher = scores[scores > t]
    if len(higher):
        assert np.mean(scores >= higher.min()) < target


def test_threshold_on_val_of_a_calibrated_model():
    from tlkeras.core.calibration import calibrate_model
    from tlkeras.core.metrics import predict

    model = _overconfident_model()
    val = _noisy_split(seed=4, n=201)
    result = calibrate_model(model, val, "softmax", target_recall=0.9)
    scores = predict(model, val.x).max(1)
    achieved = float(np.mean(scores >= result["unknown_threshold"] - 1e-6))
    assert achieved >= 0.9 and result["val_recall_at_threshold"] >= 0.9
    assert achieved == pytest.approx(result["val_recall_at_threshold"], abs=1.5 / len(scores))


def test_expected_calibration_error():
    from tlkeras.core.calibration import expected_calibration_error, reliability_bins

    # Two images at 0.9 confidence, one right, one wrong: |0.5 - 0.9| = 0.4.
    probs = np.array([[0.9, 0.1], [0.9, 0.1]])
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.4)
    # Confidence that matches accuracy in every bin gives ECE close to 0.
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20000)
    y_hit = rng.uniform(size=conf.size) < conf
    probs = np.stack([conf, 1 - conf], 1)
    assert expected_calibration_error(probs, np.where(y_hit, 0, 1)) < 0.01
    bins = reliability_bins(probs, np.where(y_hit, 0, 1), 10)
    assert sum(bins["count"]) == conf.size and bins["count"][:5] == [0] * 5  # nothing below 0.5


def test_unknown_rejection():
    from tlkeras.core.calibration import unknown_rejection

    known = np.array([0.9, 0.8, 0.95, 0.6])
    unknown = np.array([0.3, 0.5, 0.85])
    r = unknown_rejection(known, unknown, threshold=0.7)
    assert r["false_accept_rate"] == pytest.approx(1 / 3)
    assert r["known_recall"] == pytest.approx(3 / 4)
    assert r["auroc"] == pytest.approx(10 / 12)  # pairs (known > unknown): 10 of 12


def test_calibration_refuses_what_it_cannot_scale():
    from tlkeras._backend import keras
    from tlkeras.core.calibration import apply_temperature, calibrate_model, unknown_threshold
    from tlkeras.errors import TLKerasError

    inputs = keras.Input((4, 4, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    sigmoid = keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid")(x))
    with pytest.raises(TLKerasError, match="softmax"):
        apply_temperature(sigmoid, 2.0)
    with pytest.raises(TLKerasError, match="softmax heads"):
        calibrate_model(sigmoid, _noisy_split(n=10), "sigmoid")
    with pytest.raises(TLKerasError, match="positive"):
        apply_temperature(_overconfident_model(), 0.0)
    with pytest.raises(TLKerasError, match="target recall"):
        unknown_threshold(np.array([0.5]), 1.5)
