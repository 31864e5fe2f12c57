"""``medai view`` on ``medai explain`` results in a real browser (Debian's chromium, headless, via Playwright).

A small phantom chest with one 14 mm solid nodule is explained by the real ``medai explain``: Grad-CAM of the
shipped nodule classifier around the nodule (with its sanity checks), and the shipped U-Net's uncertainty map. The
viewer must draw the map in heat colours over the grey CT, fade it out when its opacity slider goes to 0, and show
the colour bar, the sanity verdicts in words and, for uncertainty, the per-segment table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from MedAIExtension.cli import main
from MedAIExtension.io import write_volume_file
from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.phantom import AnatomySpec, NoduleSpec, PhantomSpec, generate_chest_phantom
from MedAIExtension.review.store.decisions import DecisionStore
from Testing.browser.view_session import (
    ViewServer,
    coloured,
    frame_pixels,
    launch_chromium,
    open_view,
    playwright_api,
    wait_for_frame_change,
)

#: 96x80x40 voxels (about 1 s to write) with one nodule the classifier is sure of.
SPEC = PhantomSpec(
    size_ijk=(96, 80, 40),
    spacing=(2.5, 2.5, 3.0),
    seed=2,
    anatomy=AnatomySpec(body_semi_axes_mm=(105.0, 75.0), fat_mm=6.0, lung_height_mm=100.0),
    nodules=(NoduleSpec(14.0, "solid", lung="right", position=(0.4, 0.1, 0.4)),),  # above the middle slice
)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("view-explain")
    phantom = generate_chest_phantom(SPEC)
    ct = write_volume_file(phantom.ct, root / "ct.nii.gz")
    return {"root": root, "ct": ct, "nodule": phantom.truth["nodules"][0]}


def _explain(study: dict[str, Any], name: str, *args: str) -> Path:
    out = Path(study["root"]) / name
    argv = ["explain", "--input", str(study["ct"]), *args, "--output", str(out), "--no-dicom", "--quiet"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def gradcam_folder(study: dict[str, Any]) -> Path:
    roi = [repr(float(v)) for v in study["nodule"]["center_ras"]] + ["20.0"] * 3
    return _explain(study, "gradcam", "--model", "chest-ct-nodule-classifier", "--method", "gradcam", "--roi", *roi)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        try:
            yield launched
        finally:
            launched.close()


def _open(browser: Any, server: ViewServer) -> Any:
    page = open_view(browser, server.url, 1200, 800)
    page.wait_for_timeout(1000)
    return page


def _warm(pixels: np.ndarray) -> np.ndarray:
    """Heat-scale pixels: coloured with red above blue (the CT is grey, the heat table runs black-red-yellow)."""
    return coloured(pixels) & (pixels[..., 0] > pixels[..., 2] + 30)


def _peak_ras(path: Path) -> np.ndarray:
    values = read_volume_file(path)
    k, j, i = np.unravel_index(int(np.argmax(values.array)), values.shape)
    return (values.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]


@pytest.mark.slow
def test_the_heat_map_is_drawn_and_its_opacity_slider_fades_it(gradcam_folder: Path, browser: Any) -> None:
    document = json.loads((gradcam_folder / "explanation.json").read_text(encoding="utf-8"))
    assert Path(document["input_path"]).is_absolute() and Path(document["input_path"]).is_file()
    server = ViewServer(gradcam_folder)
    try:
        page = _open(browser, server)
        peak = _peak_ras(gradcam_folder / document["files"]["map_nifti"])
        slider = page.locator("main [role=slider]").first  # the slice slider under the view: on the map's peak
        assert abs(float(slider.get_attribute("aria-valuenow") or "nan") - peak[2]) <= SPEC.spacing[2]
        shown = frame_pixels(page)
        warm = _warm(shown)
        assert warm.mean() > 0.003, f"no heat colours in the frame ({warm.mean():.4f} of its pixels)"
        page.locator(".medai-heatmap-opacity [role=slider]").first.focus()
        page.keyboard.press("Home")  # opacity 0: the CT alone
        faded = wait_for_frame_change(page, shown)
        assert _warm(faded).mean() < warm.mean() / 10
        assert float(page.locator(".medai-heatmap-opacity [role=slider]").first.get_attribute("aria-valuenow")) == 0

        bar = page.locator(".medai-colour-bar")
        assert "linear-gradient" in bar.locator("div").first.get_attribute("style")
        assert bar.locator(".medai-colour-bar-min").inner_text() == "0"
        assert bar.locator(".medai-colour-bar-max").inner_text() == "1"
        assert document["display"]["unit"] in bar.inner_text()
        sanity = page.locator(".medai-sanity").inner_text()
        verdict = document["sanity"]["randomisation"]["verdict"]
        assert f"Model randomisation test: {verdict}" in sanity
        assert document["sanity"]["faithfulness"]["summary"][:60] in sanity
        assert page.locator(".medai-uncertainty").count() == 0

        # The reader's verdict on the explanation as a whole is stored; this NIfTI study has no DICOM to join, and
        # the export says so instead of failing silently.
        page.locator(".medai-decision-study .medai-rejected").click()
        page.wait_for_function(
            "document.querySelector('.medai-decision-study .medai-decision-state').innerText.includes('rejected')"
        )
        page.locator(".medai-export").click()
        page.wait_for_function(
            "document.querySelector('.medai-decision-message').innerText.includes('no DICOM SEG or Parametric Map')"
        )
    finally:
        server.stop()
    with DecisionStore.for_result(gradcam_folder) as decisions:
        verdict = decisions.study_decision()
    assert verdict is not None and verdict.decision == "rejected"


@pytest.mark.slow
def test_an_uncertainty_result_shows_its_per_segment_table(study: dict[str, Any], browser: Any) -> None:
    folder = _explain(
        study, "uncertainty", "--model", "chest-ct-lung-nodule", "--method", "uncertainty", "--tta-flips", "1"
    )
    segments = json.loads((folder / "explanation.json").read_text(encoding="utf-8"))["uncertainty"]["segments"]
    server = ViewServer(folder)
    try:
        page = _open(browser, server)
        table = page.locator(".medai-uncertainty")
        names = [t.strip() for t in table.locator("tbody tr td:first-child").all_inner_texts()]
        assert names == [segment["name"] for segment in segments] and names
        first = table.locator("tbody tr").first.locator("td").all_inner_texts()
        assert float(first[2]) == pytest.approx(segments[0]["mean_entropy"], rel=1e-2)
        assert "No sanity checks were run" in page.locator(".medai-sanity").inner_text()
        assert coloured(frame_pixels(page)).mean() > 0.01  # the map (and the segmentation) over the CT
    finally:
        server.stop()


def test_a_folder_without_its_study_asks_for_image(gradcam_folder: Path, tmp_path: Path) -> None:
    from MedAIExtension.errors import InputError
    from MedAIExtension.view.inputs import resolve_view_input

    moved = tmp_path / "result"
    moved.mkdir()
    document = json.loads((gradcam_folder / "explanation.json").read_text(encoding="utf-8"))
    (moved / "explanation.json").write_text(json.dumps({**document, "input_path": str(tmp_path / "gone.nii.gz")}))
    with pytest.raises(InputError, match="--image"):
        resolve_view_input(moved)
    shown = resolve_view_input(moved, image=document["input_path"])
    assert shown.explanation == moved and shown.image == Path(document["input_path"])
