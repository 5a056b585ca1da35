"""The trainable variant: a model that keeps learning on the device, checked on plain LiteRT in a
process that never imports TensorFlow (as an app runs it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_image_folder

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: ai_edge_litert and NumPy only (asserted at the end).
DEVICE_SCRIPT = r'''
import json, sys
import numpy as np
from PIL import Image
from pathlib import Path
from tlkeras.export.personalize import OnDeviceHead, simulate_step
from tlkeras.errors import TLKerasError

bundle, data = Path(sys.argv[1]), Path(sys.argv[2])
meta = json.loads((bundle / "metadata.json").read_text())
classes = meta["task"]["class_names"]
head = OnDeviceHead(bundle / "trainable.tflite")
def load(folder):
    files = sorted(folder.glob("*.png"))
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((head.size, head.size), Image.BILINEAR), np.float32) for f in files])
x = {c: load(data / c) for c in classes}
images = np.concatenate([x[c] for c in classes]); labels = np.concatenate([[i] * len(x[c]) for i, c in enumerate(classes)])
out = {}
# infer with the run's head equals the float32 variant.
from ai_edge_litert.interpreter import Interpreter
ref = Interpreter(model_path=str(bundle / "float32.tflite")); ref.allocate_tensors()
inp, o = ref.get_input_details()[0], ref.get_output_details()[0]
ref_top = []
for im in images:
    ref.set_tensor(inp["index"], im[None]); ref.invoke(); ref_top.append(int(np.argmax(ref.get_tensor(o["index"])[0])))
scores = head.infer(images)
out["infer_vs_float32"] = float(np.mean(scores[:, :len(classes)].argmax(1) == np.array(ref_top)))
out["unused_slots_score"] = float(scores[:, len(classes):].max())
# get_weights -> new interpreter -> set_weights: identical scores.
saved = head.get_weights()
other = OnDeviceHead(bundle / "trainable.tflite"); other.reset(); other.set_weights(**saved)
out["restore_max_diff"] = float(np.max(np.abs(other.infer(images[:6]) - scores[:6])))
# One step equals the NumPy simulation.
feats = head.embed(images)
out["scores_vs_infer"] = float(np.max(np.abs(head.scores(feats) - scores)))
zero_v = {"weights": np.zeros_like(saved["weights"], np.float64), "bias": np.zeros_like(saved["bias"], np.float64)}
expected, _, loss = simulate_step(saved, zero_v, feats[:10], labels[:10], 0.1, meta["trainable"]["optimizer"]["l2"], meta["trainable"]["optimizer"]["momentum"])
got = head.train_step(feats[:10], labels[:10], 0.1)
after = head.get_weights()
out["step_max_diff"] = float(max(np.max(np.abs(after[k] - expected[k])) for k in ("weights", "bias")))
out["loss_diff"] = abs(got - loss)
# A non-finite step leaves the head unchanged (the raw signature, past the Python checks).
runner = head._runners["train"]
res = runner(features=feats[:4], labels=labels[:4].astype(np.int32), learning_rate=np.float32("nan"))
out["nan_step_applied"] = float(res["applied"])
out["nan_step_changed"] = float(max(np.max(np.abs(head.get_weights()[k] - after[k])) for k in ("weights", "bias")))
# Training from zero on the device.
head.reset()
head.fit(feats, labels, epochs=30, learning_rate=0.05)
out["from_zero_train_accuracy"] = float(np.mean(head.infer(images)[:, :len(classes)].argmax(1) == labels))
# Personalization: a class the run never saw goes into the first free slot.
head.set_weights(**saved)
# (Night shots: the tiny test backbone's features keep dark images apart; a look-alike colour they do not.)
novel = np.clip(np.random.default_rng(0).normal(20, 10, (15, head.size, head.size, 3)), 0, 255).astype(np.float32)
slot = len(classes)
head.fit(np.concatenate([feats, head.embed(novel[:5])]), np.concatenate([labels, [slot] * 5]), epochs=60, learning_rate=0.2)
out["new_class_recall"] = float(np.mean(head.infer(novel[5:]).argmax(1) == slot))
out["old_accuracy_after"] = float(np.mean(head.infer(images).argmax(1) == labels))
errors = []
for call in (lambda: head.train_step(feats[:2], np.array([0, head.slots]), 0.1), lambda: head.train_step(feats[:2, :3], labels[:2], 0.1),
             lambda: head.train_step(feats[:2], labels[:2], float("inf")), lambda: head.set_weights(saved["weights"][:, :2], saved["bias"], saved["active"])):
    try:
        call()
        errors.append(None)
    except TLKerasError as exc:
        errors.append(str(exc))
out["errors"] = errors
out["tensorflow_imported"] = "tensorflow" in sys.modules
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def trainable_bundle(tiny_run, tmp_path_factory):
    from tlkeras.export.bundle import ExportOptions, export_run

    target = tmp_path_factory.mktemp("trainable") / "bundle"
    result = export_run(tiny_run, target, ExportOptions(variants=("float32",), trainable=True, micro=False))
    return result


def test_trainable_variant_is_written_verified_and_small(trainable_bundle):
    meta = trainable_bundle.metadata["trainable"]
    assert (trainable_bundle.bundle_dir / "trainable.tflite").is_file()
    assert meta["slots"] == 3 + 5 and meta["free_slots"] == 5 and meta["verified_on"] == ["litert"]
    assert meta["infer_agreement_with_keras"] >= 0.995 and meta["train_step_max_error_vs_numpy"] < 1e-4
    assert meta["size_vs_float32"] <= 1.05
    assert set(meta["signatures"]) == {"infer", "embed", "train", "get_weights", "set_weights"}
    from tlkeras.report.html import bundle_report_html

    assert "On-device training: trainable.tflite" in bundle_report_html(trainable_bundle.bundle_dir)
    assert "## On-device training" in (trainable_bundle.bundle_dir / "model_card.md").read_text()
    from tlkeras.core.litert import inspect_model

    ops = inspect_model(trainable_bundle.bundle_dir / "trainable.tflite").op_names
    assert not [op for op in ops if "FLEX" in op.upper() or op.upper() == "CUSTOM"], ops  # builtins only


def test_the_device_learns_without_tensorflow(trainable_bundle, tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=10, seed=5)
    out = subprocess.run([sys.executable, "-c", DEVICE_SCRIPT, str(trainable_bundle.bundle_dir), str(data)],
                         capture_output=True, text=True, cwd=str(ROOT), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["tensorflow_imported"] is False
    assert r["infer_vs_float32"] >= 0.995 and r["unused_slots_score"] < 1e-6
    assert r["restore_max_diff"] == 0.0 and r["scores_vs_infer"] < 1e-5
    assert r["step_max_diff"] < 1e-4 and r["loss_diff"] < 1e-4
    assert r["nan_step_applied"] == 0.0 and r["nan_step_changed"] == 0.0
    assert r["from_zero_train_accuracy"] >= 0.9
    assert r["new_class_recall"] >= 0.6 and r["old_accuracy_after"] >= 0.9, json.dumps(r)
    assert all(r["errors"]), r["errors"]
    assert "outside the head's slots" in r["errors"][0] and "n x" in r["errors"][1] and "finite" in r["errors"][2] and "shape" in r["errors"][3]


def test_trainable_bad_inputs(tiny_run, tmp_path):
    from tlkeras.errors import TLKerasError
    from tlkeras.export.bundle import ExportOptions, export_run

    with pytest.raises(TLKerasError, match="fewer than the run's 3 classes"):
        export_run(tiny_run, tmp_path / "b", ExportOptions(variants=("float32",), trainable=True, trainable_classes=2, micro=False))
    assert not (tmp_path / "b").exists()
    with pytest.raises(TLKerasError, match="trainable_classes must be in"):
        ExportOptions(trainable=True, trainable_classes=1).validate()


@pytest.mark.parametrize("flags, needle", [
    (["--trainable-classes", "2"], "fewer than the run's 3 classes"),
    (["--trainable-classes", "1"], "trainable_classes must be in"),
    (["--trainable-classes", "5000"], "trainable_classes must be in"),
    (["--trainable-classes", "nan"], "invalid int value"),
])
def test_trainable_cli_bad_inputs_are_one_line(tiny_run, tmp_path, capsys, flags, needle):
    from tlkeras.export import __main__ as export_cli

    code = export_cli.main([str(tiny_run), "--quantize", "float32", "--no-micro", "--trainable", *flags, "--output-dir", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("tlkeras.export: error: ") and needle in err[0], err
    assert not (tmp_path / "b").exists()
