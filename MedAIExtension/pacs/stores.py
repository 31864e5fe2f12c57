"""The DICOM store abstraction: search, retrieve and store series in a PACS or a folder.

:class:`DicomStore` is the protocol every store implements (:class:`~MedAIExtension.pacs.folder_store.FolderStore`,
:class:`~MedAIExtension.pacs.dicomweb.DicomWebStore`); :func:`open_store` builds one from a configuration section.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from MedAIExtension.errors import InputError

__all__ = [
    "STORE_TYPES",
    "DicomStore",
    "SeriesRecord",
    "StoreOutcome",
    "StudyRecord",
    "open_store",
]

#: The ``type`` values :func:`open_store` accepts.
STORE_TYPES = ("dicomweb", "folder")


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


def _setting(section: Mapping[str, Any], key: str, kind: str) -> str:
    value = section.get(key)
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise InputError(f"A PACS section of type {kind!r} needs `{key}`. Add it to the configuration.")
    return str(value)


def open_store(section: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> DicomStore:
    """Build a :class:`DicomStore` from a configuration section.

    Examples of sections::

        {"type": "dicomweb", "url": "http://127.0.0.1:8042/dicom-web", "username": "medai",
         "password_env": "MEDAI_PACS_PASSWORD", "timeout": 30}
        {"type": "folder", "path": "/data/pacs", "create": false}

    Args:
        section: the configuration section (``name`` optionally sets :attr:`DicomStore.name`).
        environ: environment variables for ``password_env`` / ``token_env`` (``os.environ`` when ``None``).

    Raises:
        InputError: unknown ``type``, a missing setting or unusable credentials.
    """
    kind = section.get("type")
    name = section.get("name")
    if kind == "dicomweb":
        from MedAIExtension.pacs.credentials import credentials_from_config
        from MedAIExtension.pacs.dicomweb import DicomWebStore

        timeout = section.get("timeout", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InputError(f"The PACS setting `timeout` must be a positive number of seconds, not {timeout!r}.")
        return DicomWebStore(
            _setting(section, "url", kind),
            credentials_from_config(section, environ),
            float(timeout),
            name=str(name) if name else None,
        )
    if kind == "folder":
        from MedAIExtension.pacs.folder_store import FolderStore

        return FolderStore(
            _setting(section, "path", kind), create=bool(section.get("create", False)), name=str(name) if name else None
        )
    raise InputError(
        f"Unknown PACS type {kind!r}. Set `type` to one of: {', '.join(STORE_TYPES)} "
        "(dicomweb: a DICOMweb server such as Orthanc; folder: a local or mounted folder)."
    )
