"""Decoding in the background (DataConfig.stream): training reads rows as they are decoded."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from conftest import make_image_folder, tiny_config

from tlkeras import DataConfig, load_data
from tlkeras.config import ConfigError
from tlkeras.core.cache import StoreWriter
from tlkeras.core.data import image_batches, make_dataset
from tlkeras.core.pending import PendingRows, PendingSplit, pending_rows, wait_for_decoding
from tlkeras.core.stream import pending_batches


def _config(folder, tmp_path, stream, memory="1KB"):
    return DataConfig(source=str(folder), val_fraction=0.25, test_fraction=0.25, cache_memory=memory,
                      cache_dir=str(tmp_path / f"cache-{stream}"), stream=stream)


def _rows(split):
    return sorted((bytes(np.asarray(split.x[i])), int(split.y[i]), split.paths[i].rsplit("/", 1)[1]) for i in range(len(split)))


@pytest.mark.parametrize("memory", ["auto", "1KB"], ids=["memory", "disk"])
def test_a_split_decoding_in_the_background_ends_as_a_plain_load_and_streams_aligned_labels(tmp_path, memory):
    folder = make_image_folder(tmp_path / "images", per_class=12)
    (folder / "red" / "zero.png").write_bytes(b"")
    (folder / "blue" / "text.jpg").write_text("not a picture")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        plain = load_data(_config(folder, tmp_path, "off", memory), 32, seed=3)
    # The warning comes from the background thread when the whole decoding ends.
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        streamed = load_data(_config(folder, tmp_path, "on", memory), 32, seed=3)
        assert isinstance(streamed.train, PendingSplit)
        # The first pass, built at once (while decoding, or on the finished store if that was
        # quicker): every readable training image once, each with its own label.
        label_of = {bytes(np.asarray(plain.train.x[i])): int(plain.train.y[i]) for i in range(len(plain.train))}
        seen = []
        for x, y in make_dataset(streamed.train, head="softmax", num_outputs=3, batch_size=5, shuffle=True, seed=1):
            seen += [(bytes(row), int(np.argmax(t))) for row, t in zip(x.numpy().astype(np.uint8), y.numpy())]
        assert sorted(seen) == sorted(label_of.items())
        wait_for_decoding(streamed)
    for name in ("train", "val", "test"):
        assert _rows(getattr(streamed, name)) == _rows(getattr(plain, name)), name
    assert sorted(streamed.skipped) == sorted(plain.skipped) and len(plain.skipped) == 2
    # A pass that starts after the store is complete reads it like any store.
    assert pending_rows(streamed.train) is None
    again = np.concatenate(list(image_batches(streamed.val.x, 4).as_numpy_iterator()))
    np.testing.assert_array_equal(again, np.asarray(streamed.val.x, np.float32))


def test_a_pass_over_a_split_still_decoding_reads_each_batch_as_its_rows_are_written():
    # The writer is this test: nothing is timed, the reader must get batch k before the rows of
    # batch k+1 exist, through make_dataset (nothing in it may wait for the whole split).
    rows = PendingRows(10, (2, 2, 3))
    writer = StoreWriter(10, (2, 2, 3), np.uint8)
    rows.started(writer)
    split = PendingSplit(rows, np.arange(10) % 3, [f"file{i}" for i in range(10)])
    kept: list[int] = []
    got, wanted = [], threading.Semaphore(0)

    def read():
        ds = make_dataset(split, head="softmax", num_outputs=3, batch_size=4, shuffle=True, augment="light", seed=0)
        for images, targets in ds.as_numpy_iterator():
            got.append((images.shape[0], targets.argmax(1).tolist()))
            wanted.release()

    reader = threading.Thread(target=read)
    reader.start()
    for start in (0, 4):
        writer.write(np.zeros((4, 2, 2, 3), np.uint8) + np.arange(start, start + 4, dtype=np.uint8)[:, None, None, None])
        kept.extend(range(start, start + 4))
        rows.wrote(kept)
        assert wanted.acquire(timeout=60), f"no batch after rows {start}..{start + 3} were written"
        assert len(got) == start // 4 + 1
    writer.write(np.full((1, 2, 2, 3), 9, np.uint8))  # file 8 was unreadable: row 8 holds file 9
    kept.append(9)
    rows.wrote(kept)
    rows.finished((writer.finish(), list(kept), ["file8"]))
    reader.join(60)
    # Each row's label is its own file's (file i has label i % 3), the unreadable file has none.
    assert got == [(4, [0, 1, 2, 0]), (4, [1, 2, 0, 1]), (1, [0])]
    assert split.paths == [f"file{i}" for i in (0, 1, 2, 3, 4, 5, 6, 7, 9)] and split.y.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 0]
    # A pass that starts after the store is complete reads it whole, reshuffled per pass.
    passes = [np.concatenate([i for _, i in pending_batches(rows, 4, shuffle=True, seed=2)]) for _ in range(2)]
    assert sorted(passes[0].tolist()) == sorted(passes[1].tolist()) == [0, 1, 2, 3, 4, 5, 6, 7, 9]


def test_stream_on_refuses_on_corrupt_error_in_one_line():
    with pytest.raises(ConfigError, match="--on-corrupt skip, or --stream off"):
        DataConfig(source="x", stream="on", on_corrupt="error").validate()
    with pytest.raises(ConfigError, match="stream"):
        DataConfig(source="x", stream="sometimes").validate()


def test_exiting_while_decoding_in_the_background_leaves_no_partial_store(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=300, size=64, ext=".jpg")
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        from tlkeras import DataConfig, load_data
        bundle = load_data(DataConfig(source={str(folder)!r}, cache_memory="0", cache_dir={str(cache)!r}, stream="on"), 64)
        assert not bundle.train.rows.done
        print("exiting", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "exiting" in done.stdout, done.stderr[-2000:]
    left = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert not [name for name in left if "partial" in name], left
    complete = [n for n in left if n == "meta.json"]
    assert len([n for n in left if n == "data.bin"]) == len(complete) < 3  # stopped early; only whole stores


@pytest.mark.slow
def test_train_model_starts_on_a_split_decoding_in_the_background_and_writes_its_report(tmp_path):
    from tlkeras.config import RunConfig
    from tlkeras.train.run import train_model

    folder = make_image_folder(tmp_path / "images", per_class=16)
    assert RunConfig().report is True
    config = tiny_config(output_dir=str(tmp_path / "runs"), name="streamed", report=True)
    config.data.source, config.data.stream, config.data.cache_dir = str(folder), "on", str(tmp_path / "cache")
    config.data.cache_memory = "0"
    result = train_model(config)
    train = result.data.train
    counts = result.info["data"]
    assert isinstance(train, PendingSplit) and train.rows.done and len(train) == train.count_hint == counts["train"]
    assert counts["train"] + counts["val"] + counts["test"] == 48 and counts["skipped"] == []
    assert 0.0 <= result.metrics["val"]["accuracy"] <= 1.0 and np.isfinite(result.history["val_loss"]).all()
    # train_model writes report.html by default (the page of the run, with its mistakes' gallery).
    page = (result.run_dir / "report.html").read_text()
    assert "<html" in page and result.config.name in page and "misclassified" in page.lower()
    assert not list(result.run_dir.parent.glob(".*partial*"))


def test_a_run_told_not_to_write_its_report_has_none(tiny_run):
    import yaml

    assert yaml.safe_load((tiny_run / "config.yaml").read_text())["report"] is False  # tiny_config turns it off
    assert (tiny_run / "metrics.json").is_file() and not (tiny_run / "report.html").exists()
