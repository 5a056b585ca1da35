"""Semantic segmentation (issue 35): readers and their quirks, paired augmentation, metrics, one
trained run shared by the train / evaluate / export tests, and the export verified on LiteRT and in
MediaPipe's ImageSegmenter. Data is made here: bright shapes on noise, 64 px."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlkeras.config import ModelConfig, RunConfig
from tlkeras.core.segmentation.data import from_arrays, load_segmentation, recognise_folder
from tlkeras.core.segmentation.metrics import confusion, mask_metrics, scores
from tlkeras.core.tasks import get_task, task_for_data
from tlkeras.errors import DataError, TLKerasError

SIZE = 64
# Real ImageNet weights (a shared fixture): a randomly initialised encoder's frozen BatchNorm
# shrinks features to ~1e-3, which no few-step run learns from in inference mode.
WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5"


def _shape_pair(rng, size=SIZE):
    """A noisy image with one bright square (class 1) and its mask."""
    image = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    side = int(rng.integers(size // 4, size // 2))
    y, x = (int(v) for v in rng.integers(0, size - side, 2))
    mask[y:y + side, x:x + side] = 1
    image[mask == 1] = np.clip(image[mask == 1].astype(int) + 150, 0, 255).astype(np.uint8)
    return image, mask


def _write_folder(root, counts=None, labels=("background", "square"), size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (counts or {"train": 6, "val": 2, "test": 2}).items():
        base = root / split if split else root
        (base / "images").mkdir(parents=True, exist_ok=True)
        (base / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image, mask = _shape_pair(rng, size)
            Image.fromarray(image).save(base / "images" / f"img{i}.jpg")
            Image.fromarray(mask).save(base / "masks" / f"img{i}.png")
    if labels:
        (root / "labels.txt").write_text("\n".join(labels) + "\n")
    return root


def _data_config(source, **kw):
    config = RunConfig()
    config.data.source = str(source)
    for k, v in kw.items():
        setattr(config.data, k, v)
    return config.data


# ---------------------------------------------------------------------------------------------
# readers and quirks


def test_recognises_layouts_and_never_raises(tmp_path):
    task = get_task("segmentation")
    assert not task.recognises(str(tmp_path))
    _write_folder(tmp_path / "split")
    _write_folder(tmp_path / "flat", {"": 4})
    assert task.recognises(str(tmp_path / "split")) and task.recognises(str(tmp_path / "flat"))
    for odd in ("", "\0", "/nonexistent/x", str(tmp_path / "split" / "labels.txt"), "x" * 5000):
        assert recognise_folder(odd) is False
    config = ModelConfig()
    assert task_for_data(config, str(tmp_path / "split")).name == "segmentation" and config.task == "segmentation"


def test_folder_with_splits_labels_and_resizing(tmp_path):
    root = _write_folder(tmp_path / "d", size=48)
    data = load_segmentation(_data_config(root), 64)
    assert data.class_names == ["background", "square"]
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 2)
    assert data.train.x.shape == (6, 64, 64, 3) and data.train.x.dtype == np.uint8
    assert data.train.y.shape == (6, 64, 64) and set(np.unique(data.train.y)) <= {0, 1}


def test_flat_folder_is_split_seeded_and_ids_name_themselves(tmp_path):
    root = _write_folder(tmp_path / "d", {"": 20}, labels=None)
    a = load_segmentation(_data_config(root), 64, seed=3)
    b = load_segmentation(_data_config(root), 64, seed=3)
    assert a.class_names == ["0", "1"]
    assert len(a.train) + len(a.val) + len(a.test) == 20 and len(a.val) >= 1
    assert a.val.names == b.val.names


def test_palette_mask_indices_are_ids(tmp_path):
    root = _write_folder(tmp_path / "d", {"train": 3, "val": 1}, labels=("bg", "a", "b"))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:10] = 2
    palette = Image.fromarray(mask, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)  # index 2 is green, not grey 2
    palette.save(root / "train" / "masks" / "img0.png")
    data = load_segmentation(_data_config(root), SIZE)
    i = data.train.names.index(str(root / "train" / "images" / "img0.jpg"))
    assert np.array_equal(data.train.y[i], mask.astype(np.int32))


@pytest.mark.parametrize("quirk, message", [
    ("size", "must have its image's size"),
    ("ids", "labels.txt names only 2 classes"),
    ("rgb", "RGB colour image"),
    ("missing", "has no mask"),
])
def test_quirks_are_one_line_errors(tmp_path, quirk, message):
    root = _write_folder(tmp_path / "d", {"train": 3, "val": 1})
    masks = root / "train" / "masks"
    if quirk == "size":
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(masks / "img0.png")
    elif quirk == "ids":
        Image.fromarray(np.full((SIZE, SIZE), 7, np.uint8)).save(masks / "img0.png")
    elif quirk == "rgb":
        rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
        rgb[..., 0] = 200
        Image.fromarray(rgb).save(masks / "img0.png")
    else:
        (masks / "img0.png").unlink()
    with pytest.raises(DataError) as info:
        load_segmentation(_data_config(root, on_corrupt="error"), SIZE)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_images_without_masks_are_skipped_and_counted(tmp_path):
    root = _write_folder(tmp_path / "d", {"train": 4, "val": 1})
    (root / "train" / "masks" / "img1.png").unlink()
    data = load_segmentation(_data_config(root), SIZE)
    assert len(data.train) == 3 and data.skipped == {"images_without_mask": 1}


def test_ignore_index_is_not_a_class(tmp_path):
    root = _write_folder(tmp_path / "d", {"train": 3, "val": 1})
    mask = np.array(Image.open(root / "train" / "masks" / "img0.png"))
    mask[:4] = 255
    Image.fromarray(mask).save(root / "train" / "masks" / "img0.png")
    with pytest.raises(DataError, match="--ignore-index 255"):
        load_segmentation(_data_config(root), SIZE)
    data = load_segmentation(_data_config(root, ignore_index=255), SIZE)
    assert data.class_names == ["background", "square"] and (data.train.y == 255).any()


def test_csv_source(tmp_path):
    root = _write_folder(tmp_path / "d", {"train": 4, "val": 2})
    rows = ["path,mask_path,split"] + [f"{s}/images/img{i}.jpg,{s}/masks/img{i}.png,{s}" for s, n in (("train", 4), ("val", 2)) for i in range(n)]
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    data = load_segmentation(_data_config(root / "pairs.csv"), SIZE)
    assert (len(data.train), len(data.val)) == (4, 2) and data.class_names == ["background", "square"]
    (root / "bad.csv").write_text("path,label\na.jpg,x\n")
    with pytest.raises(DataError, match="path,mask_path"):
        load_segmentation(_data_config(root / "bad.csv"), SIZE)


def test_missing_source_and_folder_without_pairs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_segmentation(_data_config(tmp_path / "nope"), SIZE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images/ and masks/"):
        load_segmentation(_data_config(tmp_path / "empty"), SIZE)


def test_from_arrays_checks_shapes_and_ids():
    rng = np.random.default_rng(0)
    pairs = [_shape_pair(rng) for _ in range(8)]
    x, y = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    data = from_arrays(x, y, class_names=["bg", "sq"], image_size=SIZE)
    assert len(data.train) + len(data.val) == 8
    assert data.task.name == "segmentation"  # train_model(config, data) hands it to the segmentation task
    with pytest.raises(DataError, match="same H, W"):
        from_arrays(x, y[:, :10], image_size=SIZE)
    with pytest.raises(DataError, match="names only 2"):
        from_arrays(x, y * 3, class_names=["bg", "sq"], image_size=SIZE)


# ---------------------------------------------------------------------------------------------
# augmentation and metrics


def test_augmentation_keeps_image_and_mask_aligned():
    from tlkeras._backend import tf
    from tlkeras.core.segmentation.augment import augment_pair

    rng = np.random.default_rng(1)
    mask = np.zeros((SIZE, SIZE), np.int32)
    mask[8:40, 20:50] = 1
    mask[45:60, 5:15] = 2
    image = np.stack([mask * 100.0] * 3, -1).astype(np.float32)  # the image is the mask, drawn
    for k in range(12):
        seed = tf.constant([7, k], tf.int64)
        a_img, a_mask = augment_pair(tf.constant(image), tf.constant(mask), seed, "strong", colour=False)
        a_img, a_mask = a_img.numpy(), a_mask.numpy()
        assert a_mask.dtype == np.int32 and set(np.unique(a_mask)) <= {0, 1, 2}  # nearest: no blended ids
        drawn = np.rint(a_img[..., 0] / 100.0).astype(np.int32)
        assert np.mean(drawn == a_mask) > 0.97, k  # only bilinear edge pixels may differ
        again = augment_pair(tf.constant(image), tf.constant(mask), seed, "strong", colour=False)[1].numpy()
        assert np.array_equal(again, a_mask)
    noisy = rng.integers(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    c_img, c_mask = augment_pair(tf.constant(noisy), tf.constant(mask), tf.constant([1, 2], tf.int64), "strong", geometry=False)
    assert np.array_equal(c_mask.numpy(), mask) and not np.allclose(c_img.numpy(), noisy)


def test_metrics_from_a_known_confusion():
    y_true = np.array([[0, 0, 1, 1], [0, 255, 1, 1]])
    y_pred = np.array([[0, 1, 1, 1], [0, 1, 0, 1]])
    conf = confusion(y_true, y_pred, 2, ignore_index=255)
    assert conf.tolist() == [[2, 1], [1, 3]]
    m = scores(conf, ["bg", "fg"])
    assert m["per_class_iou"]["bg"] == pytest.approx(2 / 4) and m["per_class_iou"]["fg"] == pytest.approx(3 / 5)
    assert m["miou"] == pytest.approx((0.5 + 0.6) / 2) and m["pixel_accuracy"] == pytest.approx(5 / 7)
    assert m["dice"] == pytest.approx(6 / 8)
    three = mask_metrics(np.array([0, 1, 2]), np.array([0, 1, 1]), ["a", "b", "c"])
    assert "dice" not in three and three["per_class_iou"]["c"] == 0.0


# ---------------------------------------------------------------------------------------------
# one trained run shared by the train / evaluate / export tests


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory):
    if not WEIGHTS.is_file():
        pytest.skip(f"the shared MobileNetV2 weights {WEIGHTS} are absent")
    root = _write_folder(tmp_path_factory.mktemp("segdata") / "shapes", {"train": 40, "val": 8, "test": 8}, seed=5)
    config = RunConfig()
    config.data.source, config.data.image_size, config.data.batch_size = str(root), SIZE, 8
    config.model = ModelConfig(backbone="mobilenet_v2", weights=str(WEIGHTS))
    config.train.phase1_epochs, config.train.phase2_epochs, config.train.verbose = 4, 1, 0
    config.output_dir, config.name, config.seed = str(tmp_path_factory.mktemp("segruns")), "shapes", 0
    from tlkeras.train.run import train_model

    return train_model(config), root


@pytest.mark.slow
def test_train_writes_a_complete_run(seg_run):
    result, _ = seg_run
    run = result.run_dir
    written = {p.name for p in run.iterdir()}
    assert {"config.yaml", "history.json", "labels.txt", "metrics.json", "model.keras", "run.json", "report.html"} <= written
    page = (run / "report.html").read_text()
    assert "IoU per class" in page and "Kept: phase" in page and page.count("<figure>") == 8  # every test image, worst first
    assert not list(run.parent.glob(".shapes.partial*"))
    assert (run / "labels.txt").read_text().split() == ["background", "square"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["final_split"] == "test" and {"phase1", "phase2", "total"} <= set(metrics["timings"])
    assert 0.0 <= metrics["final"]["miou"] <= 1.0 and "dice" in metrics["final"]
    assert metrics["final"]["miou"] > 0.5  # the shapes are easy: better than all-background (about 0.43)
    info = json.loads((run / "run.json").read_text())
    assert info["selection"]["kept"] in ("phase1", "phase2")
    kept = info["selection"][info["selection"]["kept"]]["val_miou"]
    assert kept >= info["selection"]["phase1"]["val_miou"]  # never worse than phase 1
    assert result.model.output_shape == (None, SIZE, SIZE, 2)


@pytest.mark.slow
def test_saved_model_reloads_and_evaluate_matches(seg_run):
    from tlkeras.core.segmentation.fit import predict_masks
    from tlkeras.core.segmentation.run import load_segmentation_run
    from tlkeras.evaluate.run import evaluate_run

    result, _ = seg_run
    model, config, labels = load_segmentation_run(result.run_dir)
    x = result.data.test.x
    assert np.array_equal(predict_masks(model, x), predict_masks(result.model, x))
    evaluated = evaluate_run(result.run_dir)
    assert evaluated["final"]["miou"] == pytest.approx(result.metrics["final"]["miou"], abs=1e-9)
    assert (result.run_dir / "eval_metrics.json").is_file()


@pytest.mark.slow
def test_resume_and_bad_weights_are_one_line_errors(seg_run, tmp_path):
    from tlkeras.train.run import train_model

    _, root = seg_run
    config = RunConfig()
    config.model.task, config.data.source, config.output_dir = "segmentation", str(root), str(tmp_path)
    config.model.weights = str(tmp_path / "missing.h5")
    with pytest.raises(TLKerasError, match="does not exist"):
        train_model(config)
    config.model.weights, config.name = str(WEIGHTS), "again"
    with pytest.raises(TLKerasError, match="resume"):
        train_model(config, resume=True)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_export_verified_on_litert_and_mediapipe(seg_run, tmp_path):
    from tlkeras.core.segmentation import mediapipe_io

    if not mediapipe_io.available():
        pytest.skip("mediapipe is not installed")
    from tlkeras.core import litert
    from tlkeras.export.bundle import ExportOptions, export_run

    result, _ = seg_run
    # float16 is left to the CLI and the benchmark: each conversion costs ~30 s on 2 cores.
    options = ExportOptions(variants=("float32", "int8"), representative_size=16, allow_drop=True)
    bundle = export_run(result.run_dir, tmp_path / "bundle", options)
    meta = json.loads((tmp_path / "bundle" / "metadata.json").read_text())
    assert set(meta["variants"]) == {"float32", "int8"}
    from tlkeras.core.bundle_format import validate_metadata

    validate_metadata(meta)  # the one bundle schema every task's export follows
    assert not list(tmp_path.glob(".bundle*"))
    for name, v in meta["variants"].items():
        path = bundle.variant_path(name)
        assert path.stat().st_size == v["bytes"]
        io = litert.io_details(litert.load_interpreter(path))
        assert len(io["inputs"]) == 1 and io["inputs"][0]["shape"] == [1, SIZE, SIZE, 3]
        assert io["outputs"][-1]["shape"] == [1, SIZE, SIZE, 2]  # an explicit background channel
        assert io["inputs"][0]["dtype"] == ("uint8" if name == "int8" else "float32")
        operators = litert.inspect_model(path).operators
        assert not any(op.custom or op.name.startswith("FLEX") for op in operators)  # builtins only
        assert "litert" in v["verified_on"]
        assert v["mediapipe"]["loaded"], v["mediapipe"]
        if name != "int8":
            assert v["metrics"]["agreement"] > 0.99
            assert abs(v["mediapipe"]["miou"] - meta["evaluation"]["keras"]["miou"]) <= 0.01
            assert "mediapipe-tasks" in v["verified_on"]
        else:
            assert v["metrics"]["agreement"] > 0.9
        assert v["mediapipe"]["agreement_with_litert"] > 0.97  # MediaPipe runs the same file
        if meta["web"]["checked"]:  # headless Chromium and @mediapipe/tasks-vision are installed
            assert abs(v["mediapipe"]["web"]["miou"] - v["mediapipe"]["miou"]) <= 0.005
            assert "mediapipe-web" in v["verified_on"] or name == "int8"


def test_training_batches_repeat_per_seed():
    from tlkeras.core.segmentation.fit import _train_dataset

    rng = np.random.default_rng(2)
    pairs = [_shape_pair(rng) for _ in range(6)]
    x, y = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]).astype(np.int32)

    def first(seed):
        return [(a.numpy(), b.numpy()) for a, b in _train_dataset(x, y, 4, seed, "light").take(3)]

    a, b, c = first(1), first(1), first(2)
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(np.array_equal(p[1], q[1]) for p, q in zip(a, c))


def test_cli_refuses_a_mismatched_mask_in_one_line(tmp_path, capsys):
    from tlkeras.train.__main__ import main

    root = _write_folder(tmp_path / "d", {"train": 3, "val": 1})
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "train" / "masks" / "img0.png")
    code = main(["--data", str(root), "--weights", "none", "--output-dir", str(tmp_path / "runs"), "--image-size", "64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "12x10" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "runs").exists()


def test_unreadable_image_is_skipped_or_refused(tmp_path):
    root = _write_folder(tmp_path / "d", {"train": 3, "val": 1})
    (root / "train" / "images" / "img2.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    data = load_segmentation(_data_config(root), SIZE)
    assert len(data.train) == 2 and data.skipped == {"unreadable": 1}
    with pytest.raises(DataError, match="cannot read image .*--on-corrupt skip"):
        load_segmentation(_data_config(root, on_corrupt="error"), SIZE)
