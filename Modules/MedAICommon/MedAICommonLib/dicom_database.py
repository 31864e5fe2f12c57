"""Slicer's DICOM database as a MedAI DICOM store (the third implementation of ``MedAIExtension.pacs.DicomStore``).

Results written by the modules (SEG, tracking SR, Parametric Map) are stored here so they appear in the DICOM
browser under their patient and study, next to the series they were computed from. Searching reads the
database's index (patients → studies → series → files) and the files' tags through ``ctkDICOMDatabase``.
This module needs Slicer (``slicer.dicomDatabase``, ``DICOMLib``); it is not importable headless.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import slicer

from MedAICommonLib.staging import temporaryFolder
from MedAIExtension.errors import InputError
from MedAIExtension.pacs.errors import PacsUnavailableError
from MedAIExtension.pacs.folder_store import read_header
from MedAIExtension.pacs.records import SeriesRecord, StoreOutcome, StudyRecord

__all__ = ["SlicerDicomDatabaseStore"]

_TAGS = {
    "PatientID": "0010,0020",
    "PatientName": "0010,0010",
    "StudyDate": "0008,0020",
    "AccessionNumber": "0008,0050",
    "StudyDescription": "0008,1030",
    "Modality": "0008,0060",
    "SeriesDescription": "0008,103E",
    "BodyPartExamined": "0018,0015",
    "SOPInstanceUID": "0008,0018",
}


class SlicerDicomDatabaseStore:
    """Search, retrieve and store through Slicer's DICOM database.

    Args:
        database: a ``ctkDICOMDatabase`` (default ``slicer.dicomDatabase``).
        importer: ``importDicom(folder, copyFiles=...)`` (default ``DICOMLib.DICOMUtils.importDicom``), which
            indexes the files and copies them into the database folder.
    """

    name = "Slicer DICOM database"

    def __init__(self, database: Any = None, importer: Callable[..., Any] | None = None) -> None:
        self.database = database if database is not None else getattr(slicer, "dicomDatabase", None)
        if importer is None:
            from DICOMLib import DICOMUtils

            importer = DICOMUtils.importDicom
        self._import = importer

    def check(self) -> None:
        """Raise :class:`PacsUnavailableError` when Slicer has no open DICOM database."""
        if self.database is None or not getattr(self.database, "isOpen", True):
            raise PacsUnavailableError(
                "Slicer's DICOM database is not open. Open the DICOM module once (it creates the database), then "
                "try again."
            )

    def _tag(self, path: str, keyword: str) -> str:
        return str(self.database.fileValue(path, _TAGS[keyword]) or "").strip()

    def _first_file(self, series_uid: str) -> str | None:
        files = self.database.filesForSeries(series_uid)
        return files[0] if files else None

    def search_series(self, study_uid: str) -> list[SeriesRecord]:
        """The series of a study in the database."""
        self.check()
        records = []
        for series_uid in self.database.seriesForStudy(study_uid):
            files = self.database.filesForSeries(series_uid)
            first = files[0] if files else ""
            records.append(
                SeriesRecord(
                    study_uid=study_uid,
                    series_uid=series_uid,
                    modality=self._tag(first, "Modality") if first else "",
                    description=self._tag(first, "SeriesDescription") if first else "",
                    body_part=self._tag(first, "BodyPartExamined") if first else "",
                    number_of_instances=len(files),
                )
            )
        return records

    def search_studies(
        self, patient_id: str | None = None, study_uid: str | None = None, modality: str | None = None
    ) -> list[StudyRecord]:
        """Studies in the database, optionally filtered by PatientID, StudyInstanceUID or a series modality."""
        self.check()
        found = []
        for patient in self.database.patients():
            for uid in self.database.studiesForPatient(patient):
                if study_uid is not None and uid != study_uid:
                    continue
                series = self.search_series(uid)
                first = next((self._first_file(s.series_uid) for s in series if s.number_of_instances), None)
                if first is None:
                    continue
                record = StudyRecord(
                    study_uid=uid,
                    patient_id=self._tag(first, "PatientID"),
                    patient_name=self._tag(first, "PatientName"),
                    study_date=self._tag(first, "StudyDate"),
                    accession_number=self._tag(first, "AccessionNumber"),
                    description=self._tag(first, "StudyDescription"),
                    modalities=tuple(sorted({s.modality for s in series if s.modality})),
                )
                if patient_id is not None and record.patient_id != patient_id:
                    continue
                if modality is not None and modality not in record.modalities:
                    continue
                found.append(record)
        return found

    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> list[Path]:
        """Copy a series' files into ``folder`` as ``<SOPInstanceUID>.dcm``."""
        self.check()
        if series_uid not in self.database.seriesForStudy(study_uid):
            raise InputError(f"Series {series_uid} is not in study {study_uid} of Slicer's DICOM database.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for path in self.database.filesForSeries(series_uid):
            target = folder / f"{self._tag(path, 'SOPInstanceUID') or Path(path).stem}.dcm"
            shutil.copyfile(path, target)
            out.append(target)
        return out

    def series_exists(self, study_uid: str, series_uid: str) -> bool:
        """Whether the database indexes the series in that study."""
        self.check()
        return series_uid in self.database.seriesForStudy(study_uid)

    def store(self, files: Sequence[Path]) -> StoreOutcome:
        """Import ``files`` (copied into the database folder); instances it already holds are not imported again."""
        self.check()
        new, present = [], []
        for path in files:
            uid = str(read_header(Path(path)).get("SOPInstanceUID", ""))  # InputError when not DICOM
            if not uid:
                raise InputError(f"{Path(path).name} has no SOPInstanceUID; only DICOM instances can be stored.")
            (present if self.database.fileForInstance(uid) else new).append((uid, Path(path)))
        if new:
            staging = Path(tempfile.mkdtemp(prefix="MedAI-DICOM-", dir=temporaryFolder()))
            try:
                for uid, path in new:
                    shutil.copyfile(path, staging / f"{uid}.dcm")
                self._import(str(staging), copyFiles=True)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return StoreOutcome(tuple(uid for uid, _ in new), tuple(uid for uid, _ in present))
