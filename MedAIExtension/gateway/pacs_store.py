"""The gateway's PACS connection, by the configuration's ``pacs.type``: DICOMweb (Orthanc or any DICOMweb server)
or classic DICOM networking (DIMSE: C-FIND / C-GET / C-STORE with pynetdicom)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from MedAIExtension.gateway.config import PacsSettings
from MedAIExtension.pacs.credentials import credentials_from_config
from MedAIExtension.pacs.dicomweb import DicomWebStore
from MedAIExtension.pacs.dimse import DimseStore

__all__ = ["GatewayStore", "open_pacs_store"]

#: What the gateway reads studies from and stores results into.
GatewayStore = DicomWebStore | DimseStore


def open_pacs_store(pacs: PacsSettings, environ: Mapping[str, str] | None = None) -> GatewayStore:
    """The store for ``pacs``: a :class:`DimseStore` for ``type: dimse``, else a :class:`DicomWebStore` with the
    credentials the configuration names (read from ``environ`` or files, never from the command line)."""
    if pacs.dimse is not None:
        return DimseStore(pacs.dimse)
    credentials = credentials_from_config(pacs.section, environ if environ is not None else os.environ)
    return DicomWebStore(pacs.dicomweb_url, credentials, pacs.timeout)
