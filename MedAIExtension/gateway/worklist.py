"""``medai worklist``: the studies the gateway finished, most urgent first.

Rows come from the gateway journal (priority, reason, state, when) and are completed with the study's
identifying attributes read from the PACS at display time (the journal itself holds no patient data). Jobs that
failed for good are listed after them with their reason (:func:`failed_rows`), to be re-queued once fixed. A study a
reader reviewed in ``medai view --study UID --config gateway.yaml`` shows the decisions (``review``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from MedAIExtension.gateway.journal import JobState, Journal
from MedAIExtension.gateway.results import review_status
from MedAIExtension.pacs.records import DicomStore

__all__ = ["WorklistRow", "failed_rows", "worklist_rows"]


@dataclass(frozen=True)
class WorklistRow:
    """One study on the worklist (``priority`` 0 and ``state`` "failed" for a failed job); ``review`` is the reader's
    decisions in a few words (``""``: not reviewed), ``ris_report`` the state of its HL7 report to the RIS
    (``sent``, ``pending``, ``failed``; ``""`` when none is sent)."""

    priority: int
    label: str
    reason: str
    state: str
    rule: str
    study_uid: str
    finished_at: float | None
    patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""
    accession_number: str = ""
    description: str = ""
    review: str = ""
    ris_report: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def worklist_rows(
    journal: Journal,
    store: DicomStore | None = None,
    include_shadow: bool = False,
    workdir: Path | None = None,
) -> list[WorklistRow]:
    """Finished jobs with a priority, sorted by priority then by when they finished (oldest first).

    Args:
        journal: the gateway journal.
        store: the PACS store for patient/study attributes (None: leave them empty).
        include_shadow: also list shadow-mode results (never sent to the PACS).
        workdir: the gateway's work folder, for the reader's decisions (None: leave ``review`` empty).
    """
    states = [JobState.DONE, *([JobState.SHADOW] if include_shadow else [])]
    jobs = [job for job in journal.jobs(states) if job.priority is not None]
    jobs.sort(key=lambda job: (job.priority, job.finished_at or 0.0, job.id))
    reports = {item.job_id: item.state for item in journal.reports()}
    rows = []
    for job in jobs:
        tags: dict[str, str] = {}
        if store is not None:
            found = store.search_studies(study_uid=job.study_uid)
            if found:
                study = found[0]
                tags = {
                    "patient_id": study.patient_id,
                    "patient_name": study.patient_name,
                    "study_date": study.study_date,
                    "accession_number": study.accession_number,
                    "description": study.description,
                }
        rows.append(
            WorklistRow(
                priority=int(job.priority or 5),
                label=job.priority_label,
                reason=job.priority_reason,
                state=job.state.value,
                rule=job.rule,
                study_uid=job.study_uid,
                finished_at=job.finished_at,
                review=review_status(workdir, job) if workdir is not None else "",
                ris_report=reports.get(job.id, ""),
                **tags,
            )
        )
    return rows


def failed_rows(journal: Journal) -> list[WorklistRow]:
    """Jobs that failed for good, oldest first, with the reason (``reason``) and what was refused on the way."""
    rows = []
    for job in journal.jobs([JobState.FAILED]):
        reason = job.detail
        if job.skipped:
            reason += f" [refused: {'; '.join(item['what'] + ' - ' + item['reason'] for item in job.skipped)}]"
        rows.append(
            WorklistRow(
                priority=0,
                label="failed",
                reason=reason,
                state=job.state.value,
                rule=job.rule,
                study_uid=job.study_uid,
                finished_at=job.finished_at,
            )
        )
    return rows
