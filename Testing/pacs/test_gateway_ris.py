"""The gateway wired between a PACS (over DIMSE) and a RIS (HL7 over MLLP), against real servers on loopback.

A chest CT goes into pynetdicom's qrscp archive; the gateway (``pacs.type: dimse``, a ``ris`` section) tracks its
nodules and stores SEG, SR and a Presentation State back; then it sends the study's ORU^R01 to a real MLLP listener
that answers the first try with a negative ACK: the journal retries it, the second is acknowledged, the RIS got the
same message twice (same control id) with the priority and Lung-RADS in it, the FHIR DiagnosticReport is in its
folder and nothing waits in the outbox. A second gateway run sends nothing again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import hl7
import pydicom
import pytest

from MedAIExtension.cli import main
from MedAIExtension.dicom.validation import run_dciodvfy
from MedAIExtension.gateway.config import load_config
from MedAIExtension.gateway.journal import JobState, Journal
from MedAIExtension.gateway.logs import GatewayLog
from MedAIExtension.gateway.report_delivery import OUTBOX_FOLDER
from MedAIExtension.gateway.service import Gateway
from MedAIExtension.phantom.study import write_phantom_study
from Testing.mllp_listener import Listener
from Testing.pacs.dimse_archive import DimseArchive
from Testing.pacs.gateway_helpers import PHANTOM, RULE_LUNG, write_config_file

pytest.importorskip("sqlalchemy")  # qrscp's index; make test installs it

pytestmark = pytest.mark.slow

PR_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"


def _run(config_file: Path) -> None:
    config = load_config(config_file)
    gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
    try:
        gateway.run(once=True, max_seconds=240)
    finally:
        gateway.close()


def test_results_go_to_the_pacs_and_the_report_to_the_ris_after_a_negative_ack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = DimseArchive(tmp_path / "archive")
    listener = Listener(modes=["AE"])  # the RIS refuses the first try
    try:
        study = write_phantom_study(tmp_path / "study", spec=PHANTOM)
        files = sorted(Path(study["ct"]).glob("*.dcm"))
        store = archive.store()
        store.store(files)
        study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        data = {
            "pacs": {"type": "dimse", "host": "127.0.0.1", "port": archive.port, "called_ae": archive.ae_title,
                     "calling_ae": "MEDAI", "poll_seconds": 0.3, "timeout": 10},
            "ris": {"host": "127.0.0.1", "port": listener.port, "timeout": 5, "receiving_application": "RIS",
                    "fhir_folder": str(tmp_path / "fhir")},
            "workdir": str(tmp_path / "work"),
            "max_attempts": 4,
            "retry_seconds": [0.5, 1, 2],
            "rules": [dict(RULE_LUNG)],
        }  # fmt: skip
        config_file = write_config_file(tmp_path / "gateway.yaml", data)
        _run(config_file)
        _run(config_file)  # nothing is stored or sent twice

        work = tmp_path / "work"
        journal = Journal(work / "journal.sqlite")
        try:
            (job,) = journal.jobs()
            (report,) = journal.reports()
        finally:
            journal.close()
        assert job.state is JobState.DONE and job.priority == 2, job.detail
        assert (report.state, report.attempts) == ("sent", 2), report.detail
        assert not list((work / OUTBOX_FOLDER).iterdir())
        log = (work / "gateway.log").read_text(encoding="utf-8")
        assert '"report_retry"' in log and '"report_sent"' in log
        capsys.readouterr()
        assert main(["worklist", "--config", str(config_file), "--offline"]) == 0
        assert f"study {study_uid} - not reviewed; RIS report sent" in capsys.readouterr().out

        # The RIS received the same ORU twice; it carries the priority and the exam's Lung-RADS.
        assert len(listener.received) == 2
        first, second = (hl7.parse(text) for text in listener.received)
        assert str(first.segment("MSH")(10)) == str(second.segment("MSH")(10)) == report.control_id
        assert str(second.segment("MSH")(9)).startswith("ORU^R01") and str(second.segment("MSH")(5)) == "RIS"
        assert str(second.segment("OBR")(5)) == "A"  # priority 2 (Lung-RADS 4A): ASAP
        assert "4A" in str(second) and "PRELIMINARY" in str(second).upper()
        fhir = json.loads((tmp_path / "fhir" / f"job-{job.id}.json").read_text(encoding="utf-8"))
        assert fhir["resourceType"] == "DiagnosticReport" and fhir["status"] == "preliminary"

        # SEG, SR and the Presentation State are in the study, once each; the PR references the CT.
        series = {s.modality: s for s in store.search_series(study_uid)}
        assert set(series) == {"CT", "SEG", "SR", "PR"}
        assert [series[m].number_of_instances for m in ("SEG", "SR", "PR")] == [1, 1, 1]
        (pr_path,) = store.retrieve_series(study_uid, series["PR"].series_uid, tmp_path / "pr")
        pr = pydicom.dcmread(pr_path)
        assert pr.SOPClassUID == PR_CLASS
        referenced = {
            str(item.ReferencedSOPInstanceUID)
            for series_item in pr.ReferencedSeriesSequence
            for item in series_item.ReferencedImageSequence
        }
        ct_uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
        assert referenced and referenced <= ct_uids
        if shutil.which("dciodvfy"):
            assert run_dciodvfy(pr_path).errors == ()
    finally:
        listener.close()
        archive.stop()
