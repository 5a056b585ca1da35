"""The browser check of a segmentation bundle: MediaPipe Tasks for Web's ImageSegmenter
(``@mediapipe/tasks-vision``) in headless Chromium, on the same images the Python checks use.

A temporary folder holds a tiny page (``seg.mjs``), the package's ES module and SIMD WebAssembly
pair, and the variant files; it is served on 127.0.0.1 and the page returns each image's category
mask, which the caller scores against the true masks. The page draws the last mask over its image
(red = not background), as an app would.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from tlkeras.errors import TLKerasError

__all__ = ["find_tasks_vision", "web_masks"]

_PACKAGE = "@mediapipe/tasks-vision"
_FILES = ("vision_bundle.mjs", "wasm/vision_wasm_internal.js", "wasm/vision_wasm_internal.wasm")
_PAGE = """<!doctype html><meta charset=utf-8><title>tlkeras segmentation check</title>
<canvas id=view></canvas><script type=module src=seg.mjs></script>"""
_SCRIPT = """import { ImageSegmenter } from "./mediapipe/vision_bundle.mjs";
let segmenter = null;
window.loadModel = async (file) => {
  if (segmenter) segmenter.close();
  segmenter = await ImageSegmenter.createFromOptions(
    { wasmLoaderPath: new URL("./mediapipe/wasm/vision_wasm_internal.js", location.href).href,
      wasmBinaryPath: new URL("./mediapipe/wasm/vision_wasm_internal.wasm", location.href).href },
    { baseOptions: { modelAssetPath: new URL("./models/" + file, location.href).href, delegate: "CPU" },
      runningMode: "IMAGE", outputCategoryMask: true, outputConfidenceMasks: false });
  return true;
};
function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
  return btoa(s);
}
window.segmentBatch = (images) => images.map((im) => {
  const raw = atob(im.data);
  const rgba = new Uint8ClampedArray(raw.length);
  for (let i = 0; i < raw.length; i++) rgba[i] = raw.charCodeAt(i);
  const frame = new ImageData(rgba, im.w, im.h);
  const result = segmenter.segment(frame);
  const mask = result.categoryMask.getAsUint8Array();
  const canvas = document.getElementById("view");
  canvas.width = im.w; canvas.height = im.h;
  const shown = new ImageData(new Uint8ClampedArray(rgba), im.w, im.h);
  for (let p = 0; p < mask.length; p++) if (mask[p] > 0) { shown.data[4 * p] = 255; }
  canvas.getContext("2d").putImageData(shown, 0, 0);
  const encoded = toBase64(mask);
  result.close();
  return encoded;
});
window.ready = true;
"""


def _candidates() -> Iterator[Path]:
    if os.environ.get("TLKERAS_MEDIAPIPE_WEB"):
        env = Path(os.environ["TLKERAS_MEDIAPIPE_WEB"])
        yield env / "node_modules" / _PACKAGE
        yield env / _PACKAGE
    yield Path.cwd() / "node_modules" / _PACKAGE
    yield Path(__file__).resolve().parents[3] / "node_modules" / _PACKAGE


def find_tasks_vision() -> tuple[Path, str]:
    """The installed ``@mediapipe/tasks-vision`` folder and version.

    Raises:
        TLKerasError: not installed (``npm ci`` in a clone), or a file the page needs is missing.
    """
    for folder in _candidates():
        manifest = folder / "package.json"
        if manifest.is_file() and all((folder / f).is_file() for f in _FILES):
            try:
                return folder, str(json.loads(manifest.read_text(encoding="utf-8"))["version"])
            except (OSError, ValueError, KeyError):
                continue
    raise TLKerasError(f"the browser check needs the npm package {_PACKAGE} (npm ci in a tlkeras clone, or set TLKERAS_MEDIAPIPE_WEB)")


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
    """
    from tlkeras.core.browser import Browser, serve_directory

    package, version = find_tasks_vision()
    n, h, w = images.shape[:3]
    with tempfile.TemporaryDirectory(prefix="tlkeras-segweb-") as tmp:
        root = Path(tmp)
        for rel in _FILES:
            (root / "mediapipe" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(package / rel, root / "mediapipe" / rel)
        (root / "models").mkdir()
        for name, content in models.items():
            (root / "models" / f"{name}.tflite").write_bytes(content)
        (root / "index.html").write_text(_PAGE, encoding="utf-8")
        (root / "seg.mjs").write_text(_SCRIPT, encoding="utf-8")
        out: dict[str, np.ndarray] = {}
        with serve_directory(root) as url, Browser() as browser:
            browser.navigate(url.rstrip("/") + "/index.html")
            browser.evaluate("new Promise((ok) => { const t = () => window.ready ? ok(true) : setTimeout(t, 50); t(); })", timeout=60)
            rgba = np.concatenate([images, np.full((n, h, w, 1), 255, np.uint8)], -1)
            for name in models:
                browser.evaluate(f"window.loadModel({json.dumps(name + '.tflite')})", timeout=120)
                masks = []
                for i in range(0, n, batch):
                    payload = [{"w": w, "h": h, "data": base64.b64encode(rgba[j].tobytes()).decode("ascii")} for j in range(i, min(n, i + batch))]
                    encoded = browser.evaluate(f"window.segmentBatch({json.dumps(payload)})", timeout=300)
                    masks += [np.frombuffer(base64.b64decode(e), np.uint8).reshape(h, w).astype(np.int32) for e in encoded]
                out[name] = np.stack(masks)
    return out, version
