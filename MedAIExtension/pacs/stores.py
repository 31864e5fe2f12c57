"""Opening a DICOM store: :func:`open_store` builds a :class:`~MedAIExtension.pacs.folder_store.FolderStore` or
a :class:`~MedAIExtension.pacs.dicomweb.DicomWebStore` from a configuration section.

The protocol they implement (:class:`~MedAIExtension.pacs.records.DicomStore`) and the records they return live in
:mod:`MedAIExtension.pacs.records`, so the stores do not import this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from MedAIExtension.errors import InputError
from MedAIExtension.pacs.credentials import credentials_from_config
from MedAIExtension.pacs.dicomweb import DicomWebStore
from MedAIExtension.pacs.folder_store import FolderStore
from MedAIExtension.pacs.records import DicomStore

__all__ = ["STORE_TYPES", "open_store"]

#: The ``type`` values :func:`open_store` accepts.
STORE_TYPES = ("dicomweb", "folder")


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
        return FolderStore(
            _setting(section, "path", kind), create=bool(section.get("create", False)), name=str(name) if name else None
        )
    raise InputError(
        f"Unknown PACS type {kind!r}. Set `type` to one of: {', '.join(STORE_TYPES)} "
        "(dicomweb: a DICOMweb server such as Orthanc; folder: a local or mounted folder)."
    )
