"""A radiologist reviews a study the gateway processed: ``medai view --study UID --config gateway.yaml``.

A real Orthanc, a real gateway run (nodule tracking of a chest CT with two nodules), then the review: the study and
the AI SEG the gateway stored come back from the PACS into the job's review folder, the decisions are stored there,
``medai worklist`` shows them, the decisions SR lands in the PACS referencing the gateway's SEG, and the retrieved
images are removed when the review ends. In a real browser too (Playwright + Debian's chromium), when present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml

from MedAIExtension.cli import main
from MedAIExtension.dicom.seg import read_dicom_seg
from MedAIExtension.gateway.journal import JobState, Journal
from MedAIExtension.gateway.logs import GatewayLog
from MedAIExtension.gateway.results import stored_seg
from MedAIExtension.gateway.service import Gateway
from MedAIExtension.io.dicom_series import read_dicom_series
from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.pacs.dicomweb import DicomWebStore
from MedAIExtension.phantom.study import write_phantom_study
from MedAIExtension.review.store.decisions import DecisionStore, result_reference
from MedAIExtension.view.decision_sr import read_decision_sr, write_decision_sr
from MedAIExtension.view.gateway_study import open_gateway_study
from Testing.pacs.gateway_helpers import PHANTOM, config_data, series_by_modality, upload, write_config_file
from Testing.pacs.orthanc_server import OrthancServer

pytestmark = pytest.mark.slow

READER = "dr_gateway"


@pytest.fixture(scope="module")
def processed(shared_orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The phantom chest CT in Orthanc, tracked by a gateway run; its config file, work folder and study UID."""
    root = tmp_path_factory.mktemp("gateway-review")
    study = write_phantom_study(root / "study", spec=PHANTOM)
    store = DicomWebStore(shared_orthanc.dicomweb_url)
    study_uid = upload(store, study["ct"], shared_orthanc.url)
    data = config_data(shared_orthanc.url, root / "work")
    config_file = write_config_file(root / "gateway.yaml", data)
    from MedAIExtension.gateway.config import load_config

    config = load_config(config_file)
    gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
    try:
        gateway.run(once=True, max_seconds=300)
    finally:
        gateway.close()
    journal = Journal(config.workdir / "journal.sqlite")
    try:
        (job,) = journal.jobs()
    finally:
        journal.close()
    assert job.state is JobState.DONE, job.detail
    return {"config": config_file, "workdir": config.workdir, "study_uid": study_uid, "job": job, "store": store}


def _worklist(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["worklist", "--config", str(config), "--offline"]) == 0
    return capsys.readouterr().out


def test_the_stored_seg_comes_back_and_the_decisions_show_in_the_worklist(
    processed: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    config, study_uid, job = Path(str(processed["config"])), str(processed["study_uid"]), processed["job"]
    store = processed["store"]
    assert isinstance(store, DicomWebStore)
    seg = stored_seg(job)  # type: ignore[arg-type]
    assert seg is not None, "the journal does not record the SEG the gateway stored"
    assert not (Path(str(processed["workdir"])) / "jobs" / str(job.id)).exists()  # type: ignore[attr-defined]
    assert f"study {study_uid} - not reviewed" in _worklist(config, capsys)

    review = open_gateway_study(config, study_uid)
    folder = review.folder
    assert folder == Path(str(processed["workdir"])) / "review" / f"job-{job.id}"  # type: ignore[attr-defined]
    # The label map is the SEG in the PACS, on the retrieved series; the decisions reference that SEG.
    assert result_reference(folder) == seg["sop_uid"]
    image = read_dicom_series(folder / "input")
    from_pacs = read_dicom_seg(folder / "segmentation.dcm", image)
    labels = read_volume_file(folder / "segmentation.nii.gz")
    assert np.array_equal(np.asarray(labels.array), np.asarray(from_pacs.array))
    assert np.count_nonzero(np.asarray(labels.array)) > 50  # the two nodules
    names = {segment.SegmentLabel for segment in pydicom.dcmread(folder / "segmentation.dcm").SegmentSequence}
    assert len(names) == 2

    first = sorted(names)[0]
    with DecisionStore.for_result(folder) as decisions:
        decisions.add("rejected", READER, finding_id=first, comment="vessel", result_ref=seg["sop_uid"])
        decisions.add("accepted", READER, result_ref=seg["sop_uid"])
        sr_path = write_decision_sr(decisions, folder, folder / "review" / "decisions.dcm", author=READER)
    assert review.store_in_pacs(sr_path) == "stored in the PACS"
    listing = _worklist(config, capsys)
    assert f"study {study_uid} - reviewed: accepted by {READER}; findings: 1 rejected" in listing

    # The decisions SR is in the study, beside the gateway's own tracking SR, referencing the gateway's SEG.
    exported = pydicom.dcmread(sr_path)
    sr_series = {s.series_uid for s in series_by_modality(store, study_uid)["SR"]}
    assert str(exported.SeriesInstanceUID) in sr_series and len(sr_series) == 2
    assert str(exported.SOPInstanceUID) in store.instance_uids(study_uid, str(exported.SeriesInstanceUID))
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in exported.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert seg["sop_uid"] in evidence
    subjects = {subject.finding_id: subject for subject in read_decision_sr(sr_path)}
    assert subjects[first].decision == "rejected"

    # The end of the session removes the patient's images; the decisions stay and come back with the next review.
    review.remove_images()
    assert sorted(p.name for p in folder.iterdir()) == ["review"]
    assert not (folder / "review" / "decisions.dcm").exists()
    again = open_gateway_study(config, study_uid)
    assert (again.folder / "segmentation.nii.gz").is_file()
    with DecisionStore.for_result(again.folder) as decisions:
        assert decisions.study_decision(result_ref=seg["sop_uid"]).decision == "accepted"  # type: ignore[union-attr]
    again.remove_images()


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["--study", "1.2.3.4.5"], "--study and --config go together"),
        (["--study", "not-a-uid", "--config", "CONFIG"], "--study value"),
        (["--study", "1.2.826.0.1.3680043.8.498.1", "--config", "CONFIG"], "the gateway finished no job for it"),
        (["--study", "STUDY", "--config", "CONFIG", "--rule", "no-such-rule"], "no job of rule 'no-such-rule'"),
        (["somewhere", "--study", "STUDY", "--config", "CONFIG"], "not both"),
    ],
)
def test_a_study_that_cannot_be_reviewed_is_one_line_and_exit_2(
    processed: dict[str, object], arguments: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    replaced = [
        str(processed["config"]) if a == "CONFIG" else str(processed["study_uid"]) if a == "STUDY" else a
        for a in arguments
    ]
    capsys.readouterr()
    assert main(["view", *replaced]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_a_reader_accepts_the_study_in_the_browser_and_the_worklist_shows_it(
    processed: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    session = pytest.importorskip("Testing.browser.view_session")
    config, study_uid = str(processed["config"]), str(processed["study_uid"])
    server = session.ViewServer("--study", study_uid, "--config", config, "--user", "dr_browser")
    try:
        with session.playwright_api.sync_playwright() as playwright:
            browser = session.launch_chromium(playwright)
            try:
                page = session.open_view(browser, server.url)
                page.locator(".medai-decision-study .medai-accepted").click()
                page.wait_for_function(
                    "document.querySelector('.medai-decision-study .medai-decision-state').innerText"
                    ".includes('accepted')"
                )
                page.locator(".medai-export").click()
                page.wait_for_function(
                    "document.querySelector('.medai-decision-message').innerText.includes('stored in the PACS')"
                )
            finally:
                browser.close()
    finally:
        server.stop()
    assert "reviewed: accepted by dr_browser" in _worklist(Path(config), capsys)
    folder = Path(str(processed["workdir"])) / "review" / f"job-{processed['job'].id}"  # type: ignore[attr-defined]
    assert sorted(p.name for p in folder.iterdir()) == ["review"]  # the server removed the images on SIGTERM


def test_a_shadow_result_is_reviewed_from_the_work_folder(
    processed: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shadow mode stores nothing in the PACS (validating a model on live traffic): the review takes the SEG from
    the job folder and the study from the PACS, and the worklist with --shadow shows the decision."""
    from MedAIExtension.gateway.config import load_config

    data = yaml.safe_load(Path(str(processed["config"])).read_text(encoding="utf-8"))
    data.update(workdir=str(tmp_path / "shadow-work"), shadow=True)
    config_file = write_config_file(tmp_path / "shadow.yaml", data)
    config = load_config(config_file)
    gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
    try:
        gateway.run(once=True, max_seconds=300)
    finally:
        gateway.close()
    study_uid = str(processed["study_uid"])
    review = open_gateway_study(config_file, study_uid)
    assert review.job.state is JobState.SHADOW
    seg = stored_seg(review.job)
    assert seg is not None and result_reference(review.folder) == seg["sop_uid"]
    assert np.count_nonzero(np.asarray(read_volume_file(review.folder / "segmentation.nii.gz").array)) > 50
    with DecisionStore.for_result(review.folder) as decisions:
        decisions.add("rejected", READER, comment="shadow run: vessel", result_ref=seg["sop_uid"])
    review.remove_images()
    capsys.readouterr()
    assert main(["worklist", "--config", str(config_file), "--offline", "--shadow"]) == 0
    assert f"study {study_uid} - reviewed: rejected by {READER}" in capsys.readouterr().out
