"""A bundle's web page (MediaPipe Tasks for Web) and its check in a real headless browser.

``web/`` in a bundle holds ``index.html`` and ``app.mjs`` (from ``templates/web``), ``bundle.json``
(variants, labels, threshold, the MediaPipe version) and ``mediapipe/``: ``vision_bundle.mjs`` and
the SIMD WebAssembly pair copied from the npm package ``@mediapipe/tasks-vision`` (every browser
released since 2021 runs Wasm SIMD; the page names the files, so nothing else is fetched). The page
fetches ``../<variant>.tflite``, so the bundle folder is what a server serves
(``python -m tlkeras.export --serve export/<name>``).

:func:`verify_web` serves the bundle on 127.0.0.1, opens the page in headless Chromium and sends
each evaluation image through the page's own path (``handleBlob``: decode, classify, render), then
compares top-1 with LiteRT's.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlkeras.errors import TLKerasError
from tlkeras.export.tflite_metadata import TOP1_TIE

__all__ = ["MEDIAPIPE_WEB_PACKAGE", "MIN_WEB_AGREEMENT", "find_mediapipe_web", "write_web_page", "verify_web", "page_bytes", "add_web_page"]

MEDIAPIPE_WEB_PACKAGE = "@mediapipe/tasks-vision"
MIN_WEB_AGREEMENT = 0.99
_TEMPLATES = Path(__file__).resolve().parent / "templates" / "web"
_FILES = {"vision_bundle.mjs": "vision_bundle.mjs", "wasm/vision_wasm_internal.js": "wasm/vision_wasm_internal.js",
          "wasm/vision_wasm_internal.wasm": "wasm/vision_wasm_internal.wasm"}


def _candidates() -> list[Path]:
    found = []
    if os.environ.get("TLKERAS_MEDIAPIPE_WEB"):
        env = Path(os.environ["TLKERAS_MEDIAPIPE_WEB"])
        found += [env, env / "node_modules" / MEDIAPIPE_WEB_PACKAGE]
    found.append(Path.cwd() / "node_modules" / MEDIAPIPE_WEB_PACKAGE)
    found.append(Path(__file__).resolve().parents[2] / "node_modules" / MEDIAPIPE_WEB_PACKAGE)  # a clone after `npm ci`
    return found


def find_mediapipe_web() -> tuple[Path, str]:
    """The installed ``@mediapipe/tasks-vision`` package folder and its version.

    Looked up in ``$TLKERAS_MEDIAPIPE_WEB`` (the package folder or a folder with ``node_modules``),
    ``./node_modules`` and the checkout's ``node_modules`` (``npm ci`` in a clone).

    Raises:
        TLKerasError: not installed, or a file the page needs is missing.
    """
    for folder in _candidates():
        manifest = folder / "package.json"
        if not manifest.is_file():
            continue
        try:
            version = str(json.loads(manifest.read_text(encoding="utf-8"))["version"])
        except (OSError, ValueError, KeyError, TypeError):
            raise TLKerasError(f"{manifest} is not a readable npm package.json; reinstall {MEDIAPIPE_WEB_PACKAGE} (npm ci)") from None
        missing = [rel for rel in _FILES if not (folder / rel).is_file()]
        if missing:
            raise TLKerasError(f"{folder} lacks {missing[0]}; reinstall {MEDIAPIPE_WEB_PACKAGE} (npm ci)")
        return folder, version
    raise TLKerasError(f"--web needs the npm package {MEDIAPIPE_WEB_PACKAGE}: run `npm ci` in a tlkeras clone, or "
                       f"`npm install {MEDIAPIPE_WEB_PACKAGE}` here, or set TLKERAS_MEDIAPIPE_WEB to its folder")


def write_web_page(stage: str | os.PathLike, *, name: str, class_names: Sequence[str], variants: dict[str, dict[str, Any]],
                   recommended: str, threshold: float | None) -> dict[str, Any]:
    """Writes ``<stage>/web/``: the page, its script, ``bundle.json`` and the MediaPipe files.

    Args:
        stage: the bundle folder being assembled (written atomically by the caller).
        variants: ``{variant: {"file": "<name>.tflite", "bytes": int}}``, the files beside ``web/``
            that carry MediaPipe metadata.
        recommended: the variant the page loads first.
        threshold: the bundle's "unknown" score threshold (None: the page never says unknown).

    Returns:
        ``{"page": "web/index.html", "mediapipe_web": {"package", "version"}, "page_bytes": int}``.

    Raises:
        TLKerasError: when the npm package is not installed (:func:`find_mediapipe_web`).
    """
    source, version = find_mediapipe_web()
    web = Path(stage) / "web"
    (web / "mediapipe" / "wasm").mkdir(parents=True, exist_ok=True)
    for rel, target in _FILES.items():
        shutil.copyfile(source / rel, web / "mediapipe" / target)
    for template in ("index.html", "app.mjs"):
        shutil.copyfile(_TEMPLATES / template, web / template)
    config = {
        "format": "tlkeras-web", "name": name, "labels": [str(c) for c in class_names],
        "variants": {k: {"file": v["file"], "bytes": int(v["bytes"])} for k, v in variants.items()},
        "recommended": recommended, "threshold": threshold,
        "mediapipe": {"package": MEDIAPIPE_WEB_PACKAGE, "version": version, "licence": "Apache-2.0",
                      "loader": "mediapipe/wasm/vision_wasm_internal.js", "binary": "mediapipe/wasm/vision_wasm_internal.wasm"},
    }
    (web / "bundle.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {"page": "web/index.html", "mediapipe_web": {"package": MEDIAPIPE_WEB_PACKAGE, "version": version}, "page_bytes": page_bytes(stage)}


def page_bytes(bundle_dir: str | os.PathLike) -> int:
    """Bytes of everything under ``web/`` (what a browser downloads besides the model)."""
    return sum(p.stat().st_size for p in (Path(bundle_dir) / "web").rglob("*") if p.is_file())


def _png_data_url(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, "PNG")  # lossless: the same pixels LiteRT saw
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def verify_web(bundle_dir: str | os.PathLike, variants: Sequence[str], images: np.ndarray, litert_outs: dict[str, np.ndarray],
               *, screenshot_dir: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Classifies ``images`` with each variant through the bundle's page in headless Chromium.

    Args:
        bundle_dir: a bundle with ``web/`` (served on 127.0.0.1 for the check).
        variants: the variants to check.
        images: uint8 ``[N, H, W, 3]`` at the model's input size (so MediaPipe does not resize).
        litert_outs: ``{variant: [N, classes] LiteRT outputs}`` to compare with.
        screenshot_dir: when given, a failing variant's page is saved there as ``<variant>.png``.

    Returns:
        ``{variant: {"loaded", "error", "agreement", "p50_ms", "count", "console_errors",
        "external_requests", "passed"}}``; ``passed`` needs the page to load, top-1 agreement
        >= :data:`MIN_WEB_AGREEMENT`, no console error and no request leaving localhost.

    Raises:
        BrowserUnavailable: no Chromium or websocket-client here (the caller says so).
    """
    from tlkeras.core.browser import Browser, serve_directory

    results: dict[str, dict[str, Any]] = {}
    urls = [_png_data_url(im) for im in images]
    with serve_directory(bundle_dir) as base, Browser() as browser:
        for variant in variants:
            entry: dict[str, Any] = {"loaded": False, "error": None, "agreement": None, "p50_ms": None, "count": 0}
            browser.navigate(f"{base}/web/index.html?variant={variant}")
            try:
                browser.evaluate("window.tlkeras.ready", timeout=120)
                entry["loaded"] = True
                agree, times = 0, []
                expected = litert_outs[variant]
                for url, row in zip(urls, expected):
                    answer = browser.evaluate(f"window.tlkeras.classifyDataUrl({json.dumps(url)})")
                    if not answer or "error" in answer:
                        raise RuntimeError(f"the page could not decode an evaluation image: {answer}")
                    top = int(answer["top"])
                    agree += int(top >= 0 and float(row[top]) >= float(np.max(row)) - TOP1_TIE)
                    times.append(float(answer["ms"]))
                entry.update(agreement=agree / max(1, len(urls)), p50_ms=float(np.median(times)) if times else None, count=len(urls))
            except (RuntimeError, TimeoutError) as exc:
                entry["error"] = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            browser.drain()
            # TFLite's own info lines reach the console through the Wasm runtime's stderr.
            entry["console_errors"] = browser.errors(ignore_prefixes=("INFO: ",))
            entry["external_requests"] = [u for u in browser.requests() if not u.startswith((base + "/", "data:", "blob:"))]
            entry["passed"] = bool(entry["loaded"] and (entry["agreement"] or 0.0) >= MIN_WEB_AGREEMENT
                                   and not entry["console_errors"] and not entry["external_requests"])
            if not entry["passed"] and screenshot_dir is not None:
                Path(screenshot_dir).mkdir(parents=True, exist_ok=True)
                (Path(screenshot_dir) / f"{variant}.png").write_bytes(browser.screenshot())
            results[variant] = entry
    return results


def add_web_page(stage: str | os.PathLike, *, name: str, class_names: Sequence[str], variants_meta: dict[str, dict[str, Any]],
                 recommended: str | None, threshold: float | None, eval_x: np.ndarray, litert_outs: dict[str, np.ndarray],
                 verify: bool, say=lambda line: None) -> dict[str, Any]:
    """Writes ``web/`` for the variants that carry metadata and, with ``verify``, checks each in Chromium.

    Side effects: writes ``<stage>/web/``; appends ``"mediapipe-web"`` to ``verified_on`` of every
    variant that passed; starts a local server and a headless Chromium while verifying.

    Returns:
        metadata.json's ``web`` entry: the page, the MediaPipe version, the page's bytes and, per
        variant, the check (or ``"not_verified"`` with why).
    """
    from tlkeras.core.browser import BrowserUnavailable

    usable = {k: v for k, v in variants_meta.items() if v.get("file") and v.get("tflite_metadata")}
    if not usable:
        return {"page": None, "reason": "no variant carries the TFLite metadata MediaPipe needs"}
    first = recommended if recommended in usable else next(iter(usable))
    info = write_web_page(stage, name=name, class_names=class_names, variants=usable, recommended=first, threshold=threshold)
    say(f"web/: a page with MediaPipe Tasks for Web {info['mediapipe_web']['version']} ({info['page_bytes'] / 1e6:.1f} MB)")
    if not verify:
        return {**info, "not_verified": "verify_web is off"}
    try:
        checks = verify_web(stage, list(usable), eval_x, {k: litert_outs[k] for k in usable})
    except BrowserUnavailable as exc:
        say(f"  web page not verified: {exc}")
        return {**info, "not_verified": str(exc)}
    for vname, check in checks.items():
        if check["passed"]:
            variants_meta[vname]["verified_on"].append("mediapipe-web")
        shown = f"agreement {check['agreement']:.3f}, p50 {check['p50_ms']:.1f} ms" if check["loaded"] else f"not loaded: {check['error']}"
        say(f"  {vname} in headless Chromium: {shown}{'' if check['passed'] else ' (NOT verified)'}")
    # The page offers only what MediaPipe Web loaded (int8 input tensors, for one, it refuses).
    loaded = [k for k, c in checks.items() if c["loaded"]]
    if loaded and len(loaded) < len(checks):
        config_path = Path(stage) / "web" / "bundle.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["variants"] = {k: v for k, v in config["variants"].items() if k in loaded}
        if config["recommended"] not in loaded:
            config["recommended"] = loaded[0]
        config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        info["offered"] = loaded
    return {**info, "checks": checks}
