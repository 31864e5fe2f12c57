"""A radiologist's verdicts in ``medai view``, in a real browser: accept a finding, restart the server, the verdict is
still there, export the SR, and the SR (dciodvfy-clean) says who accepted what, referencing the AI result's SEG."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from MedAIExtension.dicom.validation import run_dciodvfy
from MedAIExtension.io import load_image
from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.phantom.study import write_phantom_study
from MedAIExtension.segmentation.outputs import write_outputs
from MedAIExtension.view.decision_sr import read_decision_sr
from MedAIExtension.view.decisions_panel import SR_NAME
from Testing.browser.view_session import ViewServer, launch_chromium, open_view, playwright_api

MODEL = "chest-ct-lung-nodule"
READER = "dr_browser"


@pytest.fixture(scope="module")
def dicom_result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small DICOM phantom study and a result folder for it with a DICOM SEG (the phantom's labels as result)."""
    root = tmp_path_factory.mktemp("view-decisions")
    written = write_phantom_study(root / "study", size_ijk=(64, 64, 24), spacing=(5.0, 5.0, 8.0), seed=2)
    image = load_image(written["ct"])
    labels = load_catalog().get(MODEL).labels
    write_outputs(
        load_image(written["labels"]),
        labels,
        root / "result",
        ["nii.gz", "dicom-seg"],
        source=image,
        algorithm_name=MODEL,
        extra_summary={"input": str(written["ct"])},
    )
    return root / "result"


def _open(server: ViewServer, playwright: object) -> tuple[object, object]:
    browser = launch_chromium(playwright)
    return browser, open_view(browser, server.url)


@pytest.mark.slow
def test_an_accepted_finding_survives_a_restart_and_is_in_the_exported_sr(dicom_result: Path) -> None:
    server = ViewServer(dicom_result, "--user", READER)
    try:
        with playwright_api.sync_playwright() as playwright:
            browser, page = _open(server, playwright)
            try:
                row = page.locator(".medai-decision-0")  # the first finding: the Lung segment
                assert "Lung" in row.inner_text()
                page.locator(".medai-comment input").fill("clean lung outline")
                row.locator(".medai-accepted").click()
                page.wait_for_function(
                    "document.querySelector('.medai-decision-0 .medai-decision-state').innerText.includes('accepted')"
                )
            finally:
                browser.close()  # type: ignore[attr-defined]
    finally:
        server.stop()

    server = ViewServer(dicom_result, "--user", READER)  # a new server process on the same result
    try:
        with playwright_api.sync_playwright() as playwright:
            browser, page = _open(server, playwright)
            try:
                state = page.locator(".medai-decision-0 .medai-decision-state").inner_text()
                assert state.strip() == "accepted"
                assert page.locator(".medai-decision-study .medai-decision-state").inner_text().strip() == ""
                page.locator(".medai-export").click()
                page.wait_for_function(
                    "document.querySelector('.medai-decision-message').innerText.includes('Exported')"
                )
            finally:
                browser.close()  # type: ignore[attr-defined]
    finally:
        server.stop()

    sr_path = dicom_result / SR_NAME
    subjects = {subject.finding_id: subject for subject in read_decision_sr(sr_path)}
    lung = subjects["Lung"]
    assert lung.decision == "accepted"
    assert [(e.decision, e.reader, e.comment) for e in lung.entries] == [("accepted", READER, "clean lung outline")]
    seg = pydicom.dcmread(dicom_result / "segmentation.dcm", stop_before_pixels=True)
    sr = pydicom.dcmread(sr_path)
    assert sr.StudyInstanceUID == seg.StudyInstanceUID
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert seg.SOPInstanceUID in evidence
    if shutil.which("dciodvfy"):
        report = run_dciodvfy(sr_path)
        assert not report.errors, report.errors
