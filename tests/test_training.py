"""Two-phase training: feature caching, learning rates, frozen BatchNorm, run directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import calibrated_weights, make_hub_module, make_image_folder, tiny_config

from tlkeras import build_model, from_arrays, load_config
from tlkeras._backend import keras
from tlkeras.core.data import DataConfig
from tlkeras.train.recipe import fit_two_phase, uses_feature_cache
from tlkeras.train.run import train_model


def _bundle(n=48, size=32, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 80, (n, size, size, 3)).astype(np.uint8)
    for c in range(classes):
        x[y == c, :, :, c] += 150  # a learnable colour cue
    return from_arrays(x, y, config=DataConfig(val_fraction=0.25, test_fraction=0.0), seed=seed)


def test_feature_cache_gives_the_same_model_as_training_through_the_backbone():
    bundle = _bundle()
    config = tiny_config(train__phase1_epochs=3, train__phase2_epochs=0, train__phase1_solver="keras")
    keras.utils.set_random_seed(0)
    cached = build_model(config.model, bundle.num_outputs, 32)
    direct = keras.models.clone_model(cached)
    direct.set_weights(cached.get_weights())
    config.train.feature_cache = "on"
    assert uses_feature_cache(config)
    fit_two_phase(cached, bundle, config)
    config.train.feature_cache = "off"
    assert not uses_feature_cache(config)
    fit_two_phase(direct, bundle, config)
    before = build_model(config.model, bundle.num_outputs, 32)  # different init: the check can fail
    dense_cached = cached.get_layer("head_dense").get_weights()[0]
    assert not np.allclose(dense_cached, before.get_layer("head_dense").get_weights()[0], atol=1e-3)
    for a, b in zip(cached.get_weights(), direct.get_weights()):
        np.testing.assert_allclose(a, b, atol=2e-5)
    probe = bundle.val.x.astype("float32")
    np.testing.assert_allclose(cached.predict(probe, verbose=0), direct.predict(probe, verbose=0), atol=1e-5)


class _RecordLearningRate(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_begin(self, logs=None):
        lr = self.model.optimizer.learning_rate
        self.rates.append(float(lr(0) if callable(lr) else keras.backend.get_value(lr)))


def test_phase2_trains_top_layers_at_a_lower_rate_and_batchnorm_stays_frozen():
    bundle = _bundle()
    config = tiny_config(train__phase1_epochs=1, train__phase2_epochs=2, train__unfreeze="blocks:2", train__phase2_lr_factor=0.05, train__warmup_epochs=0.0, train__phase1_solver="keras")
    config.data.augment = "light"
    model = build_model(config.model, bundle.num_outputs, 32)
    bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    stats_before = [l.moving_mean.numpy().copy() for l in bn]
    frozen_before = model.get_layer("conv_pw_1").get_weights()[0].copy()
    top_before = model.get_layer("conv_pw_13").get_weights()[0].copy()
    recorder = _RecordLearningRate()
    history, timings = fit_two_phase(model, bundle, config, callbacks=[recorder])
    assert recorder.rates[1] == pytest.approx(recorder.rates[0] * 0.05)
    assert history["phase"] == [1, 2, 2]
    for layer, before in zip(bn, stats_before):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), before)
    np.testing.assert_array_equal(model.get_layer("conv_pw_1").get_weights()[0], frozen_before)
    assert not np.array_equal(model.get_layer("conv_pw_13").get_weights()[0], top_before)
    assert timings["phase2_trainable_layers"] == 4  # conv_dw/pw 12 and 13


def test_train_writes_a_complete_run_directory_and_replays(tmp_path):
    data = make_image_folder(tmp_path / "images", per_class=10)
    config = tiny_config(output_dir=str(tmp_path / "runs"), name="first")
    config.data.source = str(data)
    result = train_model(config)
    run = result.run_dir
    for name in ("config.yaml", "model.keras", "labels.txt", "history.json", "metrics.json", "run.json", "confusion_matrix.png", "training_curves.png"):
        assert (run / name).is_file(), name
    assert (run / "logs").is_dir()
    assert (run / "labels.txt").read_text().split() == ["blue", "green", "red"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["final_split"] == "test" and 0.0 <= metrics["final"]["accuracy"] <= 1.0
    assert set(metrics["final"]["per_class"]) == {"blue", "green", "red"}
    assert np.array(metrics["final"]["confusion_matrix"]).sum() == metrics["final"]["count"]
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".")], "no staging leftovers"
    # The stored config replays the run: same seed, same data, same CPU -> same metrics.
    replay = load_config(run / "config.yaml")
    replay.name = "replay"
    again = train_model(replay)
    assert again.metrics["final"]["accuracy"] == pytest.approx(metrics["final"]["accuracy"])
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["backbone"] == "mobilenet"


def test_saved_model_loads_in_safe_mode_and_predicts_the_same(tiny_run):
    from tlkeras.core.loading import load_run_model

    model = load_run_model(tiny_run)
    assert not any(isinstance(l, keras.layers.Lambda) for l in model.layers)
    again = load_run_model(tiny_run)
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), again.predict(x, verbose=0), atol=1e-6)


def test_evaluate_run_recomputes_the_stored_metrics(tiny_run):
    from tlkeras.evaluate.run import evaluate_run

    stored = json.loads((tiny_run / "metrics.json").read_text())["final"]
    metrics = evaluate_run(tiny_run)
    assert metrics["final"]["accuracy"] == pytest.approx(stored["accuracy"])
    assert (tiny_run / "eval_metrics.json").is_file()


def test_tfhub_backbone_from_a_local_savedmodel_trains_in_phase2(tmp_path):
    module = make_hub_module(tmp_path / "hub_module")
    bundle = _bundle(n=24)
    config = tiny_config(output_dir=str(tmp_path / "runs"), name="hub", train__unfreeze="all")
    config.model.backbone = f"hub:{module}"
    model = build_model(config.model, bundle.num_outputs, 32)
    hub_layer = model.get_layer("backbone_hub")
    assert not hub_layer.trainable_weights
    before = hub_layer.get_weights()[0].copy()
    result = train_model(config, bundle, model=model)
    assert not np.array_equal(hub_layer.get_weights()[0], before), "phase 2 trains the TF-Hub weights"
    from tlkeras.core.loading import load_run_model

    reloaded = load_run_model(result.run_dir)
    x = bundle.val.x.astype("float32")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_tfhub_bad_handles(tmp_path):
    from tlkeras import ModelConfig, TLKerasError

    with pytest.raises(TLKerasError, match="neither a URL nor an existing"):
        build_model(ModelConfig(backbone=f"hub:{tmp_path / 'nothing'}"), 2, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TLKerasError, match="not a SavedModel"):
        build_model(ModelConfig(backbone=f"hub:{tmp_path / 'empty'}"), 2, 32)


def test_linear_probe_phase1_puts_the_logistic_regression_into_the_head():
    from sklearn.linear_model import LogisticRegression

    from tlkeras.core.metrics import predict
    from tlkeras.core.models import feature_extractor
    from tlkeras.train.recipe import uses_linear_probe

    bundle = _bundle(n=36, classes=2)
    config = tiny_config(train__phase2_epochs=0)
    model = build_model(config.model, bundle.num_outputs, 32)
    assert uses_linear_probe(model, config, "softmax")
    history, _ = fit_two_phase(model, bundle, config)
    chosen = history["probe_C"][0]
    features = predict(feature_extractor(model), bundle.train.x)
    reference = LogisticRegression(C=chosen, max_iter=2000).fit(features, bundle.train.y)
    probe = bundle.val.x
    np.testing.assert_allclose(
        model.predict(probe.astype("float32"), verbose=0),
        reference.predict_proba(predict(feature_extractor(model), probe)),
        atol=1e-4,
    )
    hidden = tiny_config()
    hidden.model.hidden_units = [8]
    assert not uses_linear_probe(build_model(hidden.model, 2, 32), hidden, "softmax")


def test_a_phase2_that_can_only_hurt_ends_with_exactly_the_phase1_weights(capsys):
    """Issue 13: the phase-1 model competes with every phase-2 epoch and is kept when none beats it."""
    bundle = _bundle()
    probe_only = train_model(tiny_config(train__phase1_epochs=1, train__phase2_epochs=0), bundle, write=False)
    capsys.readouterr()
    # Adam at 9 on every layer, no warm-up: each phase-2 step wrecks the model.
    hurt = train_model(
        tiny_config(train__phase1_epochs=1, train__phase2_epochs=2, train__phase1_lr=10.0, train__phase2_lr_factor=0.9,
                    train__unfreeze="all", train__warmup_epochs=0.0, train__schedule="constant", train__verbose=2),
        bundle, write=False,
    )
    out = capsys.readouterr().out
    assert hurt.history["phase"] == [1, 2, 2], "phase 2 ran"
    assert max(v for v, p in zip(hurt.history["loss"], hurt.history["phase"]) if p == 2) > hurt.history["loss"][0]
    for a, b in zip(probe_only.model.get_weights(), hurt.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    selection = hurt.info["selection"]
    assert selection["kept"] == "phase 1" and selection["epoch"] == 0 and selection["monitor"] == "val_loss"
    assert "phase 2 did not improve on phase 1 (val loss" in selection["message"]
    assert "keeping the phase-1 model" in selection["message"] and selection["message"] in out
    assert hurt.metrics["val"]["accuracy"] == probe_only.metrics["val"]["accuracy"]


def test_a_phase2_that_helps_is_kept_and_said_so():
    bundle = _bundle()
    result = train_model(
        tiny_config(train__phase1_epochs=1, train__phase2_epochs=2, train__phase1_solver="keras", train__phase1_lr=1e-3,
                    train__phase2_lr_factor=0.5, train__unfreeze="all"),
        bundle, write=False,
    )
    selection = result.info["selection"]
    if selection["kept"] == "phase 2":
        assert selection["value"] < selection["candidate"] and selection["epoch"] in (1, 2)
        assert "keeping phase-2 epoch" in selection["message"]
    else:  # allowed, but then it must be because phase 2 was not better
        assert selection["phase_best"] >= selection["candidate"]


def test_registry_defaults_are_what_a_run_uses_when_the_user_sets_nothing(tmp_path):
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tlkeras.core.backbones import recipe_for
    recipe = recipe_for("mobilenet")
    unset = RunConfig()
    assert None in (unset.train.phase2_lr_factor, unset.train.unfreeze, unset.train.warmup_epochs, unset.data.batch_size, unset.model.dropout)
    config = RunConfig(
        data=DataConfig(image_size=32, augment="off"),  # batch size unset
        model=ModelConfig(backbone="mobilenet", alpha=0.25, weights=str(calibrated_weights(32))),  # dropout unset
        train=TrainConfig(phase1_epochs=1, phase2_epochs=1, verbose=0, early_stopping_patience=0, warmup_epochs=0.5, find_lr=True),
        output_dir=str(tmp_path / "runs"), name="defaults",
    )
    result = train_model(config, _bundle(n=240, classes=2))  # 90 train images per class: not "small"
    stored = load_config(result.run_dir / "config.yaml")
    assert stored.train.phase2_lr_factor == recipe.phase2_lr_factor
    assert stored.train.unfreeze == recipe.unfreeze and stored.train.batchnorm == recipe.batchnorm
    assert stored.data.batch_size == recipe.batch_size and stored.model.dropout == recipe.dropout
    assert stored.train.warmup_epochs == 0.5, "a value the user set wins"
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["recipe"]["family"] == "mobilenet" and "warmup_epochs" not in info["recipe"]["defaults"]
    assert info["recipe"]["defaults"]["unfreeze"] == recipe.unfreeze and info["recipe"]["small_data"] is None
    assert result.model.get_layer("head_dropout").rate == recipe.dropout
    assert info["trainable_backbone_layers"], "phase 2 opened the family's blocks"
    # --find-lr: the plot and a finite suggestion in the run directory
    assert (result.run_dir / "lr_finder.png").stat().st_size > 1000
    finder = json.loads((result.run_dir / "lr_finder.json").read_text())
    assert np.isfinite(finder["suggestion"]) and 1e-7 <= finder["suggestion"] <= 1.0
    assert info["lr_finder"]["suggestion"] == finder["suggestion"]


def test_small_data_rule_makes_unset_phase2_fields_gentler_and_leaves_user_values():
    from tlkeras.config import RunConfig
    from tlkeras.core.backbones import SMALL_DATA_PER_CLASS, apply_recipe_defaults, recipe_for

    recipe = recipe_for("mobilenet_v2")
    config = RunConfig()
    report = apply_recipe_defaults(config, train_count=10 * 3, num_classes=3)
    assert 10 < SMALL_DATA_PER_CLASS and report["small_data"].startswith("small data (10 training images per class")
    assert config.train.phase2_lr_factor == recipe.phase2_lr_factor / 2
    kind, count = recipe.unfreeze.split(":")
    assert config.train.unfreeze == f"{kind}:{max(1, int(count) // 2)}"
    user = RunConfig()
    user.train.phase2_lr_factor, user.train.unfreeze = 0.2, "layers:7"
    report = apply_recipe_defaults(user, train_count=30, num_classes=3)
    assert (user.train.phase2_lr_factor, user.train.unfreeze) == (0.2, "layers:7") and report["small_data"] is None
    big = RunConfig()
    assert apply_recipe_defaults(big, train_count=3000, num_classes=3)["small_data"] is None
    assert big.train.phase2_lr_factor == recipe.phase2_lr_factor
    assert apply_recipe_defaults(big) == {"family": "mobilenet_v2", "defaults": {}, "small_data": None, "basis": recipe.basis}


def test_the_lr_finder_writes_its_plot_and_a_finite_suggestion(tmp_path):
    from tlkeras.core.data import make_dataset
    from tlkeras.train.lr_finder import find_learning_rate

    bundle = _bundle()
    config = tiny_config()
    model = build_model(config.model, bundle.num_outputs, 32)
    before = [w.copy() for w in model.get_weights()]
    ds = make_dataset(bundle.train, head="softmax", num_outputs=3, batch_size=8, shuffle=True)
    found = find_learning_rate(model, ds, config, 3, out_dir=tmp_path, steps=40, min_lr=1e-6, max_lr=10.0)
    assert (tmp_path / "lr_finder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.isfinite(found["suggestion"]) and 1e-6 <= found["suggestion"] < 10.0
    assert found["suggestion"] <= found["min_loss_lr"] <= 10.0
    assert 8 <= len(found["lrs"]) <= 40 and found["lrs"] == sorted(found["lrs"])
    assert json.loads((tmp_path / "lr_finder.json").read_text())["suggestion"] == found["suggestion"]
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # the sweep leaves the weights as they were


def _without_timings(path):
    values = json.loads(path.read_text())
    values.pop("timings", None)
    return values


def test_the_default_recipe_with_light_augmentation_repeats_exactly_for_one_seed(tmp_path):
    """Issue 19 item 9: stateless augmentation keyed by seed, epoch and image makes CPU runs repeat."""
    bundle = _bundle(n=48)
    runs = []
    for name in ("first", "second"):
        config = tiny_config(train__phase1_epochs=1, train__phase2_epochs=2, train__unfreeze="blocks:2", data__augment="light",
                             output_dir=str(tmp_path / "runs"), name=name, seed=7)
        runs.append(train_model(config, bundle))
    first, second = (r.run_dir for r in runs)
    assert _without_timings(first / "metrics.json") == _without_timings(second / "metrics.json")
    assert json.loads((first / "history.json").read_text()) == json.loads((second / "history.json").read_text())
    for a, b in zip(runs[0].model.get_weights(), runs[1].model.get_weights()):
        np.testing.assert_array_equal(a, b)
    from tlkeras.core.augment import augmenter

    x = bundle.train.x[:8].astype("float32")
    assert np.array_equal(augmenter("light", 7)(x).numpy(), augmenter("light", 7)(x).numpy())
    assert not np.allclose(augmenter("light", 7)(x).numpy(), augmenter("light", 8)(x).numpy()), "another seed, other views"
    assert not np.allclose(augmenter("light", 7)(x).numpy(), x), "light augmentation changes the images"
