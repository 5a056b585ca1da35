"""A headless Chromium driven over the DevTools protocol, and a localhost file server.

Used to prove pages in a real browser: an exported bundle's web page (MediaPipe Tasks for Web,
:mod:`tlkeras.export.web`) and the HTML reports (tests). Needs a Chromium binary (Debian's
``chromium``, or ``$TLKERAS_CHROMIUM``) and the ``websocket-client`` package; :func:`find_chromium`
says which is missing.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from tlkeras.errors import TLKerasError

__all__ = ["BrowserUnavailable", "find_chromium", "Browser", "serve_directory", "serve_forever", "MIME_TYPES"]

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--remote-debugging-port=0", "--remote-allow-origins=*",
]
# What a page with WebAssembly and ES modules needs from the server (mimetypes lacks some).
MIME_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
              ".tflite": "application/octet-stream", ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8"}


class BrowserUnavailable(RuntimeError):
    """No Chromium or no websocket-client here: a check that needs a browser cannot run."""


def find_chromium() -> str:
    """The Chromium binary: ``$TLKERAS_CHROMIUM``, else ``chromium``, ``chromium-browser`` or
    ``google-chrome`` on PATH.

    Raises:
        BrowserUnavailable: none found, or ``websocket-client`` is not installed.
    """
    try:
        import websocket  # noqa: F401
    except ImportError:
        raise BrowserUnavailable("the websocket-client package is not installed (python -m pip install websocket-client)") from None
    chosen = os.environ.get("TLKERAS_CHROMIUM")
    if chosen:
        if not (Path(chosen).is_file() and os.access(chosen, os.X_OK)):
            raise BrowserUnavailable(f"TLKERAS_CHROMIUM={chosen} is not an executable file")
        return chosen
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise BrowserUnavailable("no Chromium found (apt-get install chromium, or set TLKERAS_CHROMIUM)")


class Browser:
    """One headless Chromium with a fresh profile and one page, driven over the DevTools protocol.

    Side effects: starts a Chromium process and a temporary profile folder; :meth:`close` (or
    leaving the ``with`` block) ends and removes both.
    """

    def __init__(self, start_timeout: float = 30.0):
        import websocket

        binary = find_chromium()
        self.profile = tempfile.mkdtemp(prefix="tlkeras-chromium-")
        self.ws = None
        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + start_timeout
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise BrowserUnavailable(f"{binary} did not start its DevTools endpoint within {start_timeout:.0f} s")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        pages: list[dict] = []
        while not pages and time.time() < deadline:  # the first page target shows up shortly after the endpoint
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5))
            pages = [t for t in targets if t.get("type") == "page"]
            time.sleep(0 if pages else 0.1)
        if not pages:
            self.close()
            raise BrowserUnavailable(f"{binary} opened no page within {start_timeout:.0f} s")
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, method: str, **params) -> dict:
        """Sends one DevTools command and returns its result; events read meanwhile are kept."""
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == my_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while not any(e.get("method") == event for e in self.events):
            if time.time() > deadline:
                raise TimeoutError(event)
            self.events.append(json.loads(self.ws.recv()))

    def navigate(self, url: str, width: int = 1280, height: int = 900, mobile: bool = False) -> None:
        """Loads ``url`` at the given viewport, with console, log and network events recorded."""
        self.events = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str, timeout: float = 120.0) -> Any:
        """The JSON value of ``expression`` in the page (promises awaited).

        Raises:
            RuntimeError: the expression threw (its message).
        """
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True, timeout=int(timeout * 1000))
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text") or "exception"
            raise RuntimeError(str(text).splitlines()[0][:500])
        return result.get("result", {}).get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def drain(self, settle: float = 0.2) -> None:
        """Reads the events still in flight (late console messages)."""
        time.sleep(settle)
        self.ws.settimeout(0.2)
        try:
            while True:
                self.events.append(json.loads(self.ws.recv()))
        except Exception:  # noqa: BLE001 - the read times out when nothing is left
            pass
        self.ws.settimeout(60)

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def errors(self, ignore_prefixes: tuple[str, ...] = ()) -> list[str]:
        """Uncaught exceptions, console errors and error log entries since the last navigation.

        Args:
            ignore_prefixes: console.error messages starting with one of these are logs, not
                errors (WebAssembly runtimes print their stderr, info lines included, that way).
        """
        def console_error(params: dict) -> bool:
            if params.get("type") not in ("error", "assert"):
                return False
            first = str((params.get("args") or [{}])[0].get("value", ""))
            return not (ignore_prefixes and first.startswith(ignore_prefixes))

        return [json.dumps(e["params"])[:300] for e in self.events if (
            e.get("method") == "Runtime.exceptionThrown"
            or (e.get("method") == "Runtime.consoleAPICalled" and console_error(e["params"]))
            or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error"))]

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            with contextlib.suppress(Exception):
                self.ws.close()
            self.ws = None
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 - the base class's name; quiet by default
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)


def _server(directory: Path, host: str, port: int, verbose: bool) -> http.server.ThreadingHTTPServer:
    if not directory.is_dir():
        raise TLKerasError(f"{directory} is not a folder to serve; pass a bundle folder")
    try:
        server = http.server.ThreadingHTTPServer((host, port), functools.partial(_Handler, directory=str(directory)))
    except OSError as exc:
        if port and exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise TLKerasError(f"port {port} on {host} is already in use; pass --port with another number (0 picks a free one)") from None
        raise TLKerasError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass --port with another number") from None
    server.verbose = verbose
    return server


@contextlib.contextmanager
def serve_directory(directory: str | os.PathLike, port: int = 0, host: str = "127.0.0.1", verbose: bool = False) -> Iterator[str]:
    """Serves ``directory`` over http on ``host`` in a background thread; yields the base URL.

    Raises:
        TLKerasError: the port is taken, or the folder does not exist.
    """
    directory = Path(directory)
    server = _server(directory, host, port, verbose)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def serve_forever(directory: str | os.PathLike, port: int = 8000, host: str = "127.0.0.1", on_ready=None) -> None:
    """Serves ``directory`` in the foreground until interrupted (Ctrl-C).

    Args:
        on_ready: called with the base URL once the port is bound.
    """
    directory = Path(directory)
    server = _server(directory, host, port, verbose=True)
    try:
        if on_ready is not None:
            on_ready(f"http://{host}:{server.server_address[1]}")
        server.serve_forever()
    finally:
        server.server_close()
