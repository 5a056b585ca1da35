"""Data: image folders, CSV files, TFDS and NumPy arrays into one indexable form, and tf.data.

Every source ends as a :class:`DataBundle`: uint8 RGB images of one square size (decoded once, so
epochs never decode JPEGs again), labels, class names, and the train/val/test splits. The splits
are computed from the file lists before anything is decoded; decoding runs in a parallel tf.data
pipeline (:mod:`tlkeras.core.decode`) straight into the cheapest store that fits the memory
budget (:mod:`tlkeras.core.cache`): a NumPy array in memory, or beyond the budget a read-only
``np.memmap`` of a file under the cache folder, reused by later runs over the same files. Either
way ``split.x`` is an N x S x S x 3 uint8 array; :func:`make_dataset` and :func:`image_batches`
read it by index one batch at a time, so a disk store never comes into memory whole.

From :data:`tlkeras.config.STREAM_AUTO_MIN` images (or with ``stream="on"``) the decoding runs
in the background instead (:mod:`tlkeras.core.pending`): ``load_data`` returns once the files
are listed and split, the training split decodes first in a seeded random order, and the first
epoch reads its images as they arrive; what needs a whole split waits for it.

Unreadable images (corrupt, truncated, zero bytes) are skipped with a warning that counts them and
names the first few (``on_corrupt="skip"``, the default), or stop the run naming the file
(``on_corrupt="error"``). Grayscale, palette, RGBA (composited on white) and animated images (first
frame) become RGB; EXIF orientation is applied.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from tlkeras.config import STREAM_AUTO_MIN, DataConfig
from tlkeras.core.bundle import IMAGE_EXTENSIONS, DataBundle, Split, csv_labels, csv_split_index, find_split_dirs
from tlkeras.core.bundle import check_classes as _check_classes
from tlkeras.core.bundle import check_nonempty as _check_nonempty
from tlkeras.core.bundle import pick as _pick
from tlkeras.core.bundle import stratified_split as _stratified_split
from tlkeras.core.bundle import take as _take
from tlkeras.core.cache import (
    check_disk_space,
    default_cache_dir,
    format_bytes,
    memory_budget,
    open_store,
    store_key,
)
from tlkeras.core.paths import read_csv_rows, resolve_inside
from tlkeras.core.pending import BackgroundDecode, PendingSplit
from tlkeras.core.stream import encode_labels, image_batches, make_dataset  # noqa: F401  (public here)
from tlkeras.core.tasks import task_of_head
from tlkeras.errors import TLKerasError

__all__ = [
    "IMAGE_EXTENSIONS",
    "Split",
    "DataBundle",
    "load_data",
    "from_arrays",
    "load_image",
    "make_dataset",
    "image_batches",
    "class_weights",
    "worker_shard",
]



# ---------------------------------------------------------------------------------------------
# Decoding


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decodes one image file into a ``size x size x 3`` uint8 RGB array.

    Raises:
        OSError or ValueError: if the file is not a readable image (callers decide what to do).
    """
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.seek(0)  # first frame of an animation
        img.load()  # forces a full decode: truncated files fail here, not later
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def decode_all(paths: Sequence[str], size: int, on_corrupt: str) -> tuple[np.ndarray, list[int], list[str]]:
    """Decodes ``paths`` into memory; returns (images, indices kept, paths skipped)."""
    from tlkeras.core.decode import decode_files

    return decode_files(paths, size, on_corrupt=on_corrupt)


def _decode_splits(
    parts: dict[str, tuple[list[str], np.ndarray]], size: int, config: DataConfig, *, shard: tuple[int, int] | None = None,
    encoded=None, seed: int = 42,
) -> tuple[dict[str, Split], list[str], str]:
    """Decodes each split's files into memory or, beyond the memory budget, into disk stores.

    ``encoded`` (optional) maps a split's names to a tf.data.Dataset of their encoded bytes.
    With ``config.stream`` (see :func:`_streams`) the decoding runs in the background
    (:mod:`tlkeras.core.pending`), the training files first in an order drawn from ``seed``, and
    the splits come back as :class:`~tlkeras.core.pending.PendingSplit` at once; the skipped
    list then fills when the decoding ends.

    Returns (splits, skipped paths, a description of the store and why). Side effects: prints
    one line saying which store was chosen; writes disk stores under the cache folder; may start
    the background decoding thread.
    """
    from tlkeras.core.decode import decode_groups

    count = sum(len(paths) for paths, _ in parts.values())
    needed = count * size * size * 3
    budget, why = memory_budget(config.cache_memory)
    root = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    on_disk = needed > budget
    if on_disk:
        root = root / "images"
        check_disk_space(root, needed)
        store = f"disk: {format_bytes(needed)} > {why}; stored under {root}"
    else:
        store = f"memory: {format_bytes(needed)} <= {why}"
    streaming = _streams(config, count, encoded)
    if streaming:
        # A pass over the training store in store order is then a shuffled pass already.
        order = np.random.default_rng(seed).permutation(len(parts["train"][0]))
        parts = dict(parts, train=_pick(parts["train"], order))
    groups = [
        (paths, root / store_key(paths, size) if on_disk else None, encoded(paths) if encoded is not None else None)
        for paths, _ in parts.values()
    ]
    skipped: list[str] = []
    splits: dict[str, Split] = {}
    if streaming and not all(folder is not None and open_store(folder) is not None for _, folder, _ in groups):
        print(f"tlkeras: {count:,} images at {size} px decode in the background into {store}; training starts on the "
              f"first ones", flush=True)

        def ended(seconds: float, bad: list[str]) -> None:
            print(f"tlkeras: the background decoding of {count:,} images ended after {seconds:.0f}s", flush=True)
            warn_skipped(bad)

        decoder = BackgroundDecode(groups, size, on_corrupt=config.on_corrupt, skipped=skipped, on_done=ended)
        for (name, (paths, labels)), rows in zip(parts.items(), decoder.rows):
            splits[name] = PendingSplit(rows, labels, paths, shard if name == "train" else None)
        return splits, skipped, store
    print(f"tlkeras: {count:,} images at {size} px decode into {store}", flush=True)
    decoded = decode_groups(groups, size, on_corrupt=config.on_corrupt, label=f"decoding {', '.join(parts)}")
    for (name, (paths, labels)), (x, kept, bad) in zip(parts.items(), decoded):
        skipped += bad
        splits[name] = Split(x, labels[kept], [paths[i] for i in kept], shard if name == "train" else None)
    return splits, skipped, store


def _streams(config: DataConfig, count: int, encoded) -> bool:
    """Whether the images decode in the background (``DataConfig.stream``)."""
    if config.stream == "off" or encoded is not None or config.on_corrupt == "error":
        return False  # TFDS sets read their records in their own order
    return config.stream == "on" or count >= STREAM_AUTO_MIN


def worker_shard(tf_config: str | None = None) -> tuple[int, int] | None:
    """``(index, count)`` of this process among the workers ``TF_CONFIG`` names, or None.

    A chief counts as worker 0 and the workers follow it. None without TF_CONFIG or with one
    worker. Pass the result as ``load_data(..., shard=...)`` so each worker decodes only its
    share of the training files.
    """
    raw = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    if not raw:
        return None
    try:
        spec = json.loads(raw)
        cluster, task = spec.get("cluster") or {}, spec.get("task") or {}
        chiefs = len(cluster.get("chief", []))
        count = chiefs + len(cluster.get("worker", []))
        kind, index = task.get("type"), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError):
        raise TLKerasError("TF_CONFIG is not valid JSON; see tf.distribute docs for its format") from None
    if count < 2 or kind not in ("chief", "worker"):
        return None
    return (0 if kind == "chief" else chiefs + index), count


def _shard_index(index: np.ndarray, shard: tuple[int, int] | None) -> np.ndarray:
    """This worker's share of ``index``: every count-th entry, cut to the same length on every
    worker, so all take the same number of steps (collective ops need that)."""
    if shard is None:
        return index
    k, count = shard
    if not 0 <= k < count:
        raise TLKerasError(f"shard index {k} is outside 0..{count - 1}")
    per = len(index) // count
    if per == 0:
        raise TLKerasError(f"{len(index)} training images cannot be shared among {count} workers; add images")
    return index[k::count][:per]


def warn_skipped(skipped: list[str]) -> None:
    if skipped:
        shown = ", ".join(Path(p).name for p in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): {shown}{more}", stacklevel=3)


# ---------------------------------------------------------------------------------------------
# Image folders


def _image_files(folder: Path) -> list[str]:
    """The image files under ``folder`` at any depth, sorted by path components.

    As ``Path.rglob`` with ``is_file``, but on ``os.scandir`` entries, whose types come with the
    listing: at 100,000 files this takes a fraction of a second instead of seconds. Symlinked
    folders are not followed (as rglob), symlinked files are; hidden files are left out.
    """
    found: list[str] = []
    pending = [os.fspath(folder)]
    while pending:
        try:
            with os.scandir(pending.pop()) as listing:
                entries = list(listing)
        except PermissionError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif (not entry.name.startswith(".") and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
                      and entry.is_file()):
                    found.append(entry.path)
            except OSError:  # vanished or unreadable entry: not an image we can use
                continue
    return sorted(found, key=lambda path: path.split(os.sep))


def _class_folders(root: Path) -> dict[str, list[str]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise TLKerasError(
            f"{root} has no class subfolders; put the images of each class in their own "
            f"subfolder (e.g. {root}/cats/*.jpg, {root}/dogs/*.jpg)"
        )
    found = {c.name: _image_files(c) for c in classes}
    for name, files in found.items():
        if not files:
            raise TLKerasError(
                f"class folder {root / name} has no images ({', '.join(IMAGE_EXTENSIONS)}); add "
                f"images or remove the folder"
            )
    return found


def _load_folder(root: Path, config: DataConfig, size: int, head: str, seed: int, shard=None) -> DataBundle:
    if not task_of_head(head).exclusive_classes:
        raise TLKerasError(
            f"an image folder gives single-label classes; for a {head} head use a CSV of path,label"
        )
    split_dirs = find_split_dirs(root)
    if split_dirs:
        if "train" not in split_dirs:
            raise TLKerasError(f"{root} has {', '.join(split_dirs)} folders but no train/ folder")
        layouts = {name: _class_folders(path) for name, path in split_dirs.items()}
        class_names = list(layouts["train"])
        for name, layout in layouts.items():
            if list(layout) != class_names:
                missing = sorted(set(class_names) - set(layout))
                extra = sorted(set(layout) - set(class_names))
                raise TLKerasError(
                    f"class folders of {split_dirs[name]} differ from train/ (missing: "
                    f"{missing or '-'}, extra: {extra or '-'}); use the same class folders in every split"
                )
        _check_classes(class_names, root)
        # File lists first; the split is made on them, so nothing is decoded before it is placed.
        parts = {}
        for name, layout in layouts.items():
            paths = [str(p) for c in class_names for p in layout[c]]
            labels = np.array([i for i, c in enumerate(class_names) for _ in layout[c]], np.int64)
            parts[name] = (paths, labels)
        if "val" not in parts:
            paths, labels = parts["train"]
            tr, va, _ = _stratified_split(labels, DataConfig(val_fraction=config.val_fraction or 0.15, test_fraction=0.0), seed, True)
            parts["train"], parts["val"] = _pick(parts["train"], tr), _pick(parts["train"], va)
    else:
        layout = _class_folders(root)
        class_names = list(layout)
        _check_classes(class_names, root)
        paths = [str(p) for c in class_names for p in layout[c]]
        labels = np.array([i for i, c in enumerate(class_names) for _ in layout[c]], np.int64)
        tr, va, te = _stratified_split(labels, config, seed, True)
        parts = {"train": _pick((paths, labels), tr), "val": _pick((paths, labels), va)}
        if len(te):
            parts["test"] = _pick((paths, labels), te)
    bundle = _bundle_from_parts(parts, config, size, head, class_names, str(root), shard, seed=seed)
    warn_skipped(bundle.skipped)
    _check_nonempty(bundle)
    return bundle


def _bundle_from_parts(parts, config: DataConfig, size: int, head: str, class_names, source: str, shard, encoded=None, seed: int = 42) -> DataBundle:
    """Decodes split file lists (train sharded to this worker) into a DataBundle."""
    if shard is not None:
        paths, labels = parts["train"]
        parts = dict(parts, train=_pick(parts["train"], _shard_index(np.arange(len(paths)), shard)))
        print(f"tlkeras: worker {shard[0]} of {shard[1]} reads its shard: {len(parts['train'][0]):,} of {len(paths):,} training files",
              flush=True)
    splits, skipped, store = _decode_splits(parts, size, config, shard=shard, encoded=encoded, seed=seed)
    return DataBundle(
        splits["train"], splits["val"], splits.get("test"), list(class_names), head, size, skipped, source, store,
    )


# ---------------------------------------------------------------------------------------------
# CSV


def _load_csv(path: Path, config: DataConfig, size: int, head: str, seed: int, shard=None) -> DataBundle:
    rows = read_csv_rows(path, ("path", "label"))  # UTF-8, size and column checks
    base = path.parent
    paths = [str(resolve_inside(base, r["path"] or "", source=path)) for r in rows]
    labels, class_names, strat = csv_labels(rows, path, config, head)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing and config.on_corrupt == "error":
        raise TLKerasError(f"CSV {path} lists {len(missing)} missing file(s), first: {missing[0]}")
    tr, va, te = csv_split_index(rows, path, strat, config, seed)
    parts = {"train": _pick((paths, labels), tr), "val": _pick((paths, labels), va)}
    if len(te):
        parts["test"] = _pick((paths, labels), te)
    bundle = _bundle_from_parts(parts, config, size, head, class_names, str(path), shard, seed=seed)
    warn_skipped(bundle.skipped)
    _check_nonempty(bundle)
    return bundle


# ---------------------------------------------------------------------------------------------
# TFDS and NumPy


def _load_tfds(name: str, config: DataConfig, size: int, head: str, seed: int, shard=None) -> DataBundle:
    """A prepared TFDS set, streamed from its record files: labels are read first (images left
    encoded), the split is made on them, then each split's images are decoded into its store."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise TLKerasError(
            f"tfds:{name} needs tensorflow-datasets; `pip install tensorflow-datasets` and prepare "
            f"the dataset where there is network"
        ) from None
    from tlkeras._backend import tf

    if not task_of_head(head).exclusive_classes:
        raise TLKerasError(f"tfds:{name} gives single-label classes; for a {head} head use a CSV of path,label")
    try:
        ds, info = tfds.load(
            name, split="train", as_supervised=True, with_info=True, download=False, shuffle_files=False,
            decoders={"image": tfds.decode.SkipDecoding()},
        )
    except Exception as exc:  # noqa: BLE001
        raise TLKerasError(
            f"TFDS dataset {name!r} is not available offline ({type(exc).__name__}); run "
            f"tfds.load({name!r}) once with network, or point TFDS_DATA_DIR at a prepared copy"
        ) from None
    labels = np.concatenate([b.numpy() for b in ds.map(lambda image, label: label).batch(8192)]).astype(np.int64)
    names = [f"tfds:{name}:{info.version}[{i}]" for i in range(len(labels))]
    position = {n: i for i, n in enumerate(names)}
    class_names = list(info.features["label"].names)
    _check_classes(class_names, f"tfds:{name}")
    tr, va, te = _stratified_split(labels, config, seed, True)
    parts = {"train": _pick((names, labels), tr), "val": _pick((names, labels), va)}
    if len(te):
        parts["test"] = _pick((names, labels), te)

    def encoded(split_names):
        keep = np.zeros(len(names), bool)
        keep[[position[n] for n in split_names]] = True
        mask = tf.constant(keep)

        # Named functions, not two lambdas on one line: AutoGraph cannot tell those apart and warns.
        def chosen(i, item):
            return mask[i]

        def image(i, item):
            return item[0]

        return ds.enumerate().filter(chosen).map(image)

    bundle = _bundle_from_parts(parts, config, size, head, class_names, f"tfds:{name}", shard, encoded)
    warn_skipped(bundle.skipped)
    _check_nonempty(bundle)
    return bundle


def as_rgb_uint8(x: np.ndarray, size: int | None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise TLKerasError(f"image arrays must be N x H x W (x 1, 3 or 4), got shape {x.shape}")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    x = x[..., :3]
    if x.dtype != np.uint8:
        x = np.clip(np.round(x.astype(np.float32)), 0, 255).astype(np.uint8)
    if size is not None and (x.shape[1], x.shape[2]) != (size, size):
        from tlkeras._backend import tf

        x = tf.cast(tf.round(tf.image.resize(x, (size, size))), tf.uint8).numpy()
    return x


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    head: str = "softmax",
    config: DataConfig | None = None,
    image_size: int | None = None,
    seed: int = 42,
    source: str = "arrays",
) -> DataBundle:
    """Wraps NumPy arrays as a DataBundle.

    Args:
        x: images, N x H x W (x 1/3/4), pixel values in [0, 255]; converted to uint8 RGB and
            resized to ``image_size`` when given.
        y: int class indices (softmax), multi-hot rows (sigmoid) or float targets (regression).
        class_names: defaults to ``class_0 ... class_{C-1}``.
        val, test: explicit splits; without ``val`` a stratified, seeded split of ``x`` is made
            using ``config.val_fraction`` and ``config.test_fraction``.
    """
    config = config or DataConfig()
    x = as_rgb_uint8(x, image_size)
    task = task_of_head(head)
    y, count = task.array_labels(y)
    if len(x) != len(y):
        raise TLKerasError(f"{len(x)} images but {len(y)} labels")
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(count)]
    if task.exclusive_classes:
        _check_classes(names, source)
    everything = Split(x, y)
    if val is None:
        strata = task.strata(y) if task.exclusive_classes else None
        tr, va, te = _stratified_split(np.zeros(len(y), np.int64) if strata is None else strata, config, seed, strata is not None)
        train, val_split = _take(everything, tr), _take(everything, va)
        test_split = _take(everything, te) if len(te) else None
    else:
        train = everything
        val_split = Split(as_rgb_uint8(val[0], x.shape[1]), np.asarray(val[1]).astype(y.dtype).reshape((-1,) + y.shape[1:]))
        test_split = (
            Split(as_rgb_uint8(test[0], x.shape[1]), np.asarray(test[1]).astype(y.dtype).reshape((-1,) + y.shape[1:]))
            if test is not None else None
        )
    bundle = DataBundle(train, val_split, test_split, names, head, int(x.shape[1]), [], source)
    _check_nonempty(bundle)
    return bundle


def load_data(
    config: DataConfig, image_size: int, head: str = "softmax", seed: int = 42, *, shard: tuple[int, int] | None = None,
) -> DataBundle:
    """Loads ``config.source`` at ``image_size`` pixels, decoded once into memory or a disk store.

    Text sources (see ``DataConfig.modality``) go to :func:`tlkeras.core.text.data.load_text_data`
    and ignore ``image_size``.

    Args:
        config: the source and its options; ``cache_memory`` is the memory budget of the decoded
            images (``auto``: a quarter of the available RAM, at most 1 GiB), beyond which they go
            to a disk store under ``cache_dir``.
        shard: ``(index, count)``: keep only this worker's share of the training files (see
            :func:`worker_shard`); val and test stay whole, so every worker reports the same metrics.

    Side effects: prints one line naming the store and why; draws a progress line on a
    terminal; may write (or reuse) a disk store under the cache folder.

    Raises:
        TLKerasError: a missing path, no class folders, an empty class, a single class,
            mismatched split folders, a bad CSV, unreadable images with ``on_corrupt="error"``,
            a bad ``cache_memory``, too little disk for the store.
    """
    config.validate()
    memory_budget(config.cache_memory)  # a bad size fails before any work
    if config.split_seed is not None:
        seed = config.split_seed
    source = config.source
    if source is None:
        raise TLKerasError("no data source given; pass --data <folder|file.csv|tfds:name>")
    from tlkeras.core.text.data import detect_modality, load_text_data

    if detect_modality(config) == "text":
        if shard is not None:
            raise TLKerasError("multi-worker training reads image shards only; train text on one worker (texts fit in memory)")
        return load_text_data(config, head, seed)
    if str(source).startswith("tfds:"):
        return _load_tfds(str(source)[5:], config, image_size, head, seed, shard)
    path = Path(source).expanduser()
    if not path.exists():
        raise TLKerasError(f"data path {source} does not exist; pass an image folder, a CSV file or tfds:<name>")
    if not os.access(path, os.R_OK):
        raise TLKerasError(f"data path {source} is not readable; check its permissions")
    if path.is_dir():
        return _load_folder(path, config, image_size, head, seed, shard)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return _load_csv(path, config, image_size, head, seed, shard)
    raise TLKerasError(f"data path {source} is neither a folder nor a .csv file; pass the folder that holds one subfolder per class (e.g. data/cats/*.jpg), or a CSV of path,label rows")


def class_weights(bundle: DataBundle, mode: str) -> dict[int, float] | None:
    """Per-class loss weights for an imbalanced softmax task (scikit-learn's "balanced").

    ``auto`` returns balanced weights only when the largest class has 1.5x the images of the
    smallest; ``none`` and non-softmax heads return None.
    """
    if mode == "none" or not task_of_head(bundle.head).exclusive_classes:
        return None
    # Every given file's label while the split still decodes (unreadable files are too few to matter).
    labels = bundle.train.labels_hint
    counts = np.bincount(labels, minlength=bundle.num_outputs)
    if mode == "auto" and counts.max() < 1.5 * max(counts.min(), 1):
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(c): float(w) for c, w in zip(present, weights)}
