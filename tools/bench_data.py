"""Benchmark of the data pipeline at growing N: peak memory, time to first batch, images/s.

Generates N synthetic JPEGs (320x240 by default, ``--photo 4032x3024`` for phone-sized
photos; 10 classes) once per N, then runs each case in a fresh
subprocess, which reports its own peak resident memory (``ru_maxrss``):

- ``tlkeras``: ``load_data`` with the automatic memory budget (in memory or a disk store), then
  two epochs of ``make_dataset(shuffle=True)`` over the training split;
- ``tlkeras-memory``: the same with ``cache_memory`` large enough to keep everything in memory
  (only up to ``--memory-max`` images: the point is what the budget avoids);
- ``tlkeras-disk``: the same with ``cache_memory=0`` (always the disk store);
- ``tlkeras-wait``: the same with ``stream="off"`` (every split decoded before the first batch,
  as before issue 27);
- ``tlkeras-reuse``: a second run over the same files and cache folder (the disk store is
  reused, nothing is decoded), when the first run chose the disk;
- ``keras``: ``image_dataset_from_directory`` (decodes every epoch), two epochs.

"time to first batch" runs from the start of loading (after importing TensorFlow) to the first batch; an epoch's images/s
counts the images that epoch delivered. tlkeras' first epoch includes its decoding.

    nice python tools/bench_data.py --n 1000 10000 --json benchmarks/data_runs.json

Writes nothing but the images (under --workdir) and the optional JSON; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CLASSES = 10


def _write_some(args):
    root, start, stop, seed, width, height = args
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed + start)
    yy, xx = np.mgrid[0:height, 0:width]
    # The same pattern at any size; photo-sized files get the smaller noise of a real photo
    # (a 12 MP frame of sigma-20 noise would be a 10 MB JPEG, a phone writes 2-4 MB).
    scale, noise = 320 / width, (20 if width <= 320 else 4)
    xx, yy = xx * scale, yy * scale
    for i in range(start, stop):
        c = i % CLASSES
        folder = Path(root) / f"class_{c}"
        path = folder / f"img_{i:06d}.jpg"
        if path.exists():
            continue
        base = np.stack([(xx * (c + 1)) % 256, (yy * (10 - c)) % 256, np.full_like(xx, 25 * c)], -1)
        img = np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(path, quality=90)


def make_images(root: Path, n: int, seed: int = 0, photo: tuple[int, int] = (320, 240)) -> Path:
    """N JPEGs of ``photo`` (width, height) in 10 class folders (kept between runs; made in 2 processes)."""
    from multiprocessing import Pool

    marker = root / f".complete-{n}"
    if marker.exists():
        return root
    for c in range(CLASSES):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    step = 500 if photo[0] <= 320 else 50
    jobs = [(str(root), s, min(s + step, n), seed, *photo) for s in range(0, n, step)]
    with Pool(2) as pool:
        pool.map(_write_some, jobs)
    marker.write_text("ok")
    return root


_CASE = r"""
import json, os, resource, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
case, folder, size, batch, cache, n_epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
from tlkeras._backend import keras, tf  # imports are not timed: both pipelines need TensorFlow
t0 = time.perf_counter()
out = {"case": case}
if case.startswith("tlkeras"):
    import warnings
    warnings.simplefilter("ignore")
    from tlkeras import DataConfig, load_data
    from tlkeras.core.data import make_dataset
    memory = {"tlkeras-memory": "1000GB", "tlkeras-disk": "0"}.get(case, "auto")
    stream = "off" if case == "tlkeras-wait" else "auto"
    config = DataConfig(source=folder, val_fraction=0.15, test_fraction=0.15, cache_memory=memory, cache_dir=cache, stream=stream)
    bundle = load_data(config, size, seed=1)
    out["load_s"] = time.perf_counter() - t0
    out["store"] = bundle.cache.split(":")[0]
    # A pipeline per epoch, as the training engine builds them (recipe.make_phase2_ds): an epoch
    # that starts once the store is complete reads it like any store.
    def epoch_ds(epoch):
        return make_dataset(bundle.train, head="softmax", num_outputs=len(bundle.class_names), batch_size=batch, shuffle=True,
                            seed=1 + epoch)
else:
    ds = keras.utils.image_dataset_from_directory(folder, image_size=(size, size), batch_size=batch, shuffle=True, seed=1)
    ds = ds.prefetch(tf.data.AUTOTUNE)

    def epoch_ds(epoch):
        return ds
epochs = []
start = t0
for epoch in range(n_epochs):
    count = 0
    for i, (x, y) in enumerate(epoch_ds(epoch)):
        if epoch == 0 and i == 0:
            out["first_batch_s"] = time.perf_counter() - t0
        count += int(x.shape[0])
    now = time.perf_counter()
    epochs.append({"images": count, "seconds": now - start})
    start = now
out["epochs"] = epochs
if case.startswith("tlkeras"):
    from tlkeras.core.pending import wait_for_decoding
    wait_for_decoding(bundle)  # background decoding (stream): when every split was decoded
    out["all_decoded_s"] = time.perf_counter() - t0
    out["decoded"] = len(bundle.train) + len(bundle.val) + (len(bundle.test) if bundle.test is not None else 0)
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""


def run_case(case: str, folder: Path, size: int, batch: int, cache: Path, timeout: int, epochs: int = 2) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CASE, case, str(folder), str(size), str(batch), str(cache), str(epochs)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {"case": case, "error": (done.stderr or done.stdout)[-800:], "wall_s": time.perf_counter() - started}
    result = json.loads(lines[-1][7:])
    result["wall_s"] = time.perf_counter() - started
    return result


def _drop_page_cache() -> None:
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        print(f"<!-- could not empty the page cache: {exc} -->", flush=True)


def _row(n: int, r: dict) -> str:
    if "error" in r:
        return f"| {n:,} | {r['case']} | failed: {r['error'].strip().splitlines()[-1][:80]} | | | | | | |"
    e1, e2 = r["epochs"][0], r["epochs"][-1]
    # Images decoded per second before the first batch (tlkeras decodes every split up front);
    # Keras decodes while it iterates, so its epoch-1 rate is its decoding rate.
    # With background decoding, load_s is near zero: count until every split was decoded.
    seconds = max(r.get("load_s") or 0, r.get("all_decoded_s") or 0)
    decoded = f"{r['decoded'] / seconds:,.0f}" if r.get("decoded") and seconds else "-"
    return (
        f"| {n:,} | {r['case']} | {r.get('store', 'decode every epoch')} | {r['peak_rss_mb'] / 1024:.2f} | "
        f"{r['first_batch_s']:.1f} | {decoded} | {e1['images'] / e1['seconds']:,.0f} | {e2['images'] / e2['seconds']:,.0f} | "
        f"{r['wall_s']:.0f} |"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlkeras_bench_data"))
    parser.add_argument("--cases", nargs="+", default=["tlkeras", "tlkeras-memory", "tlkeras-reuse", "keras"],
                        help="tlkeras, tlkeras-wait, tlkeras-memory, tlkeras-disk, tlkeras-reuse, keras")
    parser.add_argument("--memory-max", type=int, default=20000, help="largest N for the tlkeras-memory case")
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--cold", action="store_true",
                        help="empty the page cache before each case (root on Linux), so each reads the files from disk")
    parser.add_argument("--repeat", type=int, default=1, help="run the cases this many times, interleaved")
    parser.add_argument("--epochs", type=int, default=2, choices=(2, 3),
                        help="epochs per case; 3 shows the epochs after a background decoding has ended")
    parser.add_argument("--photo", default="320x240", help="generated image size WIDTHxHEIGHT, e.g. 4032x3024 (a phone's 12 MP)")
    args = parser.parse_args(argv)
    photo = tuple(int(v) for v in args.photo.lower().split("x"))
    suffix = "" if photo == (320, 240) else f"_{args.photo}"

    results = []
    header = (f"| N | pipeline | store | peak RSS (GB) | first batch (s) | decoded img/s | epoch 1 img/s | epoch {args.epochs} img/s | wall (s) |\n"
              "|---|---|---|---|---|---|---|---|---|")
    print(header, flush=True)
    for n in args.n:
        t = time.perf_counter()
        folder = make_images(args.workdir / f"images_{n}{suffix}", n, photo=photo)
        print(f"<!-- {n:,} images ready in {time.perf_counter() - t:.0f}s -->", flush=True)
        cache = args.workdir / f"cache_{n}"
        shutil.rmtree(cache, ignore_errors=True)
        first = None
        for case in [c for _ in range(args.repeat) for c in args.cases]:
            if case == "tlkeras-memory" and n > args.memory_max:
                continue
            if case == "tlkeras-reuse" and (first is None or first.get("store") != "disk"):
                continue
            if case != "tlkeras-reuse":  # every other case decodes from scratch
                shutil.rmtree(cache, ignore_errors=True)
            if args.cold:
                _drop_page_cache()
            result = run_case(case, folder, args.size, args.batch_size, cache, args.timeout, args.epochs)
            result["n"] = n
            if case == "tlkeras":
                first = result
            results.append(result)
            print(_row(n, result), flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
