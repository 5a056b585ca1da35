"""The train/evaluate CLIs end to end, and bad input: one line, exit 2, no traceback, no artifact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import calibrated_weights, make_image_folder

from tlkeras.evaluate import __main__ as evaluate_cli
from tlkeras.train import __main__ as train_cli

ROOT = Path(__file__).resolve().parents[1]


def _tiny_flags(data, out, name="cli"):
    return [
        "--data", str(data), "--backbone", "mobilenet", "--alpha", "0.25",
        "--weights", str(calibrated_weights(32)), "--image-size", "32", "--batch-size", "16",
        "--phase1-epochs", "2", "--phase2-epochs", "1", "--augment", "off", "--verbose", "0",
        "--output-dir", str(out), "--name", name,
    ]


def test_train_and_evaluate_cli_end_to_end(tmp_path, capsys):
    data = make_image_folder(tmp_path / "images", per_class=10)
    assert train_cli.main(_tiny_flags(data, tmp_path / "runs")) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "run directory" in out
    run = tmp_path / "runs" / "cli"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["alpha"] == 0.25 and config["data"]["image_size"] == 32
    assert evaluate_cli.main([str(run), "--split", "val"]) == 0
    assert "val (" in capsys.readouterr().out
    assert json.loads((run / "eval_metrics.json").read_text())["split"] == "val"
    # --config replays; flags override it.
    assert train_cli.main(["--config", str(run / "config.yaml"), "--name", "again", "--phase2-epochs", "0"]) == 0
    again = yaml.safe_load((tmp_path / "runs" / "again" / "config.yaml").read_text())
    assert again["train"]["phase2_epochs"] == 0 and again["model"]["weights"] == config["model"]["weights"]


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data", "--backbone", "--weights", "--unfreeze", "--phase2-lr-factor", "--augment", "--mixed-precision", "--config"):
        assert flag in text


def _run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def test_bad_inputs_from_a_real_process(tmp_path):
    """A few cases through a real interpreter: stderr is exactly one line, no traceback."""
    data = make_image_folder(tmp_path / "images", per_class=4)
    result = _run_cli("tlkeras.train", "--data", str(data), "--backbone", "mobilnet", "--output-dir", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["tlkeras.train: error: unknown backbone 'mobilnet'; did you mean mobilenet, mobilenet_v2? (or hub:<handle-or-dir>)"]
    assert not (tmp_path / "runs").exists()
    result = _run_cli("tlkeras.evaluate", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


BAD_CASES = {
    "missing data": (lambda d: ["--data", str(d / "missing")], "does not exist"),
    "no class folders": (lambda d: ["--data", str(d / "flat")], "no class subfolders"),
    "empty class": (lambda d: ["--data", str(d / "empty_class")], "has no images"),
    "single class": (lambda d: ["--data", str(d / "single")], "only one class"),
    "unknown backbone": (lambda d: ["--data", str(d / "ok"), "--backbone", "resnet5O"], "unknown backbone"),
    "too small input": (lambda d: ["--data", str(d / "ok"), "--backbone", "inception_v3", "--image-size", "32"], "at least 75x75"),
    "wrong weights file": (lambda d: ["--data", str(d / "ok"), "--backbone", "mobilenet", "--alpha", "0.5", "--weights", str(calibrated_weights(32))], "does not fit mobilenet alpha=0.5"),
    "missing weights file": (lambda d: ["--data", str(d / "ok"), "--weights", str(d / "nope.h5")], "does not exist"),
    "corrupt image": (lambda d: ["--data", str(d / "corrupt"), "--on-corrupt", "error"], "cannot read image"),
    "bad yaml": (lambda d: ["--config", str(d / "bad.yaml")], "not valid YAML"),
    "unknown yaml key": (lambda d: ["--config", str(d / "typo.yaml")], "did you mean train.phase1_epochs"),
    "bad unfreeze": (lambda d: ["--data", str(d / "ok"), "--unfreeze", "top:3"], "unfreeze='top:3' is not valid"),
    "higher phase-2 rate": (lambda d: ["--data", str(d / "ok"), "--phase2-lr-factor", "2"], "lower learning rate"),
    "bad augment": (lambda d: ["--data", str(d / "ok"), "--augment", "extreme"], "augment='extreme' is not valid"),
}


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("bad")
    make_image_folder(d / "ok", per_class=8)
    (d / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(d / "flat" / "a.png")
    make_image_folder(d / "empty_class", classes=("a", "b"), per_class=3)
    (d / "empty_class" / "c").mkdir()
    make_image_folder(d / "single", classes=("only",), per_class=3)
    make_image_folder(d / "corrupt", classes=("a", "b"), per_class=10)  # enough to split before decoding
    (d / "corrupt" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (d / "bad.yaml").write_text("model: [unclosed\n")
    (d / "typo.yaml").write_text("train:\n  phase1_epoch: 3\n")
    return d


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_matrix(case, bad_inputs, tmp_path, capsys):
    make_args, message = BAD_CASES[case]
    out = tmp_path / "runs"
    args = make_args(bad_inputs)
    if "--image-size" not in args:
        args += ["--image-size", "32"]
    code = train_cli.main(args + ["--output-dir", str(out), "--name", "x", "--verbose", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("tlkeras.train: error: "), err
    assert message in err[0]
    assert not out.exists() or not any(out.iterdir()), "no half-written run directory"


def test_existing_run_name_is_refused(tiny_run, capsys):
    args = ["--config", str(tiny_run / "config.yaml"), "--output-dir", str(tiny_run.parent), "--name", tiny_run.name]
    assert train_cli.main(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_tune_flags_come_from_its_options_dataclass():
    """A new SearchOptions field is a tune flag with its docstring as help, as in optimize/export."""
    import dataclasses

    from tlkeras.tune import __main__ as tune_cli
    from tlkeras.tune.search import SearchOptions

    parser = tune_cli.build_parser()
    actions = {a.dest: a for a in parser._actions}  # noqa: SLF001 - argparse has no public lookup
    for f in dataclasses.fields(SearchOptions):
        if f.name in tune_cli._NOT_FLAGS:
            assert f.name not in actions, f.name
            continue
        assert f.name in actions and actions[f.name].help, f.name
        assert "``" not in actions[f.name].help and ":func:" not in actions[f.name].help
    args = parser.parse_args(["--data", "x", "--time-budget", "10m", "--max-size", "300KB", "--max-trials", "3"])
    assert (args.time_budget, args.max_size, args.max_trials) == ("10m", "300KB", 3)
