"""``report.html`` of a segmentation run: metrics, per-class IoU, the pixel confusion of classes,
and a gallery of evaluated images with true and predicted masks overlaid, worst first.

A self-contained page (images inline as PNG data URLs). Side effects: writes one file atomically.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from tlkeras.core.segmentation.metrics import mask_metrics
from tlkeras.runs import atomic_write_text

__all__ = ["write_segmentation_report", "overlay"]

_COLOURS = np.array([[0, 0, 0], [255, 64, 64], [64, 200, 64], [64, 128, 255], [255, 200, 0], [200, 64, 255],
                     [0, 220, 220], [255, 128, 0]], np.float32)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image`` with non-background ids tinted (class 0 left as is)."""
    colours = _COLOURS[np.asarray(mask) % len(_COLOURS)]
    tint = (np.asarray(mask) > 0)[..., None]
    out = np.where(tint, (1 - alpha) * image.astype(np.float32) + alpha * colours, image.astype(np.float32))
    return np.clip(out, 0, 255).astype(np.uint8)


def _png(array: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def write_segmentation_report(run_dir: Path, model, data, metrics: dict[str, Any], batch: int = 16, gallery: int = 12,
                              selection: dict[str, Any] | None = None) -> Path:
    """Writes ``<run_dir>/report.html`` and returns its path (``selection``: run.json's, which phase was kept)."""
    from tlkeras.core.segmentation.fit import predict_masks

    split_name, split = data.eval_split
    final, names = metrics["final"], data.class_names
    pred = predict_masks(model, split.x, batch)
    per_image = [mask_metrics(split.y[i:i + 1], pred[i:i + 1], names, data.ignore_index)["miou"] for i in range(len(split))]
    worst = np.argsort(per_image, kind="stable")[:gallery]
    cards = "".join(f"<div class=card><b>{_fmt(final.get(k))}</b><br>{k}</div>" for k in ("miou", "pixel_accuracy", "dice") if k in final)
    iou_rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{_fmt(final['per_class_iou'].get(n))}</td>"
                       f"<td>{_fmt(metrics['val']['per_class_iou'].get(n))}</td></tr>" for n in names)
    conf = np.asarray(final["confusion_matrix"], np.float64)
    share = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    conf_rows = "".join(f"<tr><th>{html.escape(n)}</th>" + "".join(f"<td>{share[i, j]:.3f}</td>" for j in range(len(names))) + "</tr>"
                        for i, n in enumerate(names))
    tiles = "".join(
        f"<figure><img src='{_png(overlay(split.x[i], split.y[i]))}'><img src='{_png(overlay(split.x[i], pred[i]))}'>"
        f"<figcaption>{html.escape(Path(split.names[i]).name if i < len(split.names) else str(i))}: mIoU {per_image[i]:.3f}"
        f"</figcaption></figure>" for i in worst)
    ignored = "no ignore id" if data.ignore_index is None else f"ignore id {data.ignore_index}"
    kept = ""
    if selection and selection.get("kept") in selection:
        chosen = selection[selection["kept"]]
        kept = f"Kept: {html.escape(selection['kept'])} (best epoch {chosen.get('best_epoch')}, val mIoU {_fmt(chosen.get('val_miou'))})."
    page = f"""<!doctype html><html><head><meta charset=utf-8><title>Segmentation run {html.escape(Path(run_dir).name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}.card{{display:inline-block;border:1px solid #ccc;padding:.6em 1em;margin:.3em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:.25em .6em}}figure{{display:inline-block;margin:.4em}}
img{{width:160px;image-rendering:pixelated;margin-right:2px}}</style></head><body>
<h1>Segmentation run {html.escape(Path(run_dir).name)}</h1>
<p>{len(split)} {split_name} images, {len(names)} classes; {ignored}. {kept}</p>
{cards}
<h2>IoU per class</h2><table><tr><th>class</th><th>{split_name}</th><th>val</th></tr>{iou_rows}</table>
<h2>Confusion of classes by pixels</h2><p>Rows: true class; each row sums to 1.</p><table><tr><th></th>{head}</tr>{conf_rows}</table>
<h2>Gallery, worst first</h2><p>Left: true mask; right: predicted mask (class 0 untinted).</p>{tiles}
</body></html>"""
    path = Path(run_dir) / "report.html"
    atomic_write_text(path, page)
    return path
