"""Headless Chromium (Debian's package) driven over the DevTools protocol with websocket-client: the pages' tests
(report.html, prep ui) open a page, act on it, and check what it logged and every URL it asked for."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

needs_chromium = pytest.mark.skipif(not shutil.which("chromium"),
                                    reason="needs Debian's chromium (.ci/run installs it)")


def _devtools(port_file: Path, proc: subprocess.Popen, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.is_file() and len(lines := port_file.read_text().split()) >= 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError("Chromium did not open its DevTools port")


class Chromium:
    """One headless Chromium with one tab (its DevTools port picked by the browser, so parallel runs never
    collide); every event it sends is kept, so `errors` and `urls` cover the whole visit."""

    def __init__(self, profile: Path, width: int = 1100, height: int = 1400) -> None:
        websocket = pytest.importorskip("websocket", reason="the DevTools client is websocket-client (dev extra)")
        self._timeout = websocket.WebSocketTimeoutException
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"]
        self.proc = subprocess.Popen([shutil.which("chromium"), *flags], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            self.ws = websocket.create_connection(_devtools(profile / "DevToolsActivePort", self.proc), timeout=60,
                                                  suppress_origin=True)
            self.counter = iter(range(1, 1_000_000))
            self.events: list[dict] = []
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable", self.session)
            self.call("Emulation.setDeviceMetricsOverride", self.session, width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def call(self, method: str, session: str | None = None, **params: Any) -> dict:
        n = next(self.counter)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params,
                                 **({"sessionId": session} if session else {})}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == n:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def open(self, url: str, settle: float = 0.5) -> None:
        """Go to `url` and wait for its load event (and `settle` seconds for what it would fetch after)."""
        loaded = len([e for e in self.events if e.get("method") == "Page.loadEventFired"])
        self.call("Page.navigate", self.session, url=url)
        deadline = time.monotonic() + 60
        while len([e for e in self.events if e.get("method") == "Page.loadEventFired"]) == loaded:
            assert time.monotonic() < deadline, f"{url} did not load"
            self.events.append(json.loads(self.ws.recv()))
        time.sleep(settle)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.call("Runtime.evaluate", self.session, expression=expression, returnByValue=True,
                           awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 60) -> Any:
        """Poll `expression` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"waited {timeout} s for {expression}"
            time.sleep(0.2)
        return value

    def screenshot(self, shot: Path) -> bytes:
        png = base64.b64decode(self.call("Page.captureScreenshot", self.session, format="png")["data"])
        shot.write_bytes(png)
        return png

    def drain(self, seconds: float = 0.5) -> None:
        """Take the events still on their way."""
        self.ws.settimeout(seconds)
        try:
            while True:
                self.events.append(json.loads(self.ws.recv()))
        except self._timeout:
            pass
        self.ws.settimeout(60)

    @property
    def errors(self) -> list[dict]:
        """Exceptions, console errors and warnings, and the browser's own error and warning log entries."""
        return [e for e in self.events if e.get("method") == "Runtime.exceptionThrown"
                or e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert", "warning")
                or e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] in ("error", "warning")]

    @property
    def urls(self) -> list[str]:
        """Every URL the tab asked for."""
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def open_in_chromium(page: Path, shot: Path, profile: Path, evaluate: str = "null"
                     ) -> tuple[list[dict], list[str], Any]:
    """Open the file `page`, take a screenshot, and return the console errors, every URL the page requested, and
    the value of the JavaScript expression `evaluate` on the loaded page."""
    browser = Chromium(profile)
    try:
        browser.open(page.as_uri())
        value = browser.evaluate(evaluate)
        browser.screenshot(shot)
        browser.drain()
    finally:
        browser.close()
    return browser.errors, browser.urls, value
