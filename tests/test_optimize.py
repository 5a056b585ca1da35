"""Compression with tfmot (tlkeras.optimization, python -m tlkeras.optimize) on real tiny models.

Every test fine-tunes the session's ``tiny_run`` (3 classes, 32 px MobileNet-0.25) for one short
epoch with real tfmot, TensorFlow's TFLite converter and the LiteRT interpreter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder, tiny_config


@pytest.fixture(scope="module")
def source(tiny_run):
    """(config, data bundle) of the tiny run, loaded once."""
    from tlkeras.config import load_config
    from tlkeras.core.data import load_data

    config = load_config(tiny_run / "config.yaml")
    data = load_data(config.data, 32, config.model.head, config.seed)
    return config, data


def _fresh(tiny_run):
    from tlkeras.core.loading import load_model

    return load_model(tiny_run)


def _one_epoch(**kw):
    from tlkeras.optimize.options import FineTuneOptions

    return FineTuneOptions(epochs=1, verbose=0, **kw)


def _layer_types(model):
    return {type(l).__name__ for l in model.layers}


def _write_run(root: Path, model, data_dir: Path, name: str) -> Path:
    """A run directory around a hand-made model (what tlkeras.train would write, minus metrics)."""
    from tlkeras.config import save_config
    from tlkeras.runs import atomic_path

    run = root / name
    run.mkdir(parents=True)
    config = tiny_config(output_dir=str(root), name=name)
    config.data.source = str(data_dir)
    save_config(config, run / "config.yaml")
    with atomic_path(run / "model.keras") as tmp:
        model.save(tmp)
    (run / "labels.txt").write_text("blue\ngreen\nred\n")
    return run


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    """A run with a small MobileNet-like flat model (preprocessing, conv/BN/ReLU, depthwise,
    pointwise, head) and 3 classes of 32 px images: the invariants below do not depend on size,
    and it compresses and converts in seconds."""
    from tlkeras._backend import keras

    root = tmp_path_factory.mktemp("mini")
    L = keras.layers
    inputs = keras.Input((32, 32, 3), name="image")
    x = L.Rescaling(1 / 127.5, offset=-1.0, name="preprocess_scale")(inputs)
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv1")(x)
    x = L.ReLU(6.0, name="conv1_relu")(L.BatchNormalization(name="conv1_bn")(x))
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="conv_dw_1")(x)
    x = L.ReLU(6.0, name="conv_dw_1_relu")(L.BatchNormalization(name="conv_dw_1_bn")(x))
    x = L.Conv2D(32, 1, use_bias=False, name="conv_pw_1")(x)
    x = L.ReLU(6.0, name="conv_pw_1_relu")(L.BatchNormalization(name="conv_pw_1_bn")(x))
    x = L.GlobalAveragePooling2D(name="head_pool")(x)
    x = L.Dense(3, name="head_dense")(x)
    outputs = L.Activation("softmax", name="head_output")(x)
    data = make_image_folder(root / "images", per_class=12, size=32)
    return _write_run(root / "runs", keras.Model(inputs, outputs), data, "mini")


@pytest.fixture(scope="module")
def mini(mini_run):
    """(config, data bundle) of the mini run."""
    from tlkeras.config import load_config
    from tlkeras.core.data import load_data

    config = load_config(mini_run / "config.yaml")
    return config, load_data(config.data, 32, config.model.head, config.seed)


# ---------------------------------------------------------------------------------------------
# Pruning


def test_pruning_reaches_target_and_stripping_keeps_predictions(tiny_run, source):
    from tlkeras.core.metrics import predict
    from tlkeras.optimize.measure import weight_sparsity
    from tlkeras.optimize.options import PruningOptions
    from tlkeras.optimize.prune import prune

    config, data = source
    model = _fresh(tiny_run)
    result = prune(model, data, config, PruningOptions(target_sparsity=0.6), _one_epoch())
    stripped = result.model
    assert "PruneLowMagnitude" in _layer_types(result.wrapped)
    assert "PruneLowMagnitude" not in _layer_types(stripped)
    assert [l.name for l in stripped.layers] == [l.name for l in model.layers]
    pruned = result.info["pruned_layers"]
    assert {"conv_pw_13", "head_dense"} <= set(pruned) and not any(n.startswith("conv_dw") for n in pruned)
    sparsity = weight_sparsity(stripped, pruned)
    for name, row in sparsity["layers"].items():
        # tfmot zeroes round(size * target) weights per kernel.
        assert abs(row["sparsity"] - 0.6) <= 1.0 / row["weights"] + 1e-6, (name, row)
    assert weight_sparsity(stripped, ["conv_dw_13"])["overall"] < 0.05  # depthwise kernels stay dense
    np.testing.assert_allclose(predict(stripped, data.test.x), predict(result.wrapped, data.test.x), atol=1e-5)


def test_zero_sparsity_changes_nothing(mini_run, mini):
    from tlkeras.core.metrics import predict
    from tlkeras.optimize.measure import weight_sparsity
    from tlkeras.optimize.options import PruningOptions
    from tlkeras.optimize.prune import prune

    config, data = mini
    model = _fresh(mini_run)
    before = predict(model, data.test.x)
    kernels = {n: model.get_layer(n).get_weights()[0].copy() for n in ("conv1", "conv_pw_1", "head_dense")}
    # A vanishing learning rate isolates the masks: fine-tuning itself cannot move the weights.
    result = prune(model, data, config, PruningOptions(target_sparsity=0.0), _one_epoch(learning_rate=1e-12))
    assert set(result.info["pruned_layers"]) == set(kernels)
    for name, kernel in kernels.items():
        after = result.model.get_layer(name).get_weights()[0]
        assert np.count_nonzero(after == 0) == np.count_nonzero(kernel == 0) == 0, name  # no weight masked
        np.testing.assert_allclose(after, kernel, rtol=0, atol=1e-9)
    assert weight_sparsity(result.model, result.info["pruned_layers"])["overall"] == 0.0
    np.testing.assert_allclose(predict(result.model, data.test.x), before, atol=1e-6)


def test_stage_fine_tuning_keeps_its_best_val_loss_epoch(mini_run, mini):
    # Every stage fine-tunes through the shared phase runner: at a learning rate that wrecks the
    # model after the first epochs, the weights kept are those of the best val-loss epoch, not the last.
    from tlkeras.core.loading import load_model
    from tlkeras.optimize.finetune import _fine_tune, _stage_settings

    config, data = mini
    model = load_model(mini_run)
    ft = _stage_settings(_one_epoch(learning_rate=3.0, patience=0), config, 4, data)
    history = _fine_tune(model, data, config, ft, stage="qat", extra_callbacks=[], log_dir=None)
    assert len(history["val_loss"]) == 4 and min(history["val_loss"]) < history["val_loss"][-1], history["val_loss"]
    kept = model.evaluate(np.asarray(data.val.x, np.float32), np.eye(3)[data.val.y], verbose=0)[0]
    assert kept == pytest.approx(min(history["val_loss"]), rel=1e-4)


def test_self_distillation_targets_mix_labels_with_the_models_own_predictions(mini_run, mini):
    from tlkeras.core.metrics import predict
    from tlkeras.errors import TLKerasError
    from tlkeras.optimize.finetune import _self_targets
    from tlkeras.optimize.options import FineTuneOptions, PruningOptions
    from tlkeras.optimize.prune import prune

    config, data = mini
    model = _fresh(mini_run)
    with pytest.raises(TLKerasError, match="self-distillation"):
        FineTuneOptions(self_distill=1.5).validate()
    assert _self_targets(model, data, FineTuneOptions(self_distill=0.0).resolve(config)) is None  # labels only
    np.testing.assert_allclose(_self_targets(model, data, FineTuneOptions().resolve(config)), predict(model, data.train.x), atol=1e-5)
    targets = _self_targets(model, data, FineTuneOptions(self_distill=0.25).resolve(config))
    expected = 0.75 * np.eye(3)[data.train.y] + 0.25 * predict(model, data.train.x)
    np.testing.assert_allclose(targets, expected, atol=1e-5)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
    # A stage fine-tunes on them: with the model's own predictions as the only target (w = 1),
    # the training loss starts at the model's own entropy, far below the loss on the labels.
    result = prune(model, data, config, PruningOptions(target_sparsity=0.0), _one_epoch(self_distill=1.0, learning_rate=1e-12, augment="off"))
    own = predict(_fresh(mini_run), data.train.x)
    entropy = float(np.mean(-np.sum(own * np.log(np.clip(own, 1e-7, 1)), axis=1)))
    assert result.history["loss"][0] == pytest.approx(entropy, rel=0.05)


def test_structured_2_4_sparsity(mini_run, mini):
    from tlkeras.optimize.options import PruningOptions
    from tlkeras.optimize.prune import prune

    config, data = mini
    result = prune(_fresh(mini_run), data, config, PruningOptions(structure="2:4"), _one_epoch())
    assert "conv1" in result.info["dense_layers"]  # 3 input channels: no groups of 4
    assert result.info["pruned_layers"] == ["conv_pw_1", "head_dense"]
    for name in result.info["pruned_layers"]:
        kernel = result.model.get_layer(name).get_weights()[0]
        groups = np.moveaxis(kernel, -2, -1).reshape(-1, 4)  # 4 consecutive input channels
        assert (np.count_nonzero(groups == 0, axis=1) >= 2).all(), name


# ---------------------------------------------------------------------------------------------
# Clustering


@pytest.mark.parametrize("per_channel", [False, True])
def test_clustered_layers_hold_at_most_n_values(mini_run, mini, per_channel):
    from tlkeras.core.metrics import predict
    from tlkeras.optimize.cluster import cluster
    from tlkeras.optimize.measure import unique_weights
    from tlkeras.optimize.options import ClusteringOptions

    config, data = mini
    model = _fresh(mini_run)
    assert len(np.unique(model.get_layer("conv_pw_1").get_weights()[0])) > 100
    result = cluster(model, data, config, ClusteringOptions(clusters=4, init="linear", per_channel=per_channel), _one_epoch())
    assert "ClusterWeights" not in _layer_types(result.model)
    assert {"conv1", "conv_pw_1", "head_dense"} <= set(result.info["clustered_layers"])
    counts = unique_weights(result.model, result.info["clustered_layers"], per_channel=per_channel)
    assert max(counts.values()) <= 4
    if per_channel:  # 4 values per output channel, more over the whole kernel
        assert len(np.unique(result.model.get_layer("conv_pw_1").get_weights()[0])) > 4
    np.testing.assert_allclose(predict(result.model, data.test.x), predict(result.wrapped, data.test.x), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# QAT


def test_qat_run_converts_to_int8_tflite_and_runs_on_litert(mini_run, mini, tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter

    from tlkeras.core.litert import run_model
    from tlkeras.core.loading import load_model
    from tlkeras.core.metrics import predict
    from tlkeras.optimize.__main__ import main
    from tlkeras.optimize.measure import evaluate_tflite, tflite_weight_sparsity

    config, data = mini
    code = main([str(mini_run), "--qat", "--epochs", "1", "--verbose", "0", "--output-dir", str(tmp_path), "--name", "qat"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    run = tmp_path / "qat"
    report = json.loads((run / "optimization.json").read_text())
    assert report["qat"]["scheme"] == "default_8bit" and report["qat"]["unsupported_layers"] == []
    assert report["full_integer"] is True
    accuracy = report["accuracy"]
    assert accuracy["after"]["int8_method"] == "qat"
    assert accuracy["after"]["int8_ptq_same_model"] == accuracy["before"]["int8_ptq"]  # QAT started from the source
    model = load_model(run)
    assert "QuantizeWrapperV2" in _layer_types(model)
    assert model.get_layer("quant_preprocess_scale")  # Rescaling: output quantized, not left float

    flat = (run / "model_int8.tflite").read_bytes()
    interpreter = Interpreter(model_content=flat)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= ops
    assert all(row["dtype"] == "int8" for row in tflite_weight_sparsity(flat)["layers"].values())
    metrics = evaluate_tflite(flat, data.test, data.class_names, data.head)
    assert metrics["accuracy"] == pytest.approx(accuracy["after"]["int8"])
    # model.keras holds the QAT model that was converted: its fake-quant outputs match LiteRT's.
    diff = np.abs(run_model(flat, data.test.x) - predict(model, data.test.x))
    assert diff.mean() < 0.02 and diff.max() < 0.1, (diff.mean(), diff.max())


def test_cqat_keeps_clusters_per_channel(mini_run, mini):
    from tlkeras.optimize.cluster import cluster
    from tlkeras.optimize.measure import unique_weights
    from tlkeras.optimize.options import ClusteringOptions, QATOptions
    from tlkeras.optimize.qat import quantize_aware

    config, data = mini
    clustered = cluster(_fresh(mini_run), data, config, ClusteringOptions(clusters=4), _one_epoch())
    result = quantize_aware(clustered.model, data, config, QATOptions(), _one_epoch(), preserve="clusters")
    assert result.info["scheme"].startswith("cluster_preserve")
    names = clustered.info["clustered_layers"]
    # tfmot's CQAT trains the centroids of each output channel of a Conv2D kernel separately.
    assert max(unique_weights(result.model, names, per_channel=True).values()) <= 4
    assert unique_weights(result.model, ["head_dense"])["head_dense"] <= 4


# ---------------------------------------------------------------------------------------------
# The whole run: PQAT through the CLI


def test_pqat_run_keeps_sparsity_in_int8_tflite(tiny_run, tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter

    from tlkeras.config import load_config
    from tlkeras.core.loading import load_model
    from tlkeras.core.metrics import predict
    from tlkeras.optimize.__main__ import main
    from tlkeras.optimize.measure import tflite_weight_sparsity

    code = main([str(tiny_run), "--prune", "0.5", "--qat", "--epochs", "1", "--verbose", "0", "--output-dir", str(tmp_path), "--name", "pqat"])
    out = capsys.readouterr().out
    assert code == 0, out
    run = tmp_path / "pqat"
    for name in ("config.yaml", "model.keras", "labels.txt", "history.json", "metrics.json", "run.json", "optimization.json",
                 "optimization.md", "model_int8.tflite"):
        assert (run / name).is_file(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers
    assert load_config(run / "config.yaml").name == "pqat"
    report = json.loads((run / "optimization.json").read_text())
    assert report["pipeline"].startswith("PQAT") and report["qat"]["scheme"].startswith("prune_preserve")
    assert [s["stage"] for s in report["stages"]] == ["prune", "qat"]
    assert report["sparsity"]["pruned_layers_overall"] == pytest.approx(0.5, abs=0.01)
    assert report["sparsity"]["int8_tflite_overall"] >= 0.45  # QAT kept the zeros
    for key in ("float", "int8", "int8_ptq_same_model"):
        assert 0.0 <= report["accuracy"]["after"][key] <= 1.0
    size = report["size"]
    assert size["after"]["int8_tflite_gzip_bytes"] < size["before"]["int8_tflite_gzip_bytes"]
    assert "## Sparsity" in (run / "optimization.md").read_text()
    assert "PQAT" in out and "int8 TFLite weights" in out

    # The written TFLite file is the report's: read its weights back with LiteRT.
    flat = (run / "model_int8.tflite").read_bytes()
    tensors = tflite_weight_sparsity(flat)
    assert tensors["overall"] == pytest.approx(report["sparsity"]["int8_tflite_overall"])
    assert min(row["sparsity"] for row in tensors["layers"].values()) >= 0.45
    assert all(row["dtype"] == "int8" for row in tensors["layers"].values())
    interpreter = Interpreter(model_content=flat)
    interpreter.allocate_tensors()
    x = np.zeros((1, 32, 32, 3), np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    probs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert probs.shape == (1, 3) and abs(float(probs.sum()) - 1.0) < 0.02
    # The saved QAT model loads and matches the metrics written beside it.
    model = load_model(run)
    metrics = json.loads((run / "metrics.json").read_text())
    from tlkeras.core.data import load_data

    config = load_config(run / "config.yaml")
    data = load_data(config.data, 32, config.model.head, config.seed)
    accuracy = float((predict(model, data.test.x).argmax(1) == data.test.y).mean())
    assert accuracy == pytest.approx(metrics["final"]["accuracy"])


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, no run directory


def _assert_one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("tlkeras.optimize: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--prune", "1.0"], ["[0, 1)"]),
        (["--prune", "-0.1"], ["[0, 1)"]),
        (["--cluster", "1"], [">= 2"]),
        (["--prune", "0.3", "--prune-structure", "2:4"], ["50%"]),
        ([], ["nothing to do"]),
    ],
)
def test_bad_options_fail_in_one_line(tiny_run, tmp_path, capsys, flags, needles):
    from tlkeras.optimize.__main__ import main

    code = main([str(tiny_run), *flags, "--output-dir", str(tmp_path / "out")])
    _assert_one_line_error(capsys, code, *needles)
    assert not (tmp_path / "out").exists()


def test_every_option_field_has_a_flag_and_unset_flags_keep_the_dataclass_defaults():
    import dataclasses

    from tlkeras.optimize.__main__ import build_parser, stage_options
    from tlkeras.optimize.options import ClusteringOptions, FineTuneOptions, PruningOptions, QATOptions

    parser = build_parser()
    dests = {a.dest for a in parser._actions}  # noqa: SLF001 - argparse has no public listing
    for cls, prefix in ((PruningOptions, "prune."), (ClusteringOptions, "cluster."), (QATOptions, "qat."), (FineTuneOptions, "finetune.")):
        missing = [f.name for f in dataclasses.fields(cls) if prefix + f.name not in dests and f.name not in ("skip_layers", "float_layers")]
        assert not missing, (cls.__name__, missing)

    pruning, clustering, qat, finetune = stage_options(parser.parse_args(["run", "--prune-structure", "2:4", "--skip-layers", "a, b"]))
    assert clustering is None and qat is None
    assert pruning == dataclasses.replace(PruningOptions(), structure="2:4", skip_layers=["a", "b"])  # 2:4 alone: 50%
    assert finetune == FineTuneOptions()

    flags = ["run", "--cluster", "8", "--cluster-per-channel", "--qat", "--float-layers", "head_dense", "--qat-epochs", "3",
             "--lr", "0.01", "--head-only", "--self-distill", "0"]
    pruning, clustering, qat, finetune = stage_options(parser.parse_args(flags))
    assert pruning is None
    assert clustering == ClusteringOptions(clusters=8, per_channel=True)
    assert qat == QATOptions(float_layers=["head_dense"], epochs=3)
    assert finetune == FineTuneOptions(learning_rate=0.01, head_only=True, self_distill=0.0)


def test_existing_target_and_missing_run(tiny_run, tmp_path, capsys):
    from tlkeras.optimize.__main__ import main

    (tmp_path / "taken").mkdir()
    code = main([str(tiny_run), "--prune", "0.5", "--output-dir", str(tmp_path), "--name", "taken"])
    _assert_one_line_error(capsys, code, "already exists")
    code = main([str(tmp_path / "nope"), "--qat"])
    _assert_one_line_error(capsys, code, "does not exist")


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory):
    """A run whose backbone is a (local, tiny) TF-Hub SavedModel."""
    from tlkeras._backend import keras, tf
    from tlkeras.config import ModelConfig
    from tlkeras.core.models import build_model

    root = tmp_path_factory.mktemp("hub")
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, activation="relu")(inputs))
    tf.saved_model.save(keras.Model(inputs, features), str(root / "hub_module"))
    model = build_model(ModelConfig(backbone=f"hub:{root / 'hub_module'}", weights="none", dropout=0.0), 3, 32)
    data = make_image_folder(root / "images", per_class=8, size=32)
    return _write_run(root / "runs", model, data, "hub")


def test_tfhub_backbone_needs_head_only(hub_run, tmp_path, capsys):
    from tlkeras.core.loading import load_model
    from tlkeras.optimize.__main__ import main
    from tlkeras.optimize.measure import weight_sparsity

    code = main([str(hub_run), "--prune", "0.5", "--output-dir", str(tmp_path)])
    _assert_one_line_error(capsys, code, "TF-Hub", "--head-only")
    assert list(tmp_path.iterdir()) == []

    code = main([str(hub_run), "--prune", "0.5", "--head-only", "--epochs", "1", "--verbose", "0", "--no-tflite",
                 "--output-dir", str(tmp_path), "--name", "head"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "head" / "optimization.json").read_text())
    assert report["stages"][0]["pruned_layers"] == ["head_dense"]
    model = load_model(tmp_path / "head")
    assert weight_sparsity(model, ["head_dense"])["overall"] == pytest.approx(0.5, abs=0.05)


@pytest.fixture(scope="module")
def custom_layer_run(tmp_path_factory):
    """A run whose flat model holds a layer with weights that tfmot knows nothing about."""
    from tlkeras._backend import keras

    @keras.saving.register_keras_serializable(package="tlkeras_tests")
    class ChannelScale(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(name="scale", shape=(int(input_shape[-1]),), initializer="ones")

        def call(self, x):
            return x * self.scale

    root = tmp_path_factory.mktemp("custom")
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess_scale")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = ChannelScale(name="channel_scale")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dense(3, name="head_dense")(x)
    outputs = keras.layers.Activation("softmax", name="head_output")(x)
    data = make_image_folder(root / "images", per_class=8, size=32)
    return _write_run(root / "runs", keras.Model(inputs, outputs), data, "custom")


def test_layers_tfmot_cannot_handle(custom_layer_run, tmp_path, capsys, monkeypatch):
    from tlkeras.core import loading
    from tlkeras.optimize.__main__ import main

    # The custom layer lives in this test module: trust it, as a user trusts their own layers.
    monkeypatch.setattr(loading, "ALLOWED_MODULE_ROOTS", (*loading.ALLOWED_MODULE_ROOTS, "test_optimize"))

    for flags, verb in ((["--prune", "0.5"], "prune"), (["--cluster", "4"], "cluster")):
        code = main([str(custom_layer_run), *flags, "--output-dir", str(tmp_path)])
        _assert_one_line_error(capsys, code, f"cannot {verb}", "channel_scale (ChannelScale)", "--skip-layers")
    assert list(tmp_path.iterdir()) == []

    # QAT leaves such a layer in float and says so.
    code = main([str(custom_layer_run), "--qat", "--epochs", "1", "--verbose", "0", "--no-tflite", "--output-dir", str(tmp_path), "--name", "q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "left in float (unsupported by QAT): channel_scale" in captured.out
    report = json.loads((tmp_path / "q" / "optimization.json").read_text())
    assert report["qat"]["unsupported_layers"] == ["channel_scale"]
    assert "channel_scale" in (tmp_path / "q" / "optimization.md").read_text()
