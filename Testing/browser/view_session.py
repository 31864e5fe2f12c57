"""Running ``medai view`` and Debian's chromium for the browser tests (imported by every test module here).

The module skips its importers when Playwright, trame-slicer or Debian's chromium is missing (``make test``
installs them; no browser is ever downloaded).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest

playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("trame_slicer")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FRAME = "img.image-display-area"  # trame-rca's remote-rendered frame

if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (make system-deps installs it)", allow_module_level=True)


class ViewServer:
    """A ``medai view`` child process and the URL it printed."""

    def __init__(self, *arguments: str | Path) -> None:
        """Start ``medai view ARGUMENTS…`` (a folder and options, or ``--study UID --config FILE``)."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "MedAIExtension.cli", "view", *map(str, arguments)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self.url = ""
        ready = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)
                if line.startswith("MedAI view: "):
                    self.url = line.split(": ", 1)[1].strip()
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(90):
            self.stop()
            pytest.fail("medai view printed no URL:\n" + "".join(self.lines[-30:]))
        self.base = self.url.split("/?", 1)[0]
        self.token = self.url.split("token=", 1)[1]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wait_for_first_frame(page: Any, timeout_ms: int = 60_000) -> None:
    """Wait until trame-rca's frame image on ``page`` has pixels."""
    page.wait_for_function(
        f"document.querySelector('{FRAME}') && document.querySelector('{FRAME}').naturalWidth > 0",
        timeout=timeout_ms,
    )


def open_view(browser: Any, url: str, width: int = 1300, height: int = 900) -> Any:
    """A new page of ``browser`` on ``url``, once its first frame is shown."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    wait_for_first_frame(page)
    return page


def launch_chromium(playwright: Any) -> Any:
    """Debian's chromium, headless, with no background networking."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def frame_pixels(page: object) -> np.ndarray:
    """The frame image's pixels (RGB, int16) as the browser shows them."""
    from PIL import Image as PILImage

    png = page.locator(FRAME).first.screenshot()  # type: ignore[attr-defined]
    return np.asarray(PILImage.open(BytesIO(png)).convert("RGB")).astype(np.int16)


def coloured(pixels: np.ndarray) -> np.ndarray:
    """Pixels that are not grey (the CT is drawn in greys: colour comes only from the segmentation overlay)."""
    return (pixels.max(axis=2) - pixels.min(axis=2)) > 30


def wait_for_frame_change(page: object, before: np.ndarray, timeout: float = 15.0) -> np.ndarray:
    """The frame's pixels once they differ from ``before`` (and settled); fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = frame_pixels(page)
        if now.shape != before.shape or np.abs(now - before).max() > 10:
            time.sleep(0.5)  # let the last frame of the change arrive
            return frame_pixels(page)
        time.sleep(0.2)
    raise AssertionError("the rendered frame did not change")
