"""The gateway as a DICOM node (C-STORE SCP on 127.0.0.1), with real associations from pynetdicom senders.

The node refuses associations from calling AE titles it was not told about and instances whose UIDs are not UIDs
(nothing is written for them); a study sent by an allowed modality is handed over once complete. End to end: a
modality sends a chest CT to the gateway's node, the gateway tracks it and stores SEG, SR and Presentation State into
the PACS (pynetdicom's qrscp archive, over DIMSE), exactly once, and keeps none of the received images afterwards.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pydicom
import pytest

from MedAIExtension.gateway.config import ListenSettings, load_config
from MedAIExtension.gateway.dicom_node import INCOMING_FOLDER, DicomNode
from MedAIExtension.gateway.journal import JobState, Journal
from MedAIExtension.gateway.logs import GatewayLog
from MedAIExtension.gateway.service import Gateway
from MedAIExtension.pacs.dimse import DimseSettings, DimseStore
from MedAIExtension.pacs.errors import PacsAuthError, PacsRejectedError
from MedAIExtension.pacs.folder_store import FolderStore
from MedAIExtension.phantom.study import write_phantom_study
from Testing.pacs.dimse_archive import DimseArchive, free_port
from Testing.pacs.gateway_helpers import PHANTOM, RULE_LUNG, wait_for, write_config_file

pytestmark = pytest.mark.slow


def _sender(port: int, calling_ae: str) -> DimseStore:
    """A modality sending to the node (C-STORE only, as modalities do)."""
    return DimseStore(DimseSettings("127.0.0.1", port, "MEDAI", calling_ae, timeout=10), check_existing=False)


def test_unknown_callers_and_non_uids_are_refused(series_factory, tmp_path: Path) -> None:
    series = series_factory("node-refusals", patient_id="MEDAI-NODE-1", modality="CT", seed=7)
    incoming = FolderStore(tmp_path / "incoming", create=True)
    events: list[tuple[str, dict]] = []
    settings = ListenSettings("MEDAI", free_port(), "127.0.0.1", ("CT01",), stable_seconds=0.5)
    node = DicomNode(settings, incoming, lambda event, **fields: events.append((event, fields)))
    node.start()
    try:
        with pytest.raises(PacsAuthError, match="rejected MedAI's association"):
            _sender(settings.port, "INTRUDER").store(list(series.files))
        assert not list(incoming.root.rglob("*.dcm")) and events[-1][0] == "association_refused"

        hostile = tmp_path / "hostile.dcm"
        ds = pydicom.dcmread(series.files[0])
        ds.StudyInstanceUID = "../../outside"
        ds.save_as(hostile)
        with pytest.raises(PacsRejectedError):
            _sender(settings.port, "CT01").store([hostile])
        assert not list(tmp_path.rglob("outside*")) and not list(incoming.root.rglob("*.dcm"))

        outcome = _sender(settings.port, "CT01").store(list(series.files))
        assert sorted(outcome.stored) == sorted(series.sop_uids)
        assert node.take_stable() == []  # not yet: instances arrived less than stable_seconds ago
        stable = wait_for(node.take_stable, 5.0, "the study to be complete")
        assert [uid for uid, _ in stable] == [series.study_uid]
        assert node.take_stable(time.time() + 60) == []  # handed over once
        assert incoming.instance_uids(series.study_uid, series.series_uid) == set(series.sop_uids)
    finally:
        node.stop()


def test_a_modality_sends_a_study_and_the_results_land_in_the_pacs(tmp_path: Path) -> None:
    archive = DimseArchive(tmp_path / "archive")
    try:
        port = free_port()
        data = {
            "pacs": {"type": "dimse", "host": "127.0.0.1", "port": archive.port, "called_ae": archive.ae_title,
                     "calling_ae": "MEDAI", "poll_seconds": 0.3, "timeout": 10},
            "listen": {"ae_title": "MEDAI", "port": port, "address": "127.0.0.1",
                       "allowed_calling_aes": ["CT01"], "stable_seconds": 1},
            "workdir": str(tmp_path / "work"),
            "max_attempts": 3,
            "retry_seconds": [0.5, 1],
            "rules": [dict(RULE_LUNG)],
        }  # fmt: skip
        config = load_config(write_config_file(tmp_path / "gateway.yaml", data))
        gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
        runner = threading.Thread(target=gateway.run, kwargs={"max_seconds": 240}, daemon=True)
        runner.start()
        try:
            study = write_phantom_study(tmp_path / "study", spec=PHANTOM)
            files = sorted(Path(study["ct"]).glob("*.dcm"))
            wait_for(lambda: _answers(port), 30.0, "the DICOM node to listen")
            _sender(port, "CT01").store(files)
            study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
            jobs = wait_for(lambda: _finished(config.workdir), 180.0, "the job to finish")
        finally:
            gateway.stop()
            runner.join(30)
            gateway.close()
        assert [(job.study_uid, job.state) for job in jobs] == [(study_uid, JobState.DONE)], [j.detail for j in jobs]
        series = {s.modality: s for s in archive.store().search_series(study_uid)}
        assert set(series) == {"SEG", "SR", "PR"}  # the CT came to MedAI only; the results went to the PACS
        assert [series[m].number_of_instances for m in ("SEG", "SR", "PR")] == [1, 1, 1]
        assert not list((config.workdir / INCOMING_FOLDER).rglob("*.dcm"))  # no patient images kept
    finally:
        archive.stop()


def _answers(port: int) -> bool:
    try:
        _sender(port, "CT01").check()
    except Exception:  # noqa: BLE001 - not listening yet
        return False
    return True


def _finished(workdir: Path) -> list | None:
    journal = Journal(workdir / "journal.sqlite")
    try:
        jobs = journal.jobs()
    finally:
        journal.close()
    return jobs if jobs and all(job.state in (JobState.DONE, JobState.FAILED) for job in jobs) else None
