"""Correcting a segmentation in ``medai view``, in a real browser: the annotator picks the Lung segment and the paint
tool, paints a stroke with the mouse on the slice view, saves; the corrections folder holds a NIfTI label map that
differs from the result exactly under the stroke, a DICOM SEG (highdicom, dciodvfy) with the same segments, and the
provenance. A second stroke undone saves the first correction again, the first undone too the original.
Threshold-paint along a stroke from the mediastinum into the lung paints only the voxels in its intensity range."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from MedAIExtension.dicom import read_dicom_seg
from MedAIExtension.dicom.validation import run_dciodvfy
from MedAIExtension.io import load_image
from MedAIExtension.io.dicom_series import write_dicom_series
from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom
from MedAIExtension.segmentation.outputs import write_outputs
from Testing.browser.view_session import FRAME, ViewServer, launch_chromium, open_view, playwright_api

MODEL = "chest-ct-lung-nodule"
VERSION = "1.2"
ANNOTATOR = "dr_painter"
BRUSH_MM = 20.0


@pytest.fixture(scope="module")
def dicom_result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phantom CT as a DICOM series (odd sizes: the view's centre falls on a voxel) and a result folder for it."""
    root = tmp_path_factory.mktemp("view-editing")
    phantom = generate_chest_phantom(PhantomSpec(size_ijk=(97, 97, 25), spacing=(3.5, 3.5, 5.0), seed=1))
    write_dicom_series(phantom.ct, root / "ct", uid_seed="medai-view-editing")
    study = load_image(root / "ct")
    labels = load_catalog().get(MODEL).labels
    write_outputs(
        phantom.labels,
        labels,
        root / "result",
        "nii.gz",
        source=study,
        algorithm_name=MODEL,
        algorithm_version=VERSION,
        extra_summary={"input": str(root / "ct")},
    )
    return root / "result"


def _save(page: object, folder: Path) -> Path:
    """Click Save; the corrections sub-folder it wrote (once the page says so)."""
    corrections = folder / "corrections"
    before = set(corrections.iterdir()) if corrections.is_dir() else set()
    page.locator(".medai-save").click()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        new = (
            [p for p in corrections.iterdir() if p not in before and not p.name.startswith(".")]
            if (corrections.is_dir())
            else []
        )
        if new:
            assert len(new) == 1, new
            message = page.locator(".medai-save-message")  # type: ignore[attr-defined]
            message.filter(has_text=f"Saved {new[0]}").wait_for(timeout=5_000)
            return new[0]
        time.sleep(0.1)
    raise AssertionError("Save wrote no corrections folder")


def _edits(page: object, count: int) -> None:
    """Wait until the drawer counts ``count`` edits to undo (the server applied the strokes and undos)."""
    page.locator(".medai-edits").filter(has_text=f"Edits: {count}").wait_for(timeout=10_000)  # type: ignore[attr-defined]


def _stroke(page: object, dx: float, dy: float) -> None:
    """A left-button stroke on the slice view from its centre, ``dx``/``dy`` pixels long."""
    box = page.locator(FRAME).first.bounding_box()  # type: ignore[attr-defined]
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)  # type: ignore[attr-defined]
    page.wait_for_timeout(200)  # type: ignore[attr-defined]
    page.mouse.down()  # type: ignore[attr-defined]
    page.mouse.move(x + dx, y + dy, steps=6)  # type: ignore[attr-defined]
    page.mouse.up()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_paint_stroke_changes_the_saved_segmentation_and_undo_restores_it(dicom_result: Path) -> None:
    original = read_volume_file(dicom_result / "segmentation.nii.gz")
    lung = next(label for label in load_catalog().get(MODEL).labels if label.name == "Lung")
    lesion = next(label for label in load_catalog().get(MODEL).labels if label.name == "Lung lesion")
    server = ViewServer(dicom_result, "--user", ANNOTATOR)
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                page = open_view(browser, server.url)
                page.locator(".medai-edit-segment").click()  # the segment to edit: Lung lesion, then Lung
                page.get_by_role("option", name="Lung lesion", exact=True).click()
                page.locator(".medai-edit-segment").click()
                page.get_by_role("option", name="Lung", exact=True).click()
                brush = page.locator(".medai-brush [role=slider]").first
                brush.focus()
                for _ in range(int(BRUSH_MM - 10)):  # 10 mm by default, 1 mm per key
                    page.keyboard.press("ArrowRight")
                assert float(brush.get_attribute("aria-valuenow") or "nan") == BRUSH_MM
                page.locator(".medai-tool-paint").click()
                slice_s = float(page.locator(".v-main [role=slider]").last.get_attribute("aria-valuenow") or "nan")

                _stroke(page, 40, 0)
                _edits(page, 1)  # the stroke is applied
                first = _save(page, dicom_result)
                _stroke(page, 0, 40)  # a second stroke, undone: the first correction again
                _edits(page, 2)
                page.locator(".medai-undo").click()
                _edits(page, 1)
                second = _save(page, dicom_result)
                page.locator(".medai-undo").click()  # the first stroke undone too: the original again
                _edits(page, 0)
                third = _save(page, dicom_result)

                page.locator(".medai-edit-segment").click()  # a long stroke into the lung, painted as Lung lesion
                page.get_by_role("option", name="Lung lesion", exact=True).click()
                _stroke(page, 110, 0)
                _edits(page, 1)
                painted = _save(page, dicom_result)
                page.locator(".medai-undo").click()
                _edits(page, 0)
                page.locator(".medai-tool-threshold-paint").click()  # the same stroke, lung intensities only
                page.locator(".medai-threshold").wait_for(timeout=10_000)
                _stroke(page, 110, 0)
                _edits(page, 1)
                thresholded = _save(page, dicom_result)
            finally:
                browser.close()
    finally:
        server.stop()

    corrected = read_volume_file(first / "segmentation.nii.gz")
    assert corrected.same_grid(original)
    before, after = np.asarray(original.array), np.asarray(corrected.array)
    changed = np.argwhere(before != after)  # [k, j, i]
    assert len(changed) > 0, "the paint stroke changed nothing"
    assert (after[before != after] == lung.value).all()  # every changed voxel is newly Lung
    # Where the stroke was: it started at the view's centre (the volume's centre, in-plane) on the shown slice.
    ras_to_ijk = np.linalg.inv(original.ijk_to_ras)
    centre_ijk = (np.array(original.size_ijk) - 1) / 2
    slice_k = (ras_to_ijk @ [*(original.ijk_to_ras @ [*centre_ijk, 1])[:2], slice_s, 1])[2]
    assert set(changed[:, 0]) == {round(slice_k)}, (set(changed[:, 0]), slice_k)
    spacing = np.asarray(original.spacing)
    radius = BRUSH_MM / 2
    offset_mm = (changed[:, [2, 1]] - centre_ijk[:2]) * spacing[:2]  # (i, j) from the start of the stroke, in mm
    # The stroke runs along i (screen x) from the centre: every changed voxel lies within the brush radius of it.
    along = offset_mm[:, 0] * np.sign(offset_mm[:, 0].sum())
    distance = np.where(along < 0, np.hypot(along, offset_mm[:, 1]), np.abs(offset_mm[:, 1]))
    assert distance.max() <= radius + 0.75 * spacing[0], distance.max()
    assert np.ptp(offset_mm[:, 1]) >= BRUSH_MM - 2.5 * spacing[1]  # the brush's width across the stroke
    assert np.ptp(offset_mm[:, 0]) > np.ptp(offset_mm[:, 1]) + spacing[0]  # longer along the stroke
    # Under the start of the stroke every voxel that was not Lung is now Lung.
    k = round(slice_k)
    jj, ii = np.mgrid[0 : before.shape[1], 0 : before.shape[2]]
    disc = np.hypot((ii - centre_ijk[0]) * spacing[0], (jj - centre_ijk[1]) * spacing[1]) <= radius - spacing[0]
    assert (after[k][disc] == lung.value).all()

    seg = read_dicom_seg(first / "segmentation.dcm", original)  # highdicom reads it, back onto the grid
    assert np.array_equal(np.asarray(seg.array), after)
    if shutil.which("dciodvfy"):
        report = run_dciodvfy(first / "segmentation.dcm")
        assert not report.errors and not report.warnings, report.output
    provenance = json.loads((first / "provenance.json").read_text())
    assert (provenance["source_model"], provenance["model_version"]) == (MODEL, VERSION)
    assert provenance["annotator"] == ANNOTATOR
    assert Path(provenance["source_result"]) == dicom_result.resolve()
    lung_edit = next(row for row in provenance["edits"] if row["name"] == "Lung")
    assert lung_edit["voxels_added"] == len(changed) and lung_edit["voxels_removed"] == 0

    undone = read_volume_file(second / "segmentation.nii.gz")
    assert np.array_equal(np.asarray(undone.array), after)
    undone = read_volume_file(third / "segmentation.nii.gz")
    assert np.array_equal(np.asarray(undone.array), before)

    # Threshold-paint: the same stroke paints only the voxels whose CT value is in the range (-1000..-400 HU).
    ct = np.asarray(load_image(dicom_result.parent / "ct").array)
    stroke = np.asarray(read_volume_file(painted / "segmentation.nii.gz").array) != before
    in_range = stroke & (ct >= -1000) & (ct <= -400)
    assert 0 < np.count_nonzero(in_range) < np.count_nonzero(stroke)  # the stroke crosses lung and mediastinum
    expected = np.where(in_range, lesion.value, before)
    assert np.array_equal(np.asarray(read_volume_file(thresholded / "segmentation.nii.gz").array), expected)
