"""A bundle's web page (MediaPipe Tasks for Web) and its check in a real headless browser.

``web/`` in a bundle holds ``index.html`` and ``app.mjs`` (``templates/web/image.*`` or ``text.*``)
with the ``page.mjs`` and ``page.css`` both pages share, ``bundle.json``
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
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlkeras.errors import TLKerasError
from tlkeras.export.tflite_metadata import TOP1_TIE

__all__ = ["WebRuntime", "RUNTIMES", "MIN_WEB_AGREEMENT", "find_mediapipe_web", "write_web_page", "verify_web", "page_bytes",
           "add_web_page", "check_web_options", "image_calls", "text_calls"]

MIN_WEB_AGREEMENT = 0.99
_TEMPLATES = Path(__file__).resolve().parent / "templates" / "web"


@dataclass(frozen=True)
class WebRuntime:
    """One MediaPipe Tasks for Web package: what the page imports and which Wasm pair it loads.

    Attributes:
        package: the npm package.
        module: its ES module (copied to ``web/mediapipe/``).
        loader: the Wasm loader script, relative to the package.
        binary: the Wasm binary, relative to the package.
        page: the template pair in ``templates/web`` (``<page>.html`` / ``<page>.mjs``).
    """

    package: str
    module: str
    loader: str
    binary: str
    page: str

    @property
    def files(self) -> tuple[str, ...]:
        return (self.module, self.loader, self.binary)


RUNTIMES = {
    "image": WebRuntime("@mediapipe/tasks-vision", "vision_bundle.mjs", "wasm/vision_wasm_internal.js", "wasm/vision_wasm_internal.wasm", "image"),
    "text": WebRuntime("@mediapipe/tasks-text", "text_bundle.mjs", "wasm/text_wasm_internal.js", "wasm/text_wasm_internal.wasm", "text"),
}


def _candidates(package: str) -> list[Path]:
    found = []
    if os.environ.get("TLKERAS_MEDIAPIPE_WEB"):
        env = Path(os.environ["TLKERAS_MEDIAPIPE_WEB"])
        found += [env / "node_modules" / package, env / package]
    found.append(Path.cwd() / "node_modules" / package)
    found.append(Path(__file__).resolve().parents[2] / "node_modules" / package)  # a clone after `npm ci`
    return found


def find_mediapipe_web(modality: str = "image") -> tuple[Path, str]:
    """The installed MediaPipe Tasks for Web package of ``modality`` (:data:`RUNTIMES`) and its version.

    Looked up in ``$TLKERAS_MEDIAPIPE_WEB`` (a folder with ``node_modules``, or with the
    ``@mediapipe`` packages), ``./node_modules`` and the checkout's ``node_modules`` (``npm ci``).

    Raises:
        TLKerasError: not installed, or a file the page needs is missing.
    """
    runtime = RUNTIMES[modality]
    for folder in _candidates(runtime.package):
        manifest = folder / "package.json"
        if not manifest.is_file():
            continue
        try:
            version = str(json.loads(manifest.read_text(encoding="utf-8"))["version"])
        except (OSError, ValueError, KeyError, TypeError):
            raise TLKerasError(f"{manifest} is not a readable npm package.json; reinstall {runtime.package} (npm ci)") from None
        missing = [rel for rel in runtime.files if not (folder / rel).is_file()]
        if missing:
            raise TLKerasError(f"{folder} lacks {missing[0]}; reinstall {runtime.package} (npm ci)")
        return folder, version
    raise TLKerasError(f"--web needs the npm package {runtime.package}: run `npm ci` in a tlkeras clone, or "
                       f"`npm install {runtime.package}` here, or set TLKERAS_MEDIAPIPE_WEB to the folder holding node_modules")


def check_web_options(options, head: str, modality: str = "image") -> None:
    """Refuses ``--web`` where MediaPipe cannot classify (no metadata, a regression head) or the npm
    package is missing, before anything is converted.

    Raises:
        TLKerasError: one line that says what to change or install.
    """
    from tlkeras.export.result import has_classes, head_task

    if options.metadata == "off" or not has_classes(head_task(head)):
        raise TLKerasError("--web classifies with MediaPipe, which needs the TFLite metadata of a softmax or sigmoid head; "
                           "drop --metadata off (regression heads have no page)")
    find_mediapipe_web(modality)


def write_web_page(stage: str | os.PathLike, *, name: str, class_names: Sequence[str], variants: dict[str, dict[str, Any]],
                   recommended: str, threshold: float | None, modality: str = "image") -> dict[str, Any]:
    """Writes ``<stage>/web/``: the page, its scripts, ``bundle.json`` and the MediaPipe files.

    Args:
        stage: the bundle folder being assembled (written atomically by the caller).
        variants: ``{variant: {"file": "<name>.tflite", "bytes": int}}``, the files beside ``web/``
            that carry MediaPipe metadata.
        recommended: the variant the page loads first.
        threshold: the bundle's "unknown" score threshold (None: the page never says unknown).
        modality: ``image`` (``@mediapipe/tasks-vision``) or ``text`` (``@mediapipe/tasks-text``).

    Returns:
        ``{"page": "web/index.html", "mediapipe_web": {"package", "version"}, "page_bytes": int}``.

    Raises:
        TLKerasError: when the npm package is not installed (:func:`find_mediapipe_web`).
    """
    runtime = RUNTIMES[modality]
    source, version = find_mediapipe_web(modality)
    web = Path(stage) / "web"
    (web / "mediapipe" / "wasm").mkdir(parents=True, exist_ok=True)
    for rel in runtime.files:
        shutil.copyfile(source / rel, web / "mediapipe" / rel)
    shutil.copyfile(_TEMPLATES / f"{runtime.page}.html", web / "index.html")
    shutil.copyfile(_TEMPLATES / f"{runtime.page}.mjs", web / "app.mjs")
    for shared in ("page.mjs", "page.css"):
        shutil.copyfile(_TEMPLATES / shared, web / shared)
    config = {
        "format": "tlkeras-web", "modality": modality, "name": name, "labels": [str(c) for c in class_names],
        "variants": {k: {"file": v["file"], "bytes": int(v["bytes"])} for k, v in variants.items()},
        "recommended": recommended, "threshold": threshold,
        "mediapipe": {"package": runtime.package, "version": version, "licence": "Apache-2.0",
                      "loader": f"mediapipe/{runtime.loader}", "binary": f"mediapipe/{runtime.binary}"},
    }
    (web / "bundle.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {"page": "web/index.html", "mediapipe_web": {"package": runtime.package, "version": version}, "page_bytes": page_bytes(stage)}


def page_bytes(bundle_dir: str | os.PathLike) -> int:
    """Bytes of everything under ``web/`` (what a browser downloads besides the model)."""
    return sum(p.stat().st_size for p in (Path(bundle_dir) / "web").rglob("*") if p.is_file())


def _png_data_url(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, "PNG")  # lossless: the same pixels LiteRT saw
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _blocked_url(error: str) -> str:
    found = re.search(r"https?://[^\s'\\\"]+", error)
    return found.group(0).rstrip(".,;:") if found else error[:120]


def image_calls(images: np.ndarray) -> list[str]:
    """The page calls that classify ``images`` (uint8, at the model's input size, so MediaPipe does
    not resize them) through its own path: ``handleBlob`` on each image as a PNG."""
    return [f"window.tlkeras.classifyDataUrl({json.dumps(_png_data_url(im))})" for im in images]


def text_calls(texts: Sequence[str]) -> list[str]:
    """The page calls that classify ``texts`` through its own path (``classifyText``)."""
    return [f"window.tlkeras.classifyText({json.dumps(str(t))})" for t in texts]


def verify_web(bundle_dir: str | os.PathLike, variants: Sequence[str], calls: Sequence[str], litert_outs: dict[str, np.ndarray],
               *, screenshot_dir: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Classifies every sample with each variant through the bundle's page in headless Chromium.

    Args:
        bundle_dir: a bundle with ``web/`` (served on 127.0.0.1 for the check).
        variants: the variants to check.
        calls: one page call per sample (:func:`image_calls`, :func:`text_calls`).
        litert_outs: ``{variant: [samples, classes] LiteRT outputs}`` to compare with.
        screenshot_dir: when given, a failing variant's page is saved there as ``<variant>.png``.

    Returns:
        ``{variant: {"loaded", "error", "agreement", "p50_ms", "count", "console_errors",
        "external_requests", "blocked_by_page_policy", "passed"}}``; ``passed`` needs the page to load, top-1 agreement
        >= :data:`MIN_WEB_AGREEMENT` (a class tied with LiteRT's top counts), no console error
        and no request leaving localhost.

    Raises:
        BrowserUnavailable: no Chromium or websocket-client here (the caller says so).
    """
    from tlkeras.core.browser import Browser, serve_directory

    results: dict[str, dict[str, Any]] = {}
    with serve_directory(bundle_dir) as base, Browser() as browser:
        for variant in variants:
            entry: dict[str, Any] = {"loaded": False, "error": None, "agreement": None, "p50_ms": None, "count": 0}
            browser.navigate(f"{base}/web/index.html?variant={variant}")
            try:
                browser.evaluate("window.tlkeras.ready", timeout=120)
                entry["loaded"] = True
                agree, times = 0, []
                for call, row in zip(calls, litert_outs[variant]):
                    answer = browser.evaluate(call)
                    if not answer or "error" in answer:
                        raise RuntimeError(f"the page refused an evaluation sample: {answer}")
                    top = int(answer["top"])
                    agree += int(top >= 0 and float(row[top]) >= float(np.max(row)) - TOP1_TIE)
                    times.append(float(answer["ms"]))
                entry.update(agreement=agree / max(1, len(calls)), p50_ms=float(np.median(times)) if times else None, count=len(calls))
                # Reloading closes the classifier, which is when MediaPipe flushes its usage metrics
                # (also every 60 s): the page's policy must keep them in.
                browser.evaluate(f"window.tlkeras.loadVariant({json.dumps(variant)})", timeout=120)
            except (RuntimeError, TimeoutError) as exc:
                entry["error"] = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            browser.drain(0.5)
            # TFLite's own info lines reach the console through the Wasm runtime's stderr; what the
            # page's Content-Security-Policy blocked is recorded, not an error.
            errors = browser.errors(ignore_prefixes=("INFO: ",))
            entry["blocked_by_page_policy"] = sorted({_blocked_url(e) for e in errors if "Content Security Policy" in e})
            entry["console_errors"] = [e for e in errors if "Content Security Policy" not in e]
            entry["external_requests"] = [u for u in browser.requests() if not u.startswith((base + "/", "data:", "blob:"))]
            entry["passed"] = bool(entry["loaded"] and (entry["agreement"] or 0.0) >= MIN_WEB_AGREEMENT
                                   and not entry["console_errors"] and not entry["external_requests"])
            if not entry["passed"] and screenshot_dir is not None:
                Path(screenshot_dir).mkdir(parents=True, exist_ok=True)
                (Path(screenshot_dir) / f"{variant}.png").write_bytes(browser.screenshot())
            results[variant] = entry
    return results


def add_web_page(stage: str | os.PathLike, *, name: str, class_names: Sequence[str], variants_meta: dict[str, dict[str, Any]],
                 recommended: str | None, threshold: float | None, calls: Sequence[str], litert_outs: dict[str, np.ndarray],
                 verify: bool, modality: str = "image", say=lambda line: None) -> dict[str, Any]:
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
    info = write_web_page(stage, name=name, class_names=class_names, variants=usable, recommended=first, threshold=threshold, modality=modality)
    say(f"web/: a page with MediaPipe Tasks for Web {info['mediapipe_web']['version']} ({info['page_bytes'] / 1e6:.1f} MB)")
    if not verify:
        return {**info, "not_verified": "verify_web is off"}
    try:
        checks = verify_web(stage, list(usable), calls, {k: litert_outs[k] for k in usable})
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
