"""A detection run's ``report.html``: COCO metrics, per-class AP, precision-recall curves at IoU 0.5
(inline SVG) and a gallery of test images with true and predicted boxes.

Gallery colours: green, a true box found; yellow, a true box missed; blue, a correct detection;
red, a false positive (score >= ``SHOWN_SCORE``; matched at IoU 0.5 to a box of the same class).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from tlkeras.core.detection.anchors import iou_matrix

__all__ = ["write_report", "SHOWN_SCORE"]

SHOWN_SCORE = 0.3
COLOURS = {"found": (40, 200, 60), "missed": (250, 210, 0), "hit": (40, 120, 255), "false": (235, 40, 40)}


def _match(sample, boxes, scores, classes):
    keep = scores >= SHOWN_SCORE
    boxes, classes = boxes[keep], classes[keep]
    hit = np.zeros(len(boxes), bool)
    found = np.zeros(len(sample.boxes), bool)
    if len(boxes) and len(sample.boxes):
        iou = iou_matrix(boxes[:, [1, 0, 3, 2]], sample.boxes[:, [1, 0, 3, 2]])
        for i in np.argsort(-scores[keep]):
            candidates = np.nonzero((iou[i] >= 0.5) & (sample.labels == classes[i]) & ~found)[0]
            if len(candidates):
                found[candidates[np.argmax(iou[i, candidates])]] = True
                hit[i] = True
    return boxes, hit, found


def _thumbnail(sample, dets, load_rgb) -> str:
    from PIL import Image, ImageDraw

    image = Image.fromarray(load_rgb(sample))
    draw = ImageDraw.Draw(image)
    boxes, hit, found = _match(sample, *dets)
    for b, f in zip(sample.boxes, found):
        draw.rectangle(b.tolist(), outline=COLOURS["found" if f else "missed"], width=2)
    for b, h in zip(boxes, hit):
        draw.rectangle(b.tolist(), outline=COLOURS["hit" if h else "false"], width=1)
    image.thumbnail((360, 360))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _curves(pr: dict) -> str:
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    lines = []
    for k, (name, values) in enumerate(pr.items()):
        points = " ".join(f"{40 + 300 * r:.1f},{320 - 300 * max(p, 0):.1f}" for r, p in zip(np.linspace(0, 1, len(values)), values) if p >= 0)
        lines.append(f'<polyline fill="none" stroke="{colours[k % len(colours)]}" stroke-width="2" points="{points}"/>'
                     f'<text x="350" y="{30 + 16 * k}" fill="{colours[k % len(colours)]}">{html.escape(name)}</text>')
    return ('<svg width="480" height="350" style="font:12px sans-serif"><rect x="40" y="20" width="300" height="300" fill="none" stroke="#999"/>'
            '<text x="150" y="345">recall</text><text x="0" y="15">precision</text>' + "".join(lines) + "</svg>")


def write_report(path: Path, metrics: dict, samples, detections, load_rgb, *, title: str, limit: int = 12) -> Path:
    """Writes the page to ``path`` (atomically) and returns it.

    Side effects: decodes up to ``limit`` images of ``samples`` for the gallery.
    """
    from tlkeras.runs import atomic_write_text

    final = metrics["final"]
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{v['AP']:.3f}</td><td>{v['AP50']:.3f}</td><td>{v['boxes']}</td></tr>"
                   for n, v in final["per_class"].items())
    summary = " | ".join(f"{k} {final[k]:.3f}" for k in ("AP", "AP50", "AP75", "AR100"))
    gallery = "".join(f'<figure><img src="data:image/jpeg;base64,{_thumbnail(s, d, load_rgb)}"><figcaption>{html.escape(s.name)}</figcaption></figure>'
                      for s, d in list(zip(samples, detections))[:limit])
    page = f"""<!doctype html><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font:14px sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
figure{{display:inline-block;margin:4px}}figcaption{{font-size:11px}}</style>
<h1>{html.escape(title)}</h1>
<p>{html.escape(metrics['final_split'])}: {summary} (val AP50 {metrics['val']['AP50']:.3f})</p>
<h2>Per class</h2><table><tr><th>class</th><th>AP</th><th>AP50</th><th>boxes</th></tr>{rows}</table>
<h2>Precision-recall at IoU 0.5</h2>{_curves(final.get('pr_curve_50', {}))}
<h2>Gallery ({html.escape(metrics['final_split'])})</h2>
<p>green: found, yellow: missed, blue: correct detection, red: false positive (score &ge; {SHOWN_SCORE})</p>{gallery}
"""
    atomic_write_text(path, page)
    return path
