"""A :class:`~MedAIExtension.pacs.stores.DicomStore` on a DICOMweb server (QIDO-RS, WADO-RS, STOW-RS).

Built on ``dicomweb_client.DICOMwebClient`` with a ``requests.Session`` that carries basic auth or a bearer
token. HTTP and connection failures become :mod:`MedAIExtension.pacs.errors` errors whose messages name the URL
and the setting to fix, never a secret. The client's own retries are off: callers (the gateway) decide when to
try again (:class:`~MedAIExtension.pacs.errors.PacsUnavailableError` is the retryable one).

Storing twice: a DICOMweb server may answer an instance it already holds as a success (Orthanc 1.10 with the
DICOMweb plugin 1.7 does: the instance is listed in ReferencedSOPSequence and the stored copy is kept). So
:meth:`DicomWebStore.store` first asks QIDO-RS which instances of each series the server holds and sends only
the others; those are reported in :attr:`StoreOutcome.already_present`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from MedAIExtension.atomic import ensure_writable_directory
from MedAIExtension.errors import InputError
from MedAIExtension.pacs.credentials import Credentials, check_url, make_session
from MedAIExtension.pacs.errors import (
    PacsError,
    PacsNotFoundError,
    PacsRejectedError,
    PacsTransferError,
    error_for_exception,
    error_for_status,
)
from MedAIExtension.pacs.folder_store import read_header, safe_name, write_instance
from MedAIExtension.pacs.records import SeriesRecord, StoreOutcome, StudyRecord

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["QIDO_PAGE_SIZE", "STOW_FAILURE_REASONS", "DicomWebStore", "parse_stow_response"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Meaning of the FailureReason (0008,1197) codes of a STOW-RS answer (PS3.18 / PS3.4).
STOW_FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA770: "out of resources (storage full)",
    0xA900: "data set does not match SOP class",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class (warning)",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
}

#: Results asked per QIDO-RS request.
QIDO_PAGE_SIZE = 1000

_STUDY_FIELDS = ("StudyDescription", "ModalitiesInStudy", "AccessionNumber", "StudyDate")
_SERIES_FIELDS = ("SeriesDescription", "BodyPartExamined", "Modality", "NumberOfSeriesRelatedInstances")


def _reason(code: Any) -> str:
    try:
        value = int(code)
    except (TypeError, ValueError):
        return "no reason given"
    return f"0x{value:04X} {STOW_FAILURE_REASONS.get(value, 'failure')}"


def parse_stow_response(dataset: Any) -> tuple[list[str], list[tuple[str, str]], bool]:
    """Read a STOW-RS answer.

    Returns:
        The referenced (stored) SOPInstanceUIDs, the failed ``(SOPInstanceUID, reason)`` pairs, and whether the
        answer listed instances at all (an empty answer confirms nothing).
    """
    stored = [str(item.get("ReferencedSOPInstanceUID", "")) for item in dataset.get("ReferencedSOPSequence", [])]
    failed = [
        (str(item.get("ReferencedSOPInstanceUID", "")), _reason(item.get("FailureReason")))
        for item in dataset.get("FailedSOPSequence", [])
    ]
    listed = "ReferencedSOPSequence" in dataset or "FailedSOPSequence" in dataset
    return stored, failed, listed


def _value(item: dict[str, Any], tag: str) -> str:
    """The first value of ``tag`` (8 hex digits) in a DICOM JSON item, as text ('' when absent)."""
    values = item.get(tag, {}).get("Value") or []
    if not values:
        return ""
    first = values[0]
    if isinstance(first, dict):  # PN
        return str(first.get("Alphabetic", ""))
    return str(first)


def _values(item: dict[str, Any], tag: str) -> list[str]:
    return [str(v) for v in item.get(tag, {}).get("Value") or [] if v is not None]


def _study_record(item: dict[str, Any]) -> StudyRecord:
    """A QIDO-RS study answer (DICOM JSON) as a :class:`StudyRecord`."""
    return StudyRecord(
        study_uid=_value(item, "0020000D"),
        patient_id=_value(item, "00100020"),
        patient_name=_value(item, "00100010"),
        study_date=_value(item, "00080020"),
        accession_number=_value(item, "00080050"),
        description=_value(item, "00081030"),
        modalities=tuple(sorted(set(_values(item, "00080061")) - {""})),
    )


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _series_record(item: dict[str, Any], study_uid: str) -> SeriesRecord:
    count = _value(item, "00201209")
    return SeriesRecord(
        study_uid=_value(item, "0020000D") or study_uid,
        series_uid=_value(item, "0020000E"),
        modality=_value(item, "00080060"),
        description=_value(item, "0008103E"),
        body_part=_value(item, "00180015"),
        number_of_instances=int(count) if count.isdigit() else None,
    )


def _unreserved_prefix(text: str) -> str:
    """The leading characters of ``text`` that a URL carries without percent-encoding (RFC 3986 unreserved)."""
    for index, char in enumerate(text):
        if char not in _UNRESERVED:
            return text[:index]
    return text


class DicomWebStore:
    """A DICOM store on a DICOMweb server.

    Args:
        url: the DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web`` (Orthanc).
        credentials: basic auth or bearer token (none when ``None``).
        timeout: seconds to wait for the server to connect and to answer each read.
        name: display name (default: the URL).
        check_existing: before storing, ask QIDO-RS which instances the server holds and skip them.
        batch_size: instances per STOW-RS request.

    Raises:
        InputError: the URL is not http(s) or holds credentials.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials | None = None,
        timeout: float = 30.0,
        *,
        name: str | None = None,
        check_existing: bool = True,
        batch_size: int = 50,
    ) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.url = check_url(url)
        self.credentials = credentials
        self.timeout = float(timeout)
        self.name = name or self.url
        self.check_existing = check_existing
        self.batch_size = max(1, int(batch_size))
        self._session = make_session(credentials)
        self._client = DICOMwebClient(self.url, session=self._session, timeout=self.timeout)
        self._client.set_http_retry_params(retry=False)

    def __repr__(self) -> str:
        return f"DicomWebStore({self.url!r}, auth={self.credentials.kind if self.credentials else 'none'})"

    def close(self) -> None:
        """Close the HTTP connections."""
        self._session.close()

    # ---- error mapping ----------------------------------------------------------------------------------------
    def _call(self, action: str, function: Callable[[], _T], *, not_found: _T | None = None) -> _T:
        """Run a dicomweb_client call, mapping failures to PacsError (``not_found`` is returned on HTTP 404)."""
        import requests

        try:
            return function()
        except requests.HTTPError as exc:
            response = exc.response
            status = response.status_code if response is not None else 0
            if status == 404 and not_found is not None:
                return not_found
            raise error_for_status(status, self.url, action, self.credentials, _detail(response)) from None
        except requests.RequestException as exc:
            raise error_for_exception(exc, self.url, action) from None
        except ValueError as exc:  # a malformed answer (wrong content type, broken multipart)
            raise PacsError(
                f"The DICOMweb server at {self.url} gave an answer that cannot be read when trying to {action} "
                f"({exc}). Check that `url` points at the DICOMweb root (Orthanc: …/dicom-web)."
            ) from None

    # ---- DicomStore -------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Ask the server for one study: checks address, DICOMweb root and credentials.

        Raises:
            PacsAuthError: wrong or missing credentials.
            PacsUnavailableError: the server cannot be reached or fails.
            PacsNotFoundError: no DICOMweb service at ``url``.
        """
        self._call("search for studies", lambda: self._client.search_for_studies(limit=1))

    def search_studies(
        self, patient_id: str | None = None, study_uid: str | None = None, modality: str | None = None
    ) -> list[StudyRecord]:
        """QIDO-RS study search; the filters are also applied here, so they match exactly on every server."""
        filters: dict[str, Any] = {}
        if patient_id is not None:
            filters["PatientID"] = patient_id
        if study_uid is not None:
            filters["StudyInstanceUID"] = study_uid
        if modality is not None:
            filters["ModalitiesInStudy"] = modality
        items: list[dict[str, Any]] = self._call(
            "search for studies",
            lambda: _paged(
                lambda limit, offset: self._client.search_for_studies(
                    fields=list(_STUDY_FIELDS), search_filters=filters, limit=limit, offset=offset
                ),
                "0020000D",
            ),
            not_found=[],
        )
        records = []
        for item in items:
            record = _study_record(item)
            if patient_id is not None and record.patient_id != patient_id:
                continue
            if study_uid is not None and record.study_uid != study_uid:
                continue
            if modality is not None and record.modalities and modality not in record.modalities:
                continue
            records.append(record)
        return records

    def search_series(self, study_uid: str) -> list[SeriesRecord]:
        """QIDO-RS series search in a study (empty when the study is unknown)."""
        items: list[dict[str, Any]] = self._call(
            f"search the series of study {study_uid}",
            lambda: _paged(
                lambda limit, offset: self._client.search_for_series(
                    study_instance_uid=study_uid, fields=list(_SERIES_FIELDS), limit=limit, offset=offset
                ),
                "0020000E",
            ),
            not_found=[],
        )
        return [_series_record(item, study_uid) for item in items]

    def find_series(self, filters: dict[str, str]) -> list[SeriesRecord]:
        """QIDO-RS series search over all studies (``/series?Modality=CT&StudyDate=…``), every page.

        ``filters`` are QIDO-RS attribute matches (keyword or tag → value, ranges and ``*``/``?`` wildcards as the
        server supports them). The query string is built here with the wildcards left as they are: a client that
        percent-encodes ``*`` makes some servers (Orthanc's DICOMweb plugin) match it literally. The answer's UIDs
        are untrusted data (check them before use).
        """
        from urllib.parse import quote

        query = [f"includefield={field}" for field in (*_SERIES_FIELDS, "StudyInstanceUID")]
        query += [f"{quote(key, safe='')}={quote(value, safe='*?,-.')}" for key, value in filters.items()]
        items: list[dict[str, Any]] = self._call(
            "search for series",
            lambda: _paged(lambda limit, offset: self._raw_qido("series", query, limit, offset), "0020000E"),
            not_found=[],
        )
        return [_series_record(item, "") for item in items]

    def series_exists(self, study_uid: str, series_uid: str) -> bool:
        """Whether QIDO-RS finds the series in the study."""
        items: list[dict[str, Any]] = self._call(
            f"search for series {series_uid}",
            lambda: self._client.search_for_series(
                study_instance_uid=study_uid, search_filters={"SeriesInstanceUID": series_uid}
            ),
            not_found=[],
        )
        return any(_value(item, "0020000E") == series_uid for item in items)

    def instance_uids(self, study_uid: str, series_uid: str) -> set[str]:
        """The SOPInstanceUIDs the server holds for a series (QIDO-RS; empty when unknown)."""
        items: list[dict[str, Any]] = self._call(
            f"list the instances of series {series_uid}",
            lambda: _paged(
                lambda limit, offset: self._client.search_for_instances(
                    study_instance_uid=study_uid,
                    series_instance_uid=series_uid,
                    fields=["SOPInstanceUID"],
                    limit=limit,
                    offset=offset,
                ),
                "00080018",
            ),
            not_found=[],
        )
        return {_value(item, "00080018") for item in items} - {""}

    def iter_instances(self, study_uid: str, series_uid: str) -> Iterator[Dataset]:
        """WADO-RS: the series' instances as pydicom datasets, one at a time, as they arrive.

        Nothing is checked here beyond parsing (see :func:`MedAIExtension.pacs.retrieval.retrieve_verified`).

        Raises:
            PacsNotFoundError: the server has no such series.
            PacsTransferError: the answer broke off or a part cannot be parsed (retry later).
            PacsUnavailableError, PacsAuthError: as for every request.
        """
        import requests

        action = f"retrieve series {series_uid}"
        try:
            yield from self._client.iter_series(study_uid, series_uid, media_types=(("application/dicom", "*"),))
        except requests.HTTPError as exc:
            response = exc.response
            status = response.status_code if response is not None else 0
            raise error_for_status(status, self.url, action, self.credentials, _detail(response)) from None
        except requests.RequestException as exc:
            raise error_for_exception(exc, self.url, action) from None
        except Exception as exc:  # noqa: BLE001 - a cut multipart part fails inside pydicom in many ways
            raise PacsTransferError(
                f"The DICOMweb server at {self.url} sent a damaged answer when trying to {action} "
                f"({type(exc).__name__}); the transfer was probably cut. Nothing of it is used; try again later."
            ) from None

    def find_patient_studies(self, patient_id: str) -> list[StudyRecord]:
        """The studies whose PatientID is exactly ``patient_id``, whatever characters it holds.

        Some servers (Orthanc's DICOMweb plugin) do not decode percent-encoded QIDO values, so a PatientID with a
        space, ``/``, ``&``, ``%``, … is never matched by an exact query. This asks for the longest leading part
        made of characters that need no encoding, followed by the ``*`` wildcard (or for all studies when there is
        no such part), and keeps the answers whose PatientID is exactly ``patient_id``.
        """
        prefix = _unreserved_prefix(patient_id)
        if prefix == patient_id:
            return self.search_studies(patient_id=patient_id)
        query = [f"includefield={field}" for field in (*_STUDY_FIELDS, "PatientID")]
        if prefix:
            query.append(f"PatientID={prefix}*")
        items: list[dict[str, Any]] = self._call(
            "search for the studies of a patient",
            lambda: _paged(lambda limit, offset: self._raw_qido("studies", query, limit, offset), "0020000D"),
            not_found=[],
        )
        return [record for record in map(_study_record, items) if record.patient_id == patient_id]

    def _raw_qido(self, resource: str, query: list[str], limit: int, offset: int) -> list[dict[str, Any]]:
        """A QIDO-RS GET with a query string built here (only characters that need no percent-encoding)."""
        url = f"{self.url}/{resource}?{'&'.join([*query, f'limit={limit}', f'offset={offset}'])}"
        response = self._session.get(url, headers={"Accept": "application/dicom+json"}, timeout=self.timeout)
        response.raise_for_status()
        if response.status_code == 204 or not response.content:
            return []
        body = response.json()
        if not isinstance(body, list):
            raise ValueError("a QIDO-RS answer must be a JSON list")
        return body

    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> list[Path]:
        """WADO-RS: write each instance, in the transfer syntax the server stored it, as ``<SOPInstanceUID>.dcm``.

        Raises:
            PacsNotFoundError: the server has no such series.
            OutputError: ``folder`` cannot be written.
        """
        folder = ensure_writable_directory(folder)
        action = f"retrieve series {series_uid}"

        def fetch() -> list[Path]:
            paths: list[Path] = []
            datasets = self._client.iter_series(study_uid, series_uid, media_types=(("application/dicom", "*"),))
            for ds in datasets:
                paths.append(_write_instance(ds, folder))
            return paths

        paths: list[Path] = self._call(action, fetch, not_found=[])
        if not paths:
            raise PacsNotFoundError(
                f"The DICOMweb server at {self.url} has no series {series_uid} in study {study_uid}. "
                "Search the study's series first (search_series)."
            )
        return paths

    def store(self, files: Sequence[Path], *, study_uid: str | None = None) -> StoreOutcome:
        """STOW-RS: send the files the server does not hold yet, in batches.

        Args:
            files: DICOM files (any studies and series).
            study_uid: post to ``/studies/{study_uid}`` (the server then refuses instances of other studies).

        Raises:
            InputError: a file is not DICOM.
            PacsRejectedError: the server refused some instances (``failed``; ``stored`` lists the others).
            PacsAuthError, PacsUnavailableError: as for every request (instances sent before stay stored).
        """
        headers = []
        for path in files:
            ds = read_header(Path(path))
            headers.append((Path(path), str(ds.get("SOPInstanceUID", "")), ds))
        present: list[str] = []
        to_send: list[tuple[Path, str]] = []
        known: dict[tuple[str, str], set[str]] = {}
        seen: set[str] = set()
        for path, sop, ds in headers:
            if sop and sop in seen:
                present.append(sop)
                continue
            seen.add(sop)
            key = (str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")))
            if self.check_existing and sop and all(key):
                if key not in known:
                    known[key] = self.instance_uids(*key)
                if sop in known[key]:
                    present.append(sop)
                    continue
            to_send.append((path, sop))

        stored: list[str] = []
        failed: list[tuple[str, str]] = []
        for start in range(0, len(to_send), self.batch_size):
            batch = to_send[start : start + self.batch_size]
            ok, bad = self._store_batch(batch, study_uid)
            stored.extend(ok)
            failed.extend(bad)
        if failed:
            uid, reason = failed[0]
            raise PacsRejectedError(
                f"The DICOMweb server at {self.url} refused to store {len(failed)} of {len(to_send)} instance(s), "
                f"e.g. {uid or '(no SOPInstanceUID)'}: {reason}. Check these instances (and the server log); "
                f"{len(stored)} other(s) were stored.",
                failed,
                tuple(stored),
                tuple(present),
            )
        return StoreOutcome(tuple(stored), tuple(present))

    def _store_batch(
        self, batch: list[tuple[Path, str]], study_uid: str | None
    ) -> tuple[list[str], list[tuple[str, str]]]:
        import pydicom
        import requests
        from pydicom.dataset import Dataset

        datasets = []
        for path, _sop in batch:
            try:
                datasets.append(pydicom.dcmread(path))
            except (OSError, ValueError, EOFError, pydicom.errors.InvalidDicomError) as exc:
                raise InputError(f"Cannot read {path} as a DICOM file ({type(exc).__name__}).") from None
        action = f"store {len(batch)} instance(s)"
        try:
            answer = self._client.store_instances(datasets, study_instance_uid=study_uid)
            status = 200
        except requests.HTTPError as exc:
            response = exc.response
            status = response.status_code if response is not None else 0
            if status in (401, 403, 404, 408, 429) or status >= 500 or response is None:
                raise error_for_status(status, self.url, action, self.credentials, _detail(response)) from None
            try:
                answer = Dataset.from_json(response.json())
            except ValueError:  # not a DICOM JSON answer: everything in the batch failed
                reason = f"HTTP {status}: {_detail(response)[:200]}"
                return [], [(sop, reason) for _path, sop in batch]
        except requests.RequestException as exc:
            raise error_for_exception(exc, self.url, action) from None
        stored, failed, listed = parse_stow_response(answer)
        sent = [sop for _path, sop in batch]
        if not listed and status < 300:
            return sent, []
        accounted = set(stored) | {uid for uid, _ in failed}
        failed += [(sop, f"not confirmed by the server (HTTP {status})") for sop in sent if sop not in accounted]
        if status >= 400 and not failed:
            failed = [(sop, f"HTTP {status}") for sop in sent if sop not in set(stored)]
        _log.debug("STOW to %s: %d stored, %d failed", self.url, len(stored), len(failed))
        return stored, failed


def _paged(search: Callable[[int, int], list[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    """All results of a QIDO-RS search, fetched in pages of :data:`QIDO_PAGE_SIZE`.

    Stops at a short page, or at a page that brings nothing new: some servers (Orthanc 1.10 with a search
    filter) ignore ``offset`` and answer the same page again, which made dicomweb_client's ``get_remaining``
    loop forever.
    """
    results: list[dict[str, Any]] = []
    seen: set[str] = set()
    offset = 0
    while True:
        page = search(QIDO_PAGE_SIZE, offset)
        fresh = [item for item in page if _value(item, key) not in seen]
        for item in fresh:
            seen.add(_value(item, key))
        results.extend(fresh)
        if len(page) < QIDO_PAGE_SIZE or not fresh:
            return results
        offset += len(page)


def _detail(response: Any) -> str:
    """The server's explanation in an error answer (Orthanc's JSON ``Message``), short."""
    if response is None:
        return ""
    try:
        body = response.json()
    except ValueError:
        return (response.text or "").strip()[:300]
    if isinstance(body, dict):
        return str(body.get("Message") or body.get("OrthancError") or "")[:300]
    return ""


def _write_instance(ds: Any, folder: Path) -> Path:
    """Write a retrieved dataset as ``folder/<SOPInstanceUID>.dcm`` (a hash when it is not a plain UID)."""
    sop = str(ds.get("SOPInstanceUID", ""))
    if not sop:
        raise PacsError("The DICOMweb server sent an instance without SOPInstanceUID; it cannot be saved.")
    return write_instance(ds, folder / f"{safe_name(sop)}.dcm")
