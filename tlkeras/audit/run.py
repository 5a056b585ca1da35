"""The audit: read the data the way ``tlkeras.train`` does, look for duplicates, leakage, label
errors and outliers, and write the report folder (and optionally a clean CSV).

Side effects: :func:`audit_data` writes one report folder (``audit.json``, ``audit.md``,
``audit.html``), assembled under a temporary name and renamed into place when complete, and, when
asked, one CSV file (written atomically). It never moves, renames or deletes an image.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlkeras.config import DataConfig, RunConfig
from tlkeras.core.tasks import task_of
from tlkeras.errors import TLKerasError

__all__ = ["AuditOptions", "AuditResult", "audit_data", "audit_before_training", "DROP_KINDS"]

SPLITS = ("train", "val", "test")
DROP_KINDS = ("duplicates", "leakage", "labels", "outliers")


@dataclass
class AuditOptions:
    """What the audit looks for and what it writes.

    Attributes:
        similarity: cosine similarity of two images' backbone features at or above which they
            are near-duplicate candidates (re-encoded, resized or slightly cropped copies).
        confirm_distance: a candidate pair is a near-duplicate when the images' perceptual
            hashes differ in at most this many bits (of 64) ...
        sure_similarity: ... or when their features are at least this similar. (Pooled
            features of a small backbone rate distinct photos of one kind of flower as similar
            as real copies; the hash tells them apart.)
        phash_distance: without pretrained features (``--weights none``): perceptual-hash bits
            (of 64) within which two images are near-duplicates.
        folds: cross-validation folds of the label probe; every class needs at least this many
            images.
        outlier_z: robust z-score (median and MAD of the distance to the closest class) above
            which an image is an outlier.
        labels: look for likely label errors and outliers (needs pretrained features).
        report_dir: the report folder (default: ``<output_dir>/<name>``, the name defaulting to
            ``audit-<data>-<time>``).
        write_clean: write a CSV (path,label,split) of the data without the flagged items.
        relabel: in the clean CSV, keep likely label errors with their suggested label instead
            of leaving them out.
        drop: kinds of flagged items the clean CSV leaves out (duplicates, leakage, labels,
            outliers), comma-separated.
        thumbnails: findings per section shown with thumbnails in audit.html (all are in
            audit.json).
        overwrite: replace an existing report folder.
    """

    similarity: float = 0.8
    confirm_distance: int = 14
    sure_similarity: float = 0.97
    phash_distance: int = 10
    folds: int = 5
    outlier_z: float = 4.0
    labels: bool = True
    report_dir: str | None = None
    write_clean: str | None = None
    relabel: bool = False
    drop: str = ",".join(DROP_KINDS)
    thumbnails: int = 60
    overwrite: bool = False

    def validate(self) -> "AuditOptions":
        if not 0.0 < self.similarity <= 1.0:
            raise TLKerasError(f"similarity must be in (0, 1], got {self.similarity}")
        if not self.similarity <= self.sure_similarity <= 1.0:
            raise TLKerasError(f"sure_similarity must be in [similarity, 1], got {self.sure_similarity}")
        for key in ("phash_distance", "confirm_distance"):
            if not 0 <= getattr(self, key) <= 64:
                raise TLKerasError(f"{key} must be in [0, 64] bits, got {getattr(self, key)}")
        if self.folds < 2:
            raise TLKerasError(f"folds must be >= 2 for cross-validation, got {self.folds}")
        unknown = sorted(set(self.drop_kinds) - set(DROP_KINDS))
        if unknown:
            raise TLKerasError(f"unknown --drop kind(s) {unknown}; choose from {', '.join(DROP_KINDS)}")
        if self.write_clean is not None and not str(self.write_clean).lower().endswith(".csv"):
            raise TLKerasError(f"--write-clean needs a .csv file name, got {self.write_clean}")
        return self

    @property
    def drop_kinds(self) -> list[str]:
        return [k.strip() for k in str(self.drop).split(",") if k.strip()]


@dataclass
class AuditResult:
    """What the audit found (``findings`` is the content of ``audit.json``) and where it wrote.

    ``features`` (unit-length backbone features) and ``probabilities`` (the probe's out-of-fold
    class probabilities) are in item order, for further analysis; None when not computed.
    """

    findings: dict
    report_dir: Path
    clean_csv: Path | None = None
    timings: dict = field(default_factory=dict)
    features: np.ndarray | None = None
    probabilities: np.ndarray | None = None

    @property
    def leaked_test_images(self) -> int:
        """Test images (or texts) with an exact or near copy in train."""
        leak = self.findings["leakage"].get("train-test", {})
        return int(leak.get("images", leak.get("texts", 0)))

    def summary(self) -> str:
        """One paragraph: counts of every finding and the report's path."""
        from tlkeras.audit.report import summary_paragraph

        if self.findings.get("modality") == "text":
            from tlkeras.audit.text import summary_text

            return summary_text(self.findings, self.report_dir)
        return summary_paragraph(self.findings, self.report_dir)


# ---------------------------------------------------------------------------------------------
# Reading the data


def _as_config(config) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return RunConfig(data=DataConfig(source=str(config)))
    raise TLKerasError(f"audit_data takes a RunConfig or a data path, got {type(config).__name__}")


def _split_images(split, size: int) -> np.ndarray:
    """The split's decoded images: the loader's in-memory array, or decoded from its files."""
    x = getattr(split, "x", None)
    if isinstance(x, np.ndarray):
        return x
    from tlkeras.core.data import load_image

    return np.stack([load_image(p, size) for p in split.paths]) if split.paths else np.zeros((0, size, size, 3), np.uint8)


class _Images:
    """The images of every split in item order, without copying the splits into one array (a
    split may be a disk-backed memmap)."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> np.ndarray:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return np.asarray(self.parts[k][i - self.starts[k]])

    def __iter__(self):
        for part in self.parts:
            yield from part


def _items(bundle, size: int) -> tuple[list[dict], _Images]:
    """One record per image (split, index in split, path, label) and the images, train first."""
    items, images = [], []
    for name in SPLITS:
        split = getattr(bundle, name, None)
        if split is None or not len(split):
            continue
        paths = list(getattr(split, "paths", None) or [])
        for i, label in enumerate(np.asarray(split.y).reshape(-1)):
            items.append({
                "id": len(items), "split": name, "path": paths[i] if paths else None,
                "label": int(label), "class": bundle.class_names[int(label)],
            })
        images.append(_split_images(split, size))
    return items, _Images(images)


def _features(config: RunConfig, num_classes: int, size: int, images: _Images) -> np.ndarray:
    """The backbone's pooled features (the head's input) of every image, split by split."""
    from tlkeras.core.metrics import predict
    from tlkeras.core.models import build_model, feature_extractor

    # The head is never used: no dropout or hidden layers to resolve.
    model = build_model(dataclasses.replace(config.model, dropout=0.0, hidden_units=[]), num_classes, size)
    extractor = feature_extractor(model)
    batch = max(8, min(int(config.data.batch_size or 32), 128))
    return np.concatenate([predict(extractor, part, batch_size=batch) for part in images.parts])


def _pretrained(config: RunConfig) -> bool:
    return config.model.backbone.startswith("hub:") or str(config.model.weights).strip().lower() != "none"


# ---------------------------------------------------------------------------------------------
# Duplicates and leakage


def _components(count: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Groups of items joined by duplicate pairs (scipy's connected components), two or more each."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not pairs:
        return []
    rows, cols = zip(*pairs)
    graph = coo_matrix((np.ones(len(pairs)), (rows, cols)), shape=(count, count))
    _, label = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(label):
        groups.setdefault(int(g), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _duplicates(items: list[dict], exact: list[list[int]], near: list[tuple[int, int, float]], phash: np.ndarray) -> dict:
    """Exact groups, near pairs, leakage counts, and which copies a clean CSV leaves out.

    In a group of copies the one in the earliest split (train, then val, then test; then the first
    path) is kept. A copy in a later split than the kept one is leakage: held-out images that
    the model (nearly) saw in training are the ones to leave out, so evaluation stays honest.
    """
    rank = {name: r for r, name in enumerate(SPLITS)}
    exact_pairs = {(min(a, b), max(a, b)) for g in exact for a in g for b in g if a != b}
    near = [(a, b, s) for a, b, s in near if (a, b) not in exact_pairs]
    all_pairs = sorted(exact_pairs) + [(a, b) for a, b, _ in near]
    leakage: dict[str, dict] = {}
    for a, b in all_pairs:
        sa, sb = items[a]["split"], items[b]["split"]
        if sa == sb:
            continue
        first, second = sorted((sa, sb), key=rank.get)
        held = b if items[b]["split"] == second else a
        entry = leakage.setdefault(f"{first}-{second}", {"pairs": 0, "images": set()})
        entry["pairs"] += 1
        entry["images"].add(held)
    flags: dict[int, tuple[str, str]] = {}
    for group in _components(len(items), all_pairs):
        keep = min(group, key=lambda i: (rank[items[i]["split"]], i))
        for i in group:
            if i == keep:
                continue
            kind = "duplicates" if items[i]["split"] == items[keep]["split"] else "leakage"
            flags[i] = (kind, f"copy of #{keep} ({items[keep]['split']})")
    return {
        "exact": [sorted(g) for g in exact],
        "near": [{"a": a, "b": b, "similarity": round(s, 4), "phash_distance": int((phash[a] != phash[b]).sum()),
                  "cross_split": items[a]["split"] != items[b]["split"]} for a, b, s in near],
        "leakage": {k: {"pairs": v["pairs"], "images": len(v["images"]), "ids": sorted(v["images"])} for k, v in sorted(leakage.items())},
        "flags": flags,
    }


# ---------------------------------------------------------------------------------------------
# The audit


def audit_data(config, options: AuditOptions | None = None) -> AuditResult:
    """Audits an image data set for duplicates, leakage, label errors and outliers.

    Args:
        config: a :class:`~tlkeras.config.RunConfig` (its data section is read as ``train``
            reads it, with the same split seed; its model section gives the backbone whose
            features are compared) or a data path (folder or CSV) with default settings.
        options: thresholds and outputs (:class:`AuditOptions`).

    Returns:
        An :class:`AuditResult` with the findings and the report folder's path.

    Side effects: writes the report folder (atomically) and, with ``options.write_clean``, a
    CSV. Reads every image; never changes, moves or deletes one.

    Raises:
        TLKerasError: a missing folder, a single class, too few images per class for the
            cross-validation, an unknown backbone, a weights file that does not exist, an
            existing report folder, a non-softmax head.
    """
    from tlkeras.core.models import check_model_config
    from tlkeras.runs import default_run_name

    config = _as_config(config).validate()
    options = (options or AuditOptions()).validate()
    task = task_of(config.model)
    if not task.exclusive_classes:
        raise TLKerasError(f"the audit checks single-label classes; head={config.model.head} is not supported")
    from tlkeras.core.text.data import detect_modality

    if config.data.source is not None and detect_modality(config.data) == "text":
        return _audit_text(config, options)
    size = check_model_config(config.model, config.data.image_size)
    source = config.data.source
    if source is None:
        raise TLKerasError("no data source given; pass DATA (an image folder or a CSV of path,label)")
    report_dir = Path(options.report_dir) if options.report_dir else (
        Path(config.output_dir) / (config.name or default_run_name(f"audit-{Path(str(source)).stem}"))
    )
    if report_dir.exists() and not options.overwrite:
        raise TLKerasError(f"{report_dir} already exists; pass another --report-dir or --overwrite")
    timings: dict[str, float] = {}
    start = time.perf_counter()

    from tlkeras.core.bundle import require_images
    from tlkeras.core.data import load_data

    with warnings.catch_warnings():  # the report lists skipped files; no need to warn twice
        warnings.simplefilter("ignore", UserWarning)
        bundle = require_images(load_data(config.data, size, task.head, config.seed), "the data audit")
    items, images = _items(bundle, size)
    labels = np.array([it["label"] for it in items], np.int64)
    class_names = list(bundle.class_names)
    pretrained = _pretrained(config)
    if pretrained and options.labels:
        from tlkeras.audit.labels import check_cross_validation

        check_cross_validation(labels, class_names, options.folds)
    if options.write_clean and any(it["path"] is None for it in items):
        raise TLKerasError("--write-clean needs images read from files (a folder or a CSV), not arrays")
    timings["load"] = time.perf_counter() - start

    from tlkeras.audit import hashes

    t = time.perf_counter()
    has_files = all(it["path"] is not None for it in items)
    facts = hashes.file_facts([it["path"] for it in items]) if has_files else []
    for it, fact in zip(items, facts):
        it.update(fact)
    exact = hashes.exact_duplicate_groups([f["sha256"] for f in facts]) if facts else []
    timings["files"] = time.perf_counter() - t

    t = time.perf_counter()
    unit, near, method, phash = _near_duplicates(config, options, images, len(class_names), size, pretrained)
    timings["features_and_duplicates"] = time.perf_counter() - t
    dups = _duplicates(items, exact, near, phash)

    t = time.perf_counter()
    issues, outliers, context, probs = [], [], {}, None
    if unit is not None and options.labels:
        issues, outliers, context, probs = _labels_and_outliers(unit, labels, len(class_names), options, config.seed)
    timings["labels_and_outliers"] = time.perf_counter() - t

    flags = _flags(dups["flags"], issues, outliers)
    findings = _findings(config, options, bundle, items, class_names, size, method, dups, issues, outliers, context, flags, facts)
    t = time.perf_counter()
    clean_path = None
    from tlkeras.audit.report import write_report
    from tlkeras.runs import staged_directory

    timings["total_before_report"] = time.perf_counter() - start
    findings["timings"] = {k: round(v, 2) for k, v in timings.items()}
    with staged_directory(report_dir, overwrite=options.overwrite) as staging:
        write_report(staging, findings, images, options.thumbnails, report_dir)
        if options.write_clean:
            clean_path = _write_clean_csv(Path(options.write_clean), items, class_names, findings, options)
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    return AuditResult(findings, report_dir, clean_path, timings, unit, probs)


def _near_duplicates(config, options: AuditOptions, images: np.ndarray, num_classes: int, size: int, pretrained: bool):
    """Near-duplicate pairs: backbone-embedding neighbours confirmed by perceptual hashes, or hashes alone.

    Returns ``(unit embeddings or None, pairs (a, b, similarity), the method's record, perceptual hashes)``.
    """
    from tlkeras.audit import hashes, neighbours

    unit = None
    phash = hashes.perceptual_hashes(images)
    if pretrained:
        unit = neighbours.normalise(_features(config, num_classes, size, images))
        candidates = neighbours.similar_pairs(unit, options.similarity)
        near = [(a, b, s) for a, b, s in candidates
                if s >= options.sure_similarity or int((phash[a] != phash[b]).sum()) <= options.confirm_distance]
        method = {"method": "embedding", "similarity": options.similarity, "confirm_distance": options.confirm_distance,
                  "sure_similarity": options.sure_similarity, "candidates": len(candidates)}
    else:
        near = hashes.phash_pairs(phash, options.phash_distance)
        method = {"method": "phash", "max_distance": options.phash_distance}
    return unit, near, method, phash


def _labels_and_outliers(unit: np.ndarray, labels: np.ndarray, num_classes: int, options: AuditOptions, seed: int):
    """Label issues (out-of-fold probe probabilities) and outliers (distance to the class), with their neighbours.

    Returns ``(issues, outliers, context, out-of-fold probabilities)``.
    """
    from tlkeras.audit import neighbours
    from tlkeras.audit.labels import label_issues, out_of_fold_probabilities

    probs, probe_c = out_of_fold_probabilities(unit, labels, num_classes, options.folds, seed)
    issues = label_issues(labels, probs)
    scores, nearest = neighbours.outlier_scores(unit, labels, num_classes)
    outliers = [
        {"index": int(i), "distance": round(float(scores[i]), 4), "nearest_class": int(nearest[i])}
        for i in neighbours.robust_outliers(scores, options.outlier_z)
    ]
    nn_idx, nn_sim = neighbours.nearest_neighbours(unit, 4)
    context = {
        "neighbours": {int(i): [[int(j), float(s)] for j, s in zip(nn_idx[i], nn_sim[i])]
                       for i in [x["index"] for x in issues] + [x["index"] for x in outliers]},
        "class_examples": neighbours.class_examples(unit, labels, num_classes, 4),
        "probe_accuracy": float((probs.argmax(axis=1) == labels).mean()),
        "probe_c": probe_c,
    }
    return issues, outliers, context, probs


def _audit_text(config: RunConfig, options: AuditOptions) -> AuditResult:
    """The text audit (:mod:`tlkeras.audit.text`): exact duplicates, leakage, label conflicts."""
    from tlkeras.audit.text import text_findings, write_text_report
    from tlkeras.core.text.data import load_text_data
    from tlkeras.runs import default_run_name, staged_directory

    report_dir = Path(options.report_dir) if options.report_dir else (
        Path(config.output_dir) / (config.name or default_run_name(f"audit-{Path(str(config.data.source)).stem}"))
    )
    if report_dir.exists() and not options.overwrite:
        raise TLKerasError(f"{report_dir} already exists; pass another --report-dir or --overwrite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        bundle = load_text_data(config.data, task_of(config.model).head, config.seed)
    findings = text_findings(bundle, str(config.data.source))
    with staged_directory(report_dir, overwrite=options.overwrite) as staging:
        write_text_report(staging, findings, report_dir)
    return AuditResult(findings, report_dir, None, findings["timings"])


def _flags(dup_flags: dict, issues: list[dict], outliers: list[dict]) -> dict[int, list[dict]]:
    flags: dict[int, list[dict]] = {}
    for i, (kind, why) in dup_flags.items():
        flags.setdefault(i, []).append({"kind": kind, "why": why})
    for issue in issues:
        flags.setdefault(issue["index"], []).append({"kind": "labels", "why": "likely label error", "suggested": issue["suggested"]})
    for out in outliers:
        flags.setdefault(out["index"], []).append({"kind": "outliers", "why": "far from every class"})
    return flags


def _findings(config, options, bundle, items, class_names, size, method, dups, issues, outliers, context, flags, facts) -> dict:
    from tlkeras.audit.hashes import image_statistics

    source = str(config.data.source)
    root = Path(source) if Path(source).is_dir() else Path(source).parent
    for it in items:
        if it["path"] is not None:
            try:
                it["relpath"] = str(Path(it["path"]).resolve().relative_to(root.resolve()))
            except ValueError:
                it["relpath"] = it["path"]
    counts = {name: np.bincount([it["label"] for it in items if it["split"] == name], minlength=len(class_names)).tolist()
              for name in SPLITS if any(it["split"] == name for it in items)}
    train = np.array(counts.get("train", [0]))
    stats = image_statistics(facts)
    return {
        "source": source,
        "backbone": config.model.backbone,
        "weights": str(config.model.weights),
        "image_size": size,
        "seed": config.seed,
        "near_duplicates_by": method,
        "class_names": class_names,
        "counts": {"images": len(items), "per_split": {k: int(sum(v)) for k, v in counts.items()}, "per_class": counts},
        "class_balance": {"train_max_over_min": float(train.max() / max(train.min(), 1)), "imbalanced": bool(train.max() >= 1.5 * max(train.min(), 1))},
        "unreadable": list(bundle.skipped),
        "image_stats": stats,
        "exact_duplicates": dups["exact"],
        "near_duplicates": dups["near"],
        "leakage": dups["leakage"],
        "label_issues": issues,
        "label_audit": (
            "done" if issues or context else
            ("skipped: no pretrained features (--weights none)" if not _pretrained(config) else "skipped (--no-labels)")
        ),
        "probe_accuracy": context.get("probe_accuracy"),
        "probe_c": context.get("probe_c"),
        "outliers": outliers,
        "neighbours": {str(k): v for k, v in context.get("neighbours", {}).items()},
        "class_examples": {str(k): v for k, v in context.get("class_examples", {}).items()},
        "flagged": {str(i): v for i, v in sorted(flags.items())},
        "items": items,
    }


def _write_clean_csv(path: Path, items: list[dict], class_names: list[str], findings: dict, options: AuditOptions) -> Path:
    """Writes path,label,split rows of the items no flag of a dropped kind applies to.

    With ``relabel``, likely label errors stay, with their suggested label. Paths are absolute,
    so the CSV can live anywhere; ``tlkeras.train --data FILE.csv`` reads it with the same splits.
    """
    from tlkeras.runs import atomic_write_text

    drop = set(options.drop_kinds)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    for it in items:
        label = it["class"]
        flagged = findings["flagged"].get(str(it["id"]), [])
        kinds = {f["kind"] for f in flagged}
        if options.relabel and "labels" in kinds:
            kinds.discard("labels")
            label = class_names[next(f["suggested"] for f in flagged if f["kind"] == "labels")]
        if kinds & drop:
            continue
        writer.writerow([str(Path(it["path"]).resolve()), label, it["split"]])
    atomic_write_text(path, buffer.getvalue())
    return path


def audit_before_training(config: RunConfig, options: AuditOptions | None = None) -> AuditResult:
    """Runs the audit on a training run's data and model settings before it trains.

    The report goes to ``<output_dir>/<name>-audit`` (or ``audit-<data>-<time>``). Prints the
    summary paragraph; leakage between train and test is a warning that says how many test
    images have a near-copy in train. Never stops the training run for what it finds.
    """
    from tlkeras.runs import default_run_name

    options = options or AuditOptions()
    if options.report_dir is None:
        stem = Path(str(config.data.source)).stem
        options.report_dir = str(Path(config.output_dir) / (f"{config.name}-audit" if config.name else default_run_name(f"audit-{stem}")))
    result = audit_data(config, options)
    print(result.summary())
    leaked = result.leaked_test_images
    if leaked:
        test_count = result.findings["counts"]["per_split"].get("test", 0)
        warnings.warn(
            f"{leaked} of {test_count} test {'texts' if result.findings.get('modality') == 'text' else 'images'} have an exact or near copy in train, so test accuracy "
            f"overstates what the model does on new images; see {result.report_dir / 'audit.html'}",
            stacklevel=2,
        )
    return result
