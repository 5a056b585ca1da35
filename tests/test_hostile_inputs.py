"""Hostile and clumsy inputs across every CLI: one line, the right exit code, nothing left behind.

A generated matrix calls each CLI's ``main(argv)`` in-process (a subprocess costs ~5 s of
TensorFlow import on 2 cores); a few cases need a real process (Ctrl-C, a second process holding
a run, a file-size limit standing in for a full disk, the current folder on ``sys.path``). Every
case asserts exit code 2 (130 for Ctrl-C), exactly one stderr line ``tlkeras.<cli>: error: ...``
that names the problem and says what to do, no traceback, and no new file in the test's world.

The ``.keras`` cases carry a payload module that writes a marker file when imported; the loaders
must refuse the model without importing it (and a control test shows plain Keras would).
"""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import calibrated_weights, make_image_folder

ROOT = Path(__file__).resolve().parents[1]
CLIS = ("train", "evaluate", "export", "benchmark", "optimize", "tune", "adapt", "distill", "explain", "doctor")
# A message says what to do: one of these verbs follows the problem (usually after "; ").
HINT = re.compile(
    r"e\.g\.|\b(change|leave|pass|use|choose|pick|add|remove|rename|re-save|fix|check|see|write|free|wait|restore|retrain|re-export|"
    r"run|lower|give|put|fill|drop|set|split|load|move|list)\b", re.I)
PAYLOAD = "import pathlib\npathlib.Path(__file__).with_name('MARKER').write_text('payload ran')\nclass Payload: pass\n"


# ---------------------------------------------------------------------------------------------
# The world: data, YAML files, tampered run directories and bundles, built once per module


def _rewrite_keras(src: Path, dst: Path, tamper) -> None:
    """Copies a .keras zip, passing its config.json through ``tamper(config)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                tamper(config)
                data = json.dumps(config).encode()
            zout.writestr(item, data)


def _first(node, match):
    """The first dict in a Keras config for which ``match(d)`` holds."""
    if isinstance(node, dict):
        if match(node):
            return node
        node = list(node.values())
    if isinstance(node, list):
        for value in node:
            found = _first(value, match)
            if found is not None:
                return found
    return None


def _dense(config):
    return _first(config, lambda d: d.get("class_name") == "Dense" and "module" in d)


def _module_ref(module, nested=False):
    """The model itself (the object Keras imports a module for) or one of its layers names ``module``."""
    def tamper(config):
        target = _dense(config) if nested else config
        target["module"], target["class_name"], target["registered_name"] = module, "Payload", None
    return tamper


def _builtin_activation(config):
    _dense(config)["config"]["activation"] = {"module": "builtins", "class_name": "function", "config": "eval", "registered_name": "function"}


def _lambda_layer(config):
    layer = _dense(config)
    layer["class_name"], layer["module"] = "__lambda__", None


def _copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_run):
    from PIL import Image

    d = tmp_path_factory.mktemp("hostile")
    (d / "payload").mkdir()
    (d / "payload" / "hostile_payload.py").write_text(PAYLOAD)
    make_image_folder(d / "ok", per_class=6)
    Image.new("RGB", (8, 8)).save(d / "image.png")
    files = sorted((d / "ok").rglob("*.png"))
    rows = "\n".join(f"{p.relative_to(d)},{p.parent.name}" for p in files)
    (d / "secret").mkdir()
    Image.new("RGB", (8, 8)).save(d / "secret" / "s.png")
    (d / "csvs").mkdir()
    for p in files:
        (d / "csvs" / p.name).write_bytes(p.read_bytes())
    local = "\n".join(f"{p.name},{p.parent.name}" for p in files)
    (d / "csvs" / "link").symlink_to(d / "secret")
    (d / "csvs" / "tilde.csv").write_text(f"path,label\n{local}\n~/../etc/passwd,red\n")
    (d / "csvs" / "dotdot.csv").write_text(f"path,label\n{local}\n../../../etc/passwd,red\n")
    (d / "csvs" / "symlink.csv").write_text(f"path,label\n{local}\nlink/s.png,red\n")
    (d / "csvs" / "latin1.csv").write_bytes(f"path,label\n{local}\n".encode() + "caf\xe9.png,red\n".encode("latin-1"))
    (d / "csvs" / "nul.csv").write_bytes(f"path,label\n{local}\n".encode() + b"a\x00b.png,red\n")
    (d / "csvs" / "nolabel.csv").write_text("path\n" + "\n".join(p.name for p in files) + "\n")
    (d / "csvs" / "unl_dotdot.csv").write_text("path\n" + "\n".join(p.name for p in files) + "\n../secret/s.png\n")
    (d / "csvs" / "unl_latin1.csv").write_bytes(b"path\n" + "\xe9.png\n".encode("latin-1"))
    (d / "all.csv").write_text("path,label\n" + rows + "\n")
    make_image_folder(d / "newline_class", classes=("red", "gre\nen"), per_class=4)
    make_image_folder(d / "latin1_class", classes=("red", "blue"), per_class=4)
    os.rename(bytes(d / "latin1_class" / "blue"), bytes(d / "latin1_class") + b"/bl\xfcue")
    # YAML
    bomb = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        bomb.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    (d / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    (d / "latin1.yaml").write_bytes("train:\n  phase1_lr: 0.001  # caf\xe9\n".encode("latin-1"))
    (d / "huge.yaml").write_text("# " + "x" * (2 << 20) + "\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "deep.yaml").write_text("[" * 500 + "]" * 500 + "\n")
    (d / "pyobj.yaml").write_text(f"!!python/object/apply:os.system ['touch {d / 'payload' / 'MARKER'}']\n")
    (d / "name.yaml").write_text("name: ../../escaped\n")
    (d / "seed.yaml").write_text("seed: -1\n")
    (d / "nan.yaml").write_text("train: {phase1_lr: .nan}\n")
    (d / "size.yaml").write_text("data: {image_size: 100000}\n")
    (d / "infepochs.yaml").write_text("train: {phase1_epochs: .inf}\n")
    (d / "configdir").mkdir()
    # Runs: tampered copies of the tiny trained run
    runs = d / "runs"
    runs.mkdir()
    model = tiny_run / "model.keras"
    for name, tamper in {"evil": _module_ref("hostile_payload"), "evil_builtin": _builtin_activation,
                         "evil_lambda": _lambda_layer, "evil_nested": _module_ref("hostile_payload", nested=True), "evil_cwd": _module_ref("runs.evil_cwd.payload")}.items():
        target = _copy_run(tiny_run, runs / name)
        _rewrite_keras(model, target / "model.keras", tamper)
    (runs / "evil_cwd" / "payload.py").write_text(PAYLOAD)
    _copy_run(tiny_run, runs / "corrupt")
    (runs / "corrupt" / "model.keras").write_bytes(os.urandom(4096))
    _copy_run(tiny_run, runs / "truncated")
    (runs / "truncated" / "model.keras").write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    _copy_run(tiny_run, runs / "labels_long")
    (runs / "labels_long" / "labels.txt").write_text("red\ngreen\nblue\nextra\n")
    _copy_run(tiny_run, runs / "labels_latin1")
    (runs / "labels_latin1" / "labels.txt").write_bytes("red\ngr\xfcn\nblue\n".encode("latin-1"))
    _copy_run(tiny_run, runs / "config_latin1")
    (runs / "config_latin1" / "config.yaml").write_bytes((tiny_run / "config.yaml").read_bytes() + "# caf\xe9\n".encode("latin-1"))
    _copy_run(tiny_run, runs / "model_dir")
    (runs / "model_dir" / "model.keras").unlink()
    (runs / "model_dir" / "model.keras").mkdir()
    (d / "a_file").write_text("x")
    # Bundles
    (d / "bundle_random").mkdir()
    (d / "bundle_random" / "model_float32.tflite").write_bytes(os.urandom(2048))
    (d / "bundle_random" / "metadata.json").write_text(json.dumps({
        "format": "tlkeras-bundle", "variants": {"float32": {"file": "model_float32.tflite", "bytes": 2048}},
        "evaluation": {"primary_metric": "accuracy", "keras": {"accuracy": 1.0}}}))
    (d / "bundle_badjson").mkdir()
    (d / "bundle_badjson" / "metadata.json").write_text("{not json")
    (d / "bundle_latin1").mkdir()
    (d / "bundle_latin1" / "metadata.json").write_bytes('{"format": "caf\xe9"}'.encode("latin-1"))
    return {"d": d, "run": tiny_run, "runs": runs, "out": d / "out"}


# ---------------------------------------------------------------------------------------------
# The matrix


def _train(w, *extra):
    d = w["d"]
    return ["--data", str(d / "ok"), "--image-size", "32", "--weights", str(calibrated_weights(32)), "--alpha", "0.25",
            "--backbone", "mobilenet", "--verbose", "0", "--phase1-epochs", "1", "--phase2-epochs", "0",
            "--output-dir", str(w["out"]), "--name", "x", *extra]


def _data(w, rel):
    return _train(w) + ["--data", str(w["d"] / rel)]


def _run(w, name):
    return str(w["runs"] / name)


def _tune(w, *extra):
    return ["--data", str(w["d"] / "ok"), "--image-size", "32", "--weights", "none", "--backbone", "mobilenet",
            "--output-dir", str(w["out"]), "--name", "t", "--quiet", *extra]


def _adapt(w, technique, unlabeled, *extra):
    return [technique, "--unlabeled", str(w["d"] / unlabeled), *_train(w)[:-4], "--output-dir", str(w["out"]), "--name", "a", *extra]


def _export(w, run, *extra):
    return [run, "--output-dir", str(w["out"] / "bundle"), "--quiet", *extra]


EVIL = "outside Keras, TF-Hub, tfmot and tlkeras"

# case -> (cli, argv builder, text the error line must contain)
CASES: dict[str, tuple[str, object, str]] = {}


def case(name, cli, make, needle):
    assert name not in CASES, name
    CASES[name] = (cli, make, needle)


# Every CLI: a command line argparse rejects is one line, not the usage.
_POSITIONAL = {"evaluate": ["r"], "export": ["r"], "benchmark": ["b"], "optimize": ["r"], "distill": ["r"], "explain": ["r"],
               "adapt": ["dann", "--unlabeled", "u"]}
for _cli in CLIS:
    case(f"{_cli}: unknown flag", _cli, lambda w, c=_cli: [*_POSITIONAL.get(c, []), "--frobnicate"], "unrecognized arguments")

# train: values that would only fail after training, or never
for flag, value, needle in [
    ("--image-size", "abc", "invalid int value"), ("--image-size", "100000", "too large"), ("--image-size", "0", "positive"),
    ("--image-size", "-5", "positive"), ("--batch-size", "1000000000", "at most"), ("--phase1-lr", "nan", "not a finite number"),
    ("--phase1-lr", "inf", "not a finite number"), ("--phase1-lr", "-1", "phase1_lr"), ("--phase1-lr", "1e400", "not a finite number"),
    ("--warmup-epochs", "nan", "not a finite number"), ("--warmup-epochs", "inf", "not a finite number"), ("--warmup-epochs", "-1", "warmup_epochs"),
    ("--seed", "-1", "seed"), ("--seed", str(2**40), "seed"), ("--seed", "1.5", "invalid int value"),
    ("--name", "../../escape", "not a plain folder name"), ("--name", "/tmp/absolute", "not a plain folder name"),
    ("--name", "a/b", "not a plain folder name"), ("--name", "..", "not a plain folder name"), ("--name", "", "not a plain folder name"),
    ("--name", ".hidden", "not a plain folder name"), ("--name", "two\nlines", "not a plain folder name"),
    ("--name", "caf\udce9", "not a plain folder name"),  # the bytes caf\xe9 (latin-1) as Python passes them on
    ("--hidden-units", "1000000000", "hidden_units"), ("--alpha", "nan", "not a finite number"), ("--dropout", "nan", "not a finite number"),
    ("--label-smoothing", "nan", "not a finite number"), ("--weight-decay", "inf", "not a finite number"),
    ("--phase2-lr-factor", "nan", "not a finite number"), ("--val-fraction", "nan", "not a finite number"),
    ("--phase1-epochs", "1000000000", "at most"), ("--output-dir", "", "output_dir"), ("--augment", "extreme", "augment"),
    ("--data", "bad\0path", "NUL"), ("--stream", "sometimes", "stream"), ("--report", "maybe", "unrecognized arguments: maybe"),
]:
    case(f"train: {flag} {value!r}", "train", lambda w, f=flag, v=value: _train(w, f, v), needle)

for rel, needle in [
    ("configdir", "is a folder"), ("bomb.yaml", "aliases"), ("latin1.yaml", "not UTF-8"), ("huge.yaml", "larger than"),
    ("list.yaml", "must be a mapping"), ("deep.yaml", "nested"), ("pyobj.yaml", "not valid YAML"), ("missing.yaml", "does not exist"),
    ("name.yaml", "not a plain folder name"), ("seed.yaml", "seed"), ("nan.yaml", "phase1_lr"), ("size.yaml", "too large"),
    ("infepochs.yaml", "phase1_epochs"),
]:
    case(f"train: --config {rel}", "train", lambda w, r=rel: ["--config", str(w["d"] / r), "--output-dir", str(w["out"])], needle)

for rel, needle in [
    ("image.png", "pass the folder"), ("csvs/tilde.csv", "does not expand"), ("csvs/dotdot.csv", "points outside"),
    ("csvs/symlink.csv", "points outside"), ("csvs/latin1.csv", "not UTF-8"), ("csvs/nul.csv", "NUL"),
    ("csvs/nolabel.csv", "'label'"), ("newline_class", "line break"), ("latin1_class", "not valid UTF-8"),
    ("nowhere", "does not exist"),
]:
    case(f"train: --data {rel}", "train", lambda w, r=rel: _data(w, r), needle)

for rel, needle in [("csvs/unl_dotdot.csv", "points outside"), ("csvs/unl_latin1.csv", "not UTF-8"), ("nowhere", "does not exist")]:
    case(f"train: --technique pseudo-label --unlabeled {rel}", "train",
         lambda w, r=rel: _train(w, "--technique", "pseudo-label", "--unlabeled", str(w["d"] / r)), needle)
case("train: --resume of a run never started", "train", lambda w: _train(w, "--resume"), "nothing to resume")
case("train: --backbone hub:<missing folder>", "train", lambda w: _train(w, "--backbone", f"hub:{w['d'] / 'no_hub'}"), "neither a URL")
case("train: --backbone hub:<a file>", "train", lambda w: _train(w, "--backbone", f"hub:{w['d'] / 'a_file'}"), "not a SavedModel directory")
case("train: --weights missing file", "train", lambda w: _train(w, "--weights", str(w["d"] / "nope.h5")), "does not exist")
case("train: --unlabeled without --technique", "train", lambda w: _train(w, "--unlabeled", str(w["d"] / "ok")), "need --technique")

# evaluate, export, explain, distill, optimize: run directories that are missing, wrong or hostile
RUN_CASES = [
    ("no_such_run", "does not exist"), ("evil", EVIL), ("evil_nested", EVIL), ("evil_builtin", EVIL), ("evil_lambda", "lambda"),
    ("corrupt", "not a readable .keras"), ("truncated", "not a readable .keras"), ("model_dir", "no model.keras"),
    ("labels_long", "4 classes but the model has 3 outputs"), ("labels_latin1", "not UTF-8"),
]
for run, needle in RUN_CASES:
    case(f"evaluate: run {run}", "evaluate", lambda w, r=run: [_run(w, r), "--no-write"], needle)
case("evaluate: run is a file", "evaluate", lambda w: [str(w["d"] / "a_file")], "is a file")
case("evaluate: run config not UTF-8", "evaluate", lambda w: [_run(w, "config_latin1"), "--no-write"], "not UTF-8")
case("evaluate: --data escaping CSV", "evaluate", lambda w: [str(w["run"]), "--no-write", "--data", str(w["d"] / "csvs" / "dotdot.csv")], "points outside")
case("evaluate: --data is an image", "evaluate", lambda w: [str(w["run"]), "--no-write", "--data", str(w["d"] / "image.png")], "pass the folder")
case("evaluate: --split bogus", "evaluate", lambda w: [str(w["run"]), "--split", "bogus"], "invalid choice")

for run, needle in [("no_such_run", "does not exist"), ("evil", EVIL), ("evil_lambda", "lambda"), ("corrupt", "not a readable .keras"),
                    ("labels_long", "4 classes but the model has 3 outputs")]:
    case(f"export: run {run}", "export", lambda w, r=run: _export(w, _run(w, r)), needle)
for extra, needle in [
    (("--quantize", "int4"), "int4"), (("--quantize", "int8", "--representative-size", "0"), "representative"),
    (("--c-name", "1bad"), "c_name"), (("--max-drop", "-1"), "max_drop"), (("--max-drop", "abc"), "invalid float"),
    (("--max-drop", "nan"), "not a finite number"),
]:
    case(f"export: {' '.join(extra)}", "export", lambda w, e=extra: _export(w, str(w["run"]), *e), needle)
case("export: --output-dir is a file", "export", lambda w: [str(w["run"]), "--quantize", "float32", "--output-dir", str(w["d"] / "a_file")], "a_file")
case("export: --output-dir under a file", "export",
     lambda w: [str(w["run"]), "--quantize", "float32", "--output-dir", str(w["d"] / "a_file" / "sub" / "bundle")], "not a writable directory")

# This round's flags: the quickstart's --demo, the export's --web page and --serve.
case("train: --demo shapes with --data", "train", lambda w: _train(w, "--demo", "shapes"), "drop --data")
case("train: --stream on --on-corrupt error", "train", lambda w: _train(w, "--stream", "on", "--on-corrupt", "error"), "--stream off")
case("train: --demo bogus", "train", lambda w: ["--demo", "bogus", "--output-dir", str(w["out"])], "invalid choice")
case("export: no run directory", "export", lambda w: ["--quantize", "float32"], "pass a run directory")
case("export: --serve a missing folder", "export", lambda w: ["--serve", str(w["d"] / "nowhere")], "does not exist")
case("export: --serve a folder without a page", "export", lambda w: ["--serve", str(w["d"] / "ok")], "has no web/index.html")
case("export: --serve a file", "export", lambda w: ["--serve", str(w["d"] / "a_file")], "is a file")
case("export: --web with --metadata off", "export", lambda w: _export(w, str(w["run"]), "--web", "--metadata", "off"), "drop --metadata off")

for run, needle in [("no_such_run", "does not exist"), ("evil", EVIL), ("corrupt", "not a readable .keras")]:
    case(f"optimize: run {run}", "optimize", lambda w, r=run: [_run(w, r), "--prune", "0.5", "--output-dir", str(w["out"])], needle)
for extra, needle in [(("--prune", "nan"), "not a finite number"), (("--prune", "0.5", "--lr", "inf"), "not a finite number"), (("--prune", "1.5"), "sparsity"), (("--cluster", "1"), "cluster"),
                      (("--prune", "0.5", "--name", "../escape"), "not a plain folder name"), ((), "nothing to do")]:
    case(f"optimize: {' '.join(extra) or 'no stage'}", "optimize", lambda w, e=extra: [str(w["run"]), "--output-dir", str(w["out"]), *e], needle)

for run, needle in [("no_such_run", "does not exist"), ("evil", EVIL), ("evil_builtin", EVIL)]:
    case(f"explain: run {run}", "explain", lambda w, r=run: [_run(w, r), str(w["d"] / "image.png"), "--output-dir", str(w["out"])], needle)
case("explain: nothing to explain", "explain", lambda w: [str(w["run"])], "nothing to explain")
case("explain: --alpha abc", "explain", lambda w: [str(w["run"]), "--alpha", "abc"], "invalid float")

for run, needle in [("no_such_run", "does not exist"), ("a_file", "not a run directory")]:
    case(f"distill: teacher {run}", "distill", lambda w, r=run: [str(w["d"] / r), "--output-dir", str(w["out"])], needle)
case("distill: evil teacher", "distill", lambda w: [_run(w, "evil"), "--output-dir", str(w["out"]), "--phase1-epochs", "1"], EVIL)
for extra, needle in [(("--temperature", "nan"), "not a finite number"), (("--soft-weight", "2"), "soft_weight"),
                      (("--name", "../escape"), "not a plain folder name"), (("--image-size", "100000"), "too large")]:
    case(f"distill: {' '.join(extra)}", "distill", lambda w, e=extra: [str(w["run"]), "--output-dir", str(w["out"]), *e], needle)

for rel, needle in [("no_bundle", "does not exist"), ("bundle_random", "LiteRT cannot load"), ("bundle_badjson", "not valid JSON"),
                    ("bundle_latin1", "not valid UTF-8")]:
    case(f"benchmark: {rel}", "benchmark", lambda w, r=rel: [str(w["d"] / r), "--no-write", "--iterations", "2", "--warmup", "0"], needle)
for extra, needle in [(("--threads", "0"), "thread"), (("--threads", "a,b"), "comma-separated"), (("--iterations", "0"), "iterations")]:
    case(f"benchmark: {' '.join(extra)}", "benchmark", lambda w, e=extra: [str(w["d"] / "bundle_random"), "--no-write", *e], needle)

for rel, needle in [("bomb.yaml", "aliases"), ("latin1.yaml", "not UTF-8"), ("configdir", "is a folder"), ("huge.yaml", "larger than")]:
    case(f"tune: --space {rel}", "tune", lambda w, r=rel: _tune(w, "--space", str(w["d"] / r)), needle)
for extra, needle in [(("--hp", "garbage"), "NAME=SPEC"), (("--max-trials", "0"), "max"), (("--name", "../escape"), "not a plain folder name"),
                      (("--phase1-lr", "nan"), "not a finite number"), (("--seed", "-3"), "seed")]:
    case(f"tune: {' '.join(extra)}", "tune", lambda w, e=extra: _tune(w, *e), needle)

case("adapt: no technique", "adapt", lambda w: [], "required")
for technique, rel, extra, needle in [
    ("dann", "csvs/unl_dotdot.csv", (), "points outside"), ("mmd", "csvs/unl_latin1.csv", (), "not UTF-8"),
    ("fixmatch", "nowhere", (), "does not exist"), ("simclr", "ok", ("--image-size", "100000"), "too large"),
    ("pseudo-label", "ok", ("--name", "../escape"), "not a plain folder name"), ("importance", "ok", ("--seed", "-1"), "seed"),
]:
    case(f"adapt: {technique} {rel} {' '.join(extra)}", "adapt", lambda w, t=technique, r=rel, e=extra: _adapt(w, t, r, *e), needle)


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(name, world, capsys, monkeypatch):
    cli, make_args, needle = CASES[name]
    # The payload's folder is importable, as a run folder is under `python -m` from its parent.
    monkeypatch.syspath_prepend(str(world["d"] / "payload"))
    module = importlib.import_module(f"tlkeras.{cli}.__main__")
    before = _snapshot(world["d"])
    code = module.main(make_args(world))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (name, err)
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith(f"tlkeras.{cli}: error: "), line
    assert "Traceback" not in line
    assert needle.lower() in line.lower(), line
    assert HINT.search(line.split(": error: ", 1)[1]), f"says what is wrong but not what to do: {line}"
    assert not (world["d"] / "payload" / "MARKER").exists(), "the model's module was imported"
    assert "hostile_payload" not in sys.modules
    assert _snapshot(world["d"]) == before, "no artifact, not even a partial one"


def test_the_matrix_covers_every_cli_with_at_least_100_cases():
    assert len(CASES) >= 100
    assert {cli for cli, _, _ in CASES.values()} == set(CLIS)


# ---------------------------------------------------------------------------------------------
# The allowlist: what it refuses would really run, and what tlkeras writes still loads


def test_plain_keras_safe_mode_would_import_the_payload(world, tmp_path, monkeypatch):
    """The control: without tlkeras' check, Keras' safe mode imports the module the file names."""
    from tlkeras._backend import keras

    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "hostile_payload_control.py").write_text(PAYLOAD)
    _rewrite_keras(world["run"] / "model.keras", tmp_path / "m.keras", _module_ref("hostile_payload_control"))
    monkeypatch.syspath_prepend(str(payload))
    with pytest.raises(Exception):  # noqa: B017,PT011 - Keras fails after the import; the import is the point
        keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert (payload / "MARKER").exists()
    sys.modules.pop("hostile_payload_control", None)


def test_check_accepts_what_tlkeras_writes_and_refuses_the_rest(world, tmp_path):
    from tlkeras.core.loading import check_keras_file, load_model
    from tlkeras.errors import ModelFileError, UnsafeModelError

    check_keras_file(world["run"] / "model.keras")
    assert load_model(world["run"]).outputs[0].shape[-1] == 3
    for module in ("os", "subprocess", "runs.evil.payload", "numpy.lib", "keras.../x", "tlkerasx.y"):
        _rewrite_keras(world["run"] / "model.keras", tmp_path / "m.keras", _module_ref(module))
        with pytest.raises(UnsafeModelError):
            check_keras_file(tmp_path / "m.keras")
    (tmp_path / "plain.keras").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "plain.keras")
    (tmp_path / "model.h5").write_bytes(b"\x89HDF")
    with pytest.raises(ModelFileError, match=".keras"):
        load_model(tmp_path / "model.h5")


def test_evaluate_from_the_runs_parent_folder_does_not_run_the_runs_code(world):
    """The issue's attack as a user meets it: `python -m tlkeras.evaluate runs/x` with the run's
    parent as the current folder (on sys.path), the model naming a module shipped in the run."""
    result = _cli(["tlkeras.evaluate", "runs/evil_cwd", "--no-write"], cwd=world["d"])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and EVIL in lines[0] and "Traceback" not in result.stderr, lines
    assert not (world["runs"] / "evil_cwd" / "MARKER").exists()


# ---------------------------------------------------------------------------------------------
# Real processes: Ctrl-C, a second process on one run, a full disk


def _env():
    # What a user's shell has: no TF_CPP_MIN_LOG_LEVEL (conftest sets one for the test process).
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def _cli(args, cwd=None, **kwargs):
    env = _env()
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env, **kwargs)


def test_ctrl_c_exits_130_with_one_line_and_a_resumable_or_no_run(world, tmp_path):
    out = tmp_path / "runs"
    args = [a if a != str(world["out"]) else str(out) for a in _train(world)]
    args += ["--phase1-epochs", "500", "--phase1-solver", "keras", "--feature-cache", "off", "--verbose", "2", "--name", "ctrlc"]
    env = _env()
    proc = subprocess.Popen([sys.executable, "-m", "tlkeras.train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # wait for the first finished epoch
            line = proc.stdout.readline()
            if not line or "loss" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tlkeras.train: interrupted") and "--resume" in lines[0], lines
    assert not (out / "ctrlc").exists()
    partial = out / ".ctrlc.partial"
    if partial.exists():  # kept only when a resume can use it
        assert (partial / "config.yaml").is_file() and any(partial.glob("checkpoints/phase*/state.json"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_during_export_exits_130_and_leaves_no_bundle(world, tmp_path, sig):
    """Ctrl-C, or SIGTERM (``kill``, a scheduler's stop), while the bundle is being assembled: no
    bundle, no hidden .partial folder, nothing left in the temporary directory."""
    bundle = tmp_path / "export" / "bundle"
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "tlkeras.export", str(world["run"]), "--output-dir", str(bundle)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**_env(), "TMPDIR": str(temp)})
    try:
        first = proc.stdout.readline()  # the first progress line: the export has started
        assert first, proc.stderr.read()
        deadline = time.time() + 60
        while not list(bundle.parent.glob(".bundle.partial*")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)  # until the bundle is being assembled
        assert list(bundle.parent.glob(".bundle.partial*")), "no .partial folder appeared"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = err.strip().splitlines()
    assert proc.returncode == 130, err
    assert len(lines) == 1 and lines[0].startswith("tlkeras.export: interrupted"), lines
    assert not (tmp_path / "export").exists()
    assert not list(temp.iterdir()), list(temp.iterdir())


def test_a_run_owned_by_another_process_is_refused(world, tmp_path, capsys):
    """A second process can neither resume nor restart a run that a live process owns."""
    out = tmp_path / "runs"
    partial = out / ".busy.partial"
    partial.mkdir(parents=True)
    (partial / "config.yaml").write_text("name: busy\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDONLY)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(120)\n", str(partial)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from tlkeras.train import __main__ as train_cli

        for extra in (["--resume"], []):
            args = [a if a != str(world["out"]) else str(out) for a in _train(world)] + ["--name", "busy", *extra]
            assert train_cli.main(args) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "in use by another tlkeras process" in err[0], err
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in out.iterdir()) == [".busy.partial"]
    assert sorted(p.name for p in partial.iterdir()) == ["config.yaml"]


def test_a_full_disk_during_export_is_one_line_and_leaves_no_folder(world, tmp_path):
    """RLIMIT_FSIZE makes every write past 64 KiB fail with EFBIG, as a full disk fails with ENOSPC."""
    import resource

    bundle = tmp_path / "export" / "bundle"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.RLIM_INFINITY))

    result = _cli(["tlkeras.export", str(world["run"]), "--quantize", "float32", "--output-dir", str(bundle), "--quiet"],
                  preexec_fn=limit)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and "disk is full" in lines[0] and "free some space" in lines[0], lines
    assert not (tmp_path / "export").exists(), "no empty bundle folder, no created parent"


def test_staged_directory_maps_a_full_disk_and_cleans_up(tmp_path):
    import errno

    from tlkeras.errors import DiskFullError
    from tlkeras.runs import staged_directory

    with pytest.raises(DiskFullError, match="disk is full"):
        with staged_directory(tmp_path / "new" / "deeper" / "bundle") as stage:
            (stage / "part").write_text("x")
            raise OSError(errno.ENOSPC, "No space left on device", str(stage / "model.tflite"))
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_that_surfaces_as_another_error_is_still_an_interrupt(capsys):
    """Ctrl-C inside TensorFlow's graph building once surfaced as a SystemError raised while the
    KeyboardInterrupt was handled (a clean-clone CI run): exit 130 and one line, as any Ctrl-C.
    An error with no interrupt behind it stays a bug with its traceback."""
    from tlkeras import cli

    def interrupted(argv):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemError("Objects/listobject.c:338: bad argument to internal function") from None

    assert cli.run("tlkeras.export", interrupted, []) == 130
    assert capsys.readouterr().err.strip().splitlines()[0].startswith("tlkeras.export: interrupted")

    def bug(argv):
        raise SystemError("a bug")

    with pytest.raises(SystemError, match="a bug"):
        cli.run("tlkeras.export", bug, [])


def test_export_gate_failure_maps_to_exit_3(capsys):
    from tlkeras import cli
    from tlkeras.errors import ExportCheckFailed

    def main(argv):
        raise ExportCheckFailed("int8 dropped 5.0 points (> --max-drop 2); pass --allow-drop or export float32")

    from tlkeras.export.bundle import ExportCheckError

    assert issubclass(ExportCheckError, ExportCheckFailed) and ExportCheckFailed.exit_code == 3
    assert cli.run("tlkeras.export", main, []) == 3
    assert capsys.readouterr().err.strip().splitlines() == [
        "tlkeras.export: error: int8 dropped 5.0 points (> --max-drop 2); pass --allow-drop or export float32"]


def test_usage_errors_are_one_line_from_a_real_process():
    result = _cli(["tlkeras.tune", "--max-trials", "many"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tlkeras.tune: error: argument --max-trials: invalid int value: 'many'; see python -m tlkeras.tune --help"]


def test_error_messages_never_span_lines():
    from tlkeras.errors import DataError

    assert str(DataError("a\nb")) == "a b"
    buffer = io.StringIO()
    print(DataError("x\ny"), file=buffer)
    assert buffer.getvalue().count("\n") == 1
