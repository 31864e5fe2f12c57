"""``medai view`` in a real browser: Debian's chromium, headless, driven by Playwright (no browser download).

A small chest phantom and a ``medai segment``-like result folder for it are served by the real ``medai view``
process on 127.0.0.1. The tests check the token (403 without it, on the page, its assets and the WebSocket), that the
page shows the CT in greys with the segmentation in the model's colours over the lungs, that a segment's visibility
switch and the opacity slider change the rendered pixels.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from MedAIExtension.io import write_volume_file
from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom
from MedAIExtension.segmentation.outputs import write_outputs
from MedAIExtension.view.decision_sr import read_decision_sr
from Testing.browser.view_session import (
    ViewServer,
    coloured,
    frame_pixels,
    launch_chromium,
    open_view,
    playwright_api,
    wait_for_first_frame,
    wait_for_frame_change,
)

MODEL = "chest-ct-lung-nodule"


@pytest.fixture(scope="module")
def result_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phantom CT and the folder ``medai segment`` would write for it (the phantom's true labels as the result)."""
    root = tmp_path_factory.mktemp("view")
    phantom = generate_chest_phantom(PhantomSpec(size_ijk=(96, 96, 40), spacing=(3.5, 3.5, 5.0), seed=1))
    ct = write_volume_file(phantom.ct, root / "ct.nii.gz")
    labels = load_catalog().get(MODEL).labels
    write_outputs(
        phantom.labels, labels, root / "result", "nii.gz", algorithm_name=MODEL, extra_summary={"input": str(ct)}
    )
    return root / "result"


@pytest.fixture(scope="module")
def server(result_folder: Path) -> Iterator[ViewServer]:
    running = ViewServer(result_folder)
    yield running
    running.stop()


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.mark.slow
def test_the_page_needs_the_token(server: ViewServer) -> None:
    assert server.url.startswith("http://127.0.0.1:") and len(server.token) >= 40
    assert _status(server.base + "/") == 403
    assert _status(server.base + "/index.html?token=wrong") == 403
    websocket = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    assert _status(server.base + "/ws", websocket) == 403
    assert _status(server.url) == 200
    assert all(server.token not in line for line in server.lines if not line.startswith("MedAI view: "))


@pytest.mark.slow
def test_the_browser_shows_the_segmentation_and_its_switches_change_the_pixels(server: ViewServer) -> None:
    lung = next(label for label in load_catalog().get(MODEL).labels if label.name == "Lung")
    with playwright_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            started = time.monotonic()
            page.goto(server.url)
            wait_for_first_frame(page)
            first_frame_s = time.monotonic() - started
            page.wait_for_timeout(1000)
            shown = frame_pixels(page)
            overlay = coloured(shown)
            # The overlay covers the lungs: a good part of the frame, in the Lung segment's colour (blended).
            assert overlay.mean() > 0.05, f"no segmentation overlay in the frame (first frame {first_frame_s:.1f} s)"
            mean = shown[overlay].mean(axis=0)
            expected = np.array(lung.color) * 255
            assert np.argmax(mean) == np.argmax(expected), (mean, expected)  # blue-dominant, like the Lung colour
            if os.environ.get("MEDAI_VIEW_SCREENSHOT"):  # the README's picture: MEDAI_VIEW_SCREENSHOT=docs/images/…
                page.screenshot(path=os.environ["MEDAI_VIEW_SCREENSHOT"])

            page.get_by_label("Lung", exact=True).click()  # the Lung segment's visibility switch off
            hidden = wait_for_frame_change(page, shown)
            assert coloured(hidden).mean() < overlay.mean() / 5

            page.get_by_label("Lung", exact=True).click()  # on again, then the opacity slider to 0
            again = wait_for_frame_change(page, hidden)
            assert coloured(again).mean() > 0.05
            page.locator(".medai-opacity [role=slider]").first.focus()
            page.keyboard.press("Home")
            faded = wait_for_frame_change(page, again)
            assert coloured(faded).mean() < coloured(again).mean()
        finally:
            browser.close()


@pytest.fixture(scope="module")
def tracking_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``medai track`` result (classical detector) of a phantom pair whose first nodule grows 1.5x."""
    from MedAIExtension.cli import main
    from MedAIExtension.phantom.followup import write_phantom_pair
    from Testing.phantoms import SMALL_CHEST_TWO_NODULES

    root = tmp_path_factory.mktemp("view-track")
    write_phantom_pair(root / "pair", baseline=SMALL_CHEST_TWO_NODULES, volume_factors=(1.5, 1.0))
    argv = ["track", "--baseline", str(root / "pair/baseline/ct"), "--followup", str(root / "pair/followup/ct")]
    assert main([*argv, "--output", str(root / "out"), "--quiet", "--no-model"]) == 0
    return root / "out"


@pytest.mark.slow
def test_clicking_a_nodule_row_moves_the_slice_to_that_nodule(tracking_folder: Path) -> None:
    import json

    rows = json.loads((tracking_folder / "tracking.json").read_text())["nodules"]
    assert len(rows) == 2
    server = ViewServer(tracking_folder, "--user", "dr_track")
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                page = open_view(browser, server.url, 1300, 800)
                page.wait_for_timeout(1000)
                table = page.locator(".medai-nodules")
                assert [t.strip() for t in table.locator("tbody tr td:first-child").all_inner_texts()] == [
                    row["tracking_id"] for row in rows
                ]
                lines = page.locator(".medai-volume-chart svg polyline.series")  # the volume chart, one per nodule
                assert lines.count() == len(rows)
                for index, row in enumerate(rows):
                    (_, y0), (_, y1) = (
                        map(float, p.split(",")) for p in lines.nth(index).get_attribute("points").split()
                    )
                    grew = row["followup_volume_mm3"] > row["baseline_volume_mm3"]
                    assert (y1 < y0) == grew  # SVG y grows downwards: a growing nodule's line rises
                sliders = page.locator("[role=slider]")  # the slice sliders: baseline view (left), follow-up
                assert sliders.count() == 2
                baseline_slider, followup_slider = sliders.nth(0), sliders.nth(1)

                def position(slider: object) -> float:
                    return float(slider.get_attribute("aria-valuenow") or "nan")  # type: ignore[attr-defined]

                for index, row in enumerate(rows):
                    before = frame_pixels(page)
                    page.locator(f".medai-nodule-{index}").click()
                    shown = wait_for_frame_change(page, before)
                    # each view's axial slice passes through the nodule's centre in its study (within one slice)
                    assert abs(position(followup_slider) - row["followup_center_ras"][2]) <= 2.2, row
                    assert abs(position(baseline_slider) - row["baseline_center_ras"][2]) <= 2.2, row
                    assert coloured(shown).any()  # the nodule's segment is drawn on that slice
                # a verdict on the growing nodule, exported as the SR that references the follow-up SEG
                page.locator(".medai-decision-0 .medai-rejected").click()
                page.wait_for_function(
                    "document.querySelector('.medai-decision-0 .medai-decision-state').innerText.includes('rejected')"
                )
                page.locator(".medai-export").click()
                page.wait_for_function("document.querySelector('.medai-decision-message').innerText.includes('Export')")
                # linked navigation: a step in the follow-up view moves the baseline view along
                start = position(baseline_slider)
                followup_slider.focus()
                for _ in range(3):
                    page.keyboard.press("ArrowUp")
                page.wait_for_function(
                    "(v) => Math.abs(parseFloat(document.querySelectorAll('[role=slider]')[0]"
                    ".getAttribute('aria-valuenow')) - v) > 1",
                    arg=start,
                    timeout=10_000,
                )
            finally:
                browser.close()
    finally:
        server.stop()
    subjects = {subject.finding_id: subject for subject in read_decision_sr(tracking_folder / "review/decisions.dcm")}
    first = subjects[rows[0]["tracking_id"]]
    assert first.decision == "rejected" and first.entries[0].reader == "dr_track"
    assert first.segment_number is not None  # the nodule's segment in the follow-up SEG
