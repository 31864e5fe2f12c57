"""What every DICOM store speaks: the :class:`DicomStore` protocol (search, retrieve and store series in a PACS or
a folder) and the records it returns (:class:`StudyRecord`, :class:`SeriesRecord`, :class:`StoreOutcome`).

The stores (:class:`~MedAIExtension.pacs.folder_store.FolderStore`,
:class:`~MedAIExtension.pacs.dicomweb.DicomWebStore`) and :func:`~MedAIExtension.pacs.stores.open_store` import
from here, so none of them imports another's module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["DicomStore", "SeriesRecord", "StoreOutcome", "StudyRecord"]


@dataclass(frozen=True)
class StudyRecord:
    """One study found by :meth:`DicomStore.search_studies`.

    Attributes:
        study_uid: StudyInstanceUID.
        patient_id: PatientID.
        patient_name: PatientName as DICOM text (``Family^Given``).
        study_date: StudyDate as ``YYYYMMDD``, or ``""`` when unknown.
        accession_number: AccessionNumber (may be ``""``).
        description: StudyDescription (may be ``""``).
        modalities: modalities of the study's series, sorted.
    """

    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    accession_number: str
    description: str
    modalities: tuple[str, ...]


@dataclass(frozen=True)
class SeriesRecord:
    """One series found by :meth:`DicomStore.search_series`.

    Attributes:
        number_of_instances: how many instances the store holds, or ``None`` when the store does not say.
    """

    study_uid: str
    series_uid: str
    modality: str
    description: str
    body_part: str
    number_of_instances: int | None


@dataclass(frozen=True)
class StoreOutcome:
    """What :meth:`DicomStore.store` did.

    Attributes:
        stored: SOPInstanceUIDs written by this call.
        already_present: SOPInstanceUIDs the store held already (not sent or written again).
    """

    stored: tuple[str, ...] = ()
    already_present: tuple[str, ...] = ()


@runtime_checkable
class DicomStore(Protocol):
    """A place to search, retrieve and store DICOM series (a PACS, or a folder).

    Every method raises :class:`~MedAIExtension.pacs.errors.PacsUnavailableError` when the store cannot be
    reached (retryable) and :class:`~MedAIExtension.pacs.errors.PacsAuthError` when it refuses the credentials.
    """

    #: A human-readable name (URL or folder) for messages and logs; never holds a secret.
    name: str

    def check(self) -> None:
        """Check that the store is reachable and accepts the credentials."""
        ...

    def search_studies(
        self, patient_id: str | None = None, study_uid: str | None = None, modality: str | None = None
    ) -> list[StudyRecord]:
        """The studies matching all given filters (exact match; ``modality``: any series of that modality)."""
        ...

    def search_series(self, study_uid: str) -> list[SeriesRecord]:
        """The series of a study (empty when the study is unknown)."""
        ...

    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> list[Path]:
        """Write every instance of a series as ``folder/<SOPInstanceUID>.dcm``; return the paths."""
        ...

    def store(self, files: Sequence[Path]) -> StoreOutcome:
        """Store DICOM files; raises :class:`~MedAIExtension.pacs.errors.PacsRejectedError` for refused ones."""
        ...

    def series_exists(self, study_uid: str, series_uid: str) -> bool:
        """Whether the store holds (at least one instance of) the series."""
        ...
