"""The browser check of a segmentation bundle: MediaPipe Tasks for Web's ImageSegmenter
(``@mediapipe/tasks-vision``) in headless Chromium, on the same images the Python checks use.

The page machinery (package lookup, staging, serving, Chromium) is :mod:`tlkeras.core.mediapipe_web`;
this module is the segmenter's page script: it returns each image's category mask, which the caller
scores against the true masks, and draws the last mask over its image (red = not background), as an
app would.
"""

from __future__ import annotations

import base64
import json

import numpy as np

from tlkeras.core.mediapipe_web import find_tasks_vision, frames, vision_page

__all__ = ["find_tasks_vision", "web_masks"]

_SCRIPT = """let segmenter = null;
window.loadModel = async (file) => {
  if (segmenter) segmenter.close();
  segmenter = await ImageSegmenter.createFromOptions(fileset,
    { baseOptions: { modelAssetPath: modelUrl(file), delegate: "CPU" },
      runningMode: "IMAGE", outputCategoryMask: true, outputConfidenceMasks: false });
  return true;
};
function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
  return btoa(s);
}
window.segmentBatch = (images) => images.map((im) => {
  const frame = toFrame(im);
  const result = segmenter.segment(frame);
  const mask = result.categoryMask.getAsUint8Array();
  const canvas = document.getElementById("view");
  canvas.width = im.w; canvas.height = im.h;
  const shown = new ImageData(new Uint8ClampedArray(frame.data), im.w, im.h);
  for (let p = 0; p < mask.length; p++) if (mask[p] > 0) { shown.data[4 * p] = 255; }
  canvas.getContext("2d").putImageData(shown, 0, 0);
  const encoded = toBase64(mask);
  result.close();
  return encoded;
});
window.ready = true;
"""


def web_masks(models: dict[str, bytes], images: np.ndarray, batch: int = 8) -> tuple[dict[str, np.ndarray], str]:
    """Category masks per variant from MediaPipe Tasks for Web in headless Chromium.

    Args:
        models: ``{variant: .tflite bytes with metadata}``.
        images: N x H x W x 3 uint8.

    Returns:
        ({variant: N x H x W masks}, the package version).

    Raises:
        TLKerasError: the package is missing; tlkeras.core.browser.BrowserUnavailable: no Chromium;
        RuntimeError: the page threw (its message).

    Side effects: starts and ends a localhost server and a headless Chromium.
    """
    n, h, w = images.shape[:3]
    out: dict[str, np.ndarray] = {}
    with vision_page(models, "ImageSegmenter", _SCRIPT, "tlkeras segmentation check") as (browser, version):
        for name in models:
            browser.evaluate(f"window.loadModel({json.dumps(name + '.tflite')})", timeout=120)
            masks = []
            for i in range(0, n, batch):
                encoded = browser.evaluate(f"window.segmentBatch({json.dumps(frames(images[i:i + batch]))})", timeout=300)
                masks += [np.frombuffer(base64.b64decode(e), np.uint8).reshape(h, w).astype(np.int32) for e in encoded]
            out[name] = np.stack(masks)
    return out, version
