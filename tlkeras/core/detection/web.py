"""The browser check of a detection bundle: MediaPipe Tasks for Web's ObjectDetector
(``@mediapipe/tasks-vision``) in headless Chromium, compared with MediaPipe Python's on the same images.

The page machinery (package lookup, staging, serving, Chromium) is :mod:`tlkeras.core.mediapipe_web`;
this module is the detector's page script (it returns each image's detections and draws the boxes
over the image, as an app would) and the comparison of the two runtimes' detections.
"""

from __future__ import annotations

import json

import numpy as np

from tlkeras.core.mediapipe_web import frames, vision_page

__all__ = ["web_detections", "compare_detections", "BOX_TOLERANCE_PX", "SCORE_TOLERANCE"]

BOX_TOLERANCE_PX = 2.0  # the same box, up to resizing differences between the WebAssembly and native builds
SCORE_TOLERANCE = 0.02

_SCRIPT = """let detector = null;
window.loadModel = async (file, scoreThreshold, maxResults) => {
  if (detector) detector.close();
  detector = await ObjectDetector.createFromOptions(fileset,
    { baseOptions: { modelAssetPath: modelUrl(file), delegate: "CPU" }, runningMode: "IMAGE", scoreThreshold, maxResults });
  return true;
};
window.detectBatch = (images) => images.map((im) => {
  const frame = toFrame(im);
  const result = detector.detect(frame);
  const canvas = document.getElementById("view");
  canvas.width = im.w; canvas.height = im.h;
  const context = canvas.getContext("2d");
  context.putImageData(frame, 0, 0);
  context.strokeStyle = "lime"; context.fillStyle = "lime"; context.lineWidth = 2; context.font = "12px sans-serif";
  return result.detections.map((d) => {
    const b = d.boundingBox, c = d.categories[0];
    context.strokeRect(b.originX, b.originY, b.width, b.height);
    context.fillText(`${c.categoryName} ${c.score.toFixed(2)}`, b.originX + 2, b.originY + 12);
    return { box: [b.originX, b.originY, b.originX + b.width, b.originY + b.height], score: c.score, index: c.index, name: c.categoryName };
  });
});
window.ready = true;
"""


def web_detections(models: dict[str, bytes], images: list, *, score_threshold: float, max_results: int, class_names,
                   batch: int = 4) -> tuple[dict[str, list], str]:
    """Detections per variant from MediaPipe Tasks for Web's ObjectDetector in headless Chromium.

    Args:
        models: ``{variant: .tflite bytes with metadata}``.
        images: H x W x 3 uint8 images (any sizes: MediaPipe resizes them).

    Returns:
        ({variant: per image (boxes [k, 4] pixels xmin, ymin, xmax, ymax; scores [k]; class ids [k])},
        the package version).

    Raises:
        TLKerasError: the package is missing; tlkeras.core.browser.BrowserUnavailable: no Chromium;
        RuntimeError: the page threw (its message).

    Side effects: starts and ends a localhost server and a headless Chromium.
    """
    names = list(class_names)
    out: dict[str, list] = {}
    with vision_page(models, "ObjectDetector", _SCRIPT, "tlkeras detection check") as (browser, version):
        for name in models:
            browser.evaluate(f"window.loadModel({json.dumps(name + '.tflite')}, {float(score_threshold)}, {int(max_results)})", timeout=120)
            found = []
            for i in range(0, len(images), batch):
                found += browser.evaluate(f"window.detectBatch({json.dumps(frames(images[i:i + batch]))})", timeout=300)
            out[name] = [(np.asarray([d["box"] for d in ds], "float64").reshape(-1, 4), np.asarray([d["score"] for d in ds], "float64"),
                          np.asarray([d["index"] if d.get("index") is not None and d["index"] >= 0 else names.index(d["name"])
                                      for d in ds], "int64")) for ds in found]
    return out, version


def compare_detections(web: list, python: list, score_threshold: float) -> dict:
    """Matches two runtimes' detections image by image: same class, box corners within
    :data:`BOX_TOLERANCE_PX`, score within :data:`SCORE_TOLERANCE`.

    A detection only one side reports counts as a mismatch unless its score is within
    :data:`SCORE_TOLERANCE` of ``score_threshold`` (the other side may have dropped it at the cut).

    Returns:
        ``{"equal", "detections", "matched", "unmatched", "max_box_diff_px", "max_score_diff"}``.
    """
    matched = unmatched = total = 0
    max_box = max_score = 0.0
    for (wb, ws, wc), (pb, ps, pc) in zip(web, python):
        total += len(pb)
        free = list(range(len(wb)))
        for j in np.argsort(-ps):
            near = [k for k in free if wc[k] == pc[j] and np.abs(wb[k] - pb[j]).max() <= BOX_TOLERANCE_PX]
            if near:
                k = min(near, key=lambda k: np.abs(wb[k] - pb[j]).max())
                free.remove(k)
                max_box, max_score = max(max_box, float(np.abs(wb[k] - pb[j]).max())), max(max_score, float(abs(ws[k] - ps[j])))
                matched += 1
            elif ps[j] > score_threshold + SCORE_TOLERANCE:
                unmatched += 1
        unmatched += sum(1 for k in free if ws[k] > score_threshold + SCORE_TOLERANCE)
    equal = unmatched == 0 and max_score <= SCORE_TOLERANCE and len(web) == len(python)
    return {"equal": bool(equal), "detections": total, "matched": matched, "unmatched": unmatched,
            "max_box_diff_px": max_box, "max_score_diff": max_score}
