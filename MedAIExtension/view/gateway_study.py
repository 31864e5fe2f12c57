"""``medai view --study UID --config gateway.yaml``: review a study the gateway processed, from the PACS.

The gateway keeps no patient data once the PACS has its results, so the review fetches them back: the series the
job read and the DICOM SEG it stored (its UIDs are in the job's journal summary, see
:mod:`MedAIExtension.gateway.results`), verified like every retrieval, into the job's review folder
``<workdir>/review/job-<id>/`` (named by the journal id, never by PACS text). There they form an ordinary
segmentation result folder (``input/``, ``segmentation.dcm``, ``segmentation.nii.gz``, ``summary.json``), so the
review app shows it like any other, and the decisions land in ``review/decisions.sqlite`` next to them, where
``medai worklist`` reads them. "Export SR" also stores the decisions SR in the PACS. When the session ends the
retrieved images are removed again (:meth:`GatewayStudy.remove_images`); the decisions stay.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from MedAIExtension.atomic import atomic_path, ensure_writable_directory
from MedAIExtension.dicom.seg import read_dicom_seg, segment_value_map
from MedAIExtension.dicom.uids import check_uid
from MedAIExtension.errors import InputError
from MedAIExtension.gateway.config import load_config
from MedAIExtension.gateway.journal import Job, JobState, existing_journal
from MedAIExtension.gateway.pacs_store import GatewayStore, open_pacs_store
from MedAIExtension.gateway.results import job_folder, review_folder, stored_seg
from MedAIExtension.io.dicom_series import read_dicom_series
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.pacs.retrieval import retrieve_verified

__all__ = ["GatewayStudy", "open_gateway_study"]

#: What the review folder holds of the patient's images (removed at the end of the session).
_IMAGES = ("input", "segmentation.dcm", "segmentation.nii.gz", "summary.json")


@dataclass
class GatewayStudy:
    """A gateway job's result, fetched back from the PACS into ``folder`` (a segmentation result folder)."""

    folder: Path
    job: Job
    store: GatewayStore

    def store_in_pacs(self, path: Path) -> str:
        """Store the exported decisions SR ``path`` in the PACS; what happened, in words.

        Raises:
            PacsError: the PACS refused it or cannot be reached (the SR stays in the review folder).
        """
        outcome = self.store.store([path])
        return "stored in the PACS" if outcome.stored else "already in the PACS"

    def remove_images(self) -> None:
        """Remove the retrieved images (the gateway keeps no patient data); the decisions stay."""
        for name in _IMAGES:
            target = self.folder / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        (self.folder / "review" / "decisions.dcm").unlink(missing_ok=True)  # stored in the PACS by "Export SR"


def _finished_job(workdir: Path, study_uid: str, rule: str | None) -> Job:
    journal = existing_journal(workdir)
    try:
        jobs = [job for job in journal.jobs([JobState.DONE, JobState.SHADOW]) if job.study_uid == study_uid]
    finally:
        journal.close()
    reviewable = [job for job in jobs if stored_seg(job) is not None and rule in (None, job.rule)]
    if not reviewable:
        why = (
            f"the gateway finished no job of rule {rule!r} for it"
            if rule is not None and not any(job.rule == rule for job in jobs)
            else "its jobs stored no DICOM SEG (explanations) or ran before MedAI recorded what it stored (requeue it)"
            if jobs
            else "the gateway finished no job for it"
        )
        raise InputError(
            f"Study {study_uid} cannot be reviewed: {why}. `medai worklist --config ...` lists the finished studies."
        )
    rules = sorted({job.rule for job in reviewable})
    if len(rules) > 1:
        raise InputError(f"Study {study_uid} has results of the rules {', '.join(rules)}; pick one with --rule.")
    return max(reviewable, key=lambda job: (job.finished_at or 0.0, job.id))


def _segment_names(seg_path: Path) -> list[dict[str, Any]]:
    import pydicom

    dataset = pydicom.dcmread(seg_path, stop_before_pixels=True)
    values = segment_value_map(dataset)
    return [
        {"label": values[int(item.SegmentNumber)], "name": str(item.get("SegmentLabel", "") or item.SegmentNumber)}
        for item in dataset.get("SegmentSequence", [])
    ]


def _fetch(
    store: GatewayStore, job: Job, seg: Mapping[str, str], folder: Path, model: str | None, job_dir: Path
) -> None:
    """Retrieve the job's series and SEG (a shadow job's SEG: from its job folder ``job_dir``) into ``folder``
    and write the segmentation result files there."""
    import pydicom

    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=folder) as scratch:
        work = Path(scratch)
        series = retrieve_verified(store, job.study_uid, job.series_uid, work / "input")
        if not series.files:
            raise InputError(
                f"No image of series {job.series_uid} could be retrieved from the PACS (every instance was refused)."
            )
        if job.state is JobState.SHADOW:  # shadow mode stored nothing: the results are still in the job folder
            candidates = [job_dir / name for name in job.results if (job_dir / name).is_file()]
            where = f"the job folder {job_dir}"
        else:
            candidates = list(retrieve_verified(store, job.study_uid, seg["series_uid"], work / "result").files)
            where = "the PACS"
        matches = [
            path
            for path in candidates
            if str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
            == seg["sop_uid"]
        ]
        if not matches:
            raise InputError(
                f"The AI result (SEG {seg['sop_uid']}) of study {job.study_uid} is no longer in {where}; it may "
                "have been deleted there. Decisions already made stay in the gateway's review folder."
            )
        image = read_dicom_series(work / "input")
        labels = read_dicom_seg(matches[0], image)
        summary = {
            "input": "input",
            "algorithm": {"name": model or ""},
            "statistics": _segment_names(matches[0]),
            "gateway": {"job": job.id, "rule": job.rule},
        }
        shutil.copyfile(matches[0], work / "segmentation.dcm")
        write_volume_file(labels, work / "segmentation.nii.gz")
        with atomic_path(work / "summary.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        # The label map last: its presence says the folder is complete.
        for name in ("input", "segmentation.dcm", "summary.json", "segmentation.nii.gz"):
            target = folder / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(work / name, target)


def open_gateway_study(
    config_path: str | os.PathLike[str],
    study_uid: str,
    rule: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> GatewayStudy:
    """Fetch the latest reviewable result of ``study_uid`` (of ``rule``, needed when several rules made one) from the
    gateway's PACS, or reuse the one fetched before.

    Raises:
        InputError: a bad config, a study UID that is not one, no reviewable job for the study, or a result the
            PACS no longer holds.
        PacsUnavailableError, PacsAuthError, PacsTransferError: the PACS cannot give the study back now.
    """
    uid = check_uid(study_uid, "--study value")
    config = load_config(config_path)
    job = _finished_job(config.workdir, uid, rule)
    seg = stored_seg(job)
    assert seg is not None  # _finished_job keeps only jobs with a SEG
    store = open_pacs_store(config.pacs, environ)
    folder = ensure_writable_directory(review_folder(config.workdir, job))
    if not (folder / "segmentation.nii.gz").is_file():
        model = next((rule.model for rule in config.rules if rule.name == job.rule), None)
        _fetch(store, job, seg, folder, model, job_folder(config.workdir, job))
    return GatewayStudy(folder, job, store)
