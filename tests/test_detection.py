"""Object detection: readers and their quirks, hostile annotation files, boxes that move with the
pixels, anchors, and one tiny trained run shared by the train / evaluate / export tests (LiteRT and
MediaPipe's ObjectDetector check the exported files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlkeras.core.detection.data import MAX_BOXES_PER_IMAGE, from_arrays, layout_of
from tlkeras.core.detection.readers import read_detection_data
from tlkeras.core.tasks import get_task
from tlkeras.errors import TLKerasError

SHARED = Path(__file__).resolve().parents[2] / "shared"
BCCD = SHARED / "data" / "bccd"
# Real ImageNet weights of MobileNet-0.25 (a fixture): with them a few epochs learn the toy scenes;
# without them (weights none) the run still trains and exports, but its accuracy is not asserted.
SMALL_WEIGHTS = SHARED / "weights" / "mobilenet_0.25_224_imagenet_no_top.h5"
COLOURS = [(230, 40, 40), (40, 60, 230)]


def _xml(filename, w, h, objects, extra=""):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in objects)
    return f"{extra}<annotation><filename>{filename}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>"


def _scene(rng, w=128, h=96, n_max=3):
    """Noise with 0..n_max coloured rectangles; returns (image, [(class name, box)])."""
    image = rng.integers(70, 130, size=(h, w, 3)).astype("uint8")
    objects = []
    for _ in range(rng.integers(1, n_max + 1)):
        k = int(rng.integers(0, 2))
        bw, bh = int(rng.integers(22, 50)), int(rng.integers(22, 50))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        image[y0:y0 + bh, x0:x0 + bw] = COLOURS[k]
        objects.append((("red", "blue")[k], (x0, y0, x0 + bw, y0 + bh)))
    return image, objects


def write_voc(root: Path, n: int, seed: int = 0, split_files: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    ids = []
    for i in range(n):
        image, objects = _scene(rng)
        name = f"img{i:03d}"
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.png")
        (root / "Annotations" / f"{name}.xml").write_text(_xml(f"{name}.png", 128, 96, [(c, b, 0) for c, b in objects]))
        ids.append(name)
    if split_files:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        cut = [int(n * 0.6), int(n * 0.8)]
        for s, part in zip(("train", "val", "test"), (ids[:cut[0]], ids[cut[0]:cut[1]], ids[cut[1]:])):
            (root / "ImageSets" / "Main" / f"{s}.txt").write_text("\n".join(part) + "\n")
    return root


def _tiny_voc(tmp_path, objects, size=(100, 80), extra="", filename="a.png"):
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    Image.new("RGB", size).save(root / "JPEGImages" / "a.png")
    Image.new("RGB", size).save(root / "JPEGImages" / "b.png")
    Image.new("RGB", size).save(root / "JPEGImages" / "c.png")
    (root / "Annotations" / "a.xml").write_text(_xml(filename, *size, objects, extra))
    (root / "Annotations" / "b.xml").write_text(_xml("b.png", *size, [("cat", (1, 1, 20, 20), 0)]))
    (root / "Annotations" / "c.xml").write_text(_xml("c.png", *size, []))
    return root


# ---------------------------------------------------------------------------------------------
# Readers


def test_voc_quirks_are_counted_and_repaired(tmp_path):
    root = _tiny_voc(tmp_path, [("cat", (10, 10, 10, 40), 0), ("cat", (-5, 10, 120, 50), 0), ("dog", (5, 5, 30, 30), 1)])
    data = read_detection_data(root, val_fraction=0.34, test_fraction=0.0, seed=1)
    q = data.quirks
    assert q == {"degenerate_boxes": 1, "clipped_boxes": 1, "negative_images": 1, "difficult_boxes": 1}
    a = next(s for s in data.train + data.val if s.path.endswith("a.png"))
    assert a.boxes.tolist() == [[0, 10, 100, 50], [5, 5, 30, 30]] and a.difficult.tolist() == [False, True]
    assert sorted(data.class_names) == ["cat", "dog"] and len(data.train) + len(data.val) == 3
    assert layout_of(root) == "voc" and get_task("detection").recognises(str(root))


@pytest.mark.parametrize("body, words", [
    ("<annotation><filename>a.png", "not well-formed"),
    ('<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><annotation><filename>&b;</filename></annotation>', "entities"),
    (_xml("missing.png", 100, 80, []), "does not exist"),
    (_xml("../../escape.png", 100, 80, []), "outside the data folder"),
    (_xml("a.png", -3, 80, []), "positive whole number"),
    (_xml("a.png", "nan", 80, []), "positive whole number"),
    (_xml("a.png", 100, 80, [("cat", ("nan", 1, 5, 5), 0)]), "NaN"),
    (_xml("a.png", 100, 80, [("cat", (1, 1, 5, 5), 0)] * (MAX_BOXES_PER_IMAGE + 1)), "in one image"),
    ("<html></html>", "not a Pascal VOC"),
])
def test_hostile_voc_files_get_one_line(tmp_path, body, words):
    root = _tiny_voc(tmp_path, [])
    (root / "Annotations" / "a.xml").write_text(body)
    (tmp_path / "escape.png").write_bytes(b"x")
    with pytest.raises(TLKerasError, match=words) as info:
        read_detection_data(root)
    assert "\n" not in str(info.value) and "a.xml" in str(info.value)


def test_csv_reader_with_split_negatives_and_hostile_rows(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (50, 40)).save(tmp_path / name)
    good = tmp_path / "boxes.csv"
    good.write_text("path,xmin,ymin,xmax,ymax,label,split\na.png,1,1,20,20,cat,train\na.png,5,5,60,30,dog,train\n"
                    "b.png,,,,,,val\nc.png,3,3,3,9,cat,test\n")
    data = read_detection_data(good)
    assert data.layout == "csv" and data.split_from == "files"
    assert [len(data.train), len(data.val), len(data.test)] == [1, 1, 1]
    assert data.quirks["clipped_boxes"] == 1 and data.quirks["degenerate_boxes"] == 1 and data.quirks["negative_images"] == 2
    assert data.train[0].boxes.tolist()[1] == [5, 5, 50, 30]
    for rows, words in (("../x.png,1,1,5,5,cat\n", "outside the data folder"), ("a.png,1,nan,5,5,cat\n", "NaN"),
                        ("a.png,1,1,5,5,\n", "empty class"), ("zz.png,1,1,5,5,cat\n", "does not exist"), ("a.png,x,1,5,5,cat\n", "not a number")):
        bad = tmp_path / "bad.csv"
        bad.write_text("path,xmin,ymin,xmax,ymax,label\n" + rows)
        with pytest.raises(TLKerasError, match=words):
            read_detection_data(bad)


def test_arrays_reader_refuses_out_of_range_ids():
    images = [np.zeros((32, 32, 3), "uint8")] * 4
    with pytest.raises(TLKerasError, match="out of range"):
        from_arrays(images, [[[1, 1, 9, 9]]] * 4, [[2]] * 4, ["a", "b"])
    data = from_arrays(images, [[[1, 1, 9, 9]], [], [[0, 0, 40, 40]], [[3, 3, 3.5, 4]]], [[1], [], [0], [0]], ["a", "b"], val_fraction=0.25)
    assert data.quirks["negative_images"] == 2 and data.quirks["clipped_boxes"] == 1 and data.quirks["degenerate_boxes"] == 1


@pytest.mark.skipif(not BCCD.is_dir(), reason="the BCCD fixture is absent")
def test_bccd_reader():
    data = read_detection_data(BCCD)
    assert (len(data.train), len(data.val), len(data.test)) == (205, 87, 72)
    assert sorted(data.class_names) == ["Platelets", "RBC", "WBC"] and data.quirks["degenerate_boxes"] == 2


# ---------------------------------------------------------------------------------------------
# Boxes move with the pixels; anchors


def test_geometric_augmentation_moves_boxes_with_pixels():
    from tlkeras._backend import tf
    from tlkeras.core.detection.pipeline import colour, geometric

    size = 128
    boxes = np.array([[0.1, 0.1, 0.4, 0.5], [0.5, 0.55, 0.9, 0.95], [0.05, 0.6, 0.3, 0.8]], "float32")
    image = np.zeros((size, size, 3), "float32")
    for k, b in enumerate(boxes):  # box k lives in channel k alone, so overlaps and blur cannot mix boxes
        y0, x0, y1, x1 = (np.round(b * size)).astype(int)
        image[y0:y1, x0:x1, k] = 200.0
    for s in range(12):
        seeds = tf.random.experimental.stateless_split(tf.constant([s, 7], tf.int64), 5)
        out, moved, labels = geometric(tf.constant(image), tf.constant(boxes), tf.constant([0, 1, 2]), seeds, size)
        out, moved, labels = out.numpy(), moved.numpy(), labels.numpy()
        for k in range(3):
            # Half the painted level above the other channels: where the edge lies after resizing (the
            # zoom-out padding is grey, equal in every channel).
            ys, xs = np.nonzero(out[..., k] - np.delete(out, k, axis=2).max(axis=2) > 100.0)
            if not len(ys):
                continue  # cropped away: then it must be gone from the boxes too (checked below)
            found = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]) / size
            match = [b for b in moved if np.abs(b - found).max() < 3.0 / size]
            assert match, (s, k, found, moved)
        assert len(moved) <= sum((out[..., k] - np.delete(out, k, axis=2).max(axis=2) > 100.0).any() for k in range(3))
        jittered = colour(tf.constant(image), tf.random.experimental.stateless_split(tf.constant([s, 1], tf.int64), 3)).numpy()
        assert jittered.shape == image.shape and 0 <= jittered.min() and jittered.max() <= 255


def test_box_coder_round_trip_and_every_box_gets_an_anchor():
    from tlkeras._backend import tf
    from tlkeras.core.detection.anchors import AnchorConfig, decode, encode, make_anchors, tf_targets

    config = AnchorConfig(image_size=128)
    anchors = make_anchors(config)
    assert len(anchors) == sum(config.grid(s) ** 2 for s in config.strides) * config.per_location
    boxes = np.array([[0.1, 0.2, 0.3, 0.35], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.52, 0.53]], "float32")
    picked = anchors[[3, 100, 500]]
    np.testing.assert_allclose(decode(encode(boxes, picked, config.box_scales), picked, config.box_scales), boxes, atol=1e-5)
    box_t, cls_t = tf_targets(tf.constant(boxes), tf.constant([0, 1, -1]), anchors, config.box_scales, 2)
    cls_t = cls_t.numpy()
    assert (cls_t == 0).any() and (cls_t == 1).any() and not (cls_t >= 2).any()
    pos = np.nonzero(cls_t >= 0)[0]
    got = decode(box_t.numpy()[pos], anchors[pos], config.box_scales)
    assert np.abs(got - boxes[np.where(cls_t[pos] == 0, 0, 1)]).max() < 1e-4


# ---------------------------------------------------------------------------------------------
# One tiny trained run


@pytest.fixture(scope="session")
def detection_run(tmp_path_factory):
    from tlkeras.config import RunConfig

    root = write_voc(tmp_path_factory.mktemp("det") / "voc", 64)
    config = RunConfig()
    config.data.source, config.data.image_size, config.data.batch_size, config.data.augment = str(root), 128, 8, "off"
    config.model.backbone, config.model.alpha = "mobilenet", 0.25
    config.model.weights = str(SMALL_WEIGHTS) if SMALL_WEIGHTS.is_file() else "none"
    config.train.phase1_epochs, config.train.phase2_epochs, config.train.phase1_lr = 12, 2, 1e-2
    config.train.unfreeze, config.train.verbose = "blocks:4", 0
    config.output_dir, config.name, config.seed = str(root.parent / "runs"), "det", 3
    result = get_task("detection").train(config)
    return result, root


@pytest.mark.slow
def test_training_writes_a_run_that_reloads_and_evaluates(detection_run):
    from tlkeras._backend import keras

    result, root = detection_run
    run = result.run_dir
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "detection.json", "history.json", "labels.txt", "metrics.json", "model.keras", "report.html", "run.json"]
    assert not list(run.parent.glob(".*partial*"))
    assert "Per class" in (run / "report.html").read_text() and "data:image/jpeg;base64," in (run / "report.html").read_text()
    m = result.metrics
    assert m["final_split"] == "test" and {"AP", "AP50", "AP75", "AR100", "per_class"} <= set(m["final"])
    assert set(result.timings) >= {"phase1", "phase2", "total"}
    if SMALL_WEIGHTS.is_file():
        assert m["val"]["AP50"] > 0.15, m["val"]  # far above an untrained head's ~0
    # Never worse than phase 1 on val: the kept weights are the best val AP50 seen.
    seen = [v for v in result.history["val_AP50"] if v is not None]
    assert m["val"]["AP50"] == pytest.approx(max(seen), abs=1e-6)
    reloaded = keras.models.load_model(run / "model.keras")
    x = np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 3)).astype("float32")
    for a, b in zip(result.model(x), reloaded(x)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    again = get_task("detection").evaluate_run(run, split="test", write=True)
    assert again["AP50"] == pytest.approx(m["final"]["AP50"], abs=1e-6)
    assert json.loads((run / "eval_metrics.json").read_text())["split"] == "test"
    with pytest.raises(TLKerasError, match="already exists"):
        get_task("detection").train(result.config)


@pytest.fixture(scope="session")
def detection_bundle(detection_run, tmp_path_factory):
    """The shared run exported once (float32 and int8), every check on: LiteRT, MediaPipe Python and,
    where Chromium and @mediapipe/tasks-vision are installed, MediaPipe Web."""
    from types import SimpleNamespace

    result, _ = detection_run
    options = SimpleNamespace(variants=("float32", "int8"), overwrite=False, representative_size=16, verify_mediapipe=True, seed=0)
    return get_task("detection").export_run(result.run_dir, tmp_path_factory.mktemp("det-export") / "bundle", options=options), options


@pytest.mark.slow
def test_export_is_verified_by_litert_and_mediapipe(detection_run, detection_bundle):
    from ai_edge_litert.interpreter import Interpreter

    from tlkeras.core.detection.mediapipe_io import mediapipe_available

    result, root = detection_run
    out, options = detection_bundle
    bundle = out.bundle_dir
    assert sorted(p.name for p in bundle.iterdir()) == ["detection.json", "float32.tflite", "int8.tflite", "labels.txt", "metadata.json", "model_card.md"]
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["passed"] and meta["task"]["name"] == "detection"
    card = (bundle / "model_card.md").read_text()
    assert "Object detector" in card and f"| int8 | {meta['variants']['int8']['bytes'] / 1024:.0f} KB | uint8 | {meta['variants']['int8']['metrics']['AP50']:.3f}" in card
    from tlkeras.export.card import model_card

    assert model_card(meta) == card  # the export stage's card asks the bundle's task
    for name, entry in meta["variants"].items():
        assert "litert" in entry["verified_on"], entry
        if mediapipe_available():
            assert "mediapipe-tasks" in entry["verified_on"], entry["mediapipe"]
            if SMALL_WEIGHTS.is_file():
                assert entry["mediapipe"]["AP50"] > 0.1, entry["mediapipe"]
        interpreter = Interpreter(model_path=str(bundle / entry["file"]))
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        assert inputs[0]["dtype"] == (np.uint8 if name == "int8" else np.float32) and list(inputs[0]["shape"]) == [1, 128, 128, 3]
        assert [o["dtype"] for o in outputs] == [np.float32, np.float32]  # never int8 outputs
        assert sorted(o["shape"][-1] for o in outputs) == [2, 4]
    assert meta["variants"]["float32"]["metrics"]["max_abs_diff_location"] < 1e-3
    with pytest.raises(TLKerasError, match="already exists"):
        get_task("detection").export_run(result.run_dir, bundle, options=options)


@pytest.mark.slow
def test_browser_detections_equal_mediapipe_python(detection_bundle):
    """MediaPipe Web's ObjectDetector in headless Chromium (the export's browser check): the same
    detections as MediaPipe Python on the same images, or a recorded reason it could not run."""
    from tlkeras.core.browser import BrowserUnavailable, find_chromium
    from tlkeras.core.mediapipe_web import find_tasks_vision

    out, _ = detection_bundle
    meta = json.loads((out.bundle_dir / "metadata.json").read_text())
    web = meta["web"]
    try:
        find_chromium()
        find_tasks_vision()
    except (BrowserUnavailable, TLKerasError) as exc:
        assert web["checked"] is False and web["why"], web  # skipped, and metadata.json says why
        pytest.skip(f"no browser check here: {exc}")
    assert web["checked"] and web["package"].startswith("@mediapipe/tasks-vision") and web["images"] >= 1, web
    for name, entry in meta["variants"].items():
        same = entry["mediapipe"]["web"]
        assert same["equal"] and same["unmatched"] == 0 and same["matched"] > 0, (name, same)
        assert same["max_box_diff_px"] <= 2.0 and same["max_score_diff"] <= 0.02, (name, same)
        assert "mediapipe-web" in entry["verified_on"], entry["verified_on"]


@pytest.mark.slow
def test_metadata_parser_versions_do_not_leak_between_tasks(detection_bundle):
    """The shared stand-in for mediapipe's missing version helper (tlkeras.core.mediapipe_metadata):
    the detector's custom metadata declares 1.5.0, and an image classifier written afterwards in the
    same process still declares 1.0.0."""
    from mediapipe.tasks.python.metadata import metadata

    from tlkeras._backend import keras, tf
    from tlkeras.export import tflite_metadata

    def declared(content):
        return json.loads(metadata.MetadataDisplayer.with_model_buffer(bytes(content)).get_metadata_json())["min_parser_version"]

    out, _ = detection_bundle
    assert declared((out.bundle_dir / "int8.tflite").read_bytes()) == "1.5.0"
    image = keras.Input((4, 4, 3), batch_size=1)
    model = keras.Model(image, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(image)))
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    classifier = tflite_metadata.add_metadata(content, name="t", description="d", version="v1", author="tests", class_names=["a", "b"])
    assert declared(classifier) == "1.0.0"


def test_detection_comparison_catches_moved_boxes_and_other_classes():
    from tlkeras.core.detection.web import compare_detections

    boxes, scores, classes = np.array([[10.0, 10, 40, 40], [50, 50, 90, 80]]), np.array([0.9, 0.6]), np.array([0, 1])
    python = [(boxes, scores, classes)]
    assert compare_detections([(boxes + 0.5, scores + 0.001, classes)], python, 0.3)["equal"]
    assert not compare_detections([(boxes + [0, 0, 5, 0], scores, classes)], python, 0.3)["equal"]  # a box 5 px wider
    assert not compare_detections([(boxes, scores, classes[::-1])], python, 0.3)["equal"]  # other categories
    assert not compare_detections([(boxes, scores - 0.1, classes)], python, 0.3)["equal"]  # other scores
    assert not compare_detections([(boxes[:1], scores[:1], classes[:1])], python, 0.3)["equal"]  # a missing detection
    # A detection at the score threshold may be cut on one side only.
    assert compare_detections([(boxes[:1], scores[:1], classes[:1])], [(boxes, np.array([0.9, 0.31]), classes)], 0.3)["equal"]


@pytest.mark.slow
def test_benchmark_reports_size_latency_and_ap_per_variant(detection_bundle, capsys):
    from tlkeras.benchmark.__main__ import main

    out, _ = detection_bundle
    meta = json.loads((out.bundle_dir / "metadata.json").read_text())
    target = out.bundle_dir.parent / "bench"
    assert main([str(out.bundle_dir), "--iterations", "5", "--warmup", "1", "--rounds", "1", "--threads", "1", "--output-dir", str(target)]) == 0
    table = capsys.readouterr().out
    assert "| AP |" in table and "MediaPipe AP50" in table
    rows = {r["variant"]: r for r in json.loads((target / "benchmark.json").read_text())["rows"]}
    assert set(rows) == {"float32", "int8"}
    for name, row in rows.items():
        entry = meta["variants"][name]
        assert row["bytes"] == (out.bundle_dir / entry["file"]).stat().st_size and row["latency"]["1"]["p50_ms"] > 0
        assert row["AP50"] == entry["metrics"]["AP50"] and row["task_metrics"]["AP"] == entry["metrics"]["AP"]


def test_coco_and_yolo_readers(tmp_path):
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    images = {}
    for split in ("train", "val"):
        (coco / split).mkdir()
        entries, annotations = [], []
        for i in range(3):
            Image.new("RGB", (60, 40)).save(coco / split / f"{split}{i}.jpg")
            entries.append({"id": i, "file_name": f"{split}{i}.jpg", "width": 60, "height": 40})
            annotations.append({"id": i, "image_id": i, "category_id": 7, "bbox": [50, 5, 20, 10], "iscrowd": int(i == 2)})
        images[split] = {"images": entries, "annotations": annotations, "categories": [{"id": 7, "name": "cell"}]}
        (coco / "annotations" / f"instances_{split}.json").write_text(json.dumps(images[split]))
    data = read_detection_data(coco)
    assert data.layout == "coco" and data.class_names == ["cell"] and (len(data.train), len(data.val)) == (3, 3)
    assert data.quirks["clipped_boxes"] == 6 and data.quirks["difficult_boxes"] == 2 and data.train[0].boxes.tolist() == [[50, 5, 60, 15]]
    images["val"]["annotations"][0]["category_id"] = 99
    (coco / "annotations" / "instances_val.json").write_text(json.dumps(images["val"]))
    with pytest.raises(TLKerasError, match="category_id 99"):
        read_detection_data(coco)
    (coco / "annotations" / "instances_val.json").write_text("{not json")
    with pytest.raises(TLKerasError, match="not valid UTF-8 JSON"):
        read_detection_data(coco)

    yolo = tmp_path / "yolo"
    (yolo / "data.yaml").parent.mkdir()
    (yolo / "data.yaml").write_text("names: [a, b]\nnc: 2\n")
    for split in ("train", "valid"):
        (yolo / split / "images").mkdir(parents=True)
        (yolo / split / "labels").mkdir()
        for i in range(2):
            Image.new("RGB", (100, 50)).save(yolo / split / "images" / f"{i}.png")
            (yolo / split / "labels" / f"{i}.txt").write_text("1 0.5 0.5 0.2 0.4\n" if i else "")
    data = read_detection_data(yolo)
    assert data.layout == "yolo" and data.class_names == ["a", "b"] and data.quirks["negative_images"] == 2
    assert data.train[1].boxes.tolist() == [[40, 15, 60, 35]] and data.train[1].labels.tolist() == [1]
    (yolo / "train" / "labels" / "1.txt").write_text("5 0.5 0.5 0.2 0.4\n")
    with pytest.raises(TLKerasError, match="class id 5 is out of range"):
        read_detection_data(yolo / "data.yaml")


def test_augmented_batches_repeat_per_seed(tmp_path):
    from tlkeras.core.detection.anchors import AnchorConfig, make_anchors
    from tlkeras.core.detection.pipeline import decode_samples, train_dataset

    data = read_detection_data(write_voc(tmp_path / "voc", 12, split_files=False), val_fraction=0.2, test_fraction=0.0)
    decoded = decode_samples(data.train, 128)
    config = AnchorConfig(image_size=128)
    anchors = make_anchors(config)

    def batches(seed, epoch):
        ds = train_dataset(decoded, anchors, config.box_scales, 2, 4, seed=seed, epoch=epoch, augmented=True)
        return [(x.numpy(), b.numpy(), c.numpy()) for x, (b, c) in ds]

    first, again, other = batches(1, 0), batches(1, 0), batches(1, 1)
    for (x1, b1, c1), (x2, b2, c2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(b1, b2)
        np.testing.assert_array_equal(c1, c2)
    assert not np.array_equal(first[0][0], other[0][0])  # another epoch, other views
    assert all((c >= 0).any() for _, _, c in first)  # every batch has positive anchors


_NO_TF = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "keras", "tlkeras"):
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, Block())
sys.argv = ["detect.py"] + sys.argv[1:]
runpy.run_path({script!r}, run_name="__main__")
"""
DETECT = Path(__file__).resolve().parents[1] / "export" / "detect.py"


@pytest.mark.slow
def test_app_side_script_detects_as_tlkeras_decodes_without_tensorflow(detection_run, detection_bundle, tmp_path):
    """export/detect.py (LiteRT, NumPy, Pillow only) lays out the same anchors and returns the same
    detections as tlkeras' own MediaPipe-matched post-processing of the same file."""
    import importlib.util
    import subprocess
    import sys

    from ai_edge_litert.interpreter import Interpreter

    from tlkeras.core.detection.anchors import AnchorConfig, make_anchors, postprocess

    _, root = detection_run
    out, _ = detection_bundle
    bundle = out.bundle_dir
    settings = json.loads((bundle / "detection.json").read_text())
    spec = importlib.util.spec_from_file_location("detect_app", DETECT)
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    layout = AnchorConfig.from_dict(settings["anchors"])
    np.testing.assert_allclose(app.make_anchors(settings["anchors"]), make_anchors(layout), atol=1e-6)
    images = sorted((root / "JPEGImages").glob("*.png"))[-4:]
    for variant in ("int8", "float32"):
        done = subprocess.run([sys.executable, "-c", _NO_TF.format(script=str(DETECT)), str(bundle), *map(str, images), "--variant", variant, "--json"],
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert len(lines) == len(images) and sum(len(line["detections"]) for line in lines) >= len(images), lines
        interpreter = Interpreter(model_path=str(bundle / out.metadata["variants"][variant]["file"]))
        interpreter.allocate_tensors()
        inp, outs = interpreter.get_input_details()[0], interpreter.get_output_details()
        for path, line in zip(images, lines):
            image = Image.open(path).convert("RGB")
            pixels = np.asarray(image.resize((layout.image_size,) * 2, Image.BILINEAR), np.uint8)
            interpreter.set_tensor(inp["index"], pixels[None].astype(inp["dtype"]))
            interpreter.invoke()
            location, logits = (interpreter.get_tensor(o["index"])[0] for o in outs)
            boxes, scores, classes = postprocess(location, logits, make_anchors(layout), layout.box_scales, **settings["nms"])
            found = line["detections"]
            assert len(found) == len(scores) and line["variant"] == variant
            w, h = image.size
            for d, box, score, cls in zip(found, boxes, scores, classes):
                assert d["label"] == settings["class_names"][int(cls)] and d["score"] == pytest.approx(float(score), abs=1e-6)
                expected = np.clip([box[1] * w, box[0] * h, box[3] * w, box[2] * h], 0, [w, h, w, h])
                np.testing.assert_allclose(d["box"], expected, atol=1e-3)
    bad = subprocess.run([sys.executable, str(DETECT), str(tmp_path), str(images[0])], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "detection.json" in bad.stderr
