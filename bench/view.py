"""Benchmark: ``medai view`` — server start to first frame, slice-change latency, memory of one session.

    .venv/bin/python bench/view.py [--size 256 256 120] [--changes 20]

A phantom chest CT (1.4 × 1.4 × 2.5 mm) and a ``medai segment``-like result folder for it (the phantom's labels
as the result) are written into a temporary folder (not timed). Then, in one run:

1. ``medai view <result>`` is started as a child process (timed from its start): **ready** = the URL line printed
   (imports, scene, views, server listening).
2. Debian's chromium (headless, Playwright) opens the URL: **first frame** = page.goto until trame-rca's frame
   image has pixels, measured from the page opening (the issue's target: ≤ 3 s) and from the server's start.
3. **Click-to-pixels**: N times, the slice slider under the view gets one key press (one slice step) and the time
   until the frame's pixels change is taken (the issue's target: median ≤ 0.5 s).
4. **Server render**, in this process: the same view built by :class:`ReviewApp` without serving, its window
   800 × 700; the axial slice view is moved one slice, rendered offscreen (EGL) and read back, N times (what the
   server spends per change before encoding the frame).
5. **Memory**: the server's peak RSS (``VmHWM``) after the page and the changes.

Prints each figure and its ratio to the issue's target (below 1.0 meets it).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import cpu_model  # noqa: E402 - bench/machine.py, beside this script

FIRST_FRAME_TARGET_S = 3.0
SLICE_CHANGE_TARGET_S = 0.5
FRAME = "img.image-display-area"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _write_result(root: Path, size: tuple[int, int, int]) -> Path:
    from MedAIExtension.io import write_volume_file
    from MedAIExtension.models.catalog import load_catalog
    from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom
    from MedAIExtension.segmentation.outputs import write_outputs

    phantom = generate_chest_phantom(PhantomSpec(size_ijk=size, spacing=(1.4, 1.4, 2.5), seed=3))
    ct = write_volume_file(phantom.ct, root / "ct.nii.gz")
    model = "chest-ct-lung-nodule"
    labels = load_catalog().get(model).labels
    write_outputs(
        phantom.labels, labels, root / "result", "nii.gz", algorithm_name=model, extra_summary={"input": str(ct)}
    )
    return root / "result"


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pixels(page: object) -> bytes:
    return page.locator(FRAME).first.screenshot()  # type: ignore[attr-defined]


def _serve(result: Path) -> tuple[subprocess.Popen[str], str, float]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "MedAIExtension.cli", "view", str(result)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=REPO,
    )
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("MedAI view: "):
                found.append(line.split(": ", 1)[1].strip())
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(120):
        process.kill()
        raise SystemExit("medai view printed no URL within 120 s")
    return process, found[0], started


def _browser_figures(url: str, changes: int) -> tuple[float, float, list[float]]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            opened = time.perf_counter()
            page.goto(url)
            page.wait_for_function(
                f"document.querySelector('{FRAME}') && document.querySelector('{FRAME}').naturalWidth > 0",
                timeout=120_000,
            )
            first_frame = time.perf_counter()
            page.wait_for_timeout(1500)  # let the page settle before timing slice changes
            slider = page.locator("[role=slider]").first  # the slice slider under the view (before the drawer's)
            latencies: list[float] = []
            for index in range(changes):
                before = _pixels(page)
                slider.focus()
                pressed = time.perf_counter()
                page.keyboard.press("ArrowRight" if index % 2 == 0 else "ArrowLeft")
                while _pixels(page) == before:
                    if time.perf_counter() - pressed > 10:
                        raise SystemExit("the frame did not change after a slice step")
                latencies.append(time.perf_counter() - pressed)
            return opened, first_frame, latencies
        finally:
            browser.close()


def _server_render(result: Path, changes: int) -> list[float]:
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    from MedAIExtension.view.review_app import ReviewApp, resolve_view_input

    app = ReviewApp(resolve_view_input(result))
    view = app.slicer_app.view_manager.get_slice_views()[0]
    window = view.render_window()
    window.SetSize(800, 700)  # about the size the browser's view had
    step, start = view.get_slice_step(), view.get_slice_value()
    window.Render()
    times = []
    for index in range(changes):
        began = time.perf_counter()
        view.set_slice_value(start + step * (index % 2 + 1))
        window.Render()
        capture = vtkWindowToImageFilter()  # what trame-rca does before encoding the frame
        capture.SetInput(window)
        capture.ReadFrontBufferOff()
        capture.Update()
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[256, 256, 120], metavar=("I", "J", "K"))
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medai-bench-view-"))
    try:
        result = _write_result(work, tuple(args.size))
        process, url, started = _serve(result)
        try:
            ready = time.perf_counter() - started
            opened, first_frame, latencies = _browser_figures(url, args.changes)
            peak = _peak_rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(15)
        renders = _server_render(result, args.changes)
        page_first = first_frame - opened
        median_click = statistics.median(latencies)
        print(f"image {args.size[0]}×{args.size[1]}×{args.size[2]}, {args.changes} slice changes")
        print(f"server start → URL printed (ready)      {ready:6.2f} s")
        ratio = page_first / FIRST_FRAME_TARGET_S
        print(f"page open → first frame                 {page_first:6.2f} s   ratio to 3 s target {ratio:.2f}")
        print(f"server start → first frame              {first_frame - started:6.2f} s (incl. chromium start)")
        print(
            f"slice change click-to-pixels: median {median_click:.3f} s, max {max(latencies):.3f} s   "
            f"ratio to 0.5 s target {median_click / SLICE_CHANGE_TARGET_S:.2f}"
        )
        render_ms = statistics.median(renders) * 1000
        print(f"server render + read-back per slice change (800×700): median {render_ms:.1f} ms")
        print(f"server peak RSS {peak:.0f} MB")
        load = os.getloadavg()[0]
        print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs (load {load:.2f}), Python {platform.python_version()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
