"""Data at any scale: memory and disk stores, identical batches, corrupt files, shards, progress."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import make_image_folder, tiny_config
from PIL import Image

from tlkeras import DataConfig, TLKerasError, load_data
from tlkeras.core import cache as cache_mod
from tlkeras.core.cache import memory_budget, parse_size
from tlkeras.core.data import image_batches, load_image, make_dataset, worker_shard
from tlkeras.core.decode import decode_files, decode_groups
from tlkeras.core.features import feature_store
from tlkeras.core.progress import Progress
from tlkeras.core.stream import indexed_batches


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _config(folder, tmp_path, memory="auto", **kw):
    return DataConfig(source=str(folder), val_fraction=0.25, test_fraction=0.25, cache_memory=memory,
                      cache_dir=str(tmp_path / "cache"), **kw)


def _batches(split, seed, epochs=2):
    ds = make_dataset(split, head="softmax", num_outputs=3, batch_size=5, shuffle=True, seed=seed)
    return [[(x.numpy(), y.numpy()) for x, y in ds] for _ in range(epochs)]


def test_a_tiny_budget_forces_the_disk_store_and_both_stores_give_the_same_batches(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", per_class=10, ext=".jpg")
    memory = load_data(_config(folder, tmp_path), 32, seed=1)
    assert memory.cache.startswith("memory") and "memory" in capsys.readouterr().out
    assert not isinstance(memory.train.x, np.memmap)
    disk = load_data(_config(folder, tmp_path, memory="1KB"), 32, seed=1)
    assert disk.cache.startswith("disk") and "disk" in capsys.readouterr().out
    for a, b in ((memory.train, disk.train), (memory.val, disk.val), (memory.test, disk.test)):
        assert isinstance(b.x, np.memmap) and b.x.shape == a.x.shape and b.x.dtype == np.uint8
        np.testing.assert_array_equal(a.x, b.x)
        assert a.paths == b.paths and (a.y == b.y).all()
    # Same seed: the same batches in every epoch, whichever store; epochs differ from each other.
    mem_batches, disk_batches = _batches(memory.train, 7), _batches(disk.train, 7)
    for mem_epoch, disk_epoch in zip(mem_batches, disk_batches):
        for (xa, ya), (xb, yb) in zip(mem_epoch, disk_epoch):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(mem_batches[0][0][0], mem_batches[1][0][0])
    # The pipeline streams: the images of an epoch are exactly the split's, each once.
    seen = np.concatenate([x for x, _ in mem_batches[0]])
    assert sorted(map(bytes, seen.astype(np.uint8))) == sorted(map(bytes, memory.train.x))
    np.testing.assert_array_equal(np.concatenate(list(image_batches(disk.val.x, 4).as_numpy_iterator())), disk.val.x.astype(np.float32))


def test_a_disk_store_is_reused_without_decoding_again(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "images", per_class=6)
    first = load_data(_config(folder, tmp_path, memory="0"), 32, seed=1)
    stores = list((tmp_path / "cache" / "images").glob("*/meta.json"))
    assert len(stores) == 3 and not list((tmp_path / "cache").rglob("*.partial"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr("tlkeras.core.decode.decode_image_fn", no_decoding)
    again = load_data(_config(folder, tmp_path, memory="0"), 32, seed=1)
    np.testing.assert_array_equal(first.train.x, again.train.x)
    # A changed file changes the key: that split is decoded anew.
    Image.new("RGB", (40, 40), (1, 2, 3)).save(first.train.paths[0])
    with pytest.raises(AssertionError, match="decoded again"):
        load_data(_config(folder, tmp_path, memory="0"), 32, seed=1)


@pytest.mark.parametrize("memory", ["auto", "0"])
def test_corrupt_files_are_counted_in_one_pass(tmp_path, memory):
    folder = make_image_folder(tmp_path / "images", per_class=8)
    (folder / "red" / "zero.png").write_bytes(b"")
    good = (folder / "red" / "red_000.png").read_bytes()
    (folder / "red" / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "blue" / "text.jpg").write_text("not a picture")
    with pytest.warns(UserWarning, match="skipped 3 unreadable image"):
        bundle = load_data(_config(folder, tmp_path, memory), 32)
    assert sorted(p.rsplit("/", 1)[1] for p in bundle.skipped) == ["text.jpg", "truncated.png", "zero.png"]
    splits = (bundle.train, bundle.val, bundle.test)
    assert sum(len(s) for s in splits) == 24 and all(len(s.x) == len(s.y) == len(s.paths) for s in splits)
    assert not any(p in bundle.skipped for s in splits for p in s.paths)
    with pytest.raises(TLKerasError, match="cannot read image .*(zero|truncated|text)"):
        load_data(_config(folder, tmp_path, memory, on_corrupt="error"), 32)


def test_tensorflow_decoding_matches_pil_for_modes_and_exif_orientation(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random((30, 20, 3)) * 60 + np.linspace(0, 180, 20)[None, :, None]).astype(np.uint8)
    files = {
        "gray.png": Image.fromarray(base[..., 0], "L"),
        "rgba.png": Image.fromarray(np.dstack([base, np.full((30, 20), 128, np.uint8)]), "RGBA"),
        "palette.gif": Image.fromarray(base).convert("P"),
        "plain.bmp": Image.fromarray(base),
        "photo.webp": Image.fromarray(base),
    }
    for name, img in files.items():
        img.save(tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(base).save(tmp_path / f"exif{orientation}.jpg", exif=exif, quality=95)
    # Cameras write EXIF first, with no JFIF segment before it: drop PIL's JFIF APP0 (20 bytes).
    jfif = (tmp_path / "exif6.jpg").read_bytes()
    assert jfif[2:4] == b"\xff\xe0" and jfif[24:28] == b"Exif"
    (tmp_path / "exif_first6.jpg").write_bytes(jfif[:2] + jfif[20:])
    paths = sorted(str(p) for p in tmp_path.iterdir())
    x, kept, skipped = decode_files(paths, 16)
    assert kept == list(range(len(paths))) and not skipped and x.shape == (len(paths), 16, 16, 3)
    for path, row in zip(paths, x):
        reference = load_image(path, 16).astype(float)
        # Different resamplers (TF vs PIL antialiasing) differ by a few levels, a wrong
        # orientation or channel handling by tens.
        assert np.abs(row - reference).mean() < 6, path


def test_large_jpegs_decode_at_a_reduced_scale_to_the_same_pixels(tmp_path):
    # 1200x900 for a 96 px model: libjpeg decodes at 1/8 (150x113), then area averaging; the
    # same photo stored losslessly (PNG) is decoded at full size. Both are area averages of it.
    yy, xx = np.mgrid[0:900, 0:1200]
    rng = np.random.default_rng(1)
    photo = np.dstack([xx * 0.2, yy * 0.25, 128 + 80 * np.sin(xx / 90.0) * np.cos(yy / 70.0)])
    photo = np.clip(photo + rng.normal(0, 12, photo.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo).save(tmp_path / "big.jpg", quality=95, exif=exif)
    Image.fromarray(photo).rotate(-90, expand=True).save(tmp_path / "big_upright.png")
    Image.fromarray(photo[:700, :500]).save(tmp_path / "small.jpg", quality=95)  # 500 < 96 * 8: 1/4 scale
    Image.fromarray(photo[:700, :500]).save(tmp_path / "small.png")
    paths = [str(tmp_path / n) for n in ("big.jpg", "big_upright.png", "small.jpg", "small.png")]
    x, kept, _ = decode_files(paths, 96)
    assert kept == [0, 1, 2, 3]
    for scaled, full in ((0, 1), (2, 3)):
        difference = np.abs(x[scaled].astype(float) - x[full])
        # JPEG at quality 95 plus the reduced-scale IDCT: about a level; a missed rotation or a
        # wrong crop would give tens.
        assert difference.mean() < 2.5 and np.percentile(difference, 99) < 12, (paths[scaled], difference.mean())
    reference = load_image(paths[0], 96).astype(float)  # PIL, full decode, EXIF applied
    assert np.abs(x[0] - reference).mean() < 4


def test_groups_decoded_in_one_pipeline_get_their_own_rows(tmp_path):
    # Batches of 8 over groups of 11, 2 (one corrupt) and 6 images: whole batches of one group
    # and batches that straddle groups both land in the right store, in order.
    folder = make_image_folder(tmp_path / "images", classes=("a", "b"), per_class=9)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    groups = [paths[:11], [paths[11], str(bad)], paths[12:]]
    alone = [decode_files(g, 16)[0] for g in groups]
    together = decode_groups([(g, None, None) for g in groups], 16, batch_size=8)
    assert [r[1] for r in together] == [list(range(11)), [0], list(range(6))]
    assert together[1][2] == [str(bad)]
    for (x, _, _), want in zip(together, alone):
        np.testing.assert_array_equal(x, want)
    np.testing.assert_array_equal(together[0][0][3], decode_files([paths[3]], 16)[0][0])


def test_encoded_bytes_stream_like_files(tmp_path):
    from tlkeras._backend import tf

    folder = make_image_folder(tmp_path / "images", classes=("a", "b"), per_class=3)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    blobs = [open(p, "rb").read() for p in paths]
    blobs[2] = b"broken"
    x, kept, skipped = decode_files(paths, 24, encoded=tf.data.Dataset.from_tensor_slices(blobs))
    files, _, _ = decode_files(paths, 24)
    assert kept == [0, 1, 3, 4, 5] and skipped == [paths[2]]
    np.testing.assert_array_equal(x, files[kept])


def test_a_worker_sees_only_its_shard_of_the_training_files(tmp_path):
    from tlkeras._backend import tf

    cluster = {"worker": ["a:1", "b:2", "c:3"]}
    assert worker_shard(json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 2}})) == (2, 3)
    assert worker_shard(json.dumps({"cluster": dict(cluster, chief=["d:4"]), "task": {"type": "worker", "index": 0}})) == (1, 4)
    assert worker_shard(json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}})) is None
    assert worker_shard("") is None
    folder = make_image_folder(tmp_path / "images", per_class=11)
    whole = load_data(_config(folder, tmp_path), 32, seed=1)
    shards = [load_data(_config(folder, tmp_path), 32, seed=1, shard=(k, 2)) for k in range(2)]
    a, b = (set(s.train.paths) for s in shards)
    assert not a & b and a | b <= set(whole.train.paths)
    assert len(shards[0].train) == len(shards[1].train) == len(whole.train) // 2
    assert shards[0].val.paths == whole.val.paths and shards[0].test.paths == whole.test.paths
    for s in shards:
        index = [whole.train.paths.index(p) for p in s.train.paths]
        np.testing.assert_array_equal(s.train.x, whole.train.x[index])
    ds = make_dataset(shards[1].train, head="softmax", num_outputs=3, batch_size=4)
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF
    with pytest.raises(TLKerasError, match="outside"):
        load_data(_config(folder, tmp_path), 32, shard=(2, 2))


def test_progress_draws_on_a_terminal_and_stays_quiet_otherwise(tmp_path, monkeypatch):
    terminal, log = _Terminal(), io.StringIO()
    for stream in (terminal, log):
        with Progress(3, "decoding train", stream=stream, interval=0) as progress:
            for _ in range(3):
                progress.update()
    assert log.getvalue() == ""
    text = terminal.getvalue()
    assert "decoding train: 1/3 images" in text and "ETA" in text and "/s" in text
    assert text.endswith("\n") and "3/3 images" in text.splitlines()[-1]
    # The decoder draws it on stderr when that is a terminal, not otherwise.
    folder = make_image_folder(tmp_path / "images", classes=("a", "b"), per_class=2)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    for stream, expected in ((_Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr("sys.stderr", stream)
        decode_files(paths, 8, label="decoding val")
        monkeypatch.undo()
        assert ("decoding val: 4/4 images" in stream.getvalue()) is expected


def test_memory_budget_sizes_and_errors(tmp_path, monkeypatch):
    assert parse_size("2GB") == 2 * 10**9 and parse_size("512 MiB") == 512 << 20 and parse_size("0") == 0
    assert parse_size("auto") is None and parse_size(1234) == 1234
    with pytest.raises(TLKerasError, match="not a size"):
        parse_size("lots")
    monkeypatch.setattr(cache_mod, "available_memory", lambda: 8 * 10**9)
    budget, why = memory_budget("auto")
    assert budget == cache_mod.AUTO_CAP and "--cache-memory" in why
    monkeypatch.setattr(cache_mod, "available_memory", lambda: 10**9)
    assert memory_budget("auto")[0] == 250_000_000
    folder = make_image_folder(tmp_path / "images", per_class=4)
    with pytest.raises(TLKerasError, match="not a size"):
        load_data(_config(folder, tmp_path, memory="two gigs"), 32)
    monkeypatch.setattr("shutil.disk_usage", lambda path: type("U", (), {"free": 10})())
    with pytest.raises(TLKerasError, match="on disk but .* free; pass --cache-dir"):
        load_data(_config(folder, tmp_path, memory="0"), 32)


def test_feature_store_in_memory_and_on_disk_match_predict(tmp_path):
    from tlkeras._backend import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs / 255.0))
    extractor = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).integers(0, 255, (21, 16, 16, 3)).astype(np.uint8)
    expected = extractor.predict(x.astype(np.float32), verbose=0)
    in_memory = feature_store(extractor, x, 8)
    on_disk = feature_store(extractor, x, 8, cache_memory="0", cache_dir=tmp_path)
    assert isinstance(on_disk, np.memmap) and not isinstance(in_memory, np.memmap)
    np.testing.assert_allclose(in_memory, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(in_memory, on_disk)
    assert not list(tmp_path.iterdir())  # the feature file is unlinked once mapped
    views = feature_store(extractor, x, 8, augment="light", views=3, seed=1)
    assert views.shape == (63, 4)
    np.testing.assert_allclose(views[:21], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(views[21:42], expected)


def test_indexed_batches_keep_extras_aligned_and_read_either_store_in_the_same_order(tmp_path):
    from tlkeras._backend import tf

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (23, 8, 8, 3)).astype(np.uint8)
    targets, weights = np.arange(23, dtype=np.float32), rng.random(23).astype(np.float32)
    writer = cache_mod.StoreWriter(len(x), x.shape[1:], np.uint8, tmp_path / "store")
    writer.write(x)
    on_disk = writer.finish({})
    assert isinstance(on_disk, np.memmap)

    def epochs(images, n=2):
        ds = indexed_batches(images, 5, extras=(targets, weights), shuffle=True, seed=7)
        return [[tuple(t.numpy() for t in batch) for batch in ds] for _ in range(n)]

    reference = tf.data.Dataset.from_tensor_slices((x, targets, weights)).shuffle(len(x), seed=7).batch(5)
    want = [tuple(t.numpy() for t in batch) for batch in reference]
    for images in (x, on_disk):
        first, second = epochs(images)
        for (xb, tb, wb), (rx, rt, rw) in zip(first, want):
            np.testing.assert_array_equal(xb, rx.astype(np.float32))  # the same images in the same order
            np.testing.assert_array_equal(tb, rt)
            np.testing.assert_array_equal(wb, rw)
            np.testing.assert_array_equal(xb[:, 0, 0, 0], x[tb.astype(int), 0, 0, 0])  # extras follow their image
        assert [b[1].tolist() for b in first] != [b[1].tolist() for b in second]  # reshuffled every epoch
    with pytest.raises(TLKerasError, match="4 rows for 23 images"):
        indexed_batches(x, 5, extras=(targets[:4],))
    endless = indexed_batches(x, 5, repeat=True, drop_remainder=True)
    assert all(int(b.shape[0]) == 5 for b in endless.take(10))


@pytest.mark.slow
def test_the_same_seed_gives_the_same_metrics_from_either_store(tmp_path):
    from tlkeras import train_model

    folder = make_image_folder(tmp_path / "images", per_class=8)
    metrics = []
    for memory in ("auto", "0"):
        config = tiny_config(seed=3, train__phase1_epochs=1, train__phase2_epochs=1, train__phase1_solver="keras")
        config.data.source, config.data.cache_memory, config.data.cache_dir = str(folder), memory, str(tmp_path / "c")
        result = train_model(config, write=False)
        metrics.append(result.metrics["final"])
    assert metrics[0]["accuracy"] == metrics[1]["accuracy"]
    np.testing.assert_array_equal(metrics[0]["confusion_matrix"], metrics[1]["confusion_matrix"])


def test_a_prepared_tfds_set_streams_from_its_records_into_either_store(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    rng = np.random.default_rng(0)
    originals = [(rng.random((40, 48, 3)) * 60 + (150 if i % 2 else 20)).astype(np.uint8) for i in range(40)]

    class TinyShapes(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=["dark", "light"]),
            })
            return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, img in enumerate(originals):
                yield i, {"image": img, "label": i % 2}

    # Prepared where TFDS_DATA_DIR would point (read once, when TFDS is imported); never downloaded.
    TinyShapes(data_dir=str(tmp_path / "tfds")).download_and_prepare()
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path / "tfds"))
    config = lambda memory: DataConfig(  # noqa: E731
        source="tfds:tiny_shapes", val_fraction=0.25, test_fraction=0.25, cache_memory=memory, cache_dir=str(tmp_path / "cache")
    )
    # TFDS shuffles examples when it prepares a set: the reference is the records in file order.
    records = list(tfds.as_numpy(tfds.load("tiny_shapes", split="train", as_supervised=True, download=False, shuffle_files=False)))
    assert len(records) == 40
    memory, disk = load_data(config("auto"), 32, seed=1), load_data(config("1KB"), 32, seed=1)
    assert memory.cache.startswith("memory") and disk.cache.startswith("disk") and isinstance(disk.train.x, np.memmap)
    assert memory.class_names == ["dark", "light"] and (len(memory.train), len(memory.val), len(memory.test)) == (20, 10, 10)
    for split, other in ((memory.train, disk.train), (memory.val, disk.val), (memory.test, disk.test)):
        np.testing.assert_array_equal(split.x, other.x)
        # Each decoded row is its own record's image (the split picked by index, the records
        # filtered in order), with its label.
        for row, path, label in zip(split.x, split.paths, split.y):
            image, record_label = records[int(path.rsplit("[", 1)[1].rstrip("]"))]
            expected = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR), float)
            assert label == record_label and np.abs(row - expected).mean() < 6, path
            assert (row.mean() > 100) == bool(label)  # light images are the "light" class
    with pytest.raises(TLKerasError, match="'no_such_set' is not available offline"):
        load_data(DataConfig(source="tfds:no_such_set"), 32, seed=1)
