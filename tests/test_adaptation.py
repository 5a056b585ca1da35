"""Domain adaptation: gradient reversal, MMD, importance weights, and DANN/MMD/importance runs.

Runs use MobileNet-0.25 at 32 px with calibrated random weights as the "pretrained" backbone,
one adaptation epoch and the top block unfrozen, so each takes seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_bundle, make_image_folder, tiny_config

from tlkeras._backend import keras, tf
from tlkeras.adapt.common import load_unlabeled
from tlkeras.adapt.domain import DomainAdaptationOptions, GradientReversal, gaussian_mmd, reversal_schedule
from tlkeras.adapt.importance import ImportanceWeightingOptions, importance_weights
from tlkeras.adapt.run import train_with_unlabeled
from tlkeras.core.loading import load_run_model
from tlkeras.errors import TLKerasError

RUN_FILES = ("config.yaml", "model.keras", "labels.txt", "history.json", "metrics.json", "run.json", "unlabeled.json")


def _bundle(n=36, size=32, classes=3, seed=0):
    return make_bundle(n, size, classes, seed, test_fraction=0.0)


def _shifted(x):
    """A 'target domain': grayscale and lower contrast."""
    gray = x.astype(np.float32).mean(axis=-1, keepdims=True).repeat(3, axis=-1)
    return np.clip(0.5 * gray + 60, 0, 255).astype(np.uint8)


def test_gradient_reversal_flips_and_scales_the_gradient():
    layer = GradientReversal(0.5)
    x = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype("float32"))
    w = tf.constant(np.random.default_rng(1).normal(size=(4, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(w * y)
    np.testing.assert_array_equal(y.numpy(), x.numpy())  # identity on the forward pass
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), -0.5 * w.numpy(), rtol=1e-6)
    layer.set_weight(2.0)  # a schedule changes the weight without rebuilding
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(w * layer(x) ** 2)
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), -2.0 * 2 * w.numpy() * x.numpy(), rtol=1e-5)
    assert not layer.trainable_weights, "the reversal weight is a schedule, not a parameter"
    # Registered, so it (de)serializes without a Lambda or custom_objects.
    config = keras.layers.serialize(GradientReversal(0.25, name="grl"))
    assert keras.layers.deserialize(config).initial_weight == 0.25


def test_reversal_schedule_ramps_from_zero_to_the_maximum():
    values = reversal_schedule(np.linspace(0, 1, 11), max_weight=0.8)
    assert values[0] == 0.0 and np.all(np.diff(values) > 0)
    assert values[-1] == pytest.approx(0.8, abs=0.001)
    assert float(reversal_schedule(tf.constant(0.5), 1.0)) == pytest.approx(reversal_schedule(0.5, 1.0), rel=1e-5)


def test_mmd_is_zero_for_a_sample_with_itself_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    same_distribution = rng.normal(size=(64, 8)).astype("float32")
    assert float(gaussian_mmd(x, x)) == pytest.approx(0.0, abs=1e-6)
    shifts = [0.25, 0.5, 1.0, 2.0]
    for bandwidth in (None, 16.0):  # the mean-distance heuristic and a fixed bandwidth
        values = [float(gaussian_mmd(x, same_distribution + s, bandwidth=bandwidth)) for s in shifts]
        assert np.all(np.diff(values) > 0), values
        assert float(gaussian_mmd(x, same_distribution, bandwidth=bandwidth)) < values[0]


def test_importance_weights_favour_target_like_source_images():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(200, 4))
    target = rng.normal(size=(200, 4)) + np.array([1.5, 0, 0, 0])
    weights, info = importance_weights(source, target, ImportanceWeightingOptions(C=1.0, max_weight=20.0))
    assert weights.shape == (200,) and weights.mean() == pytest.approx(1.0, abs=1e-5)
    assert np.corrcoef(weights, source[:, 0])[0, 1] > 0.7  # closer to the target mean: heavier
    assert info["domain_auc"] > 0.75 and info["effective_sample_size"] < 200
    alike, info_alike = importance_weights(source, rng.normal(size=(200, 4)))
    assert info_alike["domain_auc"] < 0.65 and alike.std() < weights.std()
    with pytest.raises(TLKerasError, match="max_weight"):
        importance_weights(source, target, ImportanceWeightingOptions(max_weight=1.0))


def test_dann_run_loads_reports_the_target_and_exports(tmp_path, capsys):
    source = make_image_folder(tmp_path / "source", per_class=12, size=32)
    target = _shifted(load_unlabeled(source / "red", 32))  # a folder of images, any depth
    config = tiny_config(output_dir=str(tmp_path / "runs"), name="dann", train__phase1_epochs=1, train__unfreeze="blocks:1")
    config.data.source = str(source)
    target_test = (target[:6], np.full(6, 2))  # class "red" is index 2 of blue, green, red
    result = train_with_unlabeled(config, "dann", target, DomainAdaptationOptions(epochs=2), target_test=target_test)
    run = result.run_dir
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    record = json.loads((run / "unlabeled.json").read_text())
    assert record["method"] == "dann" and record["unlabeled"]["count"] == len(target)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["target"]["count"] == 6 and 0.0 <= metrics["target"]["accuracy"] <= 1.0
    history = json.loads((run / "history.json").read_text())
    weights = [w for w, p in zip(history["align_weight"], history["phase"]) if p == 2]
    assert 0.0 < weights[0] < weights[1] <= 1.0, "the reversal weight ramps up"
    assert all(0.0 <= a <= 1.0 for a in history["domain_accuracy"] if a is not None)
    assert json.loads((run / "run.json").read_text())["trainable_backbone_layers"], "top block trained"
    # model.keras is the plain classifier: no reversal layer, no discriminator, same predictions.
    model = load_run_model(run)
    assert not [l for l in model.layers if "domain" in l.name or isinstance(l, GradientReversal)]
    x = target[:4].astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), result.model.predict(x, verbose=0), atol=1e-5)
    from tlkeras.export import __main__ as export

    rc = export.main([str(run), "--quantize", "float32", "--no-micro", "--quiet", "--allow-drop", "--output-dir", str(tmp_path / "bundle")])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "bundle" / "labels.txt").read_text().split() == ["blue", "green", "red"]


@pytest.mark.parametrize("method", ["mmd", "importance"])
def test_mmd_and_importance_weighting_write_runs_that_load(method, tmp_path):
    bundle = _bundle()
    # MMD skips the head warm-up (the DANN test covers it); importance runs both phases, weighted.
    config = tiny_config(output_dir=str(tmp_path / "runs"), name=method, train__phase1_epochs=0 if method == "mmd" else 1,
                         train__phase2_epochs=1, train__unfreeze="blocks:1")
    target = _shifted(bundle.train.x)
    options = DomainAdaptationOptions(epochs=1) if method == "mmd" else ImportanceWeightingOptions()
    result = train_with_unlabeled(config, method, target, options, data=bundle, target_test=(target, bundle.train.y))
    for name in RUN_FILES:
        assert (result.run_dir / name).is_file(), name
    assert "target" in result.metrics
    assert {"phase1", "phase2", "total"} <= set(result.timings)  # what tlkeras.train reports too
    if method == "mmd":
        assert result.history["align_loss"][-1] > 0
    else:
        assert 0.5 <= result.metrics["importance"]["domain_auc"] <= 1.0
    model = load_run_model(result.run_dir)
    assert model.output_shape == (None, 3)


def test_bad_inputs_get_clear_errors(tmp_path, capsys):
    bundle = _bundle()
    config = tiny_config(output_dir=str(tmp_path / "runs"), train__phase1_epochs=0)
    with pytest.raises(TLKerasError, match="no target images"):
        train_with_unlabeled(config, "dann", None, data=bundle, write=False)
    with pytest.raises(TLKerasError, match="target images are 16x16 but the model takes 32x32"):
        train_with_unlabeled(config, "mmd", np.zeros((4, 16, 16, 3), np.uint8), data=bundle, write=False)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(TLKerasError, match="no unlabeled images found"):
        load_unlabeled(tmp_path / "empty", 32)
    with pytest.raises(TLKerasError, match="unknown technique"):
        train_with_unlabeled(config, "coral", bundle.train.x, data=bundle)
    with pytest.raises(TLKerasError, match="method='coral'"):
        DomainAdaptationOptions(method="coral").validate()
    config.train.unfreeze = "none"
    with pytest.raises(TLKerasError, match="needs trainable feature layers"):
        train_with_unlabeled(config, "dann", bundle.train.x, data=bundle, write=False)
    assert not (tmp_path / "runs").exists()
    # The CLI prints the same message on one line and exits 2.
    from tlkeras.adapt import __main__ as adapt

    source = make_image_folder(tmp_path / "images", per_class=4, size=32)
    rc = adapt.main(["dann", "--data", str(source), "--unlabeled", str(tmp_path / "empty"), "--image-size", "32",
                     "--backbone", "mobilenet", "--alpha", "0.25", "--weights", "none", "--output-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no target images found" in err[0]
