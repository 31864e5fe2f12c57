"""The gateway's segmentation and explainability pipelines on one study, against a real Orthanc and the shipped models.

Two rules match the same chest CT: the U-Net segments it (DICOM SEG, priority raised by the nodule it finds) and
Grad-CAM explains the nodule score of the same network (DICOM Parametric Map + Secondary Capture key slices). Both
land in the study and pass dciodvfy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from MedAIExtension.dicom.validation import run_dciodvfy
from MedAIExtension.gateway.journal import JobState, Journal
from MedAIExtension.gateway.logs import GatewayLog
from MedAIExtension.gateway.service import Gateway
from MedAIExtension.pacs.dicomweb import DicomWebStore
from MedAIExtension.phantom.study import write_phantom_study
from Testing.pacs.gateway_helpers import PHANTOM, make_config, series_by_modality, upload
from Testing.pacs.orthanc_server import OrthancServer

pytestmark = pytest.mark.slow

RULES = [
    {
        "name": "lung-segmentation",
        "match": {"modality": "CT", "body_part": "CHEST"},
        "pipeline": "segmentation",
        "model": "chest-ct-lung-nodule",
        "alert_labels": ["Lung lesion"],
    },
    {
        "name": "nodule-explanation",
        "match": {"modality": "CT", "body_part": "CHEST"},
        "pipeline": "explainability",
        "model": "chest-ct-lung-nodule-torch",
        "method": "gradcam",
        "sanity": False,
    },
]


def test_segmentation_and_explanation_land_in_the_study(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = write_phantom_study(tmp_path / "study", spec=PHANTOM)
    store = DicomWebStore(orthanc.dicomweb_url)
    study_uid = upload(store, study["ct"], orthanc.url)
    config = make_config(orthanc.url, tmp_path / "work", rules=RULES, device="cpu")
    gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
    try:
        gateway.run(once=True, max_seconds=600)
    finally:
        gateway.close()
    journal = Journal(config.workdir / "journal.sqlite")
    try:
        jobs = {job.rule: job for job in journal.jobs()}
    finally:
        journal.close()
    assert {rule: job.state for rule, job in jobs.items()} == {
        "lung-segmentation": JobState.DONE,
        "nodule-explanation": JobState.DONE,
    }
    segmentation = jobs["lung-segmentation"]
    assert segmentation.summary["volumes_ml"]["Lung lesion"] > 0.2 and segmentation.priority == 2
    assert segmentation.priority_reason.startswith("finding present: Lung lesion")
    assert jobs["nodule-explanation"].priority == 5

    series = series_by_modality(store, study_uid)
    assert [s.number_of_instances for s in series["SEG"]] == [1]
    assert sorted(s.description for s in series["OT"]) == [
        "MedAI Grad-CAM Lung lesion",
        "MedAI Grad-CAM Lung lesion (key slices)",
    ]
    objects = [
        *store.retrieve_series(study_uid, series["SEG"][0].series_uid, tmp_path / "seg"),
        *(
            path
            for item in series["OT"]
            for path in store.retrieve_series(study_uid, item.series_uid, tmp_path / item.series_uid)
        ),
    ]
    for path in objects:
        report = run_dciodvfy(path)
        assert report.ok, (path.name, report.errors)
