"""A detection run: read the data, train two phases, score with COCO metrics, write the run folder.

The run folder holds what the classification runs hold (``config.yaml``, ``model.keras``,
``labels.txt``, ``history.json``, ``metrics.json``, ``run.json``) plus ``detection.json`` (anchor
layout, box coder and NMS settings: what an export and an app need to decode the outputs).
"""

from __future__ import annotations

import time
from pathlib import Path

from tlkeras.core.results import TrainResult
from tlkeras.errors import TLKerasError

__all__ = ["train_detector", "evaluate_run", "load_run", "read_data_for"]


def read_data_for(config, task=None):
    """The detection data ``config.data`` names (its split seed, fractions)."""
    from tlkeras.core.detection.readers import read_detection_data

    if config.data.source is None:
        raise TLKerasError("detection needs --data: a Pascal VOC folder, a COCO or YOLO folder, or a detection CSV")
    seed = config.data.split_seed if config.data.split_seed is not None else config.seed
    data = read_detection_data(config.data.source, val_fraction=config.data.val_fraction, test_fraction=config.data.test_fraction, seed=seed)
    data.task = task
    return data


def _check_target(config):
    from tlkeras.runs import check_run_name, default_run_name

    check_run_name(config.name)
    config.name = config.name or default_run_name(f"detector-{config.model.backbone}")
    final = Path(config.output_dir) / config.name
    if final.exists():
        raise TLKerasError(f"{final} already exists; choose another --name or remove it")
    return final


def train_detector(task, config, data=None, *, write: bool = True, callbacks=None, resume: bool = False, report_writer=None) -> TrainResult:
    """Trains a detector on ``data`` (or ``config.data.source``) and writes its run folder.

    Raises:
        TLKerasError: bad data (one line), ``resume`` (detection runs do not resume yet), an
            existing run name; nothing is written then.

    Side effects: seeds Python, NumPy and TensorFlow from ``config.seed``; prints one line per epoch
    to stderr (``config.train.verbose``); writes ``<output_dir>/<name>/`` through a hidden
    temporary sibling renamed into place when complete, with ``report.html`` (metrics, per-class
    AP, precision-recall curves, a gallery) unless ``config.report`` is off. ``report_writer``
    (the classification page) is not used.
    """
    if resume:
        raise TLKerasError("detection runs do not resume yet; start the run again without --resume (or with another --name)")
    t0 = time.perf_counter()
    config.validate()
    config.model.task = "detection"
    final = _check_target(config) if write else None
    from tlkeras._backend import keras
    from tlkeras.core.detection.anchors import AnchorConfig
    from tlkeras.core.detection.model import build_detector
    from tlkeras.core.detection.pipeline import decode_samples
    from tlkeras.core.detection.train import NMS, evaluate_decoded, fit, recipe_from

    keras.utils.set_random_seed(config.seed)
    if data is None:
        data = read_data_for(config, task)
    recipe = recipe_from(config)
    config.data.image_size, config.data.batch_size = recipe.image_size, recipe.batch_size
    anchor_config = AnchorConfig(image_size=recipe.image_size)
    model, features, head = build_detector(config.model, len(data.class_names), anchor_config, with_parts=True)
    decoded = {s: decode_samples(data.split(s), recipe.image_size) for s in ("train", "val", "test") if data.split(s)}
    t_data = time.perf_counter() - t0
    if config.train.verbose:
        print(f"detection: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images, classes {data.class_names}, "
              f"quirks {data.quirks}; recipe {recipe.to_dict()}", flush=True)
    history, timings, selection = fit(model, decoded["train"], decoded["val"], config=config, recipe=recipe,
                                      anchor_config=anchor_config, class_names=data.class_names, parts=(features, head), callbacks=callbacks,
                                      verbose=config.train.verbose)
    final_split = "test" if "test" in decoded else "val"
    metrics = {"val": evaluate_decoded(model, decoded["val"], anchor_config, data.class_names),
               "final_split": final_split}
    metrics["final"], final_dets = evaluate_decoded(model, decoded[final_split], anchor_config, data.class_names, with_detections=True)
    timings.update(data=t_data, total=time.perf_counter() - t0)
    metrics["timings"] = timings
    from tlkeras.core.versions import versions

    info = {"task": "detection", "versions": versions(), "data": data.summary(), "recipe": recipe.to_dict(),
            "selection": selection, "timings": timings, "resumed": False}
    detection = {"anchors": anchor_config.to_dict(), "nms": dict(NMS), "class_names": list(data.class_names),
                 "outputs": ["location", "score"], "score": "logits (apply a sigmoid)", "box_format": "yxhw encodings"}
    if write:
        report = None
        if config.report:
            from tlkeras.core.detection.pipeline import load_rgb
            from tlkeras.core.detection.report import write_report

            def report(path):
                write_report(path, metrics, data.split(final_split), final_dets, load_rgb, title=f"Detection run {config.name}")
        _write_run(final, model, config, data, history, metrics, info, detection, report)
    return TrainResult(model, history, metrics, timings, final, config, info, data)


def _write_run(final: Path, model, config, data, history, metrics, info, detection, report=None) -> None:
    from tlkeras.config import save_config
    from tlkeras.runs import atomic_write_text, staged_directory, write_json

    with staged_directory(final) as tmp:
        save_config(config, tmp / "config.yaml")
        model.save(tmp / "model.keras")
        atomic_write_text(tmp / "labels.txt", "\n".join(data.class_names) + "\n")
        write_json(tmp / "detection.json", detection)
        write_json(tmp / "history.json", history)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "run.json", info)
        if report is not None:
            report(tmp / "report.html")


def load_run(run_dir):
    """``(model, config, detection settings, class names)`` of a detection run folder.

    Raises:
        TLKerasError: a folder that is not a complete detection run.
    """
    from tlkeras.config import load_config
    from tlkeras.runs import read_json, read_labels

    run_dir = Path(run_dir)
    for name in ("config.yaml", "model.keras", "detection.json", "labels.txt"):
        if not (run_dir / name).is_file():
            raise TLKerasError(f"{run_dir} has no {name}; pass a detection run folder written by python -m tlkeras.train")
    from tlkeras._backend import keras

    try:
        model = keras.models.load_model(run_dir / "model.keras", compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a broken file
        raise TLKerasError(f"{run_dir / 'model.keras'} does not load ({type(exc).__name__}); retrain the run") from None
    return model, load_config(run_dir / "config.yaml"), read_json(run_dir / "detection.json"), read_labels(run_dir)


def evaluate_run(task, run_dir, data_source=None, split: str = "test", write: bool = True, verbose: bool = False) -> dict:
    """COCO metrics of a saved detection run on ``split`` of its data (or of ``data_source``).

    Side effects: with ``write``, writes ``eval_metrics.json`` into the run folder.
    """
    from tlkeras.core.detection.anchors import AnchorConfig
    from tlkeras.core.detection.pipeline import decode_samples
    from tlkeras.core.detection.train import evaluate_decoded
    from tlkeras.runs import write_json

    if split not in ("train", "val", "test"):
        raise TLKerasError(f"--split {split!r} is not train, val or test")
    model, config, detection, class_names = load_run(run_dir)
    if data_source is not None:
        config.data.source = str(data_source)
    data = read_data_for(config, task)
    if list(data.class_names) != list(class_names):
        missing = sorted(set(data.class_names) - set(class_names))
        if missing:
            raise TLKerasError(f"the data has classes the run was not trained on ({', '.join(missing)}); evaluate on data with the run's classes {class_names}")
        data = _reindex(data, class_names)
    samples = data.split(split)
    if not samples:
        raise TLKerasError(f"the data has no {split} split; pass --split val or data with a {split} split")
    anchor_config = AnchorConfig.from_dict(detection["anchors"])
    metrics = evaluate_decoded(model, decode_samples(samples, anchor_config.image_size), anchor_config, class_names)
    metrics["split"] = split
    if verbose:
        print(f"{split}: AP50 {metrics['AP50']:.3f} | AP {metrics['AP']:.3f} | AP75 {metrics['AP75']:.3f} | AR100 {metrics['AR100']:.3f}", flush=True)
    if write:
        write_json(Path(run_dir) / "eval_metrics.json", metrics)
    return metrics


def _reindex(data, class_names):
    """The data's labels renumbered to the run's class order (a subset of classes present)."""
    import numpy as np

    mapping = np.array([class_names.index(n) for n in data.class_names], dtype="int32")
    for s in data.train + data.val + data.test:
        s.labels = mapping[s.labels] if len(s.labels) else s.labels
    data.class_names = list(class_names)
    return data
