"""Resume after kill -9: the resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import calibrated_weights, make_image_folder, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _flags(data, out, name):
    return [
        "--data", str(data), "--backbone", "mobilenet", "--alpha", "0.25", "--weights", str(calibrated_weights(32)),
        "--image-size", "32", "--batch-size", "8", "--augment", "off", "--dropout", "0", "--feature-cache", "off",
        "--phase1-epochs", "6", "--phase2-epochs", "3", "--early-stopping-patience", "0", "--verbose", "0",
        "--output-dir", str(out), "--name", name,
    ]


def _cli(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "tlkeras.train", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _weights(run):
    from tlkeras.core.loading import load_run_model

    return load_run_model(run).get_weights()


@pytest.mark.timeout(600)
def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = make_image_folder(tmp_path / "images", per_class=12)
    out = tmp_path / "runs"
    whole = _cli(_flags(data, out, "whole"))
    killed = _cli(_flags(data, out, "killed"))
    state = out / ".killed.partial" / "checkpoints" / "phase1" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if state.is_file() and json.loads(state.read_text())["epoch"] >= 2:
            break
        assert killed.poll() is None, killed.communicate()[1][-2000:]
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    assert not (out / "killed").exists() and (out / ".killed.partial").is_dir()
    done_epochs = json.loads(state.read_text())["epoch"]
    assert 2 <= done_epochs < 6, "killed in the middle of phase 1"
    resumed = _cli(["--resume", "--output-dir", str(out), "--name", "killed", "--verbose", "0"])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    _, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err[-2000:]
    assert not (out / ".killed.partial").exists() and not (out / "killed" / "checkpoints").exists()
    first = json.loads((out / "whole" / "metrics.json").read_text())
    second = json.loads((out / "killed" / "metrics.json").read_text())
    assert second["final"]["accuracy"] == pytest.approx(first["final"]["accuracy"])
    history_a = json.loads((out / "whole" / "history.json").read_text())
    history_b = json.loads((out / "killed" / "history.json").read_text())
    assert history_b["phase"] == history_a["phase"] == [1] * 6 + [2] * 3
    np.testing.assert_allclose(history_b["val_loss"], history_a["val_loss"], rtol=1e-4)
    for a, b in zip(_weights(out / "whole"), _weights(out / "killed")):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert json.loads((out / "killed" / "run.json").read_text())["resumed"] is True


def _phase2_flags(data, out, name):
    # Phase 1 trained with the optimizer on cached features (the head model), then phase 2.
    flags = _flags(data, out, name)
    flags[flags.index("--feature-cache") + 1] = "on"
    flags[flags.index("--phase1-epochs") + 1] = "2"
    flags[flags.index("--phase2-epochs") + 1] = "6"
    return [*flags, "--phase1-solver", "keras", "--unfreeze", "blocks:2", "--warmup-epochs", "1"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_in_phase2_after_an_optimizer_phase1_resumes_to_the_same_run(tmp_path):
    """Issue 19 item 4: phase 1's final weights must reload after a kill in phase 2."""
    data = make_image_folder(tmp_path / "images", per_class=12)
    out = tmp_path / "runs"
    whole = _cli(_phase2_flags(data, out, "whole"))
    killed = _cli(_phase2_flags(data, out, "killed"))
    state = out / ".killed.partial" / "checkpoints" / "phase2" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if state.is_file() and json.loads(state.read_text())["epoch"] >= 2:
            break
        assert killed.poll() is None, killed.communicate()[1][-2000:]
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    done = json.loads(state.read_text())
    assert 2 <= done["epoch"] < 6 and not done["done"], "killed in the middle of phase 2"
    phase1 = json.loads((state.parent.parent / "phase1" / "state.json").read_text())
    assert phase1["done"] and (state.parent.parent / "phase1" / "final.npz").is_file()
    for attempt in range(2):  # a failed resume must not spoil the next one
        resumed = _cli(["--resume", "--output-dir", str(out), "--name", "killed", "--verbose", "0"])
        _, err = resumed.communicate(timeout=300)
        if resumed.returncode == 0:
            break
    assert resumed.returncode == 0 and attempt == 0, err[-2000:]
    _, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err[-2000:]
    first = json.loads((out / "whole" / "metrics.json").read_text())
    second = json.loads((out / "killed" / "metrics.json").read_text())
    for key in ("val", "final"):
        assert {k: v for k, v in second[key].items()} == {k: v for k, v in first[key].items()}
    history_a = json.loads((out / "whole" / "history.json").read_text())
    history_b = json.loads((out / "killed" / "history.json").read_text())
    assert history_b["phase"] == history_a["phase"] and history_a["phase"].count(1) == 2
    np.testing.assert_allclose(history_b["val_loss"], history_a["val_loss"], rtol=1e-5)
    for a, b in zip(_weights(out / "whole"), _weights(out / "killed")):
        np.testing.assert_allclose(a, b, atol=1e-6)
    run_a = json.loads((out / "whole" / "run.json").read_text())
    run_b = json.loads((out / "killed" / "run.json").read_text())
    assert run_b["resumed"] is True and run_b["selection"] == run_a["selection"]


def test_resume_bad_inputs(tmp_path, capsys):
    from tlkeras.train import __main__ as train_cli

    assert train_cli.main(["--resume", "--output-dir", str(tmp_path), "--name", "ghost"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert train_cli.main(["--resume", "--output-dir", str(tmp_path)]) == 2
    assert "--resume needs the --name" in capsys.readouterr().err


def test_an_error_before_the_first_epoch_leaves_nothing(tmp_path):
    from tlkeras import from_arrays
    from tlkeras._backend import keras
    from tlkeras.train.run import train_model

    class Boom(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise RuntimeError("disk full, say")

    bundle = from_arrays(np.random.default_rng(0).integers(0, 255, (24, 32, 32, 3)), np.arange(24) % 2)
    config = tiny_config(output_dir=str(tmp_path / "runs"), name="boom")
    with pytest.raises(RuntimeError):
        train_model(config, bundle, callbacks=[Boom()])
    assert not any((tmp_path / "runs").iterdir())


def test_ctrl_c_in_phase2_then_resume_in_python_equals_the_uninterrupted_run(tmp_path):
    """Library level: KeyboardInterrupt (what Ctrl-C raises) in phase 2 of ``train_model``, then
    ``train_model(config, resume=True)``: the same metrics, history and weights as one run."""
    from tlkeras._backend import keras
    from tlkeras.train.run import train_model

    data = make_image_folder(tmp_path / "images", per_class=10)

    def config(name):
        return tiny_config(output_dir=str(tmp_path / "runs"), name=name, data__source=str(data), data__batch_size=8,
                           train__phase1_epochs=2, train__phase2_epochs=4, train__phase1_solver="keras", train__feature_cache="off",
                           train__unfreeze="blocks:2", train__warmup_epochs=0.0)

    class CtrlC(keras.callbacks.Callback):
        seen = 0

        def on_epoch_end(self, epoch, logs=None):
            CtrlC.seen += 1
            if CtrlC.seen == 4:  # phase 1's two epochs, then the second of phase 2
                raise KeyboardInterrupt

    whole = train_model(config("whole"))
    with pytest.raises(KeyboardInterrupt):
        train_model(config("stopped"), callbacks=[CtrlC()])
    partial = tmp_path / "runs" / ".stopped.partial"
    assert partial.is_dir() and not (tmp_path / "runs" / "stopped").exists()
    phase2 = json.loads((partial / "checkpoints" / "phase2" / "state.json").read_text())
    assert 1 <= phase2["epoch"] < 4 and not phase2["done"], phase2
    resumed = train_model(config("stopped"), resume=True)
    assert not partial.exists() and resumed.info["resumed"] is True
    for key in ("val", "final"):
        assert resumed.metrics[key]["accuracy"] == pytest.approx(whole.metrics[key]["accuracy"])
    assert resumed.history["phase"] == whole.history["phase"] == [1, 1, 2, 2, 2, 2]
    np.testing.assert_allclose(resumed.history["val_loss"], whole.history["val_loss"], rtol=1e-5)
    for a, b in zip(whole.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
