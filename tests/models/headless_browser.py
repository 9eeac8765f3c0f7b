"""A page in headless Chromium through the DevTools protocol (over --remote-debugging-pipe: no
extra Python package): its console errors and uncaught exceptions, JavaScript values, and
screenshots of elements."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# software WebGL (SwiftShader): the page's 3D canvas draws without a GPU
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-pipe",
)


@dataclass
class Page:
    process: subprocess.Popen
    write_fd: int
    read_fd: int
    session: str = ""
    next_id: int = 0
    buffer: bytes = b""
    errors: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def _send(self, method: str, params: dict | None = None, session: bool = True) -> int:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        return self.next_id

    def _read(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                return None
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message = json.loads(raw)
        self._note(message)
        return message

    def _note(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            texts = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            self.errors.append("console.error: " + " ".join(texts))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"uncaught exception: {description}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(f"log error: {params['entry'].get('text')}")
        elif method:
            self.events.append(message)

    def call(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        wanted = self._send(method, params, session=not method.startswith("Target."))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._read(deadline - time.monotonic())
            if message is not None and message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
        raise TimeoutError(f"{method}: no answer in {timeout} s")

    def wait_for_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self._read(deadline - time.monotonic())
        raise TimeoutError(f"no {method} in {timeout} s")

    def requested_urls(self) -> list[str]:
        """Every URL the page asked for so far."""
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    def wait_until(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            self._read(0.2)
        raise TimeoutError(f"{expression!r} stayed false for {timeout} s; errors: {self.errors}")

    def screenshot(self, selector: str) -> bytes:
        """PNG of the element ``selector`` (scrolled into view first)."""
        rect = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView(); const r = e.getBoundingClientRect();"
            " return {x: r.x + window.scrollX, y: r.y + window.scrollY,"
            " width: r.width, height: r.height}; })()"
        )
        result = self.call(
            "Page.captureScreenshot",
            {"format": "png", "clip": {**rect, "scale": 1}, "captureBeyondViewport": True},
        )
        return base64.b64decode(result["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        self.process.kill()
        self.process.wait()
        os.close(self.write_fd)
        os.close(self.read_fd)


def open_page(chromium: str, url: str, width: int = 1300, height: int = 900) -> Page:
    """Chromium with ``url`` loaded (the load event fired); console errors collected from the
    start."""
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def wire() -> None:  # the DevTools pipe is fd 3 (commands in) and fd 4 (replies out)
        # via fds above 9 first, so that neither end overwrites the other on its way down
        high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    process = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--window-size={width},{height}", "about:blank"],
        # preexec_fn runs before the child closes other fds: keep 3 and 4 open
        pass_fds=(3, 4, to_browser_r, from_browser_w),
        preexec_fn=wire,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_browser_r)
    os.close(from_browser_w)
    page = Page(process, to_browser_w, from_browser_r)
    target = page.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    page.session = page.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"
    ]
    for domain in ("Runtime.enable", "Page.enable", "Log.enable", "Network.enable"):
        page.call(domain)
    page.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    page.call("Page.navigate", {"url": url})
    page.wait_for_event("Page.loadEventFired")
    return page


def file_url(path: Path) -> str:
    return path.resolve().as_uri()
