"""Semi-supervised: pseudo-label selection, the augmentations, FixMatch's step, and both runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_bundle, make_image_folder, tiny_config

from tlkeras._backend import keras, tf
from tlkeras.adapt.semisupervised import (
    FixMatchModel,
    FixMatchOptions,
    PseudoLabelOptions,
    cutout,
    random_translate,
    select_pseudo_labels,
    strong_augment,
    train_fixmatch,
    weak_augment,
)
from tlkeras.core.loading import load_run_model
from tlkeras.errors import TLKerasError


def _bundle(n=36, size=32, classes=3, seed=0):
    return make_bundle(n, size, classes, seed, test_fraction=0.0)


def test_pseudo_labels_respect_the_threshold_and_the_cap():
    probs = np.random.default_rng(0).dirichlet([0.3] * 4, size=500)
    idx, labels, confidence = select_pseudo_labels(probs, 0.7)
    assert len(idx) and np.all(probs[idx].max(axis=1) >= 0.7)
    rest = np.setdiff1d(np.arange(500), idx)
    assert np.all(probs[rest].max(axis=1) < 0.7), "every confident prediction is taken"
    np.testing.assert_array_equal(labels, probs[idx].argmax(axis=1))
    np.testing.assert_allclose(confidence, probs[idx].max(axis=1))
    capped, capped_labels, capped_conf = select_pseudo_labels(probs, 0.7, max_per_class=5)
    assert np.bincount(capped_labels).max() <= 5 and set(capped) <= set(idx)
    for c in np.unique(capped_labels):  # the cap keeps the most confident of each class
        dropped = [i for i in idx[labels == c] if i not in capped]
        if dropped:
            assert probs[dropped].max() <= capped_conf[capped_labels == c].min()
    for bad in (0.0, 1.0, 1.5, -0.1, "high"):
        with pytest.raises(TLKerasError, match=r"threshold must be"):
            select_pseudo_labels(probs, bad)
    with pytest.raises(TLKerasError, match=r"in \(0, 1\)"):
        FixMatchOptions(threshold=1.2).validate()


def test_weak_and_strong_views():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32"))
    tf.random.set_seed(0)
    weak, strong = weak_augment(x), strong_augment(x)
    for view in (weak, strong):
        assert view.shape == x.shape and float(tf.reduce_min(view)) >= 0.0 and float(tf.reduce_max(view)) <= 255.0
    # A translation moves pixels, it does not invent them: a constant image stays constant.
    flat = tf.fill([2, 32, 32, 3], 77.0)
    np.testing.assert_allclose(random_translate(flat, 0.125).numpy(), 77.0, atol=1e-3)
    # The strong view changes colours (contrast, saturation, gray, cutout); the weak view does not.
    def colour_gap(view):
        return float(tf.reduce_mean(tf.abs(tf.sort(tf.reshape(view, [8, -1]), axis=1) - tf.sort(tf.reshape(x, [8, -1]), axis=1))))
    assert colour_gap(weak) < 20.0 < colour_gap(strong)
    holes = cutout(tf.zeros([4, 32, 32, 3]), 0.5)
    assert float(tf.reduce_max(holes)) == pytest.approx(127.5) and float(tf.reduce_mean(holes)) < 127.5 * 0.3


def test_pseudo_labelling_through_the_cli_writes_a_run(tmp_path, capsys):
    from tlkeras.adapt import __main__ as adapt

    labelled = make_image_folder(tmp_path / "labelled", per_class=8, size=32)
    unlabelled = make_image_folder(tmp_path / "unlabelled", per_class=6, size=32, seed=3)  # folders are ignored
    config = tiny_config()
    rc = adapt.main([
        "pseudo-label", "--data", str(labelled), "--unlabeled", str(unlabelled), "--threshold", "0.4", "--rounds", "1",
        "--no-fresh-model", "--backbone", "mobilenet", "--alpha", "0.25", "--weights", config.model.weights,
        "--image-size", "32", "--phase1-epochs", "1", "--phase2-epochs", "0", "--val-fraction", "0.25",
        "--test-fraction", "0.0", "--verbose", "0", "--output-dir", str(tmp_path / "runs"), "--name", "pl",
    ])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "round 1:" in out.out
    run = tmp_path / "runs" / "pl"
    metrics = json.loads((run / "metrics.json").read_text())
    first = metrics["rounds"][1]
    assert first["pseudo_labels"] == sum(first["per_class"].values()) <= 18
    assert json.loads((run / "unlabeled.json").read_text())["options"]["threshold"] == 0.4
    assert json.loads((run / "history.json").read_text())["round"][-1] == 1
    assert load_run_model(run).output_shape == (None, 3)


def test_fixmatch_run_loads_its_step_masks_unconfident_targets_and_bad_inputs_fail(tmp_path):
    bundle = _bundle()
    config = tiny_config(output_dir=str(tmp_path / "runs"), name="fm", train__phase1_epochs=1, train__unfreeze="blocks:1")
    unlabeled = _bundle(n=24, seed=5).train.x
    result = train_fixmatch(config, unlabeled, FixMatchOptions(epochs=1, threshold=0.5), data=bundle)
    assert {"consistency_loss", "mask_rate", "val_accuracy"} <= set(result.history)
    assert 0.0 <= result.metrics["fixmatch"]["last_mask_rate"] <= 1.0
    assert {"phase1", "phase2", "total"} <= set(result.timings)
    model = load_run_model(result.run_dir)
    x = bundle.val.x.astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), result.model.predict(x, verbose=0), atol=1e-5)
    # One FixMatch step, eagerly, on the trained classifier: only confident weak-view predictions
    # become targets (learning rate 0, so the model does not change between the two checks).
    xl, yl = tf.constant(bundle.train.x[:4].astype("float32")), tf.one_hot(bundle.train.y[:4], 3)
    xu = tf.constant(unlabeled[:8].astype("float32"))
    steps = {}
    for threshold in (0.999999, 1e-6):
        trainer = FixMatchModel(result.model, FixMatchOptions(threshold=threshold))
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
        steps[threshold] = {k: float(v) for k, v in trainer.train_step(((xl, yl), xu)).items()}
    assert steps[0.999999]["mask_rate"] == 0.0 and steps[0.999999]["consistency_loss"] == 0.0
    assert steps[1e-6]["mask_rate"] == 1.0 and steps[1e-6]["consistency_loss"] > 0.0
    assert steps[1e-6]["loss"] == pytest.approx(steps[1e-6]["supervised_loss"] + steps[1e-6]["consistency_loss"], rel=1e-4)
    with pytest.raises(TLKerasError, match="no unlabeled images"):
        train_fixmatch(tiny_config(), None, data=bundle, write=False)
    with pytest.raises(TLKerasError, match="unlabeled images are 40x40 but the model takes 32x32"):
        train_fixmatch(tiny_config(), np.zeros((3, 40, 40, 3), np.uint8), data=bundle, write=False)
    with pytest.raises(TLKerasError, match="threshold"):
        PseudoLabelOptions(threshold=0).validate()


def test_train_cli_runs_a_technique_and_rejects_incomplete_flags(tmp_path, capsys):
    from tlkeras.train import __main__ as train

    labelled = make_image_folder(tmp_path / "labelled", per_class=8, size=32)
    unlabelled = make_image_folder(tmp_path / "unlabelled", per_class=4, size=32, seed=5)
    config = tiny_config()
    common = [
        "--data", str(labelled), "--backbone", "mobilenet", "--alpha", "0.25", "--weights", config.model.weights,
        "--image-size", "32", "--phase1-epochs", "1", "--phase2-epochs", "0", "--val-fraction", "0.25",
        "--test-fraction", "0.0", "--verbose", "0", "--output-dir", str(tmp_path / "runs"),
    ]
    assert train.main(common + ["--technique", "fixmatch"]) == 2
    assert "needs --unlabeled" in capsys.readouterr().err
    assert train.main(common + ["--technique", "fixmatch", "--unlabeled", str(unlabelled), "--target-test", str(labelled)]) == 2
    assert "only applies to dann, mmd and importance" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    rc = train.main(common + ["--technique", "pseudo-label", "--unlabeled", str(unlabelled), "--name", "pl"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "round 1:" in out.out and "run directory" in out.out
    assert f"report: {tmp_path / 'runs' / 'pl' / 'report.html'}" in out.out  # a technique's run gets its page too
    assert json.loads((tmp_path / "runs" / "pl" / "unlabeled.json").read_text())["method"] == "pseudo_label"
