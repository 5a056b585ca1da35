"""Mixed precision and MultiWorkerMirroredStrategy (two workers on 127.0.0.1, bounded in time)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import calibrated_weights, make_image_folder, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_mixed_precision_trains_with_a_float32_output_and_restores_the_policy():
    from tlkeras import from_arrays
    from tlkeras._backend import keras
    from tlkeras.train.run import train_model

    rng = np.random.default_rng(0)
    bundle = from_arrays(rng.integers(0, 255, (24, 32, 32, 3)), np.arange(24) % 2)
    config = tiny_config(train__mixed_precision=True, train__phase1_epochs=1)
    result = train_model(config, bundle, write=False)
    assert result.model.get_layer("conv_pw_13").compute_dtype == "float16"
    assert result.model.get_layer("head_output").compute_dtype == "float32"
    assert result.model.output.dtype.name == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.timeout(660)
def test_two_workers_on_localhost_train_one_model(tmp_path):
    data = make_image_folder(tmp_path / "images", per_class=8)
    weights = calibrated_weights(32)
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        args = [
            sys.executable, "-m", "tlkeras.train", "--data", str(data), "--backbone", "mobilenet", "--alpha", "0.25",
            "--weights", str(weights), "--image-size", "32", "--batch-size", "8", "--phase1-epochs", "1",
            "--phase2-epochs", "1", "--augment", "off", "--verbose", "0", "--output-dir", str(tmp_path / "runs"), "--name", "mw",
        ]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=540))  # generous: CI machines may be busy
    finally:
        for proc in procs:
            proc.kill()
    for index, (proc, (out, err)) in enumerate(zip(procs, outputs)):
        # Show both workers' logs: a crash in one surfaces as a collective error in the other.
        logs = "\n".join(f"--- worker {i} ---\n{e[-1500:]}" for i, (_, e) in enumerate(outputs))
        assert proc.returncode == 0, f"worker {index} failed\n{logs}"
    # Only the chief (worker 0) keeps a run directory; both report the same model quality.
    runs = [p for p in (tmp_path / "runs").iterdir()]
    assert [p.name for p in runs] == ["mw"]
    assert (runs[0] / "model.keras").is_file()
    assert "run directory" in outputs[0][0] and "run directory" not in outputs[1][0]
    acc = [line for out, _ in outputs for line in out.splitlines() if line.startswith("val accuracy")]
    assert len(acc) == 2 and acc[0] == acc[1], "both workers hold the same synchronized model"
    # Each worker decoded only its half of the training files, and the run counts them all.
    run = json.loads((runs[0] / "run.json").read_text())
    total = run["data"]["train"]
    assert run["data"]["workers"] == 2
    for index, (out, _) in enumerate(outputs):
        assert f"worker {index} of 2 reads its shard: {total // 2:,} of {total:,} training files" in out
