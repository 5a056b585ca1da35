"""The bad-input matrix across the CLIs (train, evaluate, tune, optimize, export, benchmark).

Every case must end with exit code 2, exactly one line on stderr that starts with
``tlkeras.<cli>: error:`` and names the problem, no traceback, and no new artifact.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest
from conftest import calibrated_weights, make_image_folder


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_run):
    d = tmp_path_factory.mktemp("bad_world")
    make_image_folder(d / "ok", per_class=8)
    make_image_folder(d / "other_classes", classes=("cat", "dog", "emu"), per_class=8)
    make_image_folder(d / "zero_byte", classes=("a", "b"), per_class=6)
    (d / "zero_byte" / "a" / "empty.jpg").write_bytes(b"")
    make_image_folder(d / "only_text", classes=("a", "b"), per_class=6)
    shutil.rmtree(d / "only_text" / "b")
    (d / "only_text" / "b").mkdir()
    (d / "only_text" / "b" / "readme.txt").write_text("not an image")
    make_image_folder(d / "split" / "train", classes=("a", "b"), per_class=6)
    make_image_folder(d / "split" / "val", classes=("a", "c"), per_class=3)
    files = sorted((d / "ok").rglob("*.png"))
    (d / "nocols.csv").write_text("image,klass\n" + "\n".join(f"{p.relative_to(d)},x" for p in files))
    (d / "blank_label.csv").write_text("path,label\n" + "\n".join(f"{p.relative_to(d)}," for p in files))
    (d / "bad.yaml").write_text("train: {phase1_epochs: [\n")
    (d / "space_unknown.yaml").write_text("learning_rat: [0.001, 0.01]\n")
    (d / "space_empty.yaml").write_text("dropout: []\n")
    (d / "not_a_run").mkdir()
    (d / "not_a_file").write_text("x")
    return {"d": d, "run": tiny_run}


def _train(w, *extra):
    return ["--data", str(w["d"] / "ok"), "--image-size", "32", "--weights", str(calibrated_weights(32)), "--alpha", "0.25",
            "--backbone", "mobilenet", "--verbose", "0", "--output-dir", str(w["d"] / "out"), "--name", "x", *extra]


def _tune(w, *extra):
    return ["--data", str(w["d"] / "ok"), "--image-size", "32", "--weights", "none", "--backbone", "mobilenet",
            "--output-dir", str(w["d"] / "out"), "--name", "t", "--quiet", *extra]


CASES = {
    # train
    "train: missing data path": ("train", lambda w: _train(w) + ["--data", str(w["d"] / "nowhere")], "does not exist"),
    "train: zero-byte image": ("train", lambda w: _train(w, "--on-corrupt", "error") + ["--data", str(w["d"] / "zero_byte")], "cannot read image"),
    "train: class with only a text file": ("train", lambda w: _train(w) + ["--data", str(w["d"] / "only_text")], "has no images"),
    "train: split folders disagree": ("train", lambda w: _train(w) + ["--data", str(w["d"] / "split")], "differ from train/"),
    "train: CSV without path/label": ("train", lambda w: _train(w) + ["--data", str(w["d"] / "nocols.csv")], "needs columns 'path' and 'label'"),
    "train: CSV with an empty label": ("train", lambda w: _train(w) + ["--data", str(w["d"] / "blank_label.csv")], "empty label"),
    "train: data is a plain file": ("train", lambda w: _train(w) + ["--data", str(w["d"] / "not_a_file")], "neither a folder nor a .csv"),
    "train: unknown backbone": ("train", lambda w: _train(w, "--backbone", "effnet_b9"), "unknown backbone"),
    "train: bad YAML": ("train", lambda w: ["--config", str(w["d"] / "bad.yaml")], "not valid YAML"),
    "train: negative batch size": ("train", lambda w: _train(w, "--batch-size", "0"), "batch_size must be >= 1"),
    "train: wrong weights width": ("train", lambda w: _train(w, "--alpha", "0.75"), "does not fit mobilenet alpha=0.75"),
    "train: unknown head": ("train", lambda w: _train(w, "--head", "softmaxx"), "head='softmaxx' is not valid"),
    # evaluate
    "evaluate: missing run": ("evaluate", lambda w: [str(w["d"] / "no_run")], "does not exist"),
    "evaluate: folder without a model": ("evaluate", lambda w: [str(w["d"] / "not_a_run")], "no model.keras"),
    "evaluate: data with other classes": ("evaluate", lambda w: [str(w["run"]), "--data", str(w["d"] / "other_classes"), "--no-write"], "differ from the run's"),
    # export
    "export: missing run": ("export", lambda w: [str(w["d"] / "no_run"), "--output-dir", str(w["d"] / "bundle")], "does not exist"),
    "export: folder without a model": ("export", lambda w: [str(w["d"] / "not_a_run"), "--output-dir", str(w["d"] / "bundle")], "model"),
    "export: unknown quantization mode": ("export", lambda w: [str(w["run"]), "--quantize", "int4", "--output-dir", str(w["d"] / "bundle")], "int4"),
    "export: empty representative set": ("export", lambda w: [str(w["run"]), "--quantize", "int8", "--representative-size", "0", "--output-dir", str(w["d"] / "bundle")], "representative"),
    "export: output is a file": ("export", lambda w: [str(w["run"]), "--quantize", "float32", "--output-dir", str(w["d"] / "not_a_file")], "not_a_file"),
    # benchmark
    "benchmark: missing bundle": ("benchmark", lambda w: [str(w["d"] / "no_bundle")], "does not exist"),
    "benchmark: folder that is not a bundle": ("benchmark", lambda w: [str(w["d"] / "not_a_run")], "metadata.json"),
    # tune
    "tune: unknown hyperparameter": ("tune", lambda w: _tune(w, "--space", str(w["d"] / "space_unknown.yaml")), "learning_rat"),
    "tune: empty choice list": ("tune", lambda w: _tune(w, "--space", str(w["d"] / "space_empty.yaml")), "dropout"),
    "tune: zero trials": ("tune", lambda w: _tune(w, "--max-trials", "0"), "max"),
    "tune: objective not reported": ("tune", lambda w: _tune(w, "--objective", "val_bogus"), "val_bogus"),
    # optimize
    "optimize: sparsity out of range": ("optimize", lambda w: [str(w["run"]), "--prune", "1.5", "--output-dir", str(w["d"] / "opt")], "sparsity"),
    "optimize: one cluster": ("optimize", lambda w: [str(w["run"]), "--cluster", "1", "--output-dir", str(w["d"] / "opt")], "cluster"),
    "optimize: missing run": ("optimize", lambda w: [str(w["d"] / "no_run"), "--prune", "0.5", "--output-dir", str(w["d"] / "opt")], "does not exist"),
}


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, world, capsys):
    cli, make_args, needle = CASES[case]
    module = importlib.import_module(f"tlkeras.{cli}.__main__")
    before = _snapshot(world["d"])
    code = module.main(make_args(world))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (case, err)
    assert len(err) == 1, err
    assert err[0].startswith(f"tlkeras.{cli}: error: "), err[0]
    assert "Traceback" not in err[0]
    assert needle.lower() in err[0].lower(), err[0]
    assert _snapshot(world["d"]) == before, "no artifact, not even a partial one"


def test_the_matrix_covers_every_cli_and_at_least_25_cases():
    assert len(CASES) >= 25
    assert {cli for cli, _, _ in CASES.values()} == {"train", "evaluate", "export", "benchmark", "tune", "optimize"}

