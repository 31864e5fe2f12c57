"""Sending each finished study's report to the RIS: an HL7 v2 ORU^R01 over MLLP, retried through the journal.

A nodule-tracking job writes its ORU into ``<job>/report/`` (:func:`~MedAIExtension.gateway.pipelines.run_pipeline`
with a ``ris`` section configured). Once its results are in the PACS the file moves to ``<workdir>/hl7-outbox/
job-<id>.hl7`` (named by the journal id, never by PACS text) and the journal queues it (:func:`queue_job_report`);
the FHIR DiagnosticReport, when configured, goes to ``ris.fhir_folder/job-<id>.json``. The gateway's loop sends
what is due (:func:`deliver_due_reports`): an ACK (AA) marks it sent and removes the file; a negative ACK, a
timeout or a refused connection puts it back with the job retry delays, up to ``max_attempts``, then marks it
failed (the file stays for an operator). Logs name the job and the outcome, never the message's content.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from MedAIExtension.atomic import ensure_writable_directory
from MedAIExtension.gateway.config import RisSettings
from MedAIExtension.gateway.journal import Journal
from MedAIExtension.gateway.pipelines import FHIR_NAME, ORU_NAME, REPORT_FOLDER

__all__ = ["OUTBOX_FOLDER", "deliver_due_reports", "outbox_file", "queue_job_report"]

#: The folder (in the work folder) of reports waiting for the RIS.
OUTBOX_FOLDER = "hl7-outbox"


def outbox_file(workdir: Path, job_id: int) -> Path:
    """Where job ``job_id``'s ORU waits for delivery."""
    return workdir / OUTBOX_FOLDER / f"job-{int(job_id)}.hl7"


def queue_job_report(journal: Journal, workdir: Path, job_dir: Path, job_id: int, ris: RisSettings | None) -> bool:
    """Move a finished job's report out of its folder (removed next) into the outbox and queue it; False when the
    job has none (no RIS configured, or not a nodule-tracking job)."""
    report = job_dir / REPORT_FOLDER
    if ris is None or not (report / ORU_NAME).is_file():
        return journal_has_report(journal, job_id)
    target = outbox_file(workdir, job_id)
    ensure_writable_directory(target.parent)
    os.replace(report / ORU_NAME, target)
    if ris.fhir_folder is not None and (report / FHIR_NAME).is_file():
        ensure_writable_directory(ris.fhir_folder)
        shutil.move(str(report / FHIR_NAME), str(ris.fhir_folder / f"job-{int(job_id)}.json"))
    journal.queue_report(job_id)
    return True


def journal_has_report(journal: Journal, job_id: int) -> bool:
    """Whether the journal already queued (or sent) the report of ``job_id`` (a job stored again after a crash)."""
    return any(item.job_id == job_id for item in journal.reports())


def _control_id(message: str) -> str:
    fields = message.split("\r", 1)[0].split("|")
    return fields[9] if len(fields) > 9 else ""


def deliver_due_reports(
    journal: Journal,
    workdir: Path,
    ris: RisSettings,
    retry_delay: Callable[[int], float],
    max_attempts: int,
    log: Callable[..., Any],
) -> int:
    """Send every report that is due; returns how many the RIS acknowledged."""
    from MedAIExtension.interop.mllp import Hl7DeliveryError, send_mllp  # lazy: only with a RIS configured

    sent = 0
    for item in journal.due_reports():
        path = outbox_file(workdir, item.job_id)
        if not path.is_file():
            journal.report_outcome(item.job_id, "failed", f"the report file {path.name} is missing")
            log("report_failed", level="error", job=item.job_id, error="report file missing")
            continue
        message = path.read_bytes().decode("utf-8")  # as written: HL7 segments end in \r, which text mode turns into \n
        try:
            send_mllp(message, ris.host, ris.port, ris.timeout)
        except Hl7DeliveryError as exc:
            attempts = item.attempts + 1
            if exc.retryable and attempts < max_attempts:
                delay = retry_delay(attempts)
                journal.report_outcome(item.job_id, "pending", str(exc), exc.control_id, delay)
                log("report_retry", level="warning", job=item.job_id, error=str(exc), retry_in=delay)
            else:
                journal.report_outcome(item.job_id, "failed", str(exc), exc.control_id)
                log("report_failed", level="error", job=item.job_id, error=str(exc), attempts=attempts)
            continue
        journal.report_outcome(item.job_id, "sent", "", _control_id(message))
        path.unlink(missing_ok=True)
        log("report_sent", job=item.job_id)
        sent += 1
    return sent
