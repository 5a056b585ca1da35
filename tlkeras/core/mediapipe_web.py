"""MediaPipe Tasks for Web (``@mediapipe/tasks-vision``) in headless Chromium, for a task's browser check.

The part every vision task shares: finding the npm package, staging a page folder (the package's ES
module and SIMD WebAssembly pair, the variant files, a tiny page with one ``<canvas id=view>``),
serving it on 127.0.0.1, and passing images to the page. Each task supplies only its page script
(which MediaPipe task class it imports, and what ``window.loadModel`` / its batch function return);
the script gets ``fileset``, ``modelUrl(file)`` and ``toFrame(image)`` from a shared prelude and
sets ``window.ready`` when loaded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from tlkeras.errors import TLKerasError

__all__ = ["PACKAGE", "find_tasks_vision", "vision_page", "frames"]

PACKAGE = "@mediapipe/tasks-vision"
_FILES = ("vision_bundle.mjs", "wasm/vision_wasm_internal.js", "wasm/vision_wasm_internal.wasm")
_PAGE = """<!doctype html><meta charset=utf-8><title>{title}</title>
<canvas id=view></canvas><script type=module src=page.mjs></script>"""
_PRELUDE = """
const fileset = { wasmLoaderPath: new URL("./mediapipe/wasm/vision_wasm_internal.js", location.href).href,
                  wasmBinaryPath: new URL("./mediapipe/wasm/vision_wasm_internal.wasm", location.href).href };
const modelUrl = (file) => new URL("./models/" + file, location.href).href;
function toFrame(im) {
  const raw = atob(im.data);
  const rgba = new Uint8ClampedArray(raw.length);
  for (let i = 0; i < raw.length; i++) rgba[i] = raw.charCodeAt(i);
  return new ImageData(rgba, im.w, im.h);
}
"""


def _candidates() -> Iterator[Path]:
    if os.environ.get("TLKERAS_MEDIAPIPE_WEB"):
        env = Path(os.environ["TLKERAS_MEDIAPIPE_WEB"])
        yield env / "node_modules" / PACKAGE
        yield env / PACKAGE
    yield Path.cwd() / "node_modules" / PACKAGE
    yield Path(__file__).resolve().parents[2] / "node_modules" / PACKAGE


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
    raise TLKerasError(f"the browser check needs the npm package {PACKAGE} (npm ci in a tlkeras clone, or set TLKERAS_MEDIAPIPE_WEB)")


def frames(images) -> list[dict]:
    """The page's image payload: ``{"w", "h", "data": base64 RGBA}`` per H x W x 3 uint8 image."""
    out = []
    for image in images:
        image = np.asarray(image, np.uint8)
        h, w = image.shape[:2]
        rgba = np.concatenate([image, np.full((h, w, 1), 255, np.uint8)], -1)
        out.append({"w": int(w), "h": int(h), "data": base64.b64encode(rgba.tobytes()).decode("ascii")})
    return out


@contextlib.contextmanager
def vision_page(models: dict[str, bytes], task_class: str, script: str, title: str = "tlkeras browser check"):
    """Serves a page running ``script`` with MediaPipe's ``task_class`` and opens it in headless Chromium.

    Args:
        models: ``{variant: .tflite bytes}``; the page loads them as ``<variant>.tflite``.
        task_class: the ``@mediapipe/tasks-vision`` export the script uses (``ObjectDetector``, ...).
        script: the page's module body (after the import and the shared prelude).

    Yields:
        (the :class:`tlkeras.core.browser.Browser` on the loaded page, the package version).

    Raises:
        TLKerasError: the package is missing; tlkeras.core.browser.BrowserUnavailable: no Chromium.

    Side effects: a temporary folder, a localhost server and a Chromium process, all gone on exit.
    """
    from tlkeras.core.browser import Browser, serve_directory

    package, version = find_tasks_vision()
    with tempfile.TemporaryDirectory(prefix="tlkeras-mpweb-") as tmp:
        root = Path(tmp)
        for rel in _FILES:
            (root / "mediapipe" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(package / rel, root / "mediapipe" / rel)
        (root / "models").mkdir()
        for name, content in models.items():
            (root / "models" / f"{name}.tflite").write_bytes(content)
        (root / "index.html").write_text(_PAGE.format(title=title), encoding="utf-8")
        module = f'import {{ {task_class} }} from "./mediapipe/vision_bundle.mjs";\n{_PRELUDE}\n{script}'
        (root / "page.mjs").write_text(module, encoding="utf-8")
        with serve_directory(root) as url, Browser() as browser:
            browser.navigate(url.rstrip("/") + "/index.html")
            browser.evaluate("new Promise((ok) => { const t = () => window.ready ? ok(true) : setTimeout(t, 50); t(); })", timeout=60)
            yield browser, version
