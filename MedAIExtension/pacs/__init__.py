"""Access to DICOM stores: a PACS through DICOMweb, Orthanc's REST API, or a plain folder.

Typical use::

    store = open_store({"type": "dicomweb", "url": "http://127.0.0.1:8042/dicom-web",
                        "username": "medai", "password_env": "MEDAI_PACS_PASSWORD"})
    store.check()
    for study in store.search_studies(patient_id="P1"):
        ...
"""

from __future__ import annotations

from MedAIExtension.pacs.credentials import Credentials, credentials_from_config
from MedAIExtension.pacs.dicomweb import DicomWebStore
from MedAIExtension.pacs.errors import (
    PacsAuthError,
    PacsError,
    PacsNotFoundError,
    PacsRejectedError,
    PacsUnavailableError,
)
from MedAIExtension.pacs.folder_store import FolderStore
from MedAIExtension.pacs.orthanc import Change, OrthancClient
from MedAIExtension.pacs.records import DicomStore, SeriesRecord, StoreOutcome, StudyRecord
from MedAIExtension.pacs.stores import STORE_TYPES, open_store

__all__ = [
    "STORE_TYPES",
    "Change",
    "Credentials",
    "DicomStore",
    "DicomWebStore",
    "FolderStore",
    "OrthancClient",
    "PacsAuthError",
    "PacsError",
    "PacsNotFoundError",
    "PacsRejectedError",
    "PacsUnavailableError",
    "SeriesRecord",
    "StoreOutcome",
    "StudyRecord",
    "credentials_from_config",
    "open_store",
]
