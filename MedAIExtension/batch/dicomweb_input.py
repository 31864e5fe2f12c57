"""``medai batch --input dicomweb:<query>``: a cohort's studies found on a DICOMweb server, retrieved by the workers.

The query is QIDO-RS series matching written as a URL query string after ``dicomweb:``, e.g.
``dicomweb:Modality=CT&StudyDate=20240101-20241231&BodyPartExamined=CHEST``; ``Modality=CT`` is added when the
query names no modality (a result series, SEG or SR, is not a study to segment). Where the server is and how to log
in comes from the gateway's configuration file (its ``pacs`` section: ``dicomweb_url`` and the credentials keys;
secrets from an environment variable or a file, never the command line).

One study per series. Its key is derived from ``dicomweb:<StudyInstanceUID>/<SeriesInstanceUID>``, hashed
(:func:`~MedAIExtension.batch.records.study_key`): the UIDs are untrusted data and never become part of a path. A
series whose UIDs are not UIDs is left out and counted. The worker that runs a study retrieves its series with
:func:`~MedAIExtension.pacs.retrieval.retrieve_verified` (every instance checked, files named ``00001.dcm`` …)
into a staging folder of its own and removes it once the study is committed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from MedAIExtension.batch.inputs import DICOMWEB_PREFIX, StudyInput
from MedAIExtension.dicom.uids import uid_problem
from MedAIExtension.errors import InputError
from MedAIExtension.pacs.credentials import Credentials, credentials_from_config
from MedAIExtension.pacs.retrieval import retrieve_verified

if TYPE_CHECKING:
    from MedAIExtension.pacs.dicomweb import DicomWebStore

__all__ = [
    "DicomWebSource",
    "discover_dicomweb_studies",
    "is_dicomweb_query",
    "parse_query",
    "retrieve_study",
    "source_from_gateway_config",
]

#: A QIDO-RS matching key: a DICOM keyword (``StudyDate``) or a tag in hex (``00080020``).
_KEY = re.compile(r"^(?:[A-Za-z][A-Za-z0-9]{1,63}|[0-9A-Fa-f]{8})$")
#: QIDO-RS query parameters that are not attribute matches: the batch decides them.
_RESERVED = {"limit", "offset", "includefield", "fuzzymatching"}


@dataclass(frozen=True)
class DicomWebSource:
    """Where a batch's DICOMweb studies are retrieved from: picklable, sent to every worker.

    Attributes:
        url: the DICOMweb root.
        credentials: basic auth or bearer token (hidden from ``repr``), read by the driver from the gateway's
            configuration (environment variable or file).
        timeout: seconds to wait for the server to connect and to answer each read.
    """

    url: str
    credentials: Credentials | None = field(default=None, repr=False)
    timeout: float = 30.0

    def open(self) -> DicomWebStore:
        """A client for the server (each worker opens its own)."""
        from MedAIExtension.pacs.dicomweb import DicomWebStore  # lazy: requests and dicomweb_client

        return DicomWebStore(self.url, self.credentials, self.timeout)


def is_dicomweb_query(text: str | os.PathLike[str]) -> bool:
    """Whether ``--input`` is a DICOMweb query (``dicomweb:…``)."""
    return str(text).lower().startswith(DICOMWEB_PREFIX)


def parse_query(text: str) -> dict[str, str]:
    """The attribute matches of ``dicomweb:<query>`` (``Modality=CT`` added when no modality is named).

    Raises:
        InputError: a part is not ``Keyword=value``, a key is not a DICOM keyword or tag, or it is a paging key.
    """
    query = str(text)[len(DICOMWEB_PREFIX) :].lstrip("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InputError(
            f"--input {text}: the query is not 'Keyword=value&Keyword=value' (e.g. "
            f"'{DICOMWEB_PREFIX}Modality=CT&StudyDate=20240101-20241231'). Fix the query."
        ) from None
    filters: dict[str, str] = {}
    for key, value in pairs:
        if key.lower() in _RESERVED or not _KEY.match(key):
            raise InputError(
                f"--input {text}: {key!r} is not an attribute to match (a DICOM keyword such as StudyDate, or a "
                "tag such as 00080020; paging is done by medai batch). Fix the query."
            )
        if key in filters:
            raise InputError(f"--input {text}: {key} is given twice. Give each attribute once.")
        filters[key] = value
    if not any(key.lower() in ("modality", "00080060") for key in filters):
        filters["Modality"] = "CT"
    return filters


def source_from_gateway_config(path: str | os.PathLike[str]) -> DicomWebSource:
    """The DICOMweb server and credentials of a gateway configuration file (its ``pacs`` section).

    Raises:
        InputError: the file is missing or wrong (the gateway's own checks), or a secret it names is missing.
    """
    from MedAIExtension.gateway.config import load_config  # lazy: YAML and the gateway's checks

    config = load_config(path)
    credentials = credentials_from_config(config.pacs.section)
    return DicomWebSource(config.pacs.dicomweb_url, None if credentials.is_empty else credentials, config.pacs.timeout)


def discover_dicomweb_studies(query: str, store: DicomWebStore) -> tuple[list[StudyInput], int]:
    """The series matching ``query`` on ``store``, one study each, and how many were left out (UIDs not UIDs).

    The server's answer is also filtered here on the modality, so it matches exactly on every server.

    Raises:
        InputError: a bad query, or nothing matches.
        PacsError: the server cannot be reached, refuses the credentials, or has no DICOMweb service there.
    """
    filters = parse_query(query)
    modality = next((v for k, v in filters.items() if k.lower() in ("modality", "00080060")), "")
    store.check()
    found = store.find_series(filters)
    studies: dict[str, StudyInput] = {}
    refused = 0
    for series in found:
        if uid_problem(series.study_uid) or uid_problem(series.series_uid):
            refused += 1
            continue
        exact = modality and not any(c in modality for c in "*?,\\")  # not a wildcard or a list of values
        if exact and series.modality not in ("", modality):
            continue
        source = f"{DICOMWEB_PREFIX}{series.study_uid}/{series.series_uid}"
        studies.setdefault(source, StudyInput(source, Path(), series=series.series_uid, study_uid=series.study_uid))
    if not studies:
        matched = "&".join(f"{k}={v}" for k, v in filters.items())
        raise InputError(
            f"No series on {store.url} matches {matched}"
            + (f" ({refused} answered with malformed UIDs were left out)" if refused else "")
            + ". Check the query (QIDO-RS attribute matching, e.g. StudyDate=20240101-20241231)."
        )
    return sorted(studies.values(), key=lambda s: s.source), refused


def retrieve_study(study: StudyInput, store: DicomWebStore, folder: Path) -> StudyInput:
    """Retrieve a DICOMweb study's series into the empty ``folder``; the study as a local DICOM folder.

    Raises:
        PacsTransferError: the transfer broke off or fewer instances arrived than the server lists (retry later).
        PacsNotFoundError, PacsUnavailableError, PacsAuthError: as for every request.
        InputError: every instance was refused (UIDs not UIDs, or of another series).
    """
    if study.study_uid is None or study.series is None:
        raise InputError(f"{study.source} is not a DICOMweb study.")
    retrieved = retrieve_verified(store, study.study_uid, study.series, folder)
    if not retrieved.files:
        problems = "; ".join(problem for _what, problem in retrieved.refused[:3])
        raise InputError(f"Every instance of {study.source} was refused ({problems}); nothing to segment.")
    return StudyInput(study.source, folder, study.series, study.reference)
