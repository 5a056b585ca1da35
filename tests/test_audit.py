"""The data audit (issue 16): planted exact duplicates, near-copies across splits and flipped labels
are found; a clean set shows no leakage; bad input is one line and exit 2 with no report folder; the
clean CSV leaves flagged items out and loads back with train's loader."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import calibrated_weights

PALETTE = [(200, 50, 50), (50, 180, 60), (50, 70, 200)]
NAMES = ["blue", "green", "red"]  # sorted, as the loader orders class folders
COLOUR = {"red": 0, "green": 1, "blue": 2}


def _pattern(rng, colour, size=48, amplitude=70):
    """A class colour plus a smooth random pattern: every image is different, classes separable.

    The tests' backbone has random (calibrated) weights, whose features mix colour and pattern: a
    strong pattern (70) keeps distinct images apart for the near-duplicate search, a weak one (15)
    lets the linear probe separate the classes for the label search.
    """
    from PIL import Image

    low = rng.uniform(-amplitude, amplitude, (6, 6, 3)) + 128
    up = np.asarray(Image.fromarray(low.astype("uint8")).resize((size, size), Image.BICUBIC)).astype(float) - 128
    return np.clip(np.array(PALETTE[colour]) + up, 0, 255).astype("uint8")


def _make_split_folder(root: Path, per_split=(("train", 16), ("val", 6), ("test", 6)), seed=0, amplitude=70) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in per_split:
        for name in NAMES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(_pattern(rng, COLOUR[name], amplitude=amplitude)).save(folder / f"{name}_{i:02d}.png")
    return root


def _reencode(src: Path, dst: Path, quality=95, crop=0, resize=None, subsampling=0):
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        w, h = im.size
        im = im.crop((crop, crop, w - crop, h - crop))
        if resize:
            im = im.resize((resize, resize), Image.BILINEAR)
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=quality, subsampling=subsampling)
    if dst.suffix == ".bmp":
        buffer = io.BytesIO()
        im.save(buffer, "BMP")
    dst.write_bytes(buffer.getvalue())


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A split folder with 1 exact duplicate in train and 3 near-copies of train images in test;
    returns (root, what was planted)."""
    root = _make_split_folder(tmp_path_factory.mktemp("audit") / "data")
    shutil.copyfile(root / "train/red/red_00.png", root / "train/red/red_dup.png")
    leaks = []
    for k, (name, i) in enumerate([("red", 1), ("green", 2), ("blue", 3)]):
        # Resized and re-encoded (as JPEG without chroma subsampling, or as BMP): random
        # features at 64 px drift under JPEG's colour subsampling much more than pretrained ones.
        dst = root / f"test/{name}/{name}_leak{k}.{'bmp' if k == 0 else 'jpg'}"
        _reencode(root / f"train/{name}/{name}_{i:02d}.png", dst, resize=56)
        leaks.append(str(dst))
    return root, {"leaks": leaks, "dup": str(root / "train/red/red_dup.png")}


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """A train/val folder whose train split has 3 images filed under a wrong class; returns
    (root, [(path, true class)])."""
    from PIL import Image

    root = _make_split_folder(tmp_path_factory.mktemp("flipped") / "data", per_split=(("train", 14), ("val", 4)), seed=1, amplitude=15)
    rng = np.random.default_rng(7)
    flips = []
    for k, (true, given) in enumerate([("red", "green"), ("green", "blue"), ("blue", "red")]):
        dst = root / f"train/{given}/flip{k}.png"
        Image.fromarray(_pattern(rng, COLOUR[true], amplitude=15)).save(dst)
        flips.append((str(dst), true))
    return root, flips


def _config(source, tmp_path, size=64, weights="calibrated"):
    from tlkeras.config import DataConfig, ModelConfig, RunConfig

    return RunConfig(
        data=DataConfig(source=str(source), image_size=size, batch_size=32),
        model=ModelConfig(backbone="mobilenet", alpha=0.25, weights=str(calibrated_weights(size)) if weights == "calibrated" else weights),
        output_dir=str(tmp_path / "runs"), name="audit",
    )


@pytest.fixture(scope="module")
def planted_audit(planted, tmp_path_factory):
    from tlkeras.audit.run import AuditOptions, audit_data

    root, _ = planted
    out = tmp_path_factory.mktemp("audit_out")
    # Random (calibrated) weights: a copy's features drift more than a pretrained backbone's, and
    # distinct synthetic images reach about 0.83, so the threshold sits between.
    return audit_data(_config(root, out), AuditOptions(similarity=0.9, write_clean=str(out / "clean.csv")))


def _by_path(findings):
    return {str(Path(it["path"]).resolve()): it for it in findings["items"]}


def test_planted_duplicates_and_leakage_are_found(planted, planted_audit):
    root, plant = planted
    f = planted_audit.findings
    items = _by_path(f)
    ids = {p: items[str(Path(p).resolve())]["id"] for p in [plant["dup"], *plant["leaks"]]}
    # The exact copy sits in one group with its original.
    original = items[str((root / "train/red/red_00.png").resolve())]["id"]
    assert sorted([original, ids[plant["dup"]]]) in f["exact_duplicates"]
    # Every re-encoded test copy is paired with a train image, counted as train-test leakage.
    leaked = set(f["leakage"]["train-test"]["ids"])
    assert {ids[p] for p in plant["leaks"]} == leaked
    assert planted_audit.leaked_test_images == 3
    assert all(p["cross_split"] for p in f["near_duplicates"])


def test_flipped_labels_are_found_with_the_true_class_suggested(flipped, tmp_path):
    from tlkeras.audit.run import AuditOptions, audit_data

    root, flips = flipped
    result = audit_data(_config(root, tmp_path), AuditOptions(write_clean=str(tmp_path / "c.csv"), relabel=True))
    f = result.findings
    ids = {p: _by_path(f)[str(Path(p).resolve())]["id"] for p, _ in flips}
    issues = {x["index"]: x for x in f["label_issues"]}
    for path, true in flips:
        assert ids[path] in issues, f"flipped {path} not found; issues: {issues}"
        assert f["class_names"][issues[ids[path]]["suggested"]] == true
    assert len(issues) <= 6, f"{len(issues)} issues for 3 flips among {len(f['items'])} images"
    # The relabelled clean CSV keeps the flipped images, with their true class.
    labels = {r.split(",")[0]: r.split(",")[1] for r in (tmp_path / "c.csv").read_text().splitlines()[1:]}
    for path, true in flips:
        assert labels[str(Path(path).resolve())] == true


def test_report_folder_is_complete_and_self_contained(planted_audit):
    folder = planted_audit.report_dir
    assert sorted(p.name for p in folder.iterdir()) == ["audit.html", "audit.json", "audit.md"]
    assert not [p for p in folder.parent.iterdir() if ".partial-" in p.name]
    html = (folder / "audit.html").read_text()
    assert html.count("data:image/jpeg;base64,") >= 6
    # No request leaves the page: no http(s) URL in any src/href.
    assert "src=\"http" not in html and "href=\"http" not in html and "url(" not in html
    data = json.loads((folder / "audit.json").read_text())
    assert data["near_duplicates_by"]["method"] == "embedding"
    assert "train-test" in (folder / "audit.md").read_text()


def test_clean_csv_leaves_flagged_items_out_and_loads_with_train_loader(planted, planted_audit):
    from tlkeras.config import DataConfig
    from tlkeras.core.data import load_data

    _, plant = planted
    rows = (planted_audit.clean_csv).read_text().splitlines()
    assert rows[0] == "path,label,split"
    kept = {Path(r.split(",")[0]) for r in rows[1:]}
    for p in [plant["dup"], *plant["leaks"]]:
        assert Path(p).resolve() not in kept
    flagged = len(planted_audit.findings["flagged"])
    assert len(rows) - 1 == planted_audit.findings["counts"]["images"] - flagged
    bundle = load_data(DataConfig(source=str(planted_audit.clean_csv)), 32)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == len(rows) - 1
    assert len(bundle.test) == sum(1 for r in rows[1:] if r.endswith(",test"))


def test_clean_set_has_no_leakage_and_phash_without_weights(tmp_path):
    from tlkeras.audit.run import AuditOptions, audit_data

    root = _make_split_folder(tmp_path / "clean", seed=3)
    result = audit_data(_config(root, tmp_path), AuditOptions(similarity=0.9))
    assert result.findings["leakage"] == {}
    assert result.findings["exact_duplicates"] == []
    assert result.leaked_test_images == 0
    # Without pretrained weights near-duplicates come from perceptual hashes; a resized, cropped
    # copy of a train image in test is still found, and the label audit says why it was skipped.
    _reencode(root / "train/red/red_04.png", root / "test/red/copy.jpg", quality=80, crop=1, resize=40, subsampling=2)
    cfg = _config(root, tmp_path, weights="none")
    cfg.name = "phash"
    result = audit_data(cfg, AuditOptions())
    f = result.findings
    assert f["near_duplicates_by"]["method"] == "phash"
    assert f["leakage"]["train-test"]["images"] == 1
    assert f["label_audit"].startswith("skipped")
    assert "without pretrained features" in result.summary()


def _without_tf_logs(stderr: str) -> list[str]:
    # TensorFlow's C++ runtime logs a line or two (absl "E0000 ..." format) that no Python
    # setting silences once it runs an op; the audit's own output is the rest.
    return [line for line in stderr.strip().splitlines() if not re.match(r"^[IWEF]\d{4} |^WARNING: All log messages", line)]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tlkeras.audit", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.parametrize("case", ["missing", "single_class", "too_few", "unknown_backbone"])
def test_bad_input_is_one_line_exit_2_and_no_report(case, tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    if case == "single_class":
        (data / "only").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((16, 16, 3), i * 20, np.uint8)).save(data / "only" / f"{i}.png")
    elif case in ("too_few", "unknown_backbone"):
        _make_split_folder(data, per_split=(("train", 2), ("val", 1)))
    backbone = "mobilenett" if case == "unknown_backbone" else "mobilenet"
    weights = calibrated_weights(32) if case == "too_few" else "none"
    out = _cli(data if case != "missing" else tmp_path / "nope", "--backbone", backbone, "--alpha", "0.25", "--weights", weights,
               "--image-size", 32, "--output-dir", tmp_path / "runs", "--name", "r")
    assert out.returncode == 2, out.stderr
    lines = _without_tf_logs(out.stderr)
    assert len(lines) == 1 and lines[0].startswith("tlkeras.audit: error:"), out.stderr
    assert "Traceback" not in out.stderr
    expected = {"missing": "does not exist", "single_class": "only one class", "too_few": "minimum is 5 per class",
                "unknown_backbone": "unknown backbone"}[case]
    assert expected in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_writes_report_and_clean_csv(tmp_path):
    data = _make_split_folder(tmp_path / "data", per_split=(("train", 6), ("test", 3)))
    shutil.copyfile(data / "train/red/red_00.png", data / "test/red/red_copy.png")
    out = _cli(data, "--weights", "none", "--backbone", "mobilenet", "--alpha", "0.25", "--image-size", 32,
               "--output-dir", tmp_path / "runs", "--name", "r", "--write-clean", tmp_path / "clean.csv")
    assert out.returncode == 0, out.stderr
    assert "1 test image(s) have a copy in train" in out.stdout
    assert (tmp_path / "runs/r/audit.html").is_file()
    assert "red_copy" not in (tmp_path / "clean.csv").read_text()
    # A second run into the same folder is refused, leaving the first report as it was.
    again = _cli(data, "--weights", "none", "--image-size", 32, "--output-dir", tmp_path / "runs", "--name", "r")
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.slow
def test_train_audit_flag_prints_summary_and_warns_about_leakage(tmp_path):
    data = _make_split_folder(tmp_path / "data", per_split=(("train", 6), ("val", 3), ("test", 3)))
    shutil.copyfile(data / "train/green/green_01.png", data / "test/green/green_copy.png")
    out = subprocess.run(
        [sys.executable, "-m", "tlkeras.train", "--audit", "--data", str(data), "--backbone", "mobilenet", "--alpha", "0.25",
         "--weights", "none", "--image-size", "32", "--phase1-epochs", "1", "--phase2-epochs", "0", "--augment", "off",
         "--output-dir", str(tmp_path / "runs"), "--name", "t"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Audited 37 images" in out.stdout and str(tmp_path / "runs/t-audit/audit.html") in out.stdout
    assert "warning: 1 of 10 test images have an exact or near copy in train" in out.stderr
    assert (tmp_path / "runs/t/config.yaml").is_file()
