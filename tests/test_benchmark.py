"""``tlkeras.benchmark``: sizes, LiteRT latency and metrics of a real exported bundle."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tlkeras.errors import TLKerasError

SIZE = 16


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    """float32 and int8 variants of a small trained conv model (real export, a few seconds)."""
    from conftest import make_image_folder

    from tlkeras._backend import keras
    from tlkeras.config import DataConfig
    from tlkeras.core.data import load_data
    from tlkeras.export.bundle import ExportOptions, export_model

    root = tmp_path_factory.mktemp("bench")
    folder = make_image_folder(root / "images", per_class=20, size=SIZE, seed=4)
    data = load_data(DataConfig(source=str(folder), augment="off", val_fraction=0.2, test_fraction=0.2), SIZE, "softmax", 3)
    keras.utils.set_random_seed(3)
    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = L.Rescaling(1 / 255.0)(inp)
    x = L.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, L.Dense(3, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(0.03), "sparse_categorical_crossentropy")
    model.fit(data.train.x.astype("float32"), data.train.y, epochs=20, verbose=0)
    result = export_model(model, data, root / "bundle", ExportOptions(variants=("float32", "int8"), allow_drop=True, micro=False))
    return result.bundle_dir


def test_benchmark_rows_match_the_files(small_bundle):
    from tlkeras.benchmark.bundle import BenchmarkOptions, benchmark_bundle, format_markdown

    result = benchmark_bundle(small_bundle, BenchmarkOptions(threads=(1, 2), iterations=12, warmup=2, rounds=3))
    meta = json.loads((small_bundle / "metadata.json").read_text())
    assert [r["variant"] for r in result["rows"]] == ["float32", "int8"]
    for row in result["rows"]:
        content = (small_bundle / row["file"]).read_bytes()
        assert row["bytes"] == len(content) and row["gzip_bytes"] == len(gzip.compress(content, 9))
        for threads in ("1", "2"):
            lat = row["latency"][threads]
            assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"]
        assert row["accuracy"] == meta["variants"][row["variant"]]["metrics"]["accuracy"]
        assert row["agreement"] == meta["variants"][row["variant"]]["metrics"]["agreement"]
    float_row = result["rows"][0]
    assert float_row["size_ratio"] == 1.0 and float_row["latency_ratio"] == 1.0
    int8_row = result["rows"][1]
    assert int8_row["size_ratio"] == pytest.approx(int8_row["bytes"] / float_row["bytes"])
    table = format_markdown(result)
    assert "| float32 |" in table and "| int8 |" in table and "p50 ms (2T)" in table


def test_a_format_1_bundle_still_benchmarks_and_classifies(small_bundle, tmp_path):
    """Bundles written before the one-schema format (version 1: text files named model_<variant>.tflite,
    a single "output", no per-variant null keys) still load where bundles are read."""
    import shutil
    import subprocess
    import sys

    from PIL import Image

    from tlkeras.benchmark.bundle import BenchmarkOptions, benchmark_bundle

    old = tmp_path / "old"
    shutil.copytree(small_bundle, old)
    meta = json.loads((old / "metadata.json").read_text())
    meta["format_version"] = 1
    meta["output"] = meta.pop("outputs")[0]
    for key in ("modality", "trainable", "web"):
        meta.pop(key)
    for name, entry in meta["variants"].items():
        (old / entry["file"]).rename(old / f"model_{name}.tflite")
        meta["variants"][name] = {k: v for k, v in entry.items() if v is not None} | {"file": f"model_{name}.tflite"}
    (old / "metadata.json").write_text(json.dumps(meta))
    result = benchmark_bundle(old, BenchmarkOptions(threads=(1,), iterations=3, warmup=1, rounds=1))
    assert [r["file"] for r in result["rows"]] == ["model_float32.tflite", "model_int8.tflite"]
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(image)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "export" / "classify.py"), str(old), str(image),
                           "--variant", "int8", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["variant"] == "int8"


def test_benchmark_cli_writes_markdown_json_and_plot(small_bundle, tmp_path, capsys):
    from PIL import Image

    from tlkeras.benchmark.__main__ import main

    out = tmp_path / "report"
    assert main([str(small_bundle), "--threads", "1", "--iterations", "5", "--warmup", "1", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| int8 |" in printed
    data = json.loads((out / "benchmark.json").read_text())
    assert data["options"]["threads"] == [1] and len(data["rows"]) == 2
    assert (out / "benchmark.md").read_text().count("\n| ") >= 3
    with Image.open(out / "size_vs_accuracy.png") as img:
        assert img.format == "PNG" and img.size[0] > 300


def test_benchmark_bad_input(small_bundle, tmp_path, capsys):
    from tlkeras.benchmark.__main__ import main
    from tlkeras.benchmark.bundle import BenchmarkOptions, benchmark_bundle

    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tlkeras.benchmark: error:") and err.count("\n") == 1 and "metadata.json" in err
    with pytest.raises(TLKerasError, match="not in"):
        benchmark_bundle(small_bundle, BenchmarkOptions(variants=("float16",), iterations=1))
    with pytest.raises(TLKerasError, match="thread counts"):
        benchmark_bundle(small_bundle, BenchmarkOptions(threads=(0,), iterations=1))
    assert main([str(small_bundle), "--threads", "one"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_measure_latency_and_quantize_helpers(small_bundle):
    from tlkeras.core import litert

    lat = litert.measure_latency(small_bundle / "int8.tflite", num_threads=1, iterations=5, warmup=1)
    assert lat["iterations"] == 5 and lat["p50_ms"] > 0
    q = litert.quantize(np.array([0.0, 128.0, 255.0, 300.0]), "int8", 1.0, -128)
    assert q.tolist() == [-128, 0, 127, 127]
    assert litert.dequantize(q, 1.0, -128).tolist() == [0.0, 128.0, 255.0, 255.0]
    with pytest.raises(TLKerasError, match="does not exist"):
        litert.load_interpreter(small_bundle / "missing.tflite")
