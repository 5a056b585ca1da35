"""The Colab notebooks: committed without outputs, generated reproducibly, and runnable offline.

Each notebook is executed top to bottom with nbclient on a real IPython kernel (the interpreter
running the tests), with tiny offline parameters injected in a cell right after the cell tagged
``parameters`` (papermill's convention): a synthetic image folder instead of ``tfds:tf_flowers``,
calibrated random MobileNet-0.25 weights instead of ImageNet, 32 px, one or two epochs, and a
local SavedModel instead of a tfhub.dev/Kaggle handle. The kernel's working directory is a
temporary folder, so the notebooks' relative ``WORK_DIR`` lands there.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import calibrated_weights, make_hub_module, make_image_folder

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ("01_quickstart.ipynb", "02_hyperparameter_search.ipynb", "03_compress_and_export.ipynb", "04_tfhub_backbone.ipynb",
         "05_text_classifier.ipynb", "06_object_detection.ipynb", "07_segmentation.ipynb")
SHARED = REPO.parent / "shared"
BCCD, NUCLEI = SHARED / "data" / "bccd", SHARED / "data" / "nuclei"
MOBILENET_V2 = SHARED / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5"
MOBILENET_025 = SHARED / "weights" / "mobilenet_0.25_224_imagenet_no_top.h5"
COLAB = "https://colab.research.google.com/github/tlkeras/tlkeras/blob/main/notebooks/"


def _read(name: str):
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def _parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    return tagged[0]


def _assigned_names(source: str) -> set[str]:
    return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


# ---------------------------------------------------------------------------------------------
# Static checks (fast)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_clean_and_colab_ready(name):
    nb = _read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{name}: cells {dirty} have outputs or execution counts; regenerate with tools/make_notebooks.py"
    # The first code cell installs tlkeras, only in Colab.
    install = code[0].source
    assert 'if "google.colab" in sys.modules:' in install and "%pip install" in install and "tlkeras @ git+https://github.com/" in install
    index = _parameters_index(nb)
    params = _assigned_names(nb.cells[index].source)
    if name == "05_text_classifier.ipynb":  # text: a sequence length and an encoder instead of an image size and backbone
        assert {"DATA", "SEQUENCE_LENGTH", "PHASE1_EPOCHS", "PHASE2_EPOCHS", "WORK_DIR", "ENCODER"} <= params
        assert 'DATA = "tfds:imdb_reviews"' in nb.cells[index].source and 'ENCODER = "small_bert"' in nb.cells[index].source
        assert index < next(i for i, c in enumerate(nb.cells) if "train_model(" in c.source)
    elif name in ("06_object_detection.ipynb", "07_segmentation.ipynb"):  # the repository's fixtures, else synthetic data
        assert {"DATA", "MAX_IMAGES", "IMAGE_SIZE", "PHASE1_EPOCHS", "PHASE2_EPOCHS", "WORK_DIR", "BACKBONE", "WEIGHTS"} <= params
        fixture = "bccd" if name.startswith("06") else "nuclei"
        assert f'DATA = "../shared/data/{fixture}"' in nb.cells[index].source and 'WEIGHTS = "imagenet"' in nb.cells[index].source
        assert index < next(i for i, c in enumerate(nb.cells) if "train_model(" in c.source)
        if name.startswith("06"):  # what it cannot do offline, as docs/detection.md says
            text = "".join(c.source for c in nb.cells if c.cell_type == "markdown")
            assert "What it cannot do offline" in text and "COCO" in text and "ImageNet" in text and "WEIGHTS" in text
    else:
        assert {"DATA", "IMAGE_SIZE", "PHASE1_EPOCHS", "PHASE2_EPOCHS", "WORK_DIR"} <= params
        assert "BACKBONE" in params or "HUB_HANDLE" in params
        # Online defaults: real data and pretrained weights; the parameters come before their use.
        assert 'DATA = "tfds:tf_flowers"' in nb.cells[index].source
        assert 'WEIGHTS = "imagenet"' in nb.cells[index].source or "HUB_HANDLE = \"https://" in nb.cells[index].source
        assert index < next(i for i, c in enumerate(nb.cells) if "load_data(" in c.source)
    # Only the public API: no private tlkeras names.
    private = [line for c in code for line in c.source.splitlines() if re.search(r"tlkeras(\.\w+)*\._(?!_)", line)]
    assert not private, private
    assert f"{COLAB}{name}" in "".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_notebooks_match_their_generator_and_readme_links_each():
    check = subprocess.run([sys.executable, str(REPO / "tools" / "make_notebooks.py"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    readme = (NOTEBOOKS / "README.md").read_text()
    for name in NAMES:
        assert f"]({COLAB}{name})" in readme and "colab-badge.svg" in readme
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


# ---------------------------------------------------------------------------------------------
# Execution (offline, tiny)


def execute(name: str, params: dict, workdir: Path, timeout: int = 600):
    """Runs notebook ``name`` with ``params`` injected after its parameters cell; returns it executed.

    Every injected name must exist in the parameters cell, so a renamed parameter fails here instead
    of being silently ignored.
    """
    from nbclient import NotebookClient

    nb = _read(name)
    index = _parameters_index(nb)
    unknown = set(params) - _assigned_names(nb.cells[index].source)
    assert not unknown, f"{name} has no parameters {sorted(unknown)}"
    injected = nbformat.v4.new_code_cell("# Parameters injected by tests/test_notebooks.py\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items()))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, injected)
    workdir.mkdir(parents=True, exist_ok=True)
    env_before = os.environ.get("PYTHONPATH")
    # The kernel is this interpreter (jupyter_client runs "python" kernels with sys.executable); it
    # must import this checkout of tlkeras.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env_before]))
    try:
        client = NotebookClient(nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(workdir)}})
        client.execute()
    finally:
        if env_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env_before
    return nb


def _outputs(nb, mime: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if mime in o.get("data", {})]


def _text(nb) -> str:
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            parts.append(o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", ""))
            parts.append(o.get("data", {}).get("text/markdown", ""))
    return "".join(parts)


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """Tiny offline data and weights shared by the executed notebooks."""
    root = tmp_path_factory.mktemp("notebooks")
    folder = make_image_folder(root / "images", per_class=14, size=40)
    return {
        "root": root,
        "params": {
            "DATA": str(folder),
            "IMAGE_SIZE": 32,
            "BATCH_SIZE": 16,
            "PHASE1_EPOCHS": 2,
            "PHASE2_EPOCHS": 1,
        },
        "mobilenet": {"BACKBONE": "mobilenet", "ALPHA": 0.25, "WEIGHTS": str(calibrated_weights(32))},
    }


@pytest.mark.slow
def test_01_quickstart_runs_offline(offline):
    """No TFDS set to be had (as offline): the notebook falls back to the photos and ImageNet
    weights shipped in the package, with its own defaults for the backbone."""
    work = offline["root"] / "01"
    # Phase 1 only (the other notebooks' tests and the quickstart's run fine-tuning): the suite's time.
    nb = execute("01_quickstart.ipynb", {"DATA": "tfds:tlkeras_no_such_set", "PHASE1_EPOCHS": 2, "PHASE2_EPOCHS": 0, "UNFREEZE": "blocks:1",
                                         "EXPORT_VARIANTS": ("float16",), "MAX_DROP": 100.0}, work)
    assert "using the 300 photos shipped with tlkeras" in _text(nb)
    runs = list((work / "tlkeras_quickstart" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "model.keras").is_file()
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["final_split"] == "test" and metrics["final"]["count"] == 150
    assert metrics["final"]["accuracy"] >= 0.6  # real ImageNet features on real photos, not chance (0.2)
    bundle = work / "tlkeras_quickstart" / "export" / runs[0].name
    meta = json.loads((bundle / "metadata.json").read_text())
    assert set(meta["variants"]) == {"float16"}
    # Inline: sample grid, confusion matrix, training curves, prediction grid; the metrics table.
    assert len(_outputs(nb, "image/png")) >= 4
    assert "| class | precision |" in _text(nb)
    assert "agrees with Keras" in _text(nb)


def test_02_hyperparameter_search_runs_offline(offline):
    work = offline["root"] / "02"
    space = {"dropout": [0.0, 0.3], "phase1_lr": 3e-3, "phase2_lr_factor": 0.1, "unfreeze": "blocks:1",
             "augment": "off", "label_smoothing": 0.0, "hidden_units": 0, "weight_decay": 0.0}
    nb = execute("02_hyperparameter_search.ipynb",
                 {**offline["params"], **offline["mobilenet"], "PHASE2_EPOCHS": 0, "TUNER": "random", "MAX_TRIALS": 2,
                  "TIME_BUDGET": None, "SPACE": space}, work)
    searches = list((work / "tlkeras_search" / "searches").iterdir())
    assert [s.name for s in searches] == ["search"]
    info = json.loads((searches[0] / "search.json").read_text())
    assert info["trials"] == 2 and info["status_counts"] == {"COMPLETED": 2}
    assert (searches[0] / "best.yaml").is_file()
    runs = list((work / "tlkeras_search" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.json").is_file()
    from tlkeras.config import load_config

    # The retrained run uses the best trial's values.
    assert load_config(runs[0] / "config.yaml").model.dropout == info["best_values"]["dropout"]
    assert "| rank |" in _text(nb)
    assert len(_outputs(nb, "image/png")) >= 4  # samples, objective plot, confusion matrix, curves


def test_03_compress_and_export_runs_offline(offline):
    work = offline["root"] / "03"
    nb = execute("03_compress_and_export.ipynb",
                 {**offline["params"], **offline["mobilenet"], "PHASE2_EPOCHS": 0, "FINETUNE_EPOCHS": 1,
                  "COMPRESSIONS": ("qat",), "BASE_VARIANTS": ("float32", "int8"), "MAX_DROP": 100.0,
                  "BENCHMARK_ITERATIONS": 3}, work)
    # Within the time budget of the suite one recipe runs: QAT, whose model needs tfmot's scope to
    # load for the export (pruning and PQAT: tests/test_optimize.py).
    runs = sorted((work / "tlkeras_compress" / "runs").iterdir())
    assert len(runs) == 2 and runs[1].name == runs[0].name + "-qat"
    report = json.loads((runs[1] / "optimization.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["qat"]
    bundles = sorted((work / "tlkeras_compress" / "export").iterdir())
    assert [b.name for b in bundles] == [r.name for r in runs] and all((b / "benchmark.json").is_file() for b in bundles)
    qat = json.loads((bundles[1] / "metadata.json").read_text())
    assert set(qat["variants"]) == {"int8"}
    text = _text(nb)
    # One table over every bundle's variants.
    for label in ("base float32", "base int8", "qat int8"):
        assert f"| {label} |" in text
    assert (work / "tlkeras_compress" / "size_vs_accuracy.png").is_file()


def test_04_tfhub_backbone_runs_offline(offline):
    work = offline["root"] / "04"
    module = make_hub_module(offline["root"] / "hub_module", dim=16, offset=-2.0)
    nb = execute("04_tfhub_backbone.ipynb", {**offline["params"], "HUB_HANDLE": str(module), "UNFREEZE": "all",
                                             "EXPORT_VARIANTS": ("int8",), "MAX_DROP": 100.0}, work)
    runs = list((work / "tlkeras_tfhub" / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("tfhub-")
    assert f"backbone: hub:{module}" in (runs[0] / "config.yaml").read_text()
    meta = json.loads((work / "tlkeras_tfhub" / "export" / runs[0].name / "metadata.json").read_text())
    assert set(meta["variants"]) == {"int8"}
    assert meta["variants"]["int8"]["metrics"]["agreement"] >= 0.8  # the tiny TF-Hub model learns the colours
    assert "TF-Hub layer" in _text(nb) and "agrees with Keras" in _text(nb)
    assert len(_outputs(nb, "image/png")) >= 4


def test_05_text_classifier_runs_offline(offline):
    """Offline: the word model from a tiny vectors file, exported and checked in MediaPipe when installed."""
    from text_fixtures import make_sentences, tiny_vectors, write_csv

    work = offline["root"] / "05"
    work.mkdir()
    data = write_csv(work / "reviews.csv", make_sentences(30))
    nb = execute("05_text_classifier.ipynb", {"DATA": str(data), "ENCODER": "word_embedding", "WORD_VECTORS": str(tiny_vectors(work / "v.txt")),
                                              "SEQUENCE_LENGTH": 16, "PHASE2_EPOCHS": 2, "MAX_DROP": 100.0}, work)
    runs = list((work / "tlkeras_text" / "runs").iterdir())
    assert len(runs) == 1
    meta = json.loads((work / "tlkeras_text" / "export" / runs[0].name / "metadata.json").read_text())
    assert set(meta["variants"]) == {"float32", "dynamic_range"} and meta["modality"] == "text"
    text = _text(nb)
    assert "| dynamic_range |" in text and "accuracy" in text
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        assert "pip install mediapipe" in text
    else:
        assert "MediaPipe TextClassifier: positive" in text



def _small_weights(backbone: str):
    """The shared ImageNet weights for ``backbone`` (MobileNet-0.25 for the detector: fast), else none."""
    path = MOBILENET_025 if backbone == "mobilenet" else MOBILENET_V2
    return str(path) if path.is_file() else "none"


@pytest.mark.slow
def test_06_object_detection_runs_offline(tmp_path):
    """A few BCCD images (or the notebook's own synthetic set when the fixture is absent), 96 px (the detector's least),
    one epoch per phase: trained, scored, exported (int8 only: each conversion costs seconds, and int8
    is the variant with uint8 input and calibration) and checked in LiteRT and MediaPipe, drawn."""
    nb = execute("06_object_detection.ipynb",
                 {"DATA": str(BCCD), "MAX_IMAGES": 6, "BACKBONE": "mobilenet", "ALPHA": 0.25, "WEIGHTS": _small_weights("mobilenet"),
                  "IMAGE_SIZE": 96, "BATCH_SIZE": 8, "PHASE1_EPOCHS": 1, "PHASE2_EPOCHS": 1, "UNFREEZE": "blocks:2",
                  "EXPORT_VARIANTS": ("int8",), "SCORE_THRESHOLD": 0.05}, tmp_path)
    work = tmp_path / "tlkeras_detection"
    text = _text(nb)
    if BCCD.is_dir():
        assert "voc, classes WBC, RBC, Platelets" in text
        assert "images train 6, val 6, test 6" in text
    else:
        assert "tiny synthetic VOC set" in text
    runs = list((work / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "model.keras").is_file() and (runs[0] / "detection.json").is_file()
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["final_split"] == "test" and 0.0 <= metrics["final"]["AP50"] <= 1.0
    meta = json.loads((work / "export" / runs[0].name / "metadata.json").read_text())
    assert set(meta["variants"]) == {"int8"} and meta["passed"]
    assert all("litert" in v["verified_on"] for v in meta["variants"].values())
    assert "| split | AP | AP50 |" in text and "| variant | KB | LiteRT AP50 |" in text
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        assert "pip install mediapipe" in text
    else:
        assert all("mediapipe-tasks" in v["verified_on"] for v in meta["variants"].values())
        assert "MediaPipe ObjectDetector ran int8.tflite on 3 images" in text
    # The sample boxes, the PR curves and the drawn detections.
    assert len(_outputs(nb, "image/png")) >= 3


@pytest.mark.slow
def test_07_segmentation_runs_offline(tmp_path):
    """A few nuclei images (or the notebook's own synthetic set when the fixture is absent), 64 px,
    one epoch per phase: trained, scored, exported (int8 only, as for 06) and checked in LiteRT and
    MediaPipe, drawn."""
    nb = execute("07_segmentation.ipynb",
                 {"DATA": str(NUCLEI), "MAX_IMAGES": 6, "WEIGHTS": _small_weights("mobilenet_v2"), "IMAGE_SIZE": 64, "BATCH_SIZE": 8,
                  "PHASE1_EPOCHS": 1, "PHASE2_EPOCHS": 1, "EXPORT_VARIANTS": ("int8",), "MAX_DROP": 100.0,
                  "VERIFY_WEB": False}, tmp_path)
    work = tmp_path / "tlkeras_segmentation"
    text = _text(nb)
    if NUCLEI.is_dir():
        assert "classes ['background', 'nucleus']; train 6, val 6, test 6" in text
    else:
        assert "tiny synthetic set" in text
    runs = list((work / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "model.keras").is_file()
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["final_split"] == "test" and 0.0 <= metrics["final"]["miou"] <= 1.0
    meta = json.loads((work / "export" / runs[0].name / "metadata.json").read_text())
    assert set(meta["variants"]) == {"int8"}
    assert all("litert" in v["verified_on"] for v in meta["variants"].values())
    assert "| class | IoU |" in text and "| variant | KB | LiteRT mIoU |" in text
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        assert "pip install mediapipe" in text
    else:
        assert all("mediapipe-tasks" in v["verified_on"] for v in meta["variants"].values())
        assert "MediaPipe ImageSegmenter ran int8.tflite on 3 images" in text
    assert len(_outputs(nb, "image/png")) >= 2  # the sample masks and the drawn predictions
