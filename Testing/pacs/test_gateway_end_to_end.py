"""The PACS gateway end to end against a real Orthanc: a study arrives, SEG + SR land in the same study.

A baseline chest CT is uploaded by STOW-RS; the gateway sees Orthanc's StableStudy change, runs nodule tracking
and stores a DICOM SEG and a tracking SR back into the study (checked with dciodvfy after a WADO-RS retrieve).
The follow-up of the same patient is then tracked against that prior study, and its SR carries the prior
report's Tracking UIDs. Priorities land in Orthanc's study metadata, the SR and ``medai worklist``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from MedAIExtension.cli import main
from MedAIExtension.dicom.sr import read_exam_lung_rads, read_reading_priority, read_tracking_sr
from MedAIExtension.dicom.validation import run_dciodvfy
from MedAIExtension.gateway.journal import JobState, Journal
from MedAIExtension.pacs.dicomweb import DicomWebStore
from MedAIExtension.pacs.orthanc import OrthancClient
from MedAIExtension.phantom.followup import write_phantom_pair
from Testing.pacs.gateway_helpers import PHANTOM, config_data, series_by_modality, upload, write_config_file
from Testing.pacs.orthanc_server import OrthancServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gateway-pair")
    write_phantom_pair(root / "pair", baseline=PHANTOM, volume_factors=(1.5, 1.0))
    return root / "pair"


def _results(store: DicomWebStore, study_uid: str, folder: Path) -> tuple[Path, Path]:
    """Retrieve the study's one SEG and one SR by WADO-RS; fail unless there is exactly one of each."""
    series = series_by_modality(store, study_uid)
    assert [s.number_of_instances for s in series.get("SEG", [])] == [1], series
    assert [s.number_of_instances for s in series.get("SR", [])] == [1], series
    seg = store.retrieve_series(study_uid, series["SEG"][0].series_uid, folder / "seg")
    sr = store.retrieve_series(study_uid, series["SR"][0].series_uid, folder / "sr")
    return seg[0], sr[0]


def _assert_valid(*paths: Path) -> None:
    for path in paths:
        report = run_dciodvfy(path)
        assert report.ok, (path.name, report.errors)


def _gateway_once(config: Path) -> None:
    assert main(["gateway", "--config", str(config), "--once", "--quiet", "--max-seconds", "180"]) == 0


def test_gateway_stores_seg_and_sr_and_carries_tracking_uids(
    orthanc: OrthancServer, pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = DicomWebStore(orthanc.dicomweb_url)
    config = write_config_file(tmp_path / "gateway.yaml", config_data(orthanc.url, tmp_path / "work"))

    baseline_uid = upload(store, pair / "baseline/ct", orthanc.url)
    _gateway_once(config)
    base_seg, base_sr = _results(store, baseline_uid, tmp_path / "baseline")
    _assert_valid(base_seg, base_sr)
    base_groups = read_tracking_sr(base_sr)
    assert len(base_groups) == 2
    import pydicom

    assert {g["seg_sop_instance_uid"] for g in base_groups} == {str(pydicom.dcmread(base_seg).SOPInstanceUID)}
    assert read_exam_lung_rads(base_sr) == "4A"  # the 11 mm solid nodule at baseline
    assert read_reading_priority(base_sr) == 2

    followup_uid = upload(store, pair / "followup/ct", orthanc.url)
    _gateway_once(config)
    follow_seg, follow_sr = _results(store, followup_uid, tmp_path / "followup")
    _assert_valid(follow_seg, follow_sr)
    follow_groups = read_tracking_sr(follow_sr)
    assert {g["tracking_uid"]: g["tracking_id"] for g in follow_groups} == {
        g["tracking_uid"]: g["tracking_id"] for g in base_groups
    }
    assert all(g["time_point"] == "followup" for g in follow_groups)
    grown = [g for g in follow_groups if g["measurements"].get("volume_change_percent", {}).get("value", 0) > 30]
    assert len(grown) == 1  # the solid nodule grew by half; the ground-glass one is stable
    assert read_exam_lung_rads(follow_sr) == "4B" and read_reading_priority(follow_sr) == 1
    # the baseline study got nothing more (results go into the study that arrived)
    assert len(series_by_modality(store, baseline_uid)["SR"]) == 1

    orthanc_client = OrthancClient(orthanc.url)
    priorities = {
        uid: orthanc_client.get_metadata(orthanc_client.study_id(uid), "MedAIPriority")
        for uid in (baseline_uid, followup_uid)
    }
    assert priorities == {baseline_uid: "2", followup_uid: "1"}

    capsys.readouterr()
    assert main(["worklist", "--config", str(config), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["study_uid"], r["priority"]) for r in rows] == [(followup_uid, 1), (baseline_uid, 2)]
    assert rows[0]["patient_id"] == "MEDAI-PHANTOM" and rows[0]["reason"].startswith("Lung-RADS 4B")

    journal = Journal(tmp_path / "work" / "journal.sqlite")
    try:
        jobs = journal.jobs()
    finally:
        journal.close()
    assert [(job.state, job.attempts) for job in jobs] == [(JobState.DONE, 1), (JobState.DONE, 1)]
    assert jobs[1].summary["prior"] is True and jobs[1].summary["prior_report"] is True

    log = (tmp_path / "work" / "gateway.log").read_text(encoding="utf-8")
    events = [json.loads(line) for line in log.splitlines()]
    assert {"job_queued", "job_started", "job_results", "job_done"} <= {e["event"] for e in events}
    for secret in ("MEDAI-PHANTOM", "Phantom", baseline_uid, followup_uid):
        assert secret not in log  # no patient data and no study UIDs in the logs


def test_a_nodule_free_study_gets_a_negative_report(orthanc: OrthancServer, tmp_path: Path) -> None:
    from dataclasses import replace

    from MedAIExtension.phantom.study import write_phantom_study

    study = write_phantom_study(
        tmp_path / "study", spec=replace(PHANTOM, nodules=(), seed=6, spacing=(1.7, 1.7, 2.5)), patient_id="NEG-1"
    )
    store = DicomWebStore(orthanc.dicomweb_url)
    study_uid = upload(store, study["ct"], orthanc.url)
    config = write_config_file(tmp_path / "gateway.yaml", config_data(orthanc.url, tmp_path / "work"))
    _gateway_once(config)
    series = series_by_modality(store, study_uid)
    assert "SEG" not in series and [s.number_of_instances for s in series["SR"]] == [1]
    [sr] = store.retrieve_series(study_uid, series["SR"][0].series_uid, tmp_path / "sr")
    _assert_valid(sr)
    assert read_tracking_sr(sr) == [] and read_exam_lung_rads(sr) == "1" and read_reading_priority(sr) == 5
    client = OrthancClient(orthanc.url)
    assert client.get_metadata(client.study_id(study_uid), "MedAIPriority") == "5"
