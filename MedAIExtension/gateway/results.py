"""What a gateway job stored in the PACS, and what a reader decided on it.

When a job's results are ready, the journal records the DICOM objects it made (:func:`describe_results`: modality,
series and SOP instance UID of each, no patient data), so that ``medai view --study UID --config gateway.yaml`` can
retrieve the study and its AI SEG from the PACS after the gateway deleted the job folder. The reader's decisions
are kept per job in ``<workdir>/review/job-<id>/`` (:func:`review_folder`, named by the journal id, never by PACS
text), and ``medai worklist`` shows them (:func:`review_status`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from MedAIExtension.dicom.uids import is_valid_uid
from MedAIExtension.errors import MedAIError
from MedAIExtension.gateway.journal import Job
from MedAIExtension.review.store.decisions import DECISIONS_FILE, DecisionStore

__all__ = [
    "RESULTS_KEY",
    "StoredObject",
    "describe_results",
    "job_folder",
    "review_folder",
    "review_status",
    "stored_seg",
]

#: The key of the job summary that lists the stored DICOM objects.
RESULTS_KEY = "results_dicom"

StoredObject = dict[str, str]


def describe_results(files: Sequence[Path]) -> list[StoredObject]:
    """``{"modality", "series_uid", "sop_uid"}`` of each result file (the objects the gateway stores)."""
    import pydicom

    described = []
    for path in files:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["Modality", "SeriesInstanceUID", "SOPInstanceUID"]
        )
        described.append(
            {
                "modality": str(ds.get("Modality", "")),
                "series_uid": str(ds.get("SeriesInstanceUID", "")),
                "sop_uid": str(ds.get("SOPInstanceUID", "")),
            }
        )
    return described


def stored_seg(job: Job) -> StoredObject | None:
    """The DICOM SEG a job stored (segmentation: the labels; tracking: the nodules of the study), or None (an
    explanation, or a job journaled before the objects were recorded)."""
    objects = job.summary.get(RESULTS_KEY)
    if not isinstance(objects, list):
        return None
    for item in objects:
        if (
            isinstance(item, dict)
            and item.get("modality") == "SEG"
            and is_valid_uid(str(item.get("series_uid", "")))
            and is_valid_uid(str(item.get("sop_uid", "")))
        ):
            return {key: str(item[key]) for key in ("modality", "series_uid", "sop_uid")}
    return None


def job_folder(workdir: Path, job: Job) -> Path:
    """The folder holding a job's retrieved series and results while it runs (a shadow job's results stay there)."""
    return workdir / "jobs" / str(int(job.id))


def review_folder(workdir: Path, job: Job) -> Path:
    """Where the review of a job's result lives (its decisions in ``review/decisions.sqlite``)."""
    return workdir / "review" / f"job-{int(job.id)}"


def review_status(workdir: Path, job: Job) -> str:
    """The reader's decisions on a job's result in a few words, e.g. ``"accepted by dr-a; findings: 2 accepted,
    1 rejected"``; ``""`` when nobody reviewed it."""
    path = review_folder(workdir, job) / DECISIONS_FILE
    if not path.is_file():
        return ""
    try:
        with DecisionStore.open(path) as store:
            latest = store.latest()
    except MedAIError as exc:
        return f"decisions unreadable ({exc})"
    study = latest.pop(("study", ""), None)
    words: list[str] = []
    if study is not None:
        words.append(f"{study.decision} by {study.reader}" if study.is_verdict else f"commented by {study.reader}")
    counts: dict[str, int] = {}
    for record in latest.values():
        counts[record.decision] = counts.get(record.decision, 0) + 1
    if counts:
        words.append("findings: " + ", ".join(f"{n} {d}" for d, n in sorted(counts.items())))
    return "; ".join(words)
