"""Multi-task heads: per-task training and metrics, uncertainty weighting, named TFLite outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_config

from tlkeras._backend import tf
from tlkeras.config import DataConfig
from tlkeras.errors import TLKerasError
from tlkeras.heads.multitask import load_multitask_run, train_multitask
from tlkeras.heads.multitask_data import TaskSpec, load_multitask_csv, multitask_from_arrays
from tlkeras.heads.multitask_export import export_multitask, run_signature
from tlkeras.heads.multitask_model import UncertaintyWeighting, build_multitask_model


def _two_label_sets(n=96, size=32, seed=0):
    """A colour class (3 classes) and two independent line flags (multi-label) per image."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 3, n)
    lines = (rng.uniform(size=(n, 2)) > 0.5).astype(np.float32)
    palette = np.array([(220, 40, 40), (40, 200, 60), (40, 60, 220)], np.float32)
    x = palette[colour][:, None, None, :] + rng.normal(0, 3, (n, size, size, 3))
    x[lines[:, 0] > 0, 6:10] = 255  # a white horizontal band
    x[lines[:, 1] > 0, :, 20:24] = 0  # a black vertical band
    return np.clip(x, 0, 255).astype(np.uint8), colour, lines


TASKS = [TaskSpec("colour", "softmax", ["red", "green", "blue"]), TaskSpec("lines", "sigmoid", ["horizontal", "vertical"]),
         TaskSpec("count", "regression", weight=0.5)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    x, colour, lines = _two_label_sets()
    colour = colour.copy()
    colour[:6] = -1  # six images without a colour label: they train the other heads only
    data = multitask_from_arrays(x, {"colour": colour, "lines": lines, "count": lines.sum(1)}, TASKS,
                                 config=DataConfig(val_fraction=0.25, test_fraction=0.0), seed=1)
    config = tiny_config(output_dir=str(tmp_path_factory.mktemp("mt") / "runs"), name="mt",
                         train__phase1_epochs=20, train__phase1_lr=1e-2, train__phase2_epochs=0)
    return train_multitask(config, data, weighting="uncertainty"), data


def test_each_head_trains_and_reports_its_own_metrics(trained):
    result, data = trained
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    tasks = metrics["tasks"]
    assert set(tasks) == {"colour", "lines", "count"}
    # Chance: 1/3 for three colours, 1/4 for two independent flags (subset accuracy).
    assert tasks["colour"]["val"]["accuracy"] >= 0.7
    assert tasks["lines"]["val"]["subset_accuracy"] >= 0.6
    assert {"mae", "rmse", "r2"} <= set(tasks["count"]["val"])
    # Metrics count only the labelled images of each task.
    unlabelled_val = int(np.sum(data.val.labels["colour"] < 0))
    assert tasks["colour"]["val"]["count"] == len(data.val) - unlabelled_val
    assert tasks["lines"]["val"]["count"] == len(data.val)
    assert (result.run_dir / "confusion_matrix_colour.png").is_file()
    history = json.loads((result.run_dir / "history.json").read_text())
    assert history["head_colour_output_loss"][-1] < history["head_colour_output_loss"][0]
    assert history["head_lines_output_loss"][-1] < history["head_lines_output_loss"][0]
    assert history["head_count_output_loss"][-1] < history["head_count_output_loss"][0]


def test_uncertainty_weights_are_learned_saved_and_reloaded(trained):
    result, _ = trained
    spec = json.loads((result.run_dir / "tasks.json").read_text())
    assert spec["weighting"] == "uncertainty"
    learned = spec["loss_weights"]
    # Initial weights are 1 (classification) and 0.5 (regression); training moves them.
    assert max(abs(learned["colour"] - 1.0), abs(learned["lines"] - 1.0), abs(learned["count"] - 0.5)) > 0.02
    model, tasks, config = load_multitask_run(result.run_dir)
    layer = model.get_layer("head_uncertainty")
    assert isinstance(layer, UncertaintyWeighting)
    assert layer.effective_weights() == pytest.approx(learned, rel=1e-5)
    assert [t.name for t in tasks] == ["colour", "lines", "count"]
    probe = result.model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    again = model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    for name in probe:
        np.testing.assert_allclose(probe[name], again[name], atol=1e-5)


def test_uncertainty_loss_matches_kendall_et_al():
    layer = UncertaintyWeighting(["a", "b"], ["softmax", "regression"])
    layer.build((None, 4))
    layer.log_vars.assign([0.5, -1.0])
    loss = tf.constant([2.0, 4.0])
    np.testing.assert_allclose(layer.weighted(0, loss).numpy(), np.exp(-0.5) * np.array([2.0, 4.0]) + 0.25, rtol=1e-6)
    np.testing.assert_allclose(layer.weighted(1, loss).numpy(), 0.5 * np.exp(1.0) * np.array([2.0, 4.0]) - 0.5, rtol=1e-6)
    assert layer.effective_weights() == pytest.approx({"a": np.exp(-0.5), "b": 0.5 * np.exp(1.0)})


def test_tflite_has_one_named_output_per_head(trained, tmp_path):
    result, data = trained
    meta = export_multitask(result.model, data, tmp_path / "bundle", variants=["float32"])
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert set(outputs) == {"colour", "lines", "count"}
    assert outputs["colour"]["shape"] == [1, 3] and outputs["lines"]["shape"] == [1, 2] and outputs["count"]["shape"] == [1, 1]
    assert sorted(o["position"] for o in meta["outputs"]) == [0, 1, 2]
    on_disk = json.loads((tmp_path / "bundle" / "metadata.json").read_text())
    assert on_disk["outputs"] == json.loads(json.dumps(meta["outputs"]))
    assert (tmp_path / "bundle" / "labels_lines.txt").read_text().split() == ["horizontal", "vertical"]
    lite = run_signature((tmp_path / "bundle" / "float32.tflite").read_bytes(), data.val.x[:8])
    keras_out = result.model.predict(data.val.x[:8].astype(np.float32), verbose=0)
    assert set(lite) == {"colour", "lines", "count"}
    for name in lite:
        np.testing.assert_allclose(lite[name], keras_out[name], atol=1e-4)
    # The metadata's tensor index and position name the same tensor an app reads without signatures.
    from tlkeras.core import litert

    interpreter = litert.load_interpreter(tmp_path / "bundle" / "float32.tflite")
    details = interpreter.get_output_details()
    for o in meta["outputs"]:
        assert details[o["position"]]["index"] == o["tensor_index"]
        assert list(details[o["position"]]["shape"]) == o["shape"]
    assert meta["variants"]["float32"]["metrics"]["agreement"] == 1.0
    # One bundle format: the multi-task bundle validates against the schema image and text bundles follow.
    from tlkeras.export.pipeline import TOP_LEVEL_KEYS, VARIANT_KEYS, load_schema, validate_metadata

    validate_metadata(on_disk)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(on_disk, load_schema())
    assert list(on_disk) == list(TOP_LEVEL_KEYS) and list(on_disk["variants"]["float32"]) == list(VARIANT_KEYS)
    assert on_disk["task"]["name"] == "multitask" and on_disk["variants"]["float32"]["verified_on"] == ["litert"]


def test_csv_with_missing_cells(tmp_path):
    from PIL import Image

    rows = ["path,colour,tags,size"]
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        colour = ["red", "blue"][i % 2] if i != 3 else ""
        tags = ["a", "a;b", "b", ""][i % 4]
        rows.append(f"{i}.png,{colour},{tags},{i / 10 if i != 5 else ''}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    tasks = [TaskSpec("colour"), TaskSpec("tags", "sigmoid"), TaskSpec("size", "regression")]
    data = load_multitask_csv(tmp_path / "data.csv", tasks, 32, DataConfig(val_fraction=0.25, test_fraction=0.0))
    assert data.tasks[0].labels == ["blue", "red"] and data.tasks[1].labels == ["a", "b"]
    everything = {k: np.concatenate([data.train.labels[k], data.val.labels[k]]) for k in ("colour", "tags", "size")}
    assert np.sum(everything["colour"] == -1) == 1
    assert np.sum(np.all(np.isnan(everything["tags"]), axis=1)) == 3
    assert np.sum(np.isnan(everything["size"][:, 0])) == 1
    assert data.train.x.shape[1:] == (32, 32, 3)
    with pytest.raises(TLKerasError, match="lacks column"):
        load_multitask_csv(tmp_path / "data.csv", [TaskSpec("shape")], 32)


def test_bad_inputs_get_clear_errors():
    x, colour, lines = _two_label_sets(n=12)
    with pytest.raises(TLKerasError, match="task name"):
        TaskSpec("bad name").validate()
    with pytest.raises(TLKerasError, match="unique"):
        multitask_from_arrays(x, {"a": colour}, [TaskSpec("a"), TaskSpec("a")])
    with pytest.raises(TLKerasError, match="missing: \\['lines'\\]"):
        multitask_from_arrays(x, {"colour": colour}, [TaskSpec("colour"), TaskSpec("lines", "sigmoid")])
    with pytest.raises(TLKerasError, match="class indices must be in"):
        multitask_from_arrays(x, {"colour": colour + 5}, [TaskSpec("colour", labels=["a", "b", "c"])])
    with pytest.raises(TLKerasError, match="0/1"):
        multitask_from_arrays(x, {"lines": lines * 2}, [TaskSpec("lines", "sigmoid")])
    with pytest.raises(TLKerasError, match="weighting"):
        build_multitask_model(tiny_config().model, [TaskSpec("a", labels=["x", "y"])], 32, weighting="magic")


def test_phase2_uses_the_shared_warm_up_and_keeps_phase1_when_it_cannot_help():
    """Issue 12: multi-task training ignored warmup_epochs; now phase 2 is the engine's."""
    from tlkeras._backend import keras
    from tlkeras.heads.multitask import fit_multitask

    x, colour, lines = _two_label_sets(n=48)
    tasks = TASKS[:2]
    data = multitask_from_arrays(x, {"colour": colour, "lines": lines}, tasks, config=DataConfig(val_fraction=0.25, test_fraction=0.0), seed=1)

    class Rates(keras.callbacks.Callback):
        seen = []

        def on_train_batch_begin(self, batch, logs=None):
            lr = self.model.optimizer.learning_rate
            self.seen.append(float(lr(self.model.optimizer.iterations)) if callable(lr) else float(lr))

    config = tiny_config(train__phase1_epochs=2, train__phase1_lr=1e-2, train__phase2_epochs=1, train__unfreeze="all",
                         train__warmup_epochs=1.0, train__phase2_lr_factor=0.5, data__batch_size=8)
    model = build_multitask_model(config.model, tasks, 32)
    rates = Rates()
    fit_multitask(model, data, config, callbacks=[rates])
    phase2 = rates.seen[-(len(data.train) // 8):]
    assert phase2[0] < 0.2 * 5e-3 and phase2 == sorted(phase2), f"a linear warm-up towards 5e-3: {phase2}"
    # A phase 2 at Adam 9 on every layer can only hurt: the phase-1 model is kept.
    hurt = tiny_config(train__phase1_epochs=2, train__phase1_lr=10.0, train__phase2_epochs=1, train__unfreeze="all",
                       train__warmup_epochs=0.0, train__phase2_lr_factor=0.9, train__schedule="constant")
    keras.utils.set_random_seed(0)
    model = build_multitask_model(hurt.model, tasks, 32)
    fitted = fit_multitask(model, data, hurt)
    assert fitted.selection["kept"] == "phase 1" and fitted[0]["phase"] == [1, 1, 2]
