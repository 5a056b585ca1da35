"""Text data: a CSV with a text column, folders of ``.txt`` files, or Python lists -> DataBundle.

The bundle is the one the image readers return, with ``modality="text"`` and each split's ``x`` a
1-D object array of ``str``; the stratified seeded split, the label parsing of a CSV and the checks
are shared with images (:mod:`tlkeras.core.bundle`). Texts are cleaned the same way everywhere:
Unicode NFC, ``\\r\\n`` -> ``\\n``, surrounding whitespace stripped. Empty or whitespace-only texts,
and ``.txt`` files that are not UTF-8 or larger than :data:`MAX_TEXT_BYTES`, are skipped with a
count and the first few named (``on_corrupt="skip"``) or stop the run naming the first
(``on_corrupt="error"``).
"""

from __future__ import annotations

import os
import unicodedata
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from tlkeras.config import DataConfig
from tlkeras.core.bundle import (
    IMAGE_EXTENSIONS,
    DataBundle,
    Split,
    check_classes,
    check_nonempty,
    csv_labels,
    csv_split_index,
    find_split_dirs,
    stratified_split,
)
from tlkeras.core.paths import read_csv_rows
from tlkeras.core.tasks import task_of_head
from tlkeras.errors import DataError, TLKerasError

__all__ = ["load_text_data", "from_texts", "detect_modality", "clean_text", "TEXT_EXTENSIONS", "MAX_TEXT_BYTES"]

TEXT_EXTENSIONS = (".txt",)
MAX_TEXT_BYTES = 1 << 20  # one labelled example; a longer file is not a sentence or a review


def clean_text(text: str) -> str:
    """Unicode NFC, newlines normalized, surrounding whitespace stripped."""
    return unicodedata.normalize("NFC", str(text).replace("\r\n", "\n").replace("\r", "\n")).strip()


def _count_files(folder: Path, limit: int = 2000) -> tuple[int, int]:
    """(.txt files, image files) under ``folder`` (the first ``limit`` folders walked), in one walk."""
    texts = images = 0
    for i, (_, _, files) in enumerate(os.walk(folder)):
        for f in files:
            name = f.lower()
            texts += name.endswith(TEXT_EXTENSIONS)
            images += name.endswith(IMAGE_EXTENSIONS)
        if i > limit:
            break
    return texts, images


def detect_modality(config: DataConfig) -> str:
    """``image`` or ``text`` for ``config.source``: ``config.modality`` when set, else from the data.

    Raises:
        TLKerasError: a source that holds both kinds (or neither is clear) without ``--modality``.
    """
    if config.modality != "auto":
        return config.modality
    source = str(config.source or "")
    if source.startswith("tfds:"):
        return "image"  # a TFDS text set needs --modality text (its features say so only after loading)
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                header = [c.strip() for c in fh.readline().split(",")]
        except (OSError, UnicodeDecodeError):
            return "image"  # the image reader gives the precise one-line error
        has_path, has_text = "path" in header, config.text_column in header
        if has_path and has_text:
            raise TLKerasError(f"CSV {path} has both a 'path' and a '{config.text_column}' column; pass --modality image or --modality text")
        return "text" if has_text else "image"
    if path.is_dir():
        texts, images = _count_files(path)
        # A stray README.txt beside images is common: images win unless texts outnumber them.
        if texts and images and texts >= images:
            raise TLKerasError(f"{path} holds both images ({images}) and .txt files ({texts}); pass --modality image or --modality text")
        return "text" if texts and not images else "image"
    return "image"


def _read_text_file(path: Path) -> str:
    """One ``.txt`` example; raises DataError when it is unreadable, too large or not UTF-8."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_TEXT_BYTES + 1)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_TEXT_BYTES:
        raise DataError(f"{path} is larger than {MAX_TEXT_BYTES >> 20} MiB; one example per file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None


def _keep_texts(texts: list, labels: np.ndarray, names: list[str], config: DataConfig, what: str):
    """Drops empty texts (and files that could not be read: their DataError); returns texts, labels, names, skipped."""
    keep, skipped = [], []
    for i, text in enumerate(texts):
        if isinstance(text, DataError) or not text:
            if config.on_corrupt == "error":
                problem = str(text) if isinstance(text, DataError) else f"{names[i]} is empty or whitespace only; fix or remove it"
                raise TLKerasError(f"{what}: {problem} (or --on-corrupt skip to leave it out)")
            skipped.append(f"{names[i]} ({'unreadable' if isinstance(text, DataError) else 'empty'})")
        else:
            keep.append(i)
    index = np.array(keep, np.int64)
    return [texts[i] for i in keep], labels[index] if len(labels) else labels, [names[i] for i in keep], skipped


def _bundle(parts: dict, class_names: list[str], head: str, source: str, skipped: list[str]) -> DataBundle:
    splits = {name: Split(np.array(texts, dtype=object), labels, names) for name, (texts, labels, names) in parts.items()}
    bundle = DataBundle(splits["train"], splits["val"], splits.get("test"), list(class_names), head, 0, skipped, source,
                        "memory: texts", modality="text", text_stats={"skipped": len(skipped)})
    if skipped:
        shown = "; ".join(skipped[:3])
        warnings.warn(f"skipped {len(skipped)} text(s) that were empty or unreadable: {shown}{' ...' if len(skipped) > 3 else ''}",
                      stacklevel=3)
    check_nonempty(bundle)
    return bundle


def _load_csv(path: Path, config: DataConfig, head: str, seed: int) -> DataBundle:
    column = config.text_column
    rows = read_csv_rows(path, (column, "label"))
    if any(r.get(column) is None for r in rows):
        line = next(i for i, r in enumerate(rows) if r.get(column) is None) + 2
        raise TLKerasError(f"CSV {path} line {line} has fewer fields than the header; fix the quoting of that row")
    texts = [clean_text(r[column]) for r in rows]
    names = [f"{path.name} line {i + 2}" for i in range(len(rows))]
    # Empty texts go before the classes and the split are made: they are not examples.
    texts, _, names, skipped = _keep_texts(texts, np.zeros(0), names, config, f"CSV {path}")
    kept = set(names)
    rows = [r for i, r in enumerate(rows) if f"{path.name} line {i + 2}" in kept]
    if not rows:
        raise TLKerasError(f"CSV {path} has no non-empty text in column {column!r}; fill it in or pass --text-column")
    labels, class_names, strat = csv_labels(rows, path, config, head)
    tr, va, te = csv_split_index(rows, path, strat, config, seed)
    parts = {name: ([texts[i] for i in index], labels[index], [names[i] for i in index])
             for name, index in (("train", tr), ("val", va), ("test", te)) if name != "test" or len(index)}
    return _bundle(parts, class_names, head, str(path), skipped)


def _class_files(root: Path) -> dict[str, list[Path]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    return {c: sorted(p for p in (root / c).rglob("*") if p.is_file() and p.suffix.lower() in TEXT_EXTENSIONS) for c in classes}


def _read_files(layout: dict[str, list[Path]], class_names: list[str]) -> tuple[list, np.ndarray, list[str]]:
    texts, labels, names = [], [], []
    for index, name in enumerate(class_names):
        for path in layout.get(name, []):
            try:
                texts.append(clean_text(_read_text_file(path)))
            except DataError as exc:
                texts.append(exc)
            labels.append(index)
            names.append(str(path))
    return texts, np.array(labels, np.int64), names


def _load_folder(root: Path, config: DataConfig, head: str, seed: int) -> DataBundle:
    if not task_of_head(head).exclusive_classes:
        raise TLKerasError(f"a folder of .txt files gives single-label classes; for a {head} head use a CSV of text,label")
    found = find_split_dirs(root)
    layouts = {name: _class_files(folder) for name, folder in found.items()} if found else {"all": _class_files(root)}
    if found and "train" not in found:
        raise TLKerasError(f"{root} has {', '.join(found)} folders but no train/ folder; add train/ with one subfolder per class")
    first = layouts.get("train", layouts.get("all"))
    class_names = [c for c, files in first.items() if files]
    check_classes(class_names, root)
    for name, layout in layouts.items():
        extra = sorted(c for c, files in layout.items() if files and c not in class_names)
        if extra:
            raise TLKerasError(f"{found[name]} has class folders {extra} that train/ lacks; use the same class folders in every split")
    read = {name: _read_files(layout, class_names) for name, layout in layouts.items()}
    skipped, parts = [], {}
    if "all" in read:
        texts, labels, names = read["all"]
        tr, va, te = stratified_split(labels, config, seed, True)
        pieces = {"train": tr, "val": va, "test": te}
    else:
        pieces = {}
        if "val" not in read:
            texts, labels, names = read["train"]
            tr, va, _ = stratified_split(labels, DataConfig(val_fraction=config.val_fraction or 0.15, test_fraction=0.0), seed, True)
            read["val"] = ([texts[i] for i in va], labels[va], [names[i] for i in va])
            read["train"] = ([texts[i] for i in tr], labels[tr], [names[i] for i in tr])
    for name in ("train", "val", "test"):
        if "all" in read:
            index = pieces[name]
            if name == "test" and not len(index):
                continue
            chunk = ([texts[i] for i in index], labels[index], [names[i] for i in index])
        elif name in read:
            chunk = read[name]
        else:
            continue
        kept = _keep_texts(*chunk, config, str(root))
        parts[name] = kept[:3]
        skipped += kept[3]
    return _bundle(parts, class_names, head, str(root), skipped)


def load_text_data(config: DataConfig, head: str = "softmax", seed: int = 42) -> DataBundle:
    """Loads the text source of ``config``: a CSV (``text_column`` and ``label``, optional
    ``split``) or a folder of class subfolders of ``.txt`` files (optionally under train/ val/ test/).

    Raises:
        TLKerasError: a missing path, a CSV without the text column, a single class, no texts left.
    """
    if config.split_seed is not None:
        seed = config.split_seed
    source = config.source
    if source is None:
        raise TLKerasError("no data source given; pass --data <file.csv|folder>")
    if str(source).startswith("tfds:"):
        return _load_tfds(str(source)[5:], config, head, seed)
    path = Path(source).expanduser()
    if not path.exists():
        raise TLKerasError(f"data path {source} does not exist; pass a CSV with a {config.text_column} column or a folder of class folders of .txt files")
    if path.is_dir():
        return _load_folder(path, config, head, seed)
    return _load_csv(path, config, head, seed)


def _load_tfds(name: str, config: DataConfig, head: str, seed: int) -> DataBundle:
    """A prepared TFDS text set (e.g. imdb_reviews): its ``train`` split, split here like a folder."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise TLKerasError(f"tfds:{name} needs tensorflow-datasets; `pip install tensorflow-datasets` and prepare the set where there is network") from None
    try:
        ds, info = tfds.load(name, split="train", as_supervised=True, with_info=True, download=False, shuffle_files=False)
    except Exception as exc:  # noqa: BLE001
        raise TLKerasError(f"TFDS dataset {name!r} is not available offline ({type(exc).__name__}); run tfds.load({name!r}) once with network, "
                           f"or point TFDS_DATA_DIR at a prepared copy") from None
    texts, labels = [], []
    for text, label in ds.as_numpy_iterator():
        if not isinstance(text, bytes):
            raise TLKerasError(f"tfds:{name} does not hold texts; drop --modality text for an image set")
        texts.append(clean_text(text.decode("utf-8", errors="replace")))
        labels.append(int(label))
    class_names = list(info.features["label"].names)
    return from_texts(texts, labels, class_names=class_names, config=config, seed=seed, source=f"tfds:{name}", head=head)


def from_texts(
    texts: Sequence[str],
    labels: Sequence,
    *,
    class_names: Sequence[str] | None = None,
    val: tuple[Sequence[str], Sequence] | None = None,
    test: tuple[Sequence[str], Sequence] | None = None,
    head: str = "softmax",
    config: DataConfig | None = None,
    seed: int = 42,
    source: str = "texts",
) -> DataBundle:
    """Wraps Python lists of texts and labels as a DataBundle of texts.

    Args:
        texts: the examples (``str``).
        labels: class names or indices (softmax; names are sorted into classes), multi-hot rows
            (sigmoid) or float targets (regression).
        class_names: names of the class indices (default: the sorted label names, or
            ``class_0 ...`` for indices).
        val, test: explicit splits; without ``val`` a stratified, seeded split is made with
            ``config.val_fraction`` / ``config.test_fraction``.
    """
    config = config or DataConfig()
    if isinstance(texts, (str, bytes)):
        raise TLKerasError("texts must be a list of strings, not one string")
    labels = list(labels)
    if len(texts) != len(labels):
        raise TLKerasError(f"{len(texts)} texts but {len(labels)} labels")
    exclusive = task_of_head(head).exclusive_classes
    if exclusive and labels and all(isinstance(v, str) for v in labels):
        names = list(class_names) if class_names is not None else sorted(set(labels))
        lookup = {c: i for i, c in enumerate(names)}
        unknown = sorted(set(labels) - set(lookup))
        if unknown:
            raise TLKerasError(f"labels {unknown[:3]} are not in class_names; add them or fix the labels")
        encode = lambda ys: np.array([lookup[v] for v in ys], np.int64)  # noqa: E731
    else:
        dtype = np.int64 if exclusive else np.float32
        encode = lambda ys: np.asarray(list(ys), dtype)  # noqa: E731
        y = encode(labels)
        count = int(y.max()) + 1 if exclusive and y.size else (y.shape[1] if y.ndim > 1 else 1)
        names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(count)]
    if exclusive:
        check_classes(names, source)

    def clean(items):
        for t in items:
            if not isinstance(t, str):
                raise TLKerasError(f"texts must be str, got {type(t).__name__}; decode bytes first (e.g. b.decode('utf-8'))")
        return [clean_text(t) for t in items]

    all_texts, y = clean(texts), encode(labels)
    ids = [f"{source}[{i}]" for i in range(len(all_texts))]
    if val is None:
        strat = y if exclusive else np.zeros(len(y), np.int64)
        tr, va, te = stratified_split(strat, config, seed, exclusive)
        chunks = {"train": tr, "val": va, "test": te}
        raw = {name: ([all_texts[i] for i in index], y[index], [ids[i] for i in index]) for name, index in chunks.items() if name != "test" or len(index)}
    else:
        raw = {"train": (all_texts, y, ids)}
        for name, pair in (("val", val), ("test", test)):
            if pair is not None:
                if len(pair[0]) != len(pair[1]):
                    raise TLKerasError(f"{name}: {len(pair[0])} texts but {len(pair[1])} labels")
                raw[name] = (clean(pair[0]), encode(pair[1]), [f"{source}:{name}[{i}]" for i in range(len(pair[0]))])
    parts, skipped = {}, []
    for name, chunk in raw.items():
        kept = _keep_texts(*chunk, config, source)
        parts[name] = kept[:3]
        skipped += kept[3]
    return _bundle(parts, names, head, source, skipped)
