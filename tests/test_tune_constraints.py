"""Searching under device limits (issue 18): units, the Pareto front, and a real tiny search in which
a size limit excludes one architecture before it trains.

The search converts real untrained models to int8 with TensorFlow's converter and times them with
LiteRT; trials train MobileNet (random init) at 32 px on a synthetic 3-class folder.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from conftest import make_image_folder

# ---------------------------------------------------------------------------------------------
# Limits with units (no TensorFlow)


def test_sizes_and_latencies_are_read_with_their_units():
    from tlkeras.tune.limits import parse_latency, parse_size

    assert parse_size("300KB") == 300_000
    assert parse_size("300 kb") == 300_000
    assert parse_size("256KiB") == 262_144
    assert parse_size("1.5MB") == 1_500_000
    assert parse_size("2MiB") == 2 * 1024**2
    assert parse_size(4096) == 4096 and parse_size("4096") == 4096 and parse_size("4096B") == 4096
    assert parse_size(None) is None
    assert parse_latency("5ms") == 5.0
    assert parse_latency("0.005s") == pytest.approx(5.0)
    assert parse_latency("800us") == pytest.approx(0.8)
    assert parse_latency(12) == 12.0 and parse_latency("12") == 12.0
    assert parse_latency(None) is None


@pytest.mark.parametrize("parse, text, phrase", [
    ("size", "300XB", "unknown unit 'xb'"),
    ("size", "3OOKB", "unknown unit 'ookb'"),
    ("size", "0KB", "at least 1 byte"),
    ("size", "-5KB", "cannot be read"),
    ("size", "", "cannot be read"),
    ("size", True, "not a value"),
    ("latency", "5 parsecs", "unknown unit 'parsecs'"),
    ("latency", "0ms", "must be > 0"),
    ("latency", "fast", "cannot be read"),
    ("latency", "5mss", "unknown unit"),
])
def test_bad_limits_get_a_clear_error(parse, text, phrase):
    from tlkeras.errors import TLKerasError
    from tlkeras.tune.limits import parse_latency, parse_size

    fn = parse_size if parse == "size" else parse_latency
    with pytest.raises(TLKerasError) as info:
        fn(text, "max_" + parse)
    message = str(info.value)
    assert phrase in message and f"max_{parse}" in message and "e.g." in message, message


def test_limits_name_what_they_break():
    from tlkeras.tune.limits import DeviceLimits

    limits = DeviceLimits(max_size=300_000, max_latency_ms=5.0, max_arena=256 * 1024)
    assert limits.violations(299_999, 5.0, 256 * 1024) == []
    assert limits.violations(412_000, 7.5, 300 * 1024) == ["size 412.0 KB > 300.0 KB", "latency 7.50 ms > 5 ms", "arena 300 KiB > 256 KiB"]
    assert DeviceLimits().violations(10**9, 10**6, 10**9) == []


# ---------------------------------------------------------------------------------------------
# The Pareto front


def test_front_holds_exactly_the_non_dominated_points():
    from tlkeras.tune.limits import pareto_front

    points = [("a", 0.90, 400), ("b", 0.85, 200), ("c", 0.80, 300), ("d", 0.95, 900), ("e", 0.85, 250), ("f", 0.70, 100)]
    # c is worse and bigger than b; e is as accurate as b and bigger.
    assert pareto_front(points) == ["f", "b", "a", "d"]
    # Minimising the objective (a loss) flips which points dominate.
    assert pareto_front([("x", 0.2, 100), ("y", 0.1, 200), ("z", 0.3, 150)], "min") == ["x", "y"]
    # Identical points do not dominate each other.
    assert sorted(pareto_front([("p", 0.5, 10), ("q", 0.5, 10)])) == ["p", "q"]

    rng = random.Random(0)
    for _ in range(50):
        pts = [(i, rng.choice([0.5, 0.6, 0.7, 0.8]), rng.choice([1, 2, 3, 4])) for i in range(12)]
        front = set(pareto_front(pts))
        for key, score, cost in pts:
            beaten = any(s >= score and c <= cost and (s > score or c < cost) for _, s, c in pts)
            assert (key in front) == (not beaten)


# ---------------------------------------------------------------------------------------------
# Options and weights per architecture


def test_options_check_limits_and_variant(tmp_path):
    from tlkeras.errors import TLKerasError
    from tlkeras.tune.search import SearchOptions

    options = SearchOptions(max_size="300KB", max_latency="5ms", max_arena="256KiB").validate()
    assert (options.max_size, options.max_latency, options.max_arena, options.variant) == (300_000, 5.0, 262_144, "int8")
    assert options.measures_device and options.pareto_axis == "size"
    assert SearchOptions(max_latency="0.01s").validate().pareto_axis == "latency"
    pareto = SearchOptions(objective="pareto").validate()
    assert pareto.pareto and pareto.objective is None and pareto.variant == "int8"
    assert not SearchOptions().validate().measures_device
    with pytest.raises(TLKerasError, match="max_arena applies to full-integer variants"):
        SearchOptions(max_arena="256KiB", variant="float16").validate()
    with pytest.raises(TLKerasError, match="a search measures one"):
        SearchOptions(max_size="1MB", variant="int8,float16").validate()
    with pytest.raises(TLKerasError, match="unknown variant"):
        SearchOptions(max_size="1MB", variant="int4").validate()
    with pytest.raises(TLKerasError, match="does not exist"):
        SearchOptions(weights_for={"mobilenet@0.25": str(tmp_path / "missing.h5")}).validate()


def test_each_architecture_gets_its_own_weights_file(tmp_path):
    from tlkeras.config import DataConfig, ModelConfig, RunConfig
    from tlkeras.tune.hypermodel import NoWeightsError, trial_config

    small, v2 = tmp_path / "mobilenet_0.25.h5", tmp_path / "mobilenet_v2_1.0.h5"
    small.write_bytes(b"x")
    v2.write_bytes(b"x")
    base = RunConfig(data=DataConfig(source=str(tmp_path), image_size=96), model=ModelConfig(backbone="mobilenet", alpha=0.25, weights=str(small)))
    mapping = {"mobilenet_v2@1.0": str(v2)}
    same = trial_config(base, {"backbone": "mobilenet", "alpha": 0.25}, weights_for=mapping)
    assert (same.model.weights, same.model.alpha) == (str(small), 0.25)
    other = trial_config(base, {"backbone": "mobilenet_v2", "alpha": 0.0}, weights_for=mapping)
    assert (other.model.backbone, other.model.alpha, other.model.weights) == ("mobilenet_v2", None, str(v2))
    with pytest.raises(NoWeightsError, match=r"no weights file for mobilenet@0.5"):
        trial_config(base, {"backbone": "mobilenet", "alpha": 0.5}, weights_for=mapping)
    with pytest.raises(NoWeightsError, match=r"mobilenet_v2@0.35"):
        trial_config(base, {"backbone": "mobilenet_v2", "alpha": 0.35}, weights_for=mapping)


# ---------------------------------------------------------------------------------------------
# Bad flags: one line, exit 2, nothing written


@pytest.mark.parametrize("flags, key", [
    (["--max-size", "300XB"], "max_size"),
    (["--max-latency", "5 parsecs"], "max_latency"),
    (["--max-arena", "lots"], "max_arena"),
    (["--max-arena", "256KiB", "--variant", "float32"], "max_arena"),
    (["--max-size", "1MB", "--variant", "int8,float16"], "variant"),
    (["--arch-weights", "mobilenet_v2"], "--arch-weights"),
])
def test_bad_limit_flags_are_one_line(tmp_path, capsys, flags, key):
    from tlkeras.tune import __main__ as tune

    images = make_image_folder(tmp_path / "images", per_class=2)
    out = tmp_path / "out"
    rc = tune.main(["--data", str(images), "--backbone", "mobilenet", "--alpha", "0.25", "--weights", "none",
                    "--image-size", "32", "--output-dir", str(out), "--name", "bad", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("tlkeras.tune: error:") and key in err[0], err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# A real search


class _Trained:
    """Records the parameter count of every model a trial trains."""

    def __init__(self):
        from tlkeras._backend import keras

        seen = self.params = []

        class Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                seen.append(self.model.count_params())

        self.callback = Callback()


@pytest.mark.slow
def test_size_limit_skips_an_architecture_without_training_it(tmp_path):
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig, load_config
    from tlkeras.core import litert
    from tlkeras.tune.limits import pareto_front
    from tlkeras.tune.search import SearchOptions, run_search

    images = make_image_folder(tmp_path / "images", per_class=10)
    base = RunConfig(
        data=DataConfig(source=str(images), image_size=32, batch_size=16, augment="off"),
        model=ModelConfig(backbone="mobilenet", alpha=0.25, weights="none", dropout=0.0),
        train=TrainConfig(phase1_epochs=2, phase2_epochs=0, verbose=0, early_stopping_patience=0, phase1_solver="keras"),
        output_dir=str(tmp_path / "runs"), name="fit",
    )
    space = {"alpha": [0.25, 1.0], "dropout": 0.0, "hidden_units": 0, "augment": "off", "unfreeze": "none", "phase1_lr": 1e-3,
             "phase2_lr_factor": 0.1, "label_smoothing": 0.0, "weight_decay": 0.0}
    trained = _Trained()
    # int8 MobileNet at 32 px: alpha 0.25 is ~0.3 MB, alpha 1.0 ~3.5 MB.
    options = SearchOptions(tuner="random", max_trials=2, verbose=0, max_size="1MB", max_latency="1s", objective="pareto")
    result = run_search(base, space, options, callbacks=[trained.callback])
    d = result.directory

    # The excluded architecture never trained: phase 1 fits the head on pooled features, 256 of
    # them for MobileNet-0.25 (1024 for alpha 1.0), so every model fitted is the alpha-0.25 head.
    assert trained.params and set(trained.params) == {256 * 3 + 3}

    with open(d / "trials.csv", newline="") as fh:
        rows = {float(r["alpha"]): r for r in csv.DictReader(fh)}
    assert set(rows) == {0.25, 1.0}, rows
    assert rows[0.25]["status"] == "COMPLETED" and rows[1.0]["status"] == "INFEASIBLE"
    assert int(rows[1.0]["tflite_bytes"]) > 1_000_000 >= int(rows[0.25]["tflite_bytes"])
    assert rows[1.0]["note"].startswith("size ") and "> 1.0 MB" in rows[1.0]["note"]
    assert rows[1.0]["val_accuracy"] == "" and rows[1.0]["phase1_epochs"] == ""
    assert float(rows[0.25]["latency_ms"]) > 0 and int(rows[0.25]["arena_bytes"]) > 0
    md = (d / "trials.md").read_text()
    assert "INFEASIBLE" in md and "size <= 1.0 MB" in md and "never trained" in md
    assert (d / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (d / f"trial_{rows[1.0]['trial']}" / "model.keras").exists()

    # One measurement per shape, cached in device.json with the trial -> shape map.
    device = json.loads((d / "device.json").read_text())
    assert len(device["shapes"]) == 2 and set(device["trials"]) == {rows[0.25]["trial"], rows[1.0]["trial"]}
    info = result.info
    assert info["status_counts"] == {"COMPLETED": 1, "INFEASIBLE": 1}
    assert info["device"]["shapes_measured_here"] == 2 and info["device"]["variant"] == "int8"

    # The front holds only non-dominated trained trials.
    done = [(r["trial"], float(r["val_accuracy"]), int(r["tflite_bytes"])) for r in rows.values() if r["status"] == "COMPLETED"]
    assert info["front"] == pareto_front(done) == [rows[0.25]["trial"]]
    assert rows[0.25]["front"] == "yes" and rows[1.0]["front"] == ""

    # best.yaml replays the winner; its int8 bundle was exported, verified on LiteRT and fits.
    best = load_config(d / "best.yaml")
    assert (best.model.backbone, best.model.alpha, best.data.image_size) == ("mobilenet", 0.25, 32)
    winner = info["winner"]
    assert winner["trial"] == rows[0.25]["trial"] and winner["verified"], winner
    tflite = Path(winner["bundle"]) / "int8.tflite"
    assert tflite.stat().st_size == winner["size"] <= 1_000_000 and winner["meets_limits"]
    assert litert.io_details(litert.load_interpreter(tflite))["inputs"][0]["dtype"] == "int8"
