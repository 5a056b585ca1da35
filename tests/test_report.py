"""The HTML report: written for a tiny trained run, opened in headless Chromium (Debian's
``chromium``) at a desktop and a phone width; it must render non-blank, log no console error,
make no network request, decode every inline image and fit the phone's width.

The browser is driven over the DevTools protocol (``websocket-client``); the tests skip cleanly
when Chromium or websocket-client is missing.
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest

DESKTOP = (1280, 900, False)
PHONE = (390, 844, True)


def open_page(browser, url: str, width: int, height: int, mobile: bool) -> dict:
    """Loads ``url`` at the given viewport; returns requests, console errors, layout and a screenshot."""
    browser.navigate(url, width, height, mobile)
    layout = browser.evaluate("""({
        scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
        images: document.images.length,
        broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length,
        sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
        text: document.body.innerText.length})""")
    png = browser.screenshot()
    browser.drain()
    return {"requests": browser.requests(), "errors": browser.errors(), "layout": layout, "png": png}


@pytest.fixture(scope="module")
def browser():
    from tlkeras.core.browser import Browser, BrowserUnavailable

    try:
        b = Browser()
    except BrowserUnavailable as exc:
        pytest.skip(str(exc))
    yield b
    b.close()


def not_blank(png: bytes) -> float:
    """Share of pixels that differ from the most common colour (the background)."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    colors, counts = np.unique(img, axis=0, return_counts=True)
    return 1.0 - counts.max() / len(img)


def external(requests: list[str]) -> list[str]:
    """Requests that leave the page: anything but the page's own file and inline data."""
    return [u for u in requests if not (u.startswith("data:") or u.startswith("file://"))]


def test_harness_sees_requests_and_console_errors(tmp_path, browser):
    """The checks below can fail: a page with an external image and a console error is caught."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><h1>bad</h1><img src="http://198.51.100.7/x.png"><script>console.error("boom")</script></body></html>')
    seen = open_page(browser, page.as_uri(), *DESKTOP)
    assert external(seen["requests"]) == ["http://198.51.100.7/x.png"]
    assert any("boom" in e for e in seen["errors"])


@pytest.fixture(scope="module")
def report_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run (train_model calibrated it), with a report of its test split and overlays."""
    from tlkeras.config import load_config
    from tlkeras.core.data import load_data
    from tlkeras.core.loading import load_run_model
    from tlkeras.report.html import examples_from, write_run_report

    run = tmp_path_factory.mktemp("report") / "tiny"
    shutil.copytree(tiny_run, run)
    assert (run / "calibration.json").is_file()
    model = load_run_model(run)
    config = load_config(run / "config.yaml")
    data = load_data(config.data, config.data.image_size, "softmax", config.seed)
    examples = examples_from(model, data.test, "test")

    def overlays(images, classes):
        # Stand-in for Grad-CAM (the CLIs pass tlkeras.explain's): a red tint, one per image.
        return [np.clip(img * 0.5 + np.array([120, 0, 0]), 0, 255).astype("uint8") for img in images]

    path = write_run_report(run, examples, overlays)
    return {"run": run, "path": path, "examples": examples}


def test_report_content(report_run):
    html = report_run["path"].read_text()
    for section in ("summary", "metrics", "per-class", "confusion", "curves", "gallery", "calibration", "config"):
        assert f'id="{section}"' in html, section
    # Self-contained: no URL other than inline data and in-page anchors.
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html
    assert html.count("data:image/png;base64,") >= 3
    names = (report_run["run"] / "labels.txt").read_text().split()
    assert all(n in html for n in names)
    wrong = int((report_run["examples"].predicted != report_run["examples"].y_true).sum())
    assert (f"{wrong} of {len(report_run['examples'].y_true)} images misclassified") in html
    if wrong:
        assert 'alt="Grad-CAM overlay"' in html


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_report_in_chromium(report_run, browser, viewport, tmp_path):
    seen = open_page(browser, report_run["path"].as_uri(), *viewport)
    (tmp_path / "shot.png").write_bytes(seen["png"])
    assert external(seen["requests"]) == [], seen["requests"]
    assert seen["errors"] == []
    layout = seen["layout"]
    assert layout["broken"] == 0 and layout["images"] >= 3
    assert layout["scrollWidth"] <= layout["innerWidth"] + 1, layout  # nothing overflows a phone's width
    assert {"summary", "confusion", "curves", "calibration"} <= set(layout["sections"])
    assert not_blank(seen["png"]) > 0.02


def test_report_escapes_class_names(tmp_path):
    """Class names and paths are text, never markup."""
    from tlkeras.report.html import Examples, run_report_html
    from tlkeras.runs import write_json

    (tmp_path / "labels.txt").write_text("<b>cat</b>\ndog\n")
    write_json(tmp_path / "metrics.json", {"final_split": "test", "final": {"accuracy": 0.5, "confusion_matrix": [[1, 1], [0, 2]]}})
    images = np.zeros((4, 8, 8, 3), np.uint8)
    ex = Examples(images, [0, 0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7]], ["a.png", "<i>x</i>.png", "c", "d"])
    html = run_report_html(tmp_path, ex)
    assert "<b>cat</b>" not in html and "&lt;b&gt;cat&lt;/b&gt;" in html
    assert "<i>x</i>" not in html


def test_misclassified_and_pairs():
    from tlkeras.report.html import Examples, confused_pairs, misclassified

    probs = np.array([[0.9, 0.1, 0], [0.1, 0.6, 0.3], [0.2, 0.7, 0.1], [0.05, 0.05, 0.9], [0.5, 0.1, 0.4]])
    ex = Examples(np.zeros((5, 4, 4, 3), np.uint8), [0, 0, 0, 1, 2], probs)
    assert misclassified(ex) == [3, 2, 1, 4]  # wrong ones, most confident first
    assert misclassified(ex, top=2) == [3, 2]
    assert confused_pairs([[5, 2, 0], [1, 4, 3], [0, 0, 6]], ["a", "b", "c"], top=2) == [(1, 2, 3), (0, 1, 2)]


def test_kept_epoch_is_lowest_val_loss_of_each_phase():
    from tlkeras.report.figures import kept_epochs, training_curves

    history = {"phase": [1, 1, 1, 2, 2], "loss": [1, .8, .7, .6, .5], "val_loss": [1.0, 0.7, 0.9, 0.65, 0.8],
               "accuracy": [.5, .6, .7, .8, .9], "val_accuracy": [.5, .6, .6, .7, .7]}
    assert kept_epochs(history) == ({1: 2, 2: 4}, 4)
    # run.json's selection: phase 2 did not beat the phase-1 model, which is the one saved.
    assert kept_epochs(history, {"monitor": "val_loss", "kept": "phase 1", "epoch": 0}) == ({1: 2, 2: 4}, 2)
    # ... or phase 2 selected on accuracy (higher is better) and kept its epoch 2.
    assert kept_epochs(history, {"monitor": "val_accuracy", "kept": "phase 2", "epoch": 2}) == ({1: 2, 2: 5}, 5)
    png = training_curves(history)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_bundle_report(tmp_path, browser):
    """A bundle's page: the variants table and the size-vs-accuracy plot it is given."""
    from tlkeras.core.plots import figure
    from tlkeras.report.figures import png_bytes
    from tlkeras.report.html import write_bundle_report
    from tlkeras.runs import write_json

    variants = {
        "float32": {"file": "float32.tflite", "bytes": 900_000, "gzip_bytes": 800_000, "within_threshold": True,
                    "metrics": {"accuracy": 0.91, "agreement": 1.0, "drop_points": 0.0}},
        "int8": {"file": "int8.tflite", "bytes": 300_000, "gzip_bytes": 250_000, "within_threshold": True,
                 "metrics": {"accuracy": 0.90, "agreement": 0.97, "drop_points": 1.0}},
    }
    write_json(tmp_path / "metadata.json", {
        "format": "tlkeras-bundle", "name": "demo", "task": {"class_names": ["a", "b"]}, "passed": True,
        "evaluation": {"split": "test", "count": 60, "primary_metric": "accuracy", "keras": {"accuracy": 0.91}},
        "variants": variants, "recommended": "int8", "unknown_threshold": 0.61,
    })
    fig = figure(figsize=(3, 2))
    fig.subplots().scatter([300, 900], [0.90, 0.91])
    path = write_bundle_report(tmp_path, size_vs_accuracy=png_bytes(fig))
    html = path.read_text()
    assert "int8" in html and "float32" in html and "0.6100" in html and 'alt="size versus accuracy"' in html
    seen = open_page(browser, path.as_uri(), *PHONE)
    assert external(seen["requests"]) == [] and seen["errors"] == [] and seen["layout"]["broken"] == 0
    assert not_blank(seen["png"]) > 0.02


def test_report_of_a_missing_run_is_one_clear_error(tmp_path):
    from tlkeras.errors import TLKerasError
    from tlkeras.report.html import write_run_report

    with pytest.raises(TLKerasError, match="does not exist"):
        write_run_report(tmp_path / "nope")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(TLKerasError, match="no metrics.json"):
        write_run_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_evaluate_unknown_writes_rejection_and_report(report_run, tmp_path, capsys, browser):
    """``python -m tlkeras.evaluate RUN --unknown DIR``: AUROC and false-accept rate at the run's
    threshold in eval_metrics.json, and a report.html (with Grad-CAM overlays) that opens cleanly."""
    from conftest import make_image_folder

    from tlkeras.evaluate.__main__ import main
    from tlkeras.runs import read_json

    run = report_run["run"]
    folder = make_image_folder(tmp_path / "other", classes=("a", "b", "c", "d"), per_class=6, size=40, seed=9)
    for name in ("a", "b", "c"):  # keep only class d (yellow): a colour the run never saw
        shutil.rmtree(folder / name)
    assert main([str(run), "--unknown", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "AUROC" in out and "report:" in out
    unknown = read_json(run / "eval_metrics.json")["unknown"]
    threshold = read_json(run / "calibration.json")["unknown_threshold"]
    assert unknown["unknown"] == 6 and unknown["threshold"] == pytest.approx(threshold)
    assert unknown["threshold_source"] == "calibration.json"
    assert 0.0 <= unknown["auroc"] <= 1.0 and 0.0 <= unknown["false_accept_rate"] <= 1.0
    html = (run / "report.html").read_text()
    assert "false-accept rate" in html and "eval_metrics.json" in html
    seen = open_page(browser, (run / "report.html").as_uri(), *PHONE)
    assert external(seen["requests"]) == [] and seen["errors"] == [] and seen["layout"]["broken"] == 0
    # A missing folder is one line on stderr and exit code 2.
    assert main([str(run), "--unknown", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a folder" in err[0]


@pytest.mark.parametrize("head", ["sigmoid", "regression"])
def test_report_of_other_heads(tmp_path, head):
    """Multi-label and regression runs get a page too: metrics and curves, no confusion matrix."""
    from tlkeras.report.html import write_run_report
    from tlkeras.runs import write_json

    (tmp_path / "labels.txt").write_text("a\nb\n")
    final = ({"subset_accuracy": 0.5, "f1_macro": 0.6, "per_class_f1": {"a": 0.7, "b": 0.5}} if head == "sigmoid"
             else {"mae": 0.3, "rmse": 0.4, "r2": 0.8})
    write_json(tmp_path / "metrics.json", {"val": final, "final_split": "test", "final": final})
    write_json(tmp_path / "history.json", {"phase": [1, 2], "loss": [1.0, 0.5], "val_loss": [1.1, 0.6]})
    html = write_run_report(tmp_path).read_text()
    assert 'id="curves"' in html and 'id="confusion"' not in html and 'id="gallery"' not in html
    assert ("0.600" if head == "sigmoid" else "0.300") in html


def test_train_cli_calibrates_and_writes_the_report(tmp_path, capsys):
    """``python -m tlkeras.train``: calibration.json, ECE in metrics.json, a calibrated model.keras
    and report.html with Grad-CAM overlays."""
    from conftest import calibrated_weights, make_image_folder

    from tlkeras.config import load_config
    from tlkeras.core.calibration import model_logits, negative_log_likelihood
    from tlkeras.core.data import load_data
    from tlkeras.core.loading import load_run_model
    from tlkeras.runs import read_json
    from tlkeras.train.__main__ import main

    data = make_image_folder(tmp_path / "images", per_class=14)
    flags = ["--data", str(data), "--backbone", "mobilenet", "--alpha", "0.25", "--weights", str(calibrated_weights(32)),
             "--image-size", "32", "--batch-size", "16", "--phase1-epochs", "2", "--phase2-epochs", "1", "--augment", "off",
             "--verbose", "0", "--output-dir", str(tmp_path / "runs"), "--name", "cal"]
    assert main(flags) == 0
    run = tmp_path / "runs" / "cal"
    assert f"report: {run / 'report.html'}" in capsys.readouterr().out
    calibration = read_json(run / "calibration.json")
    for key in ("temperature", "ece_before", "ece_after", "unknown_threshold", "target_recall", "val_recall_at_threshold"):
        assert isinstance(calibration[key], float), key
    assert calibration["val_recall_at_threshold"] >= calibration["target_recall"]
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9
    metrics = read_json(run / "metrics.json")
    assert metrics["calibration"]["ece_after"] == pytest.approx(calibration["ece_after"])
    assert "test_ece_after" in metrics["calibration"]
    # The saved model is the calibrated one: its val NLL is the fitted one.
    config = load_config(run / "config.yaml")
    bundle = load_data(config.data, 32, "softmax", config.seed)
    nll = negative_log_likelihood(model_logits(load_run_model(run), bundle.val.x), bundle.val.y)
    assert nll == pytest.approx(calibration["nll_after"], abs=1e-4)
    html = (run / "report.html").read_text()
    assert 'id="calibration"' in html and 'id="curves"' in html
