"""Hyperparameter search (tlkeras.tune, python -m tlkeras.tune) with real KerasTuner, offline.

Trials train MobileNet-0.25 (random init) at 32 px on a synthetic 3-class folder; most trials
keep phase 2 off so a trial costs a few seconds on a busy 2-core machine.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_image_folder

REPO = Path(__file__).resolve().parents[1]
CHEAP = {"augment": "off", "unfreeze": "none", "hidden_units": 0}
TINY_FLAGS = [
    "--backbone", "mobilenet", "--alpha", "0.25", "--weights", "none", "--image-size", "32",
    "--batch-size", "16", "--early-stopping-patience", "0",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tune") / "images", per_class=10)


def _base(images: Path, root: Path, name: str, **train):
    """MobileNet-0.25, random init, 32 px, two head epochs and one fine-tuning epoch."""
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    # phase1_solver keras: phase 1 trains epochs (callbacks fire), not a closed-form linear probe.
    train = {"phase1_epochs": 2, "phase2_epochs": 1, "verbose": 0, "early_stopping_patience": 0, "phase1_solver": "keras", **train}
    return RunConfig(
        data=DataConfig(source=str(images), image_size=32, batch_size=16, augment="off"),
        model=ModelConfig(backbone="mobilenet", alpha=0.25, weights="none", dropout=0.0),
        train=TrainConfig(**train),
        output_dir=str(root / "runs"), name=name,
    )


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------------------------
# Search space parsing (no training)


def test_space_entries_parse_to_pins_choices_and_ranges():
    from tlkeras.tune.space import parse_param_spec

    lr = parse_param_spec("phase1_lr", "1e-4..1e-2/log")
    assert (lr.kind, lr.min, lr.max, lr.sampling) == ("range", 1e-4, 1e-2, "log")
    drop = parse_param_spec("dropout", {"min": 0, "max": 0.5, "step": 0.1})
    assert (drop.kind, drop.step) == ("range", 0.1)
    assert parse_param_spec("dropout", "0..0.5/0.1").step == 0.1
    # YAML 1.1 reads a bare `off` as False; it means the preset "off".
    assert parse_param_spec("augment", [False, "light"]).values == ("off", "light")
    assert parse_param_spec("image_size", "160").kind == "fixed"
    assert parse_param_spec("hidden_units", [0, "128"]).values == (0, 128)
    assert parse_param_spec("unfreeze", ["blocks:2"]).kind == "fixed"


def test_default_space_searches_training_and_pins_backbone_and_size(images, tmp_path):
    from tlkeras.tune.space import SearchSpace

    space = SearchSpace.create({"dropout": 0.1}, _base(images, tmp_path, "x"))
    assert space.params["backbone"].values == ("mobilenet",)
    assert space.params["image_size"].values == (32,)
    assert space.params["dropout"].kind == "fixed"
    assert set(space.searched()) == {"hidden_units", "phase1_lr", "phase2_lr_factor", "unfreeze", "augment", "label_smoothing", "weight_decay"}


def test_hyperband_budget_shortens_fine_tuning_and_keeps_cached_phase1_whole(images, tmp_path):
    from tlkeras._backend import keras_tuner
    from tlkeras.tune.hypermodel import TransferHyperModel
    from tlkeras.tune.space import SearchSpace

    base = _base(images, tmp_path, "x", phase1_epochs=30, phase2_epochs=8)
    model = TransferHyperModel(base, SearchSpace.create(None, base))
    hp = keras_tuner().HyperParameters()
    model.declare_hyperparameters(hp)
    hp.values["tuner/epochs"] = 3  # a Hyperband round with 3 of 8 units
    short = model.config_for(hp)
    assert (short.train.phase1_epochs, short.train.phase2_epochs) == (30, 3)
    base.train.phase1_augment = True  # phase 1 on images: both phases share the budget
    model = TransferHyperModel(base, SearchSpace.create(None, base))
    short = model.config_for(hp)
    assert (short.train.phase1_epochs, short.train.phase2_epochs) == (3, 1)


# ---------------------------------------------------------------------------------------------
# Searches


def test_random_search_writes_results_and_best_config_retrains(images, tmp_path):
    from tlkeras.config import load_config
    from tlkeras.core.backbones import apply_recipe_defaults
    from tlkeras.core.data import load_data
    from tlkeras.runs import read_json
    from tlkeras.train import __main__ as train
    from tlkeras.tune.hypermodel import trial_config
    from tlkeras.tune.search import SearchOptions, run_search

    base = _base(images, tmp_path, "rand")
    result = run_search(base, {**CHEAP, "dropout": [0.0, 0.3], "label_smoothing": 0.0}, SearchOptions(tuner="random", max_trials=2, verbose=0))
    d = result.directory
    for name in ("trials.csv", "trials.md", "best.yaml", "objective.png", "search.json", "search.yaml", "oracle.json"):
        assert (d / name).is_file(), name
    assert (d / "objective.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _read_csv(d / "trials.csv")
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    scores = [float(r["val_accuracy"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    # The first trial is the base configuration (what tlkeras.train would train: the family's
    # recipe fills what the base leaves unset, gentler on this small data), then samples.
    home = copy.deepcopy(base)
    train_count = len(load_data(base.data, 32, "softmax", base.seed).train)
    apply_recipe_defaults(home, train_count=train_count, num_classes=3)
    assert base.train.phase2_lr_factor is None and home.train.phase2_lr_factor is not None
    first = next(r for r in rows if r["number"] == "1")
    assert (float(first["dropout"]), float(first["phase1_lr"]), float(first["phase2_lr_factor"])) == (home.model.dropout, home.train.phase1_lr, home.train.phase2_lr_factor)
    assert float(first["weight_decay"]) == base.train.weight_decay
    assert len({(r["dropout"], r["phase1_lr"], r["phase2_lr_factor"], r["weight_decay"]) for r in rows}) == 2
    md = (d / "trials.md").read_text().splitlines()
    assert md[0].startswith("# Trials, best val_accuracy first") and md[4].startswith(f"| 1 | {rows[0]['trial']} |")

    # Both trials trained the head on features computed once (frozen backbone, no augmentation).
    assert result.info["feature_cache"] == {"computed": 2, "reused": 2}

    # best.yaml is the best trial's full-length RunConfig.
    best = load_config(d / "best.yaml")
    assert best.model.dropout == float(rows[0]["dropout"])
    expected = trial_config(base, result.best_values)
    expected.data.source = str(images.resolve())
    assert (best.model, best.train, best.data) == (expected.model, expected.train, expected.data)
    assert best.train.phase1_epochs == base.train.phase1_epochs and best.data.source == str(images.resolve())

    # ... and retrains through tlkeras.train to the score the trial reported: a trial is a run.
    assert train.main(["--config", str(d / "best.yaml"), "--output-dir", str(tmp_path / "retrain"), "--name", "best"]) == 0
    metrics = read_json(tmp_path / "retrain" / "best" / "metrics.json")
    assert metrics["val"]["accuracy"] == pytest.approx(float(rows[0]["val_accuracy"]), abs=1e-6)
    assert metrics["val"]["f1_macro"] == pytest.approx(float(rows[0]["val_f1_macro"]), abs=1e-6)


def test_hyperband_cli_gives_early_rounds_fewer_epochs(images, tmp_path, capsys):
    from tlkeras.tune import __main__ as tune

    out = tmp_path / "runs"
    rc = tune.main([
        "--data", str(images), *TINY_FLAGS, "--phase1-epochs", "2", "--phase2-epochs", "0",
        "--augment", "off", "--unfreeze", "none", "--hp", "hidden_units=0", "--hp", "dropout=0..0.3/0.1",
        "--tuner", "hyperband", "--hyperband-factor", "2", "--max-trials", "3",
        "--output-dir", str(out), "--name", "hb", "--quiet",
    ])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "retrain the best: python -m tlkeras.train --config" in captured.out
    rows = _read_csv(out / "hb" / "trials.csv")
    assert len(rows) == 3 and all(r["status"] == "COMPLETED" for r in rows)
    # Hyperband (max 2 epochs, factor 2) starts a bracket at 1 epoch and promotes to 2.
    assert sorted(int(r["phase1_epochs"]) for r in rows) == [1, 1, 2]
    pinned = yaml.safe_load((out / "hb" / "search.yaml").read_text())["space"]
    assert (pinned["augment"], pinned["unfreeze"], pinned["hidden_units"]) == ("off", "none", 0)
    assert json.loads((out / "hb" / "search.json").read_text())["stopped_by"] == "max_trials"

    # --resume reads the stored settings; a finished search runs nothing more.
    before = {p.parent.name: p.read_bytes() for p in (out / "hb").glob("trial_*/trial.json")}
    assert tune.main(["--resume", str(out / "hb"), "--max-trials", "3", "--quiet"]) == 0
    assert json.loads((out / "hb" / "search.json").read_text())["trials_started_here"] == 0
    assert {p.parent.name: p.read_bytes() for p in (out / "hb").glob("trial_*/trial.json")} == before
    assert tune.main(["--resume", str(out / "hb"), "--dropout", "0.1"]) == 2
    assert "--resume uses the search's stored settings; drop --dropout" in capsys.readouterr().err


class _InterruptTrial:
    """A Keras callback that raises KeyboardInterrupt when the n-th trial starts training.

    Trials are told apart by the model being fitted (each trial builds new ones; with phase 2
    off, one per trial); holding them keeps their ids from being reused.
    """

    def __init__(self, n: int):
        from tlkeras._backend import keras

        seen: list = []

        class Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                if not any(m is self.model for m in seen):
                    seen.append(self.model)
                    if len(seen) == n:
                        raise KeyboardInterrupt

        self.callback = Callback()


def test_bayesian_search_resumes_without_repeating_finished_trials(images, tmp_path):
    from tlkeras.errors import TLKerasError
    from tlkeras.tune.search import SearchOptions, run_search

    base = _base(images, tmp_path, "bo", phase2_epochs=0)
    space = {**CHEAP, "dropout": {"min": 0.0, "max": 0.4, "step": 0.1}}
    options = SearchOptions(tuner="bayesian", max_trials=2, verbose=0)
    interrupt = _InterruptTrial(2)  # the second trial is cut
    with pytest.raises(KeyboardInterrupt):
        run_search(base, space, options, callbacks=[interrupt.callback])
    d = tmp_path / "runs" / "bo"
    rows = _read_csv(d / "trials.csv")  # the finished trials were reported before re-raising
    assert sorted(r["status"] for r in rows) == ["COMPLETED", "RUNNING"]
    finished = {r["trial"]: (d / f"trial_{r['trial']}" / "trial.json").read_bytes() for r in rows if r["status"] == "COMPLETED"}

    with pytest.raises(TLKerasError, match=r"space\.dropout differs"):
        run_search(base, {**space, "dropout": 0.2}, options)

    result = run_search(base, space, options)
    assert result.info["trials_started_here"] == 1  # only the interrupted trial ran again
    assert result.info["status_counts"] == {"COMPLETED": 2}
    for trial_id, content in finished.items():
        assert (d / f"trial_{trial_id}" / "trial.json").read_bytes() == content


def test_time_budget_stops_the_search_cleanly(images, tmp_path):
    from tlkeras.tune.search import SearchOptions, run_search

    base = _base(images, tmp_path, "budget", phase1_epochs=1000, phase2_epochs=0)
    # Phase 1 alone would run 1,000 epochs: only the budget can have ended this search (no wall-clock
    # assertion; pytest-timeout catches a budget that never fires).
    result = run_search(base, CHEAP, SearchOptions(tuner="random", max_trials=5, time_budget=2, verbose=0))
    assert result.info["stopped_by"] == "time_budget"
    assert result.trials[0]["status"] == "STOPPED" and "time budget" in result.trials[0]["note"]
    assert result.best_values is None and not (result.directory / "best.yaml").exists()
    assert (result.directory / "trials.md").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(path: Path, text: str, procs, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and text in path.read_text():
            return
        if any(p.poll() not in (None, 0) for p in procs):
            break
        time.sleep(0.5)
    raise AssertionError(f"{path.name} never said {text!r}: {path.read_text() if path.exists() else ''}")


def test_a_worker_waits_for_the_chief_port_and_says_so_once(monkeypatch, capsys):
    from tlkeras.errors import TLKerasError
    from tlkeras.tune.tuner import wait_for_chief

    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(_free_port()))
    with pytest.raises(TLKerasError, match="no chief oracle answered at 127.0.0.1"):
        wait_for_chief(timeout=1.2, poll=0.2)
    assert capsys.readouterr().out.count("waiting for the chief oracle") == 1
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(server.getsockname()[1]))
        wait_for_chief(timeout=5, poll=0.2)  # returns at once: no "waiting" line below
    assert "waiting" not in capsys.readouterr().out


def test_chief_and_two_workers_share_one_search(images, tmp_path):
    port = _free_port()
    out = tmp_path / "runs"
    command = [
        sys.executable, "-m", "tlkeras.tune", "--data", str(images), *TINY_FLAGS,
        "--phase1-epochs", "1", "--phase2-epochs", "0", "--augment", "off", "--unfreeze", "none",
        "--tuner", "random", "--max-trials", "2", "--output-dir", str(out), "--name", "dist",
    ]
    # One TensorFlow thread pool each: three processes on two busy cores.
    env = {
        **os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port), "PYTHONUNBUFFERED": "1",
        "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
    }
    procs, logs = [], {}
    try:
        # Workers first: both poll the chief's port, so both ask within half a second of it coming
        # up and each gets one of the two trials.
        for tuner_id in ("tuner1", "tuner2"):
            logs[tuner_id] = tmp_path / f"{tuner_id}.log"
            procs.append(subprocess.Popen(command, cwd=REPO, env={**env, "KERASTUNER_TUNER_ID": tuner_id}, stdout=open(logs[tuner_id], "w"), stderr=subprocess.STDOUT))
        for tuner_id in ("tuner1", "tuner2"):
            _wait_for(logs[tuner_id], "worker ready", procs, 120)
        logs["chief"] = tmp_path / "chief.log"
        chief = subprocess.Popen(command, cwd=REPO, env={**env, "KERASTUNER_TUNER_ID": "chief"}, stdout=open(logs["chief"], "w"), stderr=subprocess.STDOUT)
        procs.append(chief)
        for p in procs:
            p.wait(timeout=150)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    text = {k: v.read_text() for k, v in logs.items()}
    assert [p.returncode for p in procs] == [0, 0, 0], text
    rows = _read_csv(out / "dist" / "trials.csv")
    assert len(rows) == 2 and all(r["status"] == "COMPLETED" for r in rows), text["chief"]
    ran = {w: [line.split(" trial ")[1].split(":")[0] for line in text[w].splitlines() if f"[{w}] trial " in line] for w in ("tuner1", "tuner2")}
    # Every trial ran exactly once, on one of the two workers, and both workers took part.
    assert sorted(ran["tuner1"] + ran["tuner2"]) == sorted(r["trial"] for r in rows), ran
    assert ran["tuner1"] and ran["tuner2"], ran
    assert all("waiting for the chief oracle" in text[w] for w in ("tuner1", "tuner2")), text
    assert (out / "dist" / "best.yaml").is_file()


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the key, exit 2, nothing written


def _space_file(tmp_path: Path, content: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(content)
    return str(path)


BAD = [
    ("unknown name", lambda t: ["--space", _space_file(t, "dropuot: [0.1, 0.2]\n")], "dropuot"),
    ("min above max", lambda t: ["--space", _space_file(t, "dropout: {min: 0.5, max: 0.1}\n")], "dropout"),
    ("range without max", lambda t: ["--space", _space_file(t, "phase1_lr: {min: 0.001}\n")], "phase1_lr"),
    ("log range from 0", lambda t: ["--space", _space_file(t, "phase1_lr: {min: 0, max: 0.1, sampling: log}\n")], "phase1_lr"),
    ("unknown range field", lambda t: ["--space", _space_file(t, "dropout: {min: 0, max: 0.5, stride: 0.1}\n")], "dropout"),
    ("range of names", lambda t: ["--hp", "unfreeze=1..3"], "unfreeze"),
    ("empty choice", lambda t: ["--space", _space_file(t, "augment: []\n")], "augment"),
    ("bad value", lambda t: ["--hp", "augment=off,heavy"], "augment"),
    ("unreported objective", lambda t: ["--objective", "val_auc"], "val_auc"),
    ("zero trials", lambda t: ["--max-trials", "0"], "max_trials"),
    ("zero time", lambda t: ["--time-budget", "0"], "time_budget"),
    ("zero epochs", lambda t: ["--phase1-epochs", "0", "--phase2-epochs", "0"], "phase1_epochs"),
    ("pinned twice", lambda t: ["--dropout", "0.2", "--hp", "dropout=0.1,0.3"], "dropout"),
]


@pytest.mark.parametrize("case, extra, key", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_naming_the_key(images, tmp_path, capsys, case, extra, key):
    from tlkeras.tune import __main__ as tune

    out = tmp_path / "out"
    rc = tune.main(["--data", str(images), *TINY_FLAGS, "--output-dir", str(out), "--name", "bad", *extra(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("tlkeras.tune: error:") and key in err[0], err
    assert not out.exists()
