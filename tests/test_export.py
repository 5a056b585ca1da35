"""Edge export: every variant converts and runs on LiteRT, metadata matches the models, the C array
compiles and round-trips, the TF-free consumer classifies, bad input gives one-line errors.

Most tests share one bundle of a small, well-trained conv/depthwise/BN/ReLU6 model (the op mix of
MobileNet, at 16 px, so all seven conversions take seconds); the CLI test exports the session's
MobileNet ``tiny_run``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder

from tlkeras.core import litert
from tlkeras.errors import TLKerasError

REPO = Path(__file__).resolve().parents[1]
SIZE = 16
CLASSES = ("red", "green", "blue")


def _small_model(num_classes: int = 3):
    """Rescaling -> conv/BN/ReLU6 -> depthwise/BN/ReLU6 -> pointwise/BN/ReLU6 -> GAP -> Dense softmax."""
    from tlkeras._backend import keras

    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = L.Rescaling(1 / 127.5, offset=-1, name="preprocess_scale")(inp)
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="conv1")(x)
    x = L.BatchNormalization(name="conv1_bn")(x)
    x = L.ReLU(6.0, name="conv1_relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="conv_dw")(x)
    x = L.BatchNormalization(name="conv_dw_bn")(x)
    x = L.ReLU(6.0, name="conv_dw_relu")(x)
    x = L.Conv2D(16, 1, use_bias=False, name="conv_pw")(x)
    x = L.BatchNormalization(name="conv_pw_bn")(x)
    x = L.ReLU(6.0, name="conv_pw_relu")(x)
    x = L.GlobalAveragePooling2D(name="head_pool")(x)
    x = L.Dense(num_classes, name="head_dense")(x)
    out = L.Activation("softmax", name="head_output")(x)
    return keras.Model(inp, out, name="small")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A run directory (config.yaml, model.keras, labels.txt) of the small model, trained to ~100%."""
    from tlkeras._backend import keras
    from tlkeras.config import DataConfig, ModelConfig, RunConfig, save_config
    from tlkeras.core.data import load_data

    root = tmp_path_factory.mktemp("small_run")
    folder = make_image_folder(root / "images", classes=CLASSES, per_class=30, size=SIZE, seed=3)
    config = RunConfig(data=DataConfig(source=str(folder), image_size=SIZE, augment="off", val_fraction=0.2, test_fraction=0.2),
                       model=ModelConfig(backbone="mobilenet", weights="none", alpha=0.25), name="small", seed=7)
    data = load_data(config.data, SIZE, "softmax", config.seed)
    keras.utils.set_random_seed(7)
    model = _small_model()
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.train.x.astype("float32"), data.train.y, epochs=25, batch_size=16, verbose=0)
    run = root / "runs" / "small"
    run.mkdir(parents=True)
    model.save(run / "model.keras")
    save_config(config, run / "config.yaml")
    (run / "labels.txt").write_text("\n".join(data.class_names) + "\n")
    return run, model, data


@pytest.fixture(scope="module")
def bundle(small_run, tmp_path_factory):
    """Every variant of the small model, with the quantization report and a SavedModel."""
    from tlkeras.export.bundle import ExportOptions, export_run

    run, _, _ = small_run
    out = tmp_path_factory.mktemp("bundles") / "small"
    options = ExportOptions(representative_size=40, debug_quantization=True, saved_model=True, max_drop=5.0)
    return export_run(run, out, options)


# ---------------------------------------------------------------------------------------------
# Variants, metadata, accuracy


def test_image_bundle_validates_against_the_shipped_schema(bundle):
    """metadata.json follows bundle.schema.json: every top-level and per-variant key, nothing else."""
    from tlkeras.export.pipeline import TOP_LEVEL_KEYS, VARIANT_KEYS, load_schema, validate_metadata

    on_disk = json.loads((bundle.bundle_dir / "metadata.json").read_text())
    validate_metadata(on_disk)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(on_disk, load_schema())
    assert list(on_disk) == list(TOP_LEVEL_KEYS)
    for name, entry in on_disk["variants"].items():
        assert list(entry) == list(VARIANT_KEYS), name
        assert entry["file"] == f"{name}.tflite" and "litert" in entry["verified_on"]
    broken = json.loads(json.dumps(on_disk))
    del broken["variants"]["float32"]["verified_on"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, load_schema())
    with pytest.raises(TLKerasError, match="verified_on"):
        validate_metadata(broken)


def test_schema_validator_without_jsonschema(bundle, monkeypatch):
    """Without the jsonschema package the package's own validator applies the same schema."""
    import sys

    from tlkeras.export.pipeline import validate_metadata

    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import jsonschema now raises ImportError
    on_disk = json.loads((bundle.bundle_dir / "metadata.json").read_text())
    validate_metadata(on_disk)
    for breach, needle in ((lambda m: m["variants"]["int8"].pop("sha256"), "sha256"),
                           (lambda m: m.update(format_version=1), "format_version"),
                           (lambda m: m["variants"]["float32"].update(verified_on=["a phone"]), "verified_on"),
                           (lambda m: m.update(extra=1), "extra")):
        broken = json.loads(json.dumps(on_disk))
        breach(broken)
        with pytest.raises(TLKerasError, match=needle):
            validate_metadata(broken)


def test_every_variant_converts_runs_and_agrees_with_keras(bundle, small_run):
    from tlkeras.core.metrics import predict
    from tlkeras.export.variants import VARIANTS

    _, model, data = small_run
    meta = bundle.metadata
    assert set(meta["variants"]) == set(VARIANTS)
    assert meta["evaluation"]["keras"]["accuracy"] >= 0.9, "the small model should be well trained"
    keras_out = predict(model, data.test.x)
    for name, variant in VARIANTS.items():
        out = litert.run_model(bundle.variant_path(name), data.test.x)
        diff = float(np.abs(out - keras_out).max())
        assert diff <= variant.tolerance, f"{name}: max |tflite - keras| = {diff}"
        assert np.mean(out.argmax(1) == keras_out.argmax(1)) >= 0.9, name
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=0.05)  # still a softmax after dequantizing
        # metadata records what the interpreter gives
        assert meta["variants"][name]["metrics"]["max_abs_diff"] == pytest.approx(diff, abs=1e-6)
    assert bundle.passed and meta["passed"] is True


def test_metadata_matches_the_models(bundle):
    from tlkeras.export.variants import VARIANTS

    meta = bundle.metadata
    assert meta["format"] == "tlkeras-bundle" and meta["format_version"] == 2
    assert meta["task"]["class_names"] == sorted(CLASSES)
    assert (bundle.bundle_dir / "labels.txt").read_text().split() == meta["task"]["class_names"]
    assert meta["input"]["shape"] == [1, SIZE, SIZE, 3] and meta["input"]["value_range"] == [0, 255]
    assert json.loads((bundle.bundle_dir / "metadata.json").read_text()) == json.loads(json.dumps(meta))
    expected_io = {"float32": "float32", "dynamic_range": "float32", "float16": "float32", "int8_float_io": "float32",
                   "int8": "int8", "uint8_io": "uint8", "int16x8": "float32"}
    for name, entry in meta["variants"].items():
        content = (bundle.bundle_dir / entry["file"]).read_bytes()
        assert entry["bytes"] == len(content) and entry["sha256"] == hashlib.sha256(content).hexdigest()
        details = litert.io_details(litert.load_interpreter(content))
        for side in ("inputs", "outputs"):
            real = details[side][0]
            recorded = entry[side[:-1]]
            assert recorded == {k: real[k] for k in recorded}, (name, side)
        assert entry["input"]["dtype"] == expected_io[name]
        assert entry["input"]["shape"] == [1, SIZE, SIZE, 3]
        assert entry["output"]["shape"] == [1, len(CLASSES)]
        assert entry["bias_correction"] == {"int8": "weights+activations", "float32": None, "float16": None,
                                            "int16x8": "weights", "dynamic_range": "weights"}.get(name, entry["bias_correction"])
        assert set(entry["ops"]) <= set(litert.inspect_model(content).op_names)
        assert VARIANTS[name].description == entry["description"]
    # raw pixels in: an int8 input is pixel - 128, a uint8 input is the pixel itself
    assert (meta["variants"]["int8"]["input"]["scale"], meta["variants"]["int8"]["input"]["zero_point"]) == (1.0, -128)
    assert (meta["variants"]["uint8_io"]["input"]["scale"], meta["variants"]["uint8_io"]["input"]["zero_point"]) == (1.0, 0)
    assert meta["recommended"] in meta["variants"]
    card = (bundle.bundle_dir / "model_card.md").read_text()
    assert all(f"| {name} |" in card for name in VARIANTS)
    assert (bundle.bundle_dir / "saved_model" / "saved_model.pb").is_file()
    assert not [p for p in bundle.bundle_dir.rglob("*") if ".tmp" in p.name], "temporary files left behind"


def test_metrics_in_metadata_are_reproducible(bundle, small_run):
    from tlkeras.core.metrics import compute_metrics

    _, _, data = small_run
    for name in ("int8", "float16"):
        out = litert.run_model(bundle.variant_path(name), data.test.x)
        metrics = compute_metrics(data.test.y, out, list(data.class_names), "softmax")
        recorded = bundle.metadata["variants"][name]["metrics"]
        assert recorded["accuracy"] == pytest.approx(metrics["accuracy"])
        assert recorded["f1_macro"] == pytest.approx(metrics["f1_macro"])
        keras_accuracy = bundle.metadata["evaluation"]["keras"]["accuracy"]
        assert recorded["drop_points"] == pytest.approx(100 * (keras_accuracy - metrics["accuracy"]))


def test_saved_model_serves_the_same_outputs(bundle, small_run):
    from tlkeras._backend import tf
    from tlkeras.core.metrics import predict

    _, model, data = small_run
    loaded = tf.saved_model.load(str(bundle.bundle_dir / "saved_model"))
    out = loaded.signatures["serving_default"](image=tf.constant(data.test.x[:5].astype("float32")))["probabilities"].numpy()
    np.testing.assert_allclose(out, predict(model, data.test.x[:5]), atol=1e-5)


def test_quantization_report_names_layers(bundle):
    import csv

    report = bundle.bundle_dir / "quantization_report.csv"
    rows = list(csv.DictReader(report.open()))
    layers = {r["layer"] for r in rows}
    assert {"conv1_relu", "conv_pw_relu", "head_dense"} <= layers
    errors = [float(r["rmse_over_scale"]) for r in rows]
    assert errors == sorted(errors, reverse=True) and all(e >= 0 for e in errors)
    worst = bundle.metadata["variants"]["int8"]["worst_layers"]
    assert worst[0]["layer"] == rows[0]["layer"]


# ---------------------------------------------------------------------------------------------
# Representative data and bias correction


def test_representative_indices_are_stratified_and_seeded():
    from tlkeras.export.convert import representative_indices

    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    idx = representative_indices(y, 20, seed=1)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20
    assert np.bincount(y[idx], minlength=3).tolist() == [12, 6, 2]  # proportional to class sizes
    assert np.array_equal(idx, representative_indices(y, 20, seed=1))
    assert not np.array_equal(idx, representative_indices(y, 20, seed=2))
    small = representative_indices(y, 3, seed=0)
    assert sorted(np.bincount(y[small], minlength=3).tolist()) == [1, 1, 1]  # every class, when size allows
    assert len(representative_indices(y, 1000)) == len(y)


def test_bias_correction_cancels_the_mean_shift_of_int8_weights(small_run):
    """Rounding conv1's kernel to int8 shifts conv1_bn's per-channel mean; the correction cancels it."""
    from tlkeras._backend import keras
    from tlkeras.export.bias import _int8_weights, bias_correct

    _, model, data = small_run
    before = [w.copy() for w in model.get_weights()]
    corrected, names = bias_correct(model, data.train.x, activations=False)
    assert {"conv1", "conv_dw", "conv_pw", "head_dense"} <= set(names)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())), "the original model changed"

    x = data.test.x.astype("float32")
    probe = keras.Model(model.inputs, model.get_layer("conv1_bn").output)
    reference = probe.predict(x, verbose=0).mean(axis=(0, 1, 2))

    def shift_with_int8_kernel(source) -> float:
        clone = keras.models.clone_model(source)
        clone.set_weights(source.get_weights())
        kernel = clone.get_layer("conv1").get_weights()[0]
        clone.get_layer("conv1").set_weights([_int8_weights(kernel, depthwise=False)])
        quantized = keras.Model(clone.inputs, clone.get_layer("conv1_bn").output).predict(x, verbose=0).mean(axis=(0, 1, 2))
        return float(np.abs(quantized - reference).max())

    uncorrected = shift_with_int8_kernel(model)
    assert uncorrected > 0
    # measured on the training images, applied to test images of the same distribution
    assert shift_with_int8_kernel(corrected) < 0.25 * uncorrected, uncorrected


# ---------------------------------------------------------------------------------------------
# Microcontrollers


def test_c_array_compiles_round_trips_and_reports_micro_facts(bundle, tmp_path):
    meta = bundle.metadata["micro"]
    assert meta["ok"] and meta["problems"] == []
    assert set(meta["ops"]) <= {"MUL", "ADD", "CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"}
    assert meta["arena_bytes"] >= meta["arena"]["activations"] > 0
    micro_dir = bundle.bundle_dir / "micro"
    header = (micro_dir / "tlkeras_model.h").read_text()
    assert "TLKERAS_MODEL_TENSOR_ARENA_SIZE = %d;" % meta["arena_bytes"] in header
    assert "TLKERAS_MODEL_INPUT_ZERO_POINT = -128;" in header
    assert "resolver.AddDepthwiseConv2D();" in header
    model = (bundle.bundle_dir / "int8.tflite").read_bytes()
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    main = tmp_path / "dump.cc"
    main.write_text(
        '#include <cstdio>\n#include "tlkeras_model.h"\n'
        "int main(int argc, char** argv) {\n"
        "  if ((reinterpret_cast<unsigned long>(tlkeras_model_data) % 16) != 0) return 3;\n"
        '  std::FILE* f = std::fopen(argv[1], "wb");\n'
        "  std::fwrite(tlkeras_model_data, 1, tlkeras_model_data_len, f);\n"
        "  std::fclose(f);\n"
        '  std::printf("%d %s\\n", TLKERAS_MODEL_NUM_CLASSES, tlkeras_model_labels[0]);\n'
        "  return 0;\n}\n"
    )
    exe = tmp_path / "dump"
    subprocess.run([compiler, "-std=c++11", "-Wall", "-Werror", f"-I{micro_dir}", str(main), str(micro_dir / "tlkeras_model.cc"), "-o", str(exe)],
                   check=True, capture_output=True, timeout=300)
    done = subprocess.run([str(exe), str(tmp_path / "model.bin")], check=True, capture_output=True, text=True)
    assert done.stdout.split() == [str(len(CLASSES)), sorted(CLASSES)[0]]
    assert (tmp_path / "model.bin").read_bytes() == model


def test_int8_model_runs_on_tflite_micro(bundle, small_run):
    """With the optional tflite-micro package: TFLM runs the int8 model in the recorded arena and
    gives LiteRT's outputs to within one quantization step."""
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    _, _, data = small_run
    model = (bundle.bundle_dir / "int8.tflite").read_bytes()
    meta = bundle.metadata["micro"]
    assert meta["arena"]["measured_tflm"] is not None and meta["arena"]["measured_tflm"] <= meta["arena_bytes"]
    tflm = runtime.Interpreter.from_bytes(model, arena_size=meta["arena_bytes"])
    interpreter = litert.load_interpreter(model)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    for image in data.test.x[:5]:
        q = (image.astype(np.int16) - 128).astype(np.int8)[None]
        tflm.set_input(q, 0)
        tflm.invoke()
        interpreter.set_tensor(inp["index"], q)
        interpreter.invoke()
        a = tflm.get_output(0).astype(int)
        b = interpreter.get_tensor(out["index"]).astype(int)
        assert np.abs(a - b).max() <= 1


def test_micro_check_rejects_a_float_model(bundle):
    info = litert.inspect_model(bundle.bundle_dir / "float32.tflite")
    problems = litert.micro_problems(info)
    assert problems and "FLOAT32" in problems[0]
    assert litert.micro_problems(litert.inspect_model(bundle.bundle_dir / "int8.tflite")) == []
    with pytest.raises(TLKerasError, match="not a TFLite model"):
        litert.inspect_model(b"definitely not a flatbuffer")


# ---------------------------------------------------------------------------------------------
# The TF-free consumer


_NO_TF = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "keras", "tlkeras"):
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, Block())
sys.argv = ["classify.py"] + sys.argv[1:]
try:
    runpy.run_path({script!r}, run_name="__main__")
finally:
    assert not [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "tlkeras")]
"""


def test_consumer_classifies_without_tensorflow(bundle, small_run):
    from tlkeras.core.data import load_image

    run, _, data = small_run
    images = sorted((run.parent.parent / "images").glob("*/*.png"))[::20][:3]
    code = _NO_TF.format(script=str(REPO / "export" / "classify.py"))
    for variant in ("int8", "float32", "uint8_io"):
        done = subprocess.run([sys.executable, "-c", code, str(bundle.bundle_dir), *map(str, images), "--variant", variant, "--json", "--top", "3"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert len(lines) == len(images)
        expected = litert.run_model(bundle.variant_path(variant), np.stack([load_image(p, SIZE) for p in images]))
        for line, scores in zip(lines, expected):
            labels = [label for label, _ in line["predictions"]]
            assert labels[0] == bundle.metadata["task"]["class_names"][int(scores.argmax())]
            assert line["predictions"][0][1] == pytest.approx(float(scores.max()), abs=1e-6)
            assert line["variant"] == variant


def test_consumer_reports_bad_bundle(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "export" / "classify.py"), str(tmp_path), "x.jpg"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "metadata.json" in done.stderr


# ---------------------------------------------------------------------------------------------
# Bad input and the accuracy gate


def test_representative_set_empty_or_wrong_shape(small_run, tmp_path):
    from tlkeras.export.bundle import ExportOptions, export_model

    _, model, data = small_run
    for bad, match in ((np.zeros((0, SIZE, SIZE, 3), np.uint8), "empty"), (np.zeros((4, 8, 8, 3), np.uint8), r"shape \(8, 8, 3\).*16 x 16 x 3")):
        with pytest.raises(TLKerasError, match=match):
            export_model(model, data, tmp_path / "b", ExportOptions(variants=("int8",)), representative=bad)
    assert not (tmp_path / "b").exists()
    assert list(tmp_path.iterdir()) == []


def test_unsupported_op_is_named_and_nothing_is_left(tmp_path, small_run):
    from tlkeras._backend import keras, tf
    from tlkeras.export.bundle import ExportOptions, export_model

    _, _, data = small_run
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Lambda(lambda t: tf.math.special.bessel_i1e(t / 255.0), name="bessel")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    with pytest.raises(TLKerasError, match=r"BesselI1e \(layer bessel\).*replace that layer") as info:
        export_model(model, data, tmp_path / "b", ExportOptions(variants=("float32",)))
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == [], "a partial bundle or .tflite was left behind"


def test_unwritable_output_and_existing_bundle(small_run, bundle, tmp_path):
    from tlkeras.export.bundle import ExportOptions, export_run

    run, _, _ = small_run
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TLKerasError, match="not a writable directory"):
        export_run(run, blocker / "bundle", ExportOptions(variants=("float32",)))
    with pytest.raises(TLKerasError, match="already exists; pass --overwrite"):
        export_run(run, bundle.bundle_dir, ExportOptions(variants=("float32",)))


def test_accuracy_gate_fails_with_a_per_layer_report(small_run, tmp_path):
    """Calibrating on black images ruins int8 activations: the export fails, names layers, keeps the bundle."""
    from tlkeras.export.bundle import ExportCheckError, ExportOptions, export_model

    _, model, data = small_run
    black = np.zeros((8, SIZE, SIZE, 3), np.uint8)
    with pytest.raises(ExportCheckError) as info:
        export_model(model, data, tmp_path / "b", ExportOptions(variants=("float32", "int8"), bias_correction=False), representative=black)
    message = str(info.value)
    assert info.value.exit_code == 3 and "\n" not in message
    assert "int8 dropped" in message and "quantization_report.csv" in message and "--allow-drop" in message
    result = info.value.result
    assert set(result.failed) == {"int8"} and result.metadata["passed"] is False
    assert result.metadata["variants"]["float32"]["within_threshold"]
    worst = result.metadata["variants"]["int8"]["worst_layers"]
    assert worst and worst[0]["layer"] in message
    assert (tmp_path / "b" / "int8.tflite").is_file() and (tmp_path / "b" / "quantization_report.csv").is_file()
    # allowed: same bundle, no exception
    result = export_model(model, data, tmp_path / "c", ExportOptions(variants=("int8",), bias_correction=False, allow_drop=True), representative=black)
    assert not result.passed and "int8" in result.failed


def test_parse_variants():
    from tlkeras.export.variants import DEFAULT_VARIANTS, parse_variants

    assert parse_variants("all") == DEFAULT_VARIANTS
    assert parse_variants("int8, fp32,16x8") == ("float32", "int8", "int16x8")
    assert parse_variants(["uint8-io", "dynamic"]) == ("dynamic_range", "uint8_io")
    with pytest.raises(TLKerasError, match="unknown variant 'int4'"):
        parse_variants("int4")


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_exports_a_mobilenet_run(tiny_run, tmp_path, capsys):
    from tlkeras.export.__main__ import main

    out = tmp_path / "bundle"
    code = main([str(tiny_run), "--quantize", "float32,int8", "--output-dir", str(out), "--allow-drop", "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "| int8 |" in printed.out and "tensor arena" in printed.out
    meta = json.loads((out / "metadata.json").read_text())
    assert set(meta["variants"]) == {"float32", "int8"}
    assert meta["source_run"]["backbone"] == "mobilenet" and meta["micro"]["ok"]
    assert "DEPTHWISE_CONV_2D" in meta["micro"]["ops"]
    # MobileNet's weights dominate the file: int8 weights make it much smaller
    assert meta["variants"]["int8"]["bytes"] < 0.4 * meta["variants"]["float32"]["bytes"]
    written = {p.name for p in out.iterdir()}
    assert {"float32.tflite", "int8.tflite", "labels.txt", "metadata.json", "micro", "model_card.md", "report.html"} <= written
    assert written <= {"float32.tflite", "int8.tflite", "labels.txt", "metadata.json", "micro", "model_card.md", "quantization_report.csv", "report.html"}
    page = (out / "report.html").read_text()
    assert "int8" in page and "float32" in page  # the bundle's page lists its variants
    assert ("quantization_report.csv" in written) == (not meta["passed"])


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from tlkeras.export.__main__ import main

    (tmp_path / "run").mkdir()
    assert main([str(tmp_path / "run"), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tlkeras.export: error:") and err.count("\n") == 1 and "model.keras" in err
    assert not (tmp_path / "out").exists()
    assert main([str(tmp_path / "run"), "--quantize", "int3"]) == 2
    assert "unknown variant" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Mobile runtimes: TFLite metadata, MediaPipe Tasks, calibration threshold, int8 guardrail


def test_every_classification_variant_runs_in_mediapipe_tasks(bundle, small_run):
    """The real runtime: MediaPipe Tasks' ImageClassifier loads each variant from its file alone."""
    pytest.importorskip("mediapipe")
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from tlkeras.export.variants import VARIANTS

    _, _, data = small_run
    meta = bundle.metadata
    labels = (bundle.bundle_dir / "labels.txt").read_text().split()
    checked = []
    for name, entry in meta["variants"].items():
        assert entry["tflite_metadata"]["labels"].startswith("labels.txt")
        if entry["input"]["dtype"] == "int8":  # MediaPipe takes uint8 or float32 input tensors only
            assert entry["mediapipe"]["loaded"] is False and "mediapipe-tasks" not in entry["verified_on"]
            continue
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(bundle.variant_path(name))),
                                                max_results=len(labels), score_threshold=1e-9)  # 0.0 means unset
        litert_out = litert.run_model(bundle.variant_path(name), data.test.x)
        agree = 0
        with vision.ImageClassifier.create_from_options(options) as classifier:
            for image, expected in zip(data.test.x, litert_out):
                top = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))).classifications[0].categories[0]
                assert top.category_name == labels[top.index]  # names come from the packed labels.txt
                agree += int(top.index == int(expected.argmax()))
                assert abs(top.score - float(expected[top.index])) <= VARIANTS[name].tolerance
        assert agree / len(data.test.x) >= 0.99, name
        assert entry["verified_on"] == ["litert", "mediapipe-tasks"], name
        checked.append(name)
    assert set(checked) == set(meta["variants"]) - {"int8"}
    assert "mediapipe-tasks" in (bundle.bundle_dir / "model_card.md").read_text()


def test_calibrated_threshold_reaches_metadata_and_the_consumer(small_run, tmp_path):
    """calibration.json's unknown_threshold: metadata.json, the TFLite metadata, classify.py says unknown."""
    mp = pytest.importorskip("mediapipe")  # noqa: F841 - the TFLite threshold is read back with its reader
    from tlkeras.core.data import load_image
    from tlkeras.export.bundle import ExportOptions, export_run

    run, _, data = small_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    images = sorted((run.parent.parent / "images").glob("*/*.png"))[::9][:8]
    scores = litert.run_model(_float_tflite(run, tmp_path), np.stack([load_image(p, SIZE) for p in images])).max(axis=1)
    threshold = float(np.median(scores))  # half the images fall below it
    (copy / "calibration.json").write_text(json.dumps({"temperature": 1.3, "unknown_threshold": threshold, "target_recall": 0.95}))
    result = export_run(copy, tmp_path / "b", ExportOptions(variants=("float32",), verify_mediapipe=False))
    assert result.metadata["unknown_threshold"] == pytest.approx(threshold)
    assert result.metadata["variants"]["float32"]["tflite_metadata"]["score_threshold"] == pytest.approx(threshold)
    from mediapipe.tasks.python.metadata.metadata import MetadataDisplayer

    shown = json.loads(MetadataDisplayer.with_model_file(str(result.variant_path("float32"))).get_metadata_json())
    units = shown["subgraph_metadata"][0]["output_tensor_metadata"][0]["process_units"]
    assert any(u.get("options", {}).get("global_score_threshold") == pytest.approx(threshold) for u in units)
    done = subprocess.run([sys.executable, str(REPO / "export" / "classify.py"), str(result.bundle_dir), *map(str, images), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line)["predictions"][0][0] for line in done.stdout.splitlines()]
    for answer, score in zip(answers, scores):
        assert (answer == "unknown") == (score < threshold - 1e-6)
    assert "unknown" in answers and any(a != "unknown" for a in answers)


def test_mediapipe_check_takes_a_top1_tie_as_agreement(small_run, tmp_path):
    """int8 softmax scores have 256 levels, so two classes can share the top: either is LiteRT's answer."""
    pytest.importorskip("mediapipe")
    from tlkeras.core.data import load_image
    from tlkeras.export import tflite_metadata

    run, _, data = small_run
    every = sorted((run.parent.parent / "images").glob("*/*.png"))
    images = np.stack([load_image(p, SIZE) for p in every[:: max(1, len(every) // 9)]])  # every class
    plain = _float_tflite(run, tmp_path)
    out = litert.run_model(plain, images)
    content = tflite_metadata.add_metadata(plain, name="t", description="t", version="t", author="t", class_names=data.class_names)
    assert tflite_metadata.verify_mediapipe(content, images, out, data.class_names)["agreement"] == 1.0
    tied = out.copy()
    rivals = [0 if top else 1 for top in np.argmax(out, axis=1)]
    for row, rival in zip(tied, rivals):  # another class ties the top score, where argmax picks it first
        row[rival] = row.max()
    assert (np.argmax(tied, axis=1) != np.argmax(out, axis=1)).any()
    assert tflite_metadata.verify_mediapipe(content, images, tied, data.class_names)["agreement"] == 1.0
    for row, rival in zip(tied, rivals):  # now the rival is clearly on top: a real disagreement
        row[rival] += 0.01
    assert tflite_metadata.verify_mediapipe(content, images, tied, data.class_names)["agreement"] == 0.0


def _float_tflite(run, tmp_path) -> bytes:
    from tlkeras.core.loading import load_run_model
    from tlkeras.export.convert import convert_model

    content, _ = convert_model(load_run_model(run), "float32")
    return content


def test_labels_disagreeing_with_the_model_fail_before_writing(small_run, tmp_path):
    import dataclasses

    from tlkeras.export.bundle import export_model

    _, model, data = small_run
    four = dataclasses.replace(data, class_names=[*data.class_names, "extra"])
    with pytest.raises(TLKerasError, match="4 classes but the model outputs 3"):
        export_model(model, four, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_metadata_asked_for_without_the_writer_is_bad_input(small_run, tmp_path, monkeypatch):
    from tlkeras.export import tflite_metadata
    from tlkeras.export.bundle import ExportOptions, export_model

    _, model, data = small_run
    monkeypatch.setattr(tflite_metadata, "available", lambda: False)
    with pytest.raises(TLKerasError, match="needs the mediapipe package") as info:
        export_model(model, data, tmp_path / "b", ExportOptions(variants=("float32",), metadata="on"))
    assert info.value.exit_code == 2
    assert not (tmp_path / "b").exists()
    # auto without the writer: a bundle without TFLite metadata, said so in metadata.json
    result = export_model(model, data, tmp_path / "c", ExportOptions(variants=("float32",), metadata="auto"))
    assert result.metadata["variants"]["float32"]["tflite_metadata"] is None
    assert result.metadata["variants"]["float32"]["verified_on"] == ["litert"]


def test_int8_guardrail_keeps_the_worst_layers_float_until_the_gate_passes(small_run, tmp_path):
    """Selective quantization on the real converter: 1 layer float fails this gate, 2 pass; a small budget stops it."""
    from tlkeras.export.convert import debugger_rows, quantization_debugger, save_serving_model
    from tlkeras.export.guardrail import guard_int8

    _, model, data = small_run
    saved = save_serving_model(model, tmp_path / "serving")
    debugger = quantization_debugger(saved, data.train.x[:20], data.test.x[:8])
    rows = debugger_rows(debugger)

    def float_ops(content: bytes) -> int:
        info = litert.inspect_model(content)
        return sum(1 for op in info.operators if op.name not in ("QUANTIZE", "DEQUANTIZE")
                   and info.tensors[op.outputs[0]].dtype == "FLOAT32")

    def evaluate(content: bytes) -> dict:  # a gate that needs two float ops, counted in the real model
        n = float_ops(content)
        return {"drop_points": 0.0 if n >= 2 else 5.0, "agreement": 1.0 if n >= 2 else 0.9}

    result = guard_int8(debugger, rows, evaluate, max_drop=1.0, min_agreement=0.97, max_bytes=10**9)
    assert result.passed and [a["float_layers"] for a in result.attempts] == [1, 2]
    assert result.float_nodes == [r["node"] for r in rows[:2]] and float_ops(result.content) >= 2
    assert result.float_layers == list(dict.fromkeys(r["layer"] for r in rows[:2]))
    out = litert.run_model(result.content, data.test.x)
    assert np.mean(out.argmax(1) == data.test.y) > 0.8  # still a working classifier

    stopped = guard_int8(debugger, rows, evaluate, max_drop=1.0, min_agreement=0.97, max_bytes=100)
    assert not stopped.passed and stopped.content is None and "size budget" in stopped.reason


def test_onnx_copy_is_verified_with_onnxruntime(small_run, tmp_path):
    pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    from tlkeras.core.metrics import predict
    from tlkeras.export.bundle import ExportOptions, export_model

    _, model, data = small_run
    result = export_model(model, data, tmp_path / "b", ExportOptions(variants=("float32",), onnx=True, verify_mediapipe=False))
    entry = result.metadata["onnx"]
    assert entry["passed"] and entry["verified_on"] == ["onnxruntime"] and entry["metrics"]["agreement"] >= 0.999
    content = (result.bundle_dir / "model.onnx").read_bytes()
    assert len(content) == entry["bytes"]
    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: data.test.x.astype(np.float32)})[0]  # dynamic batch
    np.testing.assert_allclose(out, predict(model, data.test.x), atol=1e-4)


def _flat_logits_int8(tmp_path) -> bytes:
    """A full-int8 model whose logits hardly vary (as after an epoch or two from random weights):
    its SOFTMAX input gets a quantization scale under 2^-26."""
    from tlkeras._backend import keras, tf

    rng = np.random.default_rng(0)
    inputs = keras.Input((8,))
    dense = keras.layers.Dense(3)
    model = keras.Model(inputs, keras.layers.Softmax()(dense(inputs)))
    dense.set_weights([rng.normal(0, 1e-9, (8, 3)).astype("float32"), np.zeros(3, "float32")])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.uniform(-1, 1, (1, 8)).astype("float32")] for _ in range(20))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def test_tflm_abort_is_named_and_cannot_end_the_export(tmp_path):
    """TFLite Micro's int8 SOFTMAX aborts the process when its input scale is <= 2^-26: the micro
    check names it, and the arena measurement (a child process) comes back with the signal."""
    pytest.importorskip("tflite_micro")
    content = _flat_logits_int8(tmp_path)
    problems = litert.micro_problems(litert.inspect_model(content))
    assert any("SOFTMAX's input scale" in p and "train it further" in p for p in problems), problems
    measured, reason = litert.measure_micro_arena(content, timeout=120)
    assert measured is None and "SIGABRT" in reason, reason
