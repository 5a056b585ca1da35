"""COCO metrics with pycocotools: AP (IoU .50:.95), AP50, AP75, AR@100, per-class AP and AP50.

Ground truth and detections are in the original image's pixels; ``difficult`` boxes are COCO
``iscrowd`` regions (a detection on one is neither a hit nor a false positive, as in VOC).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

__all__ = ["coco_metrics", "Detections"]

# One image's detections: (boxes [k, 4] pixels xmin, ymin, xmax, ymax; scores [k]; classes [k]).
Detections = tuple


def _ground_truth(samples, class_names) -> dict:
    images, annotations = [], []
    for i, s in enumerate(samples):
        images.append({"id": i, "width": s.width, "height": s.height})
        for b, c, d in zip(s.boxes, s.labels, s.difficult):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(c) + 1, "bbox": [float(b[0]), float(b[1]), w, h],
                                "area": w * h, "iscrowd": int(bool(d))})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(class_names)]}


def coco_metrics(samples, detections: list[Detections], class_names: list[str]) -> dict[str, Any]:
    """COCO metrics of ``detections`` (one entry per sample) against the samples' boxes.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "per_class": {name: {"AP", "AP50",
        "boxes"}}, "images", "boxes", "detections"}`` (-1 where COCO has nothing to measure).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = _ground_truth(samples, class_names)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    results = []
    for i, (boxes, scores, classes) in enumerate(detections):
        for b, s, c in zip(boxes, scores, classes):
            results.append({"image_id": i, "category_id": int(c) + 1, "score": float(s),
                            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    n_boxes = int(sum((~s.difficult).sum() for s in samples))
    out: dict[str, Any] = {"images": len(samples), "boxes": n_boxes, "detections": len(results)}
    if not results or not n_boxes:
        out.update({k: 0.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")})
        out["per_class"] = {n: {"AP": 0.0, "AP50": 0.0, "boxes": 0} for n in class_names}
        return out
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    out.update({"AP": float(s[0]), "AP50": float(s[1]), "AP75": float(s[2]), "APs": float(s[3]), "APm": float(s[4]),
                "APl": float(s[5]), "AR100": float(s[8])})
    precision = ev.eval["precision"]  # [iou, recall, class, area, maxdets]
    per_class = {}
    for k, name in enumerate(class_names):
        p = precision[:, :, k, 0, 2]
        p50 = precision[0, :, k, 0, 2]
        count = sum(int(((s.labels == k) & ~s.difficult).sum()) for s in samples)
        per_class[name] = {"AP": float(p[p > -1].mean()) if (p > -1).any() else -1.0,
                           "AP50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else -1.0, "boxes": count}
    out["per_class"] = per_class
    out["pr_curve_50"] = {name: np.round(precision[0, :, k, 0, 2], 4).tolist() for k, name in enumerate(class_names)}
    return out
