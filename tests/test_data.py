"""Data sources and bad data: folders, splits, CSV, NumPy, corrupt files, class weights."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_image_folder
from PIL import Image

from tlkeras import DataConfig, TLKerasError, from_arrays, load_data
from tlkeras.core.data import class_weights, load_image, make_dataset


def test_folder_without_splits_is_split_stratified_and_seeded(image_folder):
    config = DataConfig(source=str(image_folder), val_fraction=0.25, test_fraction=0.25)
    a = load_data(config, 32, seed=1)
    b = load_data(config, 32, seed=1)
    c = load_data(config, 32, seed=2)
    assert a.class_names == ["blue", "green", "red"]
    assert (len(a.train), len(a.val), len(a.test)) == (18, 9, 9)
    assert a.train.x.shape == (18, 32, 32, 3) and a.train.x.dtype == np.uint8
    for split in (a.train, a.val, a.test):
        assert sorted(np.bincount(split.y).tolist()) == [np.bincount(split.y).min()] * 3  # 1/3 per class
    assert a.train.paths == b.train.paths and a.train.paths != c.train.paths
    assert not set(a.train.paths) & set(a.test.paths)
    # A fixed split_seed keeps the split whatever the run seed is.
    fixed = DataConfig(source=str(image_folder), val_fraction=0.25, test_fraction=0.25, split_seed=1)
    assert load_data(fixed, 32, seed=2).test.paths == a.test.paths


def test_folder_with_split_subfolders(tmp_path):
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        make_image_folder(tmp_path / split, per_class=n, seed=len(split))
    bundle = load_data(DataConfig(source=str(tmp_path)), 32)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (18, 6, 9)
    assert bundle.eval_split[0] == "test"


def test_mismatched_class_folders_between_splits(tmp_path):
    make_image_folder(tmp_path / "train", classes=("a", "b", "c"), per_class=3)
    make_image_folder(tmp_path / "val", classes=("a", "b"), per_class=2)
    with pytest.raises(TLKerasError, match="missing: \\['c'\\]"):
        load_data(DataConfig(source=str(tmp_path)), 32)


def test_image_modes_become_rgb(tmp_path):
    base = np.full((20, 30, 3), 200, np.uint8)
    paths = {
        "gray.png": Image.fromarray(base[..., 0], "L"),
        "rgba.png": Image.fromarray(np.dstack([base, np.zeros((20, 30), np.uint8)]), "RGBA"),
        "palette.gif": Image.fromarray(base).convert("P"),
        "plain.bmp": Image.fromarray(base),
        "photo.jpg": Image.fromarray(base),
    }
    for name, img in paths.items():
        img.save(tmp_path / name)
        out = load_image(tmp_path / name, 16)
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8, name
    # A fully transparent RGBA image is composited on white, not black.
    assert load_image(tmp_path / "rgba.png", 16).min() == 255


def test_corrupt_images_are_skipped_with_a_count_or_fail_by_name(image_folder):
    (image_folder / "red" / "zero.jpg").write_bytes(b"")
    good = (image_folder / "red" / "red_000.png").read_bytes()
    (image_folder / "red" / "truncated.png").write_bytes(good[: len(good) // 2])
    (image_folder / "red" / "notes.txt").write_text("not an image, ignored by extension")
    with pytest.warns(UserWarning, match="skipped 2 unreadable image"):
        bundle = load_data(DataConfig(source=str(image_folder)), 32)
    assert len(bundle.skipped) == 2
    assert sum(len(s) for s in (bundle.train, bundle.val, bundle.test)) == 36
    with pytest.raises(TLKerasError, match="cannot read image .*(zero|truncated)"):
        load_data(DataConfig(source=str(image_folder), on_corrupt="error"), 32)


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "does not exist"),
        ("flat", "no class subfolders"),
        ("empty_class", "has no images"),
        ("single_class", "only one class"),
    ],
)
def test_bad_folders(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "flat":
        Image.new("RGB", (8, 8)).save(root / "a.png")
    if layout == "empty_class":
        make_image_folder(root, classes=("a", "b"), per_class=3)
        (root / "c").mkdir()
    if layout == "single_class":
        make_image_folder(root, classes=("only",), per_class=5)
    with pytest.raises(TLKerasError, match=message):
        load_data(DataConfig(source=str(root)), 32)


def test_csv_single_multi_label_and_regression(tmp_path):
    folder = make_image_folder(tmp_path / "img", classes=("a", "b"), per_class=10)
    files = sorted(folder.rglob("*.png"))
    rows = ["path,label"] + [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in files]
    (tmp_path / "single.csv").write_text("\n".join(rows))
    single = load_data(DataConfig(source=str(tmp_path / "single.csv")), 32)
    assert single.class_names == ["a", "b"] and len(single.train) + len(single.val) + len(single.test) == 20
    rows = ["path,label"] + [f"{p.relative_to(tmp_path)},{p.parent.name};{'x' if i % 2 else 'y'}" for i, p in enumerate(files)]
    (tmp_path / "multi.csv").write_text("\n".join(rows))
    multi = load_data(DataConfig(source=str(tmp_path / "multi.csv")), 32, head="sigmoid")
    assert multi.class_names == ["a", "b", "x", "y"]
    assert multi.train.y.shape[1] == 4 and set(multi.train.y.sum(axis=1)) == {2.0}
    rows = ["path,label"] + [f"{p.relative_to(tmp_path)},{i * 0.5}" for i, p in enumerate(files)]
    (tmp_path / "reg.csv").write_text("\n".join(rows))
    reg = load_data(DataConfig(source=str(tmp_path / "reg.csv")), 32, head="regression")
    assert reg.train.y.dtype == np.float32 and reg.train.y.shape[1] == 1


def test_csv_bad_inputs(tmp_path):
    folder = make_image_folder(tmp_path / "img", classes=("a", "b"), per_class=4)
    (tmp_path / "cols.csv").write_text("file,class\nx.png,a\n")
    with pytest.raises(TLKerasError, match="needs .*column.*path.*label"):
        load_data(DataConfig(source=str(tmp_path / "cols.csv")), 32)
    (tmp_path / "escape.csv").write_text("path,label\n../../etc/passwd,a\n")
    with pytest.raises(TLKerasError, match="points outside"):
        load_data(DataConfig(source=str(tmp_path / "escape.csv")), 32)
    first = sorted(folder.rglob("*.png"))[0].relative_to(tmp_path)
    (tmp_path / "split.csv").write_text(f"path,label,split\n{first},a,holdout\n{first},b,train\n")
    with pytest.raises(TLKerasError, match="unknown split value"):
        load_data(DataConfig(source=str(tmp_path / "split.csv")), 32)


def test_numpy_arrays_grayscale_and_resize():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 20, 20)).astype(np.uint8)  # grayscale, no channel axis
    y = np.arange(40) % 4
    bundle = from_arrays(x, y, image_size=32, class_names=list("abcd"))
    assert bundle.train.x.shape[1:] == (32, 32, 3)
    assert np.bincount(bundle.train.y).min() == np.bincount(bundle.train.y).max()


def test_dataset_pipeline_shapes_targets_and_augmentation():
    x = np.zeros((10, 32, 32, 3), np.uint8)
    x[:, :, :16] = 255
    bundle = from_arrays(x, np.arange(10) % 2, config=DataConfig(val_fraction=0.2, test_fraction=0.0))
    ds = make_dataset(bundle.train, head="softmax", num_outputs=2, batch_size=4, shuffle=True, augment="strong", seed=3)
    images, targets = next(iter(ds))
    assert images.dtype.name == "float32" and images.shape[1:] == (32, 32, 3)
    assert targets.shape[1] == 2 and float(images.numpy().max()) <= 255.0
    plain = next(iter(make_dataset(bundle.train, head="softmax", num_outputs=2, batch_size=8, augment="off")))[0].numpy()
    np.testing.assert_array_equal(plain, bundle.train.x[:8].astype(np.float32))


def test_class_weights_only_when_imbalanced():
    x = np.zeros((40, 8, 8, 3), np.uint8)
    balanced = from_arrays(x, np.arange(40) % 2, config=DataConfig(val_fraction=0.25, test_fraction=0.0))
    assert class_weights(balanced, "auto") is None
    y = np.array([0] * 30 + [1] * 10)
    skewed = from_arrays(x, y, config=DataConfig(val_fraction=0.25, test_fraction=0.0))
    weights = class_weights(skewed, "auto")
    assert weights[1] > 1.0 > weights[0]
    assert class_weights(skewed, "none") is None


def test_make_dataset_takes_explicit_targets(image_folder):
    bundle = load_data(DataConfig(source=str(image_folder), val_fraction=0.25, test_fraction=0.25), 32, seed=1)
    soft = np.random.default_rng(0).dirichlet(np.ones(3), len(bundle.train)).astype(np.float32)
    ds = make_dataset(bundle.train, head="softmax", num_outputs=3, batch_size=64, targets=soft)
    _, y = next(iter(ds))
    np.testing.assert_allclose(y.numpy(), soft)
    with pytest.raises(TLKerasError, match="targets for"):
        make_dataset(bundle.train, head="softmax", num_outputs=3, batch_size=8, targets=soft[:-1])


def test_file_names_that_are_not_utf8_are_read(tmp_path):
    """Archives made on older Windows machines hold latin-1 file names: they train and report like any other."""
    import os

    from conftest import tiny_config

    from tlkeras.train.run import train_model

    data = make_image_folder(tmp_path / "images", per_class=10)
    for cls in ("red", "green"):
        folder = os.fsencode(data / cls)
        for i, name in enumerate(sorted(os.listdir(folder))[:4]):
            os.rename(folder + b"/" + name, folder + b"/caf\xe9_" + str(i).encode() + b".png")  # not valid UTF-8
    config = tiny_config(output_dir=str(tmp_path / "runs"), name="latin1")
    config.data.source = str(data)
    result = train_model(config)
    assert result.info["data"]["skipped"] == []
    assert result.info["data"]["train"] + result.info["data"]["val"] + result.info["data"]["test"] == 30
    from tlkeras.report.html import examples_from, write_run_report

    name, split = result.data.eval_split
    assert write_run_report(result.run_dir, examples_from(result.model, split, name)).is_file()
