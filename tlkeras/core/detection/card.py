"""The model card (``model_card.md``) of a detection bundle, written from its ``metadata.json`` content."""

from __future__ import annotations

from typing import Any

__all__ = ["detection_card"]


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def detection_card(meta: dict[str, Any]) -> str:
    """The Markdown model card of a detection bundle: task, input and outputs, per-variant AP as
    LiteRT and MediaPipe measured it, the runtimes each variant was verified on, and limits."""
    ev, source, task = meta["evaluation"], meta.get("source_run") or {}, meta["task"]
    keras, nms = ev.get("keras") or {}, ev.get("nms") or {}
    rows, runtimes = [], []
    for name, v in meta["variants"].items():
        m, mp = v.get("metrics") or {}, v.get("mediapipe") or {}
        status = "ok" if v.get("within_threshold") else f"FAILED: {v.get('error')}"
        p50 = (v.get("latency") or {}).get("litert_p50_ms_1_thread")
        rows.append(f"| {name} | {(v.get('bytes') or 0) / 1024:.0f} KB | {(v.get('input') or {}).get('dtype', '—')} | {_fmt(m.get('AP50'))} | "
                    f"{_fmt(m.get('AP'))} | {_fmt(mp.get('AP50'))} | {_fmt(mp.get('AP'))} | {_fmt(p50, 2)} | {status} |")
        web = mp.get("web")
        note = (f"; MediaPipe Web's detections equal MediaPipe Python's ({web['matched']} of {web['detections']} matched)"
                if web and web.get("equal") else "")
        runtimes.append(f"- `{name}`: {v.get('description', '')}; verified on {', '.join(v.get('verified_on') or ['none'])}{note}.")
    web = meta.get("web") or {}
    browser = (f"Checked in headless Chromium with {web['package']} on {web['images']} {ev['split']} images."
               if web.get("checked") else f"Not checked in a browser here: {web.get('why', 'not run')}.")
    size = meta["input"]["shape"][1]
    return f"""# Model card: {meta['name']}

Object detector exported by tlkeras {meta['versions'].get('tlkeras')} on {meta['created'][:10]}, for MediaPipe's ObjectDetector
(Android, iOS, web, Python) as it is: the anchors, box decoding and labels are in each file's TFLite metadata.

## Task and model

- Classes ({len(task['class_names'])}): {', '.join(task['class_names'])}.
- Backbone: {source.get('backbone', 'unknown')}, weights: {source.get('weights', 'unknown')}; source run `{source.get('path', 'n/a')}`, data `{source.get('data', 'n/a')}`.
- Input: {size} x {size} RGB, {meta['input']['pixels']}; {meta['input']['resize']}.
- Outputs: `location` (box encodings against the anchors in detection.json) and `score` (class logits); no NMS inside the model:
  the runtime applies it (tlkeras measured with score threshold {nms.get('score_threshold')}, IoU {nms.get('iou')}, at most {nms.get('max_results')} boxes).

## Verification

On the {ev['split']} split ({ev['count']} images), COCO AP from pycocotools. Keras: AP50 {_fmt(keras.get('AP50'))}, AP {_fmt(keras.get('AP'))}.
LiteRT columns decode the file with the same NMS as Keras; MediaPipe columns are its Python ObjectDetector on the original images.

| variant | size | input | AP50 (LiteRT) | AP (LiteRT) | AP50 (MediaPipe) | AP (MediaPipe) | p50 ms (1 thread) | status |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

## Runtimes

{chr(10).join(runtimes)}

{browser}

## Intended use and limits

Use on images like the training data (same classes, similar scenes and object sizes). The {ev['split']} split has
{ev['count']} images, so AP moves by several points between splits and seeds. Objects much smaller than
{max(1, size // 16)} pixels at the model's {size} px input are hard to find; set the app's score threshold to trade misses for false alarms.
"""
