"""The gateway's trust boundary: everything it reads from the PACS passes through :class:`PacsBoundary`.

The PACS is not trusted. Anyone who can store into it (a modality, a research upload) controls the text of every
"UID" the gateway later reads back: search answers, retrieved headers, the prior study's reports. So:

* every UID is checked against the DICOM UID grammar (:mod:`MedAIExtension.dicom.uids`) here, where it enters;
  an object whose UID is not a UID is *refused*: left out, logged (``uid_refused``, with what and why, never the
  value) and noted in the job's ``skipped`` list; the job goes on without it;
* Orthanc resource identifiers from the change feed are checked to be Orthanc identifiers before they go into a
  URL;
* retrieved series are verified (:func:`~MedAIExtension.pacs.retrieval.retrieve_verified`): every part parses,
  pixel data is complete, the count matches the PACS's list; a short transfer is a retryable fault;
* no file-system path is built from anything the PACS sent: job folders are named by the journal
  (``jobs/<id>/``), series folders by their role (``input``, ``prior``, ``prior-report/seg-1``), files by a counter.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from MedAIExtension.dicom.uids import uid_problem
from MedAIExtension.pacs.errors import PacsNotFoundError
from MedAIExtension.pacs.records import SeriesRecord, StudyRecord
from MedAIExtension.pacs.retrieval import InstanceSource, retrieve_verified

__all__ = ["BoundaryOrthanc", "BoundaryStore", "PacsBoundary", "PatientStudies", "Skipped"]

#: A job's list of refused objects: ``{"what": …, "reason": …}`` each.
Skipped = list[dict[str, str]]

_ORTHANC_ID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{8}){4}")
_DATE = re.compile(r"\d{8}")


class BoundaryStore(InstanceSource, Protocol):
    """What the boundary reads through DICOMweb (:class:`~MedAIExtension.pacs.dicomweb.DicomWebStore` is one)."""

    def search_series(self, study_uid: str) -> list[SeriesRecord]:
        """The series of a study (QIDO-RS)."""
        ...

    def find_patient_studies(self, patient_id: str) -> list[StudyRecord]:
        """The studies whose PatientID is exactly ``patient_id``."""
        ...


class BoundaryOrthanc(Protocol):
    """What the boundary reads through Orthanc's REST API (:class:`~MedAIExtension.pacs.orthanc.OrthancClient`)."""

    def study_uid(self, orthanc_id: str) -> str:
        """The StudyInstanceUID of an Orthanc study."""
        ...

    def find_studies(self, patient_id: str) -> list[dict[str, Any]]:
        """Orthanc's ``/tools/find`` answers for a PatientID."""
        ...


@dataclass(frozen=True)
class PatientStudies:
    """The studies of one patient, and whether the search can be trusted to have found them all.

    Attributes:
        studies: the studies whose PatientID is exactly the one asked for (their UIDs checked).
        trusted: False when something may be missing (a refused answer, a study without a readable date).
        reason: why it cannot be trusted ("" when trusted).
    """

    studies: tuple[StudyRecord, ...]
    trusted: bool = True
    reason: str = ""


class PacsBoundary:
    """The PACS as the gateway sees it: every answer checked before use.

    Args:
        store: the DICOMweb store (QIDO/WADO/STOW).
        orthanc: Orthanc's REST client when the PACS is Orthanc (change feed, ``/tools/find``), else None.
        log: the gateway log (``log(event, level=…, **fields)``).
    """

    def __init__(self, store: BoundaryStore, orthanc: BoundaryOrthanc | None, log: Callable[..., None]) -> None:
        self.store = store
        self.orthanc = orthanc
        self.log = log

    def refuse(self, skipped: Skipped, what: str, reason: str, **context: Any) -> None:
        """Record and log one refused object."""
        self.log("uid_refused", level="warning", what=what, reason=reason, **context)
        item = {"what": what, "reason": reason}
        if item not in skipped:
            skipped.append(item)

    def checked(self, value: str, what: str, skipped: Skipped, **context: Any) -> str | None:
        """``value`` when it is a UID; else None, with the refusal logged and added to ``skipped``."""
        problem = uid_problem(value)
        if problem is None:
            return value
        self.refuse(skipped, what, problem, **context)
        return None

    # -- discovery ------------------------------------------------------------------------------------------------

    def study_of_change(self, orthanc_id: str, skipped: Skipped) -> str | None:
        """The StudyInstanceUID of the study an Orthanc change names, or None when refused or deleted since."""
        if self.orthanc is None:
            raise ValueError("Orthanc changes name Orthanc studies: this boundary has no Orthanc client to ask.")
        if not _ORTHANC_ID.fullmatch(orthanc_id):
            self.refuse(skipped, "Orthanc study identifier of a change", "it is not an Orthanc identifier")
            return None
        try:
            study_uid = self.orthanc.study_uid(orthanc_id)
        except PacsNotFoundError:
            return None
        return self.checked(study_uid, "StudyInstanceUID of a stable study", skipped)

    def series(self, study_uid: str, skipped: Skipped) -> list[SeriesRecord]:
        """The series of a study (QIDO-RS), those whose SeriesInstanceUID is not a UID (or that name another
        study) left out."""
        kept = []
        for series in self.store.search_series(study_uid):
            if not self.checked(series.series_uid, f"SeriesInstanceUID of a {series.modality or '?'} series", skipped):
                continue
            if series.study_uid != study_uid:
                self.refuse(skipped, "series of a search answer", "it names another study than the one searched")
                continue
            kept.append(series)
        return kept

    # -- retrieval --------------------------------------------------------------------------------------------------

    def retrieve(self, study_uid: str, series_uid: str, folder: Path, skipped: Skipped) -> list[Path]:
        """Retrieve a series into ``folder`` (named by the caller), verified; refused instances noted.

        Raises:
            PacsTransferError: cut or short transfer (retry later).
            PacsNotFoundError: the PACS lists no instance of the series.
        """
        result = retrieve_verified(self.store, study_uid, series_uid, folder)
        for what, reason in result.refused:
            self.refuse(skipped, what, reason)
        if not result.files:
            raise PacsNotFoundError(
                f"No instance of series {series_uid} could be used: every one was refused (see the job's skipped "
                "list). Correct the series in the PACS, then re-queue the study."
            )
        return list(result.files)

    # -- prior studies ----------------------------------------------------------------------------------------------

    def patient_studies(self, patient_id: str, skipped: Skipped) -> PatientStudies:
        """Every study whose PatientID is exactly ``patient_id``, whatever characters it contains.

        Orthanc: its REST ``/tools/find`` (a JSON body, so nothing is percent-encoded), matched exactly here.
        Other DICOMweb servers: a broader QIDO-RS query filtered here
        (:meth:`~MedAIExtension.pacs.dicomweb.DicomWebStore.find_patient_studies`).
        """
        if self.orthanc is not None:
            found = _orthanc_patient_studies(self.orthanc, patient_id)
        else:
            found = self.store.find_patient_studies(patient_id)
        studies, doubts = [], []
        for study in found:
            if study.patient_id != patient_id:
                continue
            if self.checked(study.study_uid, "StudyInstanceUID of an earlier study of the patient", skipped) is None:
                doubts.append("an earlier study of the patient was refused")
                continue
            if not _DATE.fullmatch(study.study_date or ""):
                doubts.append("an earlier study of the patient has no readable StudyDate")
                continue
            studies.append(study)
        reason = "; ".join(sorted(set(doubts)))
        return PatientStudies(tuple(studies), not doubts, reason)

    def tracking_groups(self, groups: list[dict[str, Any]], skipped: Skipped) -> list[dict[str, Any]]:
        """The measurement groups of a prior tracking SR whose Tracking UID and referenced SEG instance are UIDs."""
        kept = []
        for group in groups:
            if not self.checked(str(group.get("tracking_uid") or ""), "Tracking UID of the prior report", skipped):
                continue
            seg = str(group.get("seg_sop_instance_uid") or "")
            if not self.checked(seg, "referenced SEG instance of the prior report", skipped):
                continue
            kept.append(group)
        return kept


def _orthanc_patient_studies(orthanc: BoundaryOrthanc, patient_id: str) -> list[StudyRecord]:
    records = []
    for item in orthanc.find_studies(patient_id):
        tags = {**item.get("PatientMainDicomTags", {}), **item.get("MainDicomTags", {})}
        records.append(
            StudyRecord(
                study_uid=str(tags.get("StudyInstanceUID", "")),
                patient_id=str(tags.get("PatientID", "")),
                patient_name="",
                study_date=str(tags.get("StudyDate", "")),
                accession_number="",
                description=str(tags.get("StudyDescription", "")),
                modalities=(),
            )
        )
    return records
