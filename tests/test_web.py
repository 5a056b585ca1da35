"""A bundle's web page in a real browser: MediaPipe Tasks for Web (npm) in headless Chromium.

Skips cleanly without Chromium, websocket-client, mediapipe (the metadata writer) or the npm
package (``npm ci`` in the checkout). When a variant fails, a screenshot of its page is written
under the test's tmp_path and named in the failure.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_web_runtime

from tlkeras.errors import TLKerasError


@pytest.fixture(scope="module")
def web_bundle(tiny_run, tmp_path_factory):
    needs_web_runtime()
    from tlkeras.export.bundle import ExportOptions, export_run

    out = tmp_path_factory.mktemp("web") / "bundle"
    result = export_run(tiny_run, out, ExportOptions(variants=("float16", "int8_float_io", "int8"), micro=False, web=True, allow_drop=True))
    return result


def _screenshot(bundle: Path, variant: str, folder: Path) -> Path:
    from tlkeras.core.browser import Browser, serve_directory

    folder.mkdir(parents=True, exist_ok=True)
    with serve_directory(bundle) as base, Browser() as browser:
        browser.navigate(f"{base}/web/index.html?variant={variant}")
        browser.drain(2.0)
        path = folder / f"{variant}.png"
        path.write_bytes(browser.screenshot())
    return path


def test_every_loadable_variant_agrees_with_litert_in_chromium(web_bundle, tmp_path):
    meta = web_bundle.metadata
    web = meta["web"]
    assert web["page"] == "web/index.html" and web["mediapipe_web"]["package"] == "@mediapipe/tasks-vision"
    checks = web["checks"]
    for variant in ("float16", "int8_float_io"):
        check = checks[variant]
        if not check["passed"]:
            shot = _screenshot(web_bundle.bundle_dir, variant, tmp_path / "screenshots")
            pytest.fail(f"{variant} in MediaPipe Web: {check} (screenshot: {shot})")
        assert check["agreement"] >= 0.99 and check["count"] == meta["evaluation"]["count"]
        assert not check["console_errors"] and not check["external_requests"]
        # MediaPipe Web posts usage metrics when a classifier closes; the page's policy kept them in.
        assert check["blocked_by_page_policy"] and all("googleapis.com" in u for u in check["blocked_by_page_policy"])
        assert "mediapipe-web" in meta["variants"][variant]["verified_on"]
    # int8 input tensors: MediaPipe Web refuses them, and says why; the page does not offer them.
    assert not checks["int8"]["loaded"] and "INT8" in checks["int8"]["error"]
    assert "mediapipe-web" not in meta["variants"]["int8"]["verified_on"]
    page = json.loads((web_bundle.bundle_dir / "web" / "bundle.json").read_text())
    assert set(page["variants"]) == {"float16", "int8_float_io"}
    assert page["recommended"] == (meta["recommended"] if meta["recommended"] in page["variants"] else "float16")
    assert page["mediapipe"]["version"] == web["mediapipe_web"]["version"]
    card = (web_bundle.bundle_dir / "model_card.md").read_text()
    assert "mediapipe-web" in card and "## In a browser" in card and "--serve" in card and "int8: not loaded" in card


def test_page_says_when_an_image_cannot_be_decoded(web_bundle):
    from tlkeras.core.browser import Browser, serve_directory

    with serve_directory(web_bundle.bundle_dir) as base, Browser() as browser:
        browser.navigate(f"{base}/web/index.html")
        offered = json.loads((web_bundle.bundle_dir / "web" / "bundle.json").read_text())
        assert browser.evaluate("window.tlkeras.ready") == offered["recommended"]
        answer = browser.evaluate("window.tlkeras.classifyDataUrl('data:image/png;base64,iVBORw0KGgoAAAA=')")
        assert answer["error"] == "decode"
        status = browser.evaluate("document.getElementById('status').textContent")
        assert "not an image this browser can decode" in status
        # A good image after a bad one still classifies, and the page shows the answer.
        pixel = np.zeros((32, 32, 3), np.uint8)
        from tlkeras.export.web import _png_data_url

        answer = browser.evaluate(f"window.tlkeras.classifyDataUrl({json.dumps(_png_data_url(pixel))})")
        assert 0 <= answer["top"] < 3 and len(answer["categories"]) == 3
        assert browser.evaluate("document.querySelector('#result .answer').textContent")


def test_serve_command_serves_the_page_with_wasm_types(web_bundle):
    done = subprocess.Popen([sys.executable, "-m", "tlkeras.export", "--serve", str(web_bundle.bundle_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = done.stdout.readline()
        assert "open http://127.0.0.1:" in line, line + done.stderr.read()[-2000:] if done.poll() is not None else line
        url = line.split("open ", 1)[1].split()[0]
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "app.mjs" in page
        wasm = urllib.request.urlopen(url + "mediapipe/wasm/vision_wasm_internal.wasm", timeout=10)
        assert wasm.headers["Content-Type"] == "application/wasm"
    finally:
        done.terminate()
        done.wait(10)


def test_serve_on_a_port_in_use_is_one_line(web_bundle, capsys):
    """The missing-folder and no-page cases are in tests/test_hostile_inputs.py."""
    from tlkeras.export import __main__ as export_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code = export_cli.main(["--serve", str(web_bundle.bundle_dir), "--port", str(taken.getsockname()[1])])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "already in use" in lines[0] and "--port" in lines[0], lines


def test_web_without_the_npm_package_says_how_to_install(monkeypatch, tmp_path):
    from tlkeras.export import web

    monkeypatch.setattr(web, "_candidates", lambda package: [tmp_path / "node_modules" / package])
    with pytest.raises(TLKerasError, match="npm ci"):
        web.find_mediapipe_web()
    broken = tmp_path / "node_modules" / web.RUNTIMES["image"].package
    broken.mkdir(parents=True)
    (broken / "package.json").write_text('{"version": "1.1.0"}')
    with pytest.raises(TLKerasError, match="lacks vision_bundle.mjs"):
        web.find_mediapipe_web()
