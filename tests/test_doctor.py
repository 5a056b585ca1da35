"""python -m tlkeras.doctor reports the environment and fails on real problems."""

from __future__ import annotations

import json

import pytest

from tlkeras.doctor import __main__ as doctor
from tlkeras.doctor.checks import run_checks


def test_doctor_reports_versions_and_the_keras_world(tmp_path, capsys):
    assert doctor.main(["--json", "--output-dir", str(tmp_path / "runs")]) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert checks["tensorflow"]["status"] == "ok" and checks["tensorflow"]["found"].startswith("2.")
    assert checks["Keras world"]["status"] == "ok"
    assert checks["KerasTuner mode"]["status"] == "ok"
    assert "GPUs" in checks and "ImageNet weights cache" in checks


def test_an_empty_weights_cache_is_a_warning_with_a_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    check = next(c for c in run_checks(tmp_path) if c.name == "ImageNet weights cache")
    assert check.status == "warn" and "--weights" in check.fix
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / "mobilenet_2_5_224_tf_no_top.h5").write_bytes(b"x")
    check = next(c for c in run_checks(tmp_path) if c.name == "ImageNet weights cache")
    assert check.status == "ok" and "mobilenet_2_5_224_tf_no_top.h5" in check.found


def test_an_unwritable_output_folder_fails(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):
            pytest.skip("running as root: file permissions are not enforced")
        check = next(c for c in run_checks(locked / "runs") if c.name == "output folder")
        assert check.status == "fail" and "writable" in check.fix
    finally:
        locked.chmod(0o700)


def test_a_regular_file_is_not_a_writable_output_folder(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    check = next(c for c in run_checks(tmp_path / "runs") if c.name == "output folder")
    assert check.status == "fail" and "is a file" in check.found and "--output-dir" in check.fix
    check = next(c for c in run_checks(tmp_path / "runs" / "deeper") if c.name == "output folder")
    assert check.status == "fail" and "is a file" in check.found
    assert doctor.main(["--output-dir", str(tmp_path / "runs")]) == 1
    assert "[fail] output folder" in capsys.readouterr().out


def test_doctor_usage_error_is_one_line(capsys):
    assert doctor.main(["--output-dir"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tlkeras.doctor: error: argument --output-dir: expected one argument; see python -m tlkeras.doctor --help"]
