"""The embedded demo: deterministic generated data, and the transfer-vs-scratch report."""

from __future__ import annotations

import json
import shutil

import numpy as np
from conftest import calibrated_weights

from tlkeras.train import demo


def test_demo_task_is_deterministic_and_shaped():
    a, b = demo.make_demo_task(3), demo.make_demo_task(3)
    x, y = a["train"]
    assert x.shape == (25, demo.DEMO_IMAGE_SIZE, demo.DEMO_IMAGE_SIZE, 3) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [5] * 5
    np.testing.assert_array_equal(a["test"][0], b["test"][0])
    assert not set(a["class_names"]) & set(a["source"][2]), "target classes are new shapes"
    assert not np.array_equal(demo.make_demo_task(4)["train"][0], x)


def test_run_demo_writes_a_run_with_the_comparison(tmp_path, monkeypatch, capsys):
    # Pre-fill the weights cache with a calibrated MobileNet-0.25 at 32 px: same architecture,
    # so the demo skips its minute of pretraining here.
    monkeypatch.setenv("TLKERAS_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "demo" / f"mobilenet_0.25_{demo.DEMO_IMAGE_SIZE}_shapes_seed0.h5"
    cached.parent.mkdir(parents=True)
    shutil.copy(calibrated_weights(demo.DEMO_IMAGE_SIZE), cached)
    from tlkeras.train import __main__ as train_cli

    code = train_cli.main(["--demo", "shapes", "--output-dir", str(tmp_path / "runs"), "--name", "demo", "--phase1-epochs", "3", "--phase2-epochs", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "transfer (two-phase)" in out and "from scratch" in out
    run = tmp_path / "runs" / "demo"
    rows = json.loads((run / "comparison.json").read_text())
    assert set(rows) == {"transfer (two-phase)", "from scratch"}
    assert (run / "model.keras").is_file() and (run / "comparison.md").is_file()
    assert f"report: {run / 'report.html'}" in out and "<html" in (run / "report.html").read_text()[:500].lower()
    transfer, scratch = demo.demo_configs(str(cached))
    assert scratch.model.weights == "none" and scratch.train.unfreeze == "all"
    assert scratch.train.phase2_epochs == transfer.train.phase1_epochs + transfer.train.phase2_epochs
