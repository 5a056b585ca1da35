"""Builds the photo sample and backbone weights that ship inside the package (``tlkeras/quickstart/data``).

Run once by a maintainer, from ``../shared`` (the flowers5 photos and MobileNetV2-1.0 ImageNet
weights described in ``../shared/data/flowers5/SOURCE.txt`` and ``../shared/weights/README.md``);
the result is committed, so users and CI never need ``../shared`` for the quickstart.

Procedure (deterministic): per class, the flowers5 file names of each split are sorted and
shuffled with ``random.Random(0)``; the first 20 train, 10 val and 30 test photos are kept, centre
cropped to a square, resized to 192x192 (LANCZOS) and saved as JPEG quality 75. The subset is the
first draw of that rule; it was not picked by accuracy. ``ATTRIBUTION.md`` lists every photo with its
original flower_photos file name (whose leading number is the Flickr photo ID) and ``manifest.csv``
the sha256 of every shipped file, which the quickstart checks before it trusts a file.

Usage: ``python tools/make_quickstart_sample.py [--shared ../shared]``
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import random
import shutil
from pathlib import Path

from PIL import Image

COUNTS = {"train": 20, "val": 10, "test": 30}
SIZE, QUALITY = 192, 75
WEIGHTS = "mobilenet_v2_1.0_224_imagenet_no_top.h5"
OUT = Path(__file__).resolve().parents[1] / "tlkeras" / "quickstart" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    args = parser.parse_args()
    src = Path(args.shared) / "data" / "flowers5"
    origin = {}
    with open(src / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            origin[row["file"]] = row["source_path"].rsplit("/", 1)[-1]
    if OUT.exists():
        shutil.rmtree(OUT)
    rows, credits = [], []
    classes = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())
    for split, count in COUNTS.items():
        for name in classes:
            files = sorted(p.name for p in (src / split / name).glob("*.jpg"))
            random.Random(0).shuffle(files)
            for file in files[:count]:
                im = Image.open(src / split / name / file).convert("RGB")
                w, h = im.size
                s = min(w, h)
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                buf = io.BytesIO()
                im.resize((SIZE, SIZE), Image.LANCZOS).save(buf, "JPEG", quality=QUALITY, optimize=True)
                rel = f"flowers/{split}/{name}/{file}"
                (OUT / rel).parent.mkdir(parents=True, exist_ok=True)
                (OUT / rel).write_bytes(buf.getvalue())
                credits.append((rel, origin[f"{split}/{name}/{file}"]))
    shutil.copyfile(Path(args.shared) / "weights" / WEIGHTS, OUT / WEIGHTS)
    for path in sorted(p for p in OUT.rglob("*") if p.is_file()):
        rows.append((path.relative_to(OUT).as_posix(), path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()))
    with open(OUT / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "bytes", "sha256"])
        writer.writerows(rows)
    lines = [
        "# Quickstart sample: sources and licences",
        "",
        "## Photos (`flowers/`)",
        "",
        "300 photos (5 classes; 20 train, 10 val, 30 test per class) from TensorFlow's `flower_photos`",
        "set (http://download.tensorflow.org/example_images/flower_photos.tgz), Flickr photos licensed",
        "under Creative Commons Attribution 2.0 (https://creativecommons.org/licenses/by/2.0/). The",
        "photographer of each photo is credited in that archive's `LICENSE.txt` under the original file",
        "name listed below, whose leading number is the Flickr photo ID.",
        "",
        f"Changes: centre-cropped to a square, resized to {SIZE}x{SIZE} and re-encoded as JPEG quality {QUALITY}",
        "(by `tools/make_quickstart_sample.py`); file names are tlkeras' own.",
        "",
        "## Backbone weights (`" + WEIGHTS + "`)",
        "",
        "ImageNet weights of MobileNetV2 (alpha 1.0, 224x224, no classification top): the tensors of",
        "Google's TF-slim `mobilenet_v2_1.0_224` checkpoint (Apache License 2.0, the checkpoint Keras",
        "Applications' release was converted from), saved with tf_keras `save_weights`.",
        "",
        "## Photo credits (shipped file <- original flower_photos file)",
        "",
    ]
    lines += [f"- `{rel}` <- `{orig}`" for rel, orig in credits]
    (OUT / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n")
    total = sum(r[1] for r in rows)
    print(f"{len(credits)} photos + weights: {total / 1e6:.2f} MB in {OUT}")


if __name__ == "__main__":
    main()
