"""A DICOM store over classic DICOM networking (DIMSE) with pynetdicom: C-ECHO, C-FIND, C-GET and C-STORE.

:class:`DimseStore` speaks the same :class:`~MedAIExtension.pacs.records.DicomStore` protocol as the DICOMweb
store, so the gateway runs the same pipelines against a PACS that only talks DIMSE:

* ``check`` — C-ECHO (verification);
* ``search_studies`` / ``search_series`` / ``instance_uids`` / ``find_patient_studies`` — Study Root C-FIND at
  STUDY, SERIES and IMAGE level;
* ``iter_instances`` / ``retrieve_series`` — Study Root C-GET (the instances come back on the same association,
  so the PACS needs no route back to MedAI, unlike C-MOVE);
* ``store`` — C-STORE of the files the PACS does not hold yet.

Archives answer different sets of optional keys. A series answer without SeriesDescription / BodyPartExamined is
completed from the header of one of its instances (one C-GET at IMAGE level), and one without
NumberOfSeriesRelatedInstances is counted at IMAGE level, so rules match and stability is judged the same way
whatever the archive returns.

Failures map onto the PACS errors: an association the PACS rejects (unknown calling AE title) is
:class:`~MedAIExtension.pacs.errors.PacsAuthError`; no answer, a refused connection or an aborted association is
:class:`~MedAIExtension.pacs.errors.PacsUnavailableError` (retry later), a C-GET cut off mid-transfer
:class:`~MedAIExtension.pacs.errors.PacsTransferError`; refused C-STOREs are
:class:`~MedAIExtension.pacs.errors.PacsRejectedError`.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from MedAIExtension.atomic import ensure_writable_directory
from MedAIExtension.errors import InputError
from MedAIExtension.pacs.errors import (
    PacsAuthError,
    PacsError,
    PacsNotFoundError,
    PacsRejectedError,
    PacsTransferError,
    PacsUnavailableError,
)
from MedAIExtension.pacs.folder_store import safe_name, write_instance
from MedAIExtension.pacs.records import SeriesRecord, StoreOutcome, StudyRecord

__all__ = ["DimseSettings", "DimseStore", "check_ae_title", "no_delay"]

_VERIFICATION = "1.2.840.10008.1.1"
_FIND_MODEL = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
_GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET
#: C-FIND statuses that carry a match.
_PENDING = (0xFF00, 0xFF01)
#: Characters with a meaning in C-FIND matching (wildcards, value separator).
_MATCHING_SPECIALS = ("*", "?", "\\")
#: Storage SOP classes MedAI reads and writes (each needs its own presentation context for C-GET and C-STORE).
_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.128",  # PET Image
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.11.2",  # Color Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
)


def no_delay(assoc: Any) -> None:
    """Turn Nagle's algorithm off on an association's socket. pynetdicom leaves it on, and each DIMSE message then
    waits for the peer's delayed ACK (about 40 ms on Linux): five times slower C-STORE of a CT series."""
    sock = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def check_ae_title(value: object, what: str) -> str:
    """An AE title: 1-16 characters of printable ASCII without backslash, not only spaces.

    Raises:
        InputError: naming ``what`` and the rule.
    """
    text = str(value or "").strip() if isinstance(value, str) else ""
    if not text or len(text) > 16 or any(not (32 <= ord(c) < 127) or c == "\\" for c in text):
        raise InputError(
            f"{what} must be an AE title: 1 to 16 printable ASCII characters without backslash, got {value!r}."
        )
    return text


@dataclass(frozen=True)
class DimseSettings:
    """Where the PACS listens and how MedAI introduces itself.

    Attributes:
        host: the PACS's address.
        port: its DICOM port.
        called_ae: the PACS's AE title.
        calling_ae: MedAI's AE title (the PACS must know it).
        timeout: seconds for association, DIMSE messages and network reads.
    """

    host: str
    port: int
    called_ae: str
    calling_ae: str = "MEDAI"
    timeout: float = 30.0


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


class DimseStore:
    """A PACS reached over DIMSE (see the module docstring). Each request opens and releases its own association."""

    def __init__(self, settings: DimseSettings, name: str | None = None, *, check_existing: bool = True) -> None:
        self.settings = settings
        self.name = name or f"dicom://{settings.called_ae}@{settings.host}:{settings.port}"
        self.check_existing = check_existing
        self._series_text: dict[tuple[str, str], tuple[str, str]] = {}  # completed description, body part

    def __repr__(self) -> str:
        return f"DimseStore({self.name!r}, calling_ae={self.settings.calling_ae!r})"

    # ---- associations -------------------------------------------------------------------------------------------
    def _ae(self) -> Any:
        from pynetdicom import AE

        ae = AE(ae_title=self.settings.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.settings.timeout
        ae.connection_timeout = self.settings.timeout
        return ae

    def _associate(self, ae: Any, action: str, **kwargs: Any) -> Any:
        assoc = ae.associate(self.settings.host, self.settings.port, ae_title=self.settings.called_ae, **kwargs)
        if assoc.is_established:
            no_delay(assoc)
            return assoc
        if assoc.is_rejected:
            raise PacsAuthError(
                f"The PACS {self.name} rejected MedAI's association (calling AE title "
                f"{self.settings.calling_ae!r}) when trying to {action}. Add that AE title to the PACS's known "
                "nodes, or set 'calling_ae' to one it knows."
            )
        raise PacsUnavailableError(
            f"The PACS {self.name} cannot be reached to {action} (no association: refused, aborted or no answer "
            f"within {self.settings.timeout:g} s). Check 'host', 'port' and 'called_ae'; MedAI tries again later."
        )

    def _aborted(self, action: str) -> PacsUnavailableError:
        return PacsUnavailableError(
            f"The PACS {self.name} dropped the association while MedAI tried to {action}; it tries again later."
        )

    # ---- verification and queries -------------------------------------------------------------------------------
    def check(self) -> None:
        """C-ECHO: the PACS is reachable and accepts MedAI's AE title."""
        ae = self._ae()
        ae.add_requested_context(_VERIFICATION)
        assoc = self._associate(ae, "verify the connection (C-ECHO)")
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if not status or int(status.get("Status", -1)) != 0:
            raise PacsUnavailableError(f"The PACS {self.name} did not answer C-ECHO with success.")

    def _find(self, query: Dataset, action: str) -> list[Dataset]:
        ae = self._ae()
        ae.add_requested_context(_FIND_MODEL)
        assoc = self._associate(ae, action)
        matches: list[Dataset] = []
        try:
            for status, identifier in assoc.send_c_find(query, _FIND_MODEL):
                if not status:  # no answer within the DIMSE timeout, or the association went away
                    raise self._aborted(action)
                code = int(status.Status)
                if code in _PENDING and identifier is not None:
                    matches.append(identifier)
                elif code not in _PENDING and code != 0:
                    raise PacsError(f"The PACS {self.name} answered C-FIND with status 0x{code:04X} to {action}.")
        finally:
            if assoc.is_established:
                assoc.release()
        return matches

    @staticmethod
    def _query(level: str, **keys: Any) -> Dataset:
        query = Dataset()
        query.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        return query

    def search_studies(
        self, patient_id: str | None = None, study_uid: str | None = None, modality: str | None = None
    ) -> list[StudyRecord]:
        """Study-level C-FIND (exact matching; ``modality``: any series of that modality)."""
        exact_id = patient_id is not None and not any(c in patient_id for c in _MATCHING_SPECIALS)
        query = self._query(
            "STUDY",
            StudyInstanceUID=study_uid or "",
            PatientID=patient_id if exact_id else "",
            PatientName="",
            StudyDate="",
            AccessionNumber="",
            StudyDescription="",
            ModalitiesInStudy="",
        )
        records = []
        seen: set[str] = set()
        for item in self._find(query, "search for studies"):
            if _text(item, "StudyInstanceUID") in seen:
                continue  # some archives answer once per instance
            seen.add(_text(item, "StudyInstanceUID"))
            record = StudyRecord(
                study_uid=_text(item, "StudyInstanceUID"),
                patient_id=_text(item, "PatientID"),
                patient_name=_text(item, "PatientName"),
                study_date=_text(item, "StudyDate"),
                accession_number=_text(item, "AccessionNumber"),
                description=_text(item, "StudyDescription"),
                modalities=tuple(sorted(str(m) for m in (item.get("ModalitiesInStudy") or []) if m)),
            )
            if patient_id is not None and record.patient_id != patient_id:
                continue  # a wildcard-bearing id was asked for universally: keep the exact matches only
            if study_uid is not None and record.study_uid != study_uid:
                continue
            if modality is not None and modality not in record.modalities:
                series = self.search_series(record.study_uid)
                if not any(s.modality == modality for s in series):
                    continue
                record = StudyRecord(**{**record.__dict__, "modalities": tuple(sorted({s.modality for s in series}))})
            records.append(record)
        return records

    def find_patient_studies(self, patient_id: str) -> list[StudyRecord]:
        """The studies whose PatientID is exactly ``patient_id`` (an id with C-FIND wildcards is matched here)."""
        return self.search_studies(patient_id=patient_id)

    def search_series(self, study_uid: str) -> list[SeriesRecord]:
        """Series-level C-FIND; attributes the archive does not return are completed (see the module docstring)."""
        query = self._query(
            "SERIES",
            StudyInstanceUID=study_uid,
            SeriesInstanceUID="",
            Modality="",
            SeriesDescription="",
            BodyPartExamined="",
            NumberOfSeriesRelatedInstances="",
        )
        records = []
        seen: set[str] = set()
        for item in self._find(query, f"list the series of study {study_uid}"):
            series_uid = _text(item, "SeriesInstanceUID")
            if not series_uid or series_uid in seen:
                continue  # some archives answer once per instance
            seen.add(series_uid)
            description, body_part = _text(item, "SeriesDescription"), _text(item, "BodyPartExamined")
            if "SeriesDescription" not in item or "BodyPartExamined" not in item:
                key = (study_uid, series_uid)
                texts = self._series_text.get(key)
                if texts is None:  # a series' header does not change: read it once per store
                    header = self._first_header(study_uid, series_uid)
                    texts = (_text(header, "SeriesDescription"), _text(header, "BodyPartExamined"))
                    if "SOPInstanceUID" in header:
                        self._series_text[key] = texts
                description = description or texts[0]
                body_part = body_part or texts[1]
            count_text = _text(item, "NumberOfSeriesRelatedInstances")
            count = int(count_text) if count_text.isdigit() else len(self.instance_uids(study_uid, series_uid))
            records.append(
                SeriesRecord(
                    study_uid=study_uid,
                    series_uid=series_uid,
                    modality=_text(item, "Modality"),
                    description=description,
                    body_part=body_part,
                    number_of_instances=count,
                )
            )
        return records

    def instance_uids(self, study_uid: str, series_uid: str) -> set[str]:
        """Image-level C-FIND: the SOPInstanceUIDs the PACS holds for a series (empty when unknown)."""
        query = self._query("IMAGE", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid, SOPInstanceUID="")
        found = self._find(query, f"list the instances of series {series_uid}")
        return {_text(item, "SOPInstanceUID") for item in found} - {""}

    def series_exists(self, study_uid: str, series_uid: str) -> bool:
        """Whether the PACS holds at least one instance of the series."""
        return bool(self.instance_uids(study_uid, series_uid))

    # ---- retrieval ----------------------------------------------------------------------------------------------
    def _get(self, query: Dataset, folder: Path, action: str) -> list[Path]:
        """C-GET ``query`` into ``folder`` (one file per instance, numbered as they arrive)."""
        from pynetdicom import build_role, evt

        ae = self._ae()
        ae.add_requested_context(_GET_MODEL)
        for sop_class in _STORAGE_CLASSES:
            ae.add_requested_context(sop_class)
        roles = [build_role(sop_class, scp_role=True) for sop_class in _STORAGE_CLASSES]
        received: list[Path] = []

        def on_store(event: Any) -> int:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            target = folder / f"{len(received) + 1:05d}.dcm"
            dataset.save_as(target, enforce_file_format=True)
            received.append(target)
            return 0x0000

        assoc = self._associate(ae, action, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        failed = 0
        try:
            for status, _identifier in assoc.send_c_get(query, _GET_MODEL):
                if not status:
                    raise PacsTransferError(
                        f"The transfer from the PACS {self.name} broke off while MedAI tried to {action} "
                        f"({len(received)} instance(s) arrived). Nothing of it is used; it is retried later."
                    )
                code = int(status.Status)
                if code in (0xFF00,):
                    continue
                failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
                if code not in (0x0000, 0xB000):
                    raise PacsTransferError(
                        f"The PACS {self.name} answered C-GET with status 0x{code:04X} while MedAI tried to {action} "
                        f"({len(received)} instance(s) arrived); it is retried later."
                    )
        finally:
            if assoc.is_established:
                assoc.release()
        if failed:
            raise PacsTransferError(
                f"The PACS {self.name} failed to send {failed} instance(s) while MedAI tried to {action}; "
                "it is retried later."
            )
        return received

    def _first_header(self, study_uid: str, series_uid: str) -> Dataset:
        uids = sorted(self.instance_uids(study_uid, series_uid))
        if not uids:
            return Dataset()
        query = self._query("IMAGE", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid, SOPInstanceUID=uids[0])
        import pydicom

        with tempfile.TemporaryDirectory(prefix="medai-dimse-") as scratch:
            paths = self._get(query, Path(scratch), f"read a header of series {series_uid}")
            return pydicom.dcmread(paths[0], stop_before_pixels=True) if paths else Dataset()

    def iter_instances(self, study_uid: str, series_uid: str) -> Iterator[Dataset]:
        """C-GET the series; yield its instances one at a time (spooled to a temporary folder, not held in memory).

        Raises:
            PacsTransferError: the association broke off or sub-operations failed (retry later).
            PacsUnavailableError, PacsAuthError: as for every request.
        """
        import pydicom

        query = self._query("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid)
        with tempfile.TemporaryDirectory(prefix="medai-dimse-") as scratch:
            for path in self._get(query, Path(scratch), f"retrieve series {series_uid}"):
                try:
                    yield pydicom.dcmread(path)
                except Exception as exc:  # noqa: BLE001 - a damaged instance fails inside pydicom in many ways
                    raise PacsTransferError(
                        f"The PACS {self.name} sent an instance of series {series_uid} that cannot be read "
                        f"({type(exc).__name__}); the transfer is retried later."
                    ) from None

    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> list[Path]:
        """C-GET: write each instance as ``<SOPInstanceUID>.dcm`` into ``folder``.

        Raises:
            PacsNotFoundError: the PACS sent nothing for the series.
        """
        folder = ensure_writable_directory(folder)
        paths = []
        for ds in self.iter_instances(study_uid, series_uid):
            sop = _text(ds, "SOPInstanceUID")
            if not sop:
                raise PacsError(f"The PACS {self.name} sent an instance without SOPInstanceUID.")
            paths.append(write_instance(ds, folder / f"{safe_name(sop)}.dcm"))
        if not paths:
            raise PacsNotFoundError(f"The PACS {self.name} has no series {series_uid} in study {study_uid}.")
        return paths

    # ---- storing ------------------------------------------------------------------------------------------------
    def store(self, files: Sequence[Path]) -> StoreOutcome:
        """C-STORE the files the PACS does not hold yet (asked series by series with C-FIND first, unless
        ``check_existing`` is off: a node that only takes C-STORE, such as a MedAI gateway's DICOM node).

        Raises:
            PacsRejectedError: the PACS refused some instances (the others are stored).
            InputError: a file is not DICOM.
        """
        import pydicom

        headers: dict[Path, Dataset] = {}
        for path in files:
            try:
                headers[Path(path)] = pydicom.dcmread(path, stop_before_pixels=True)
            except (OSError, pydicom.errors.InvalidDicomError) as exc:
                raise InputError(f"{path} cannot be stored: it is not a readable DICOM file ({exc}).") from None
        present: set[str] = set()
        for study, series in (
            set()
            if not self.check_existing
            else {(_text(h, "StudyInstanceUID"), _text(h, "SeriesInstanceUID")) for h in headers.values()}
        ):
            present |= self.instance_uids(study, series)
        to_send = {path: h for path, h in headers.items() if _text(h, "SOPInstanceUID") not in present}
        already = tuple(
            sorted(_text(h, "SOPInstanceUID") for h in headers.values() if _text(h, "SOPInstanceUID") in present)
        )
        if not to_send:
            return StoreOutcome((), already)
        ae = self._ae()
        for sop_class in sorted({_text(h, "SOPClassUID") for h in to_send.values()}):
            syntaxes = sorted(
                {str(h.file_meta.TransferSyntaxUID) for h in to_send.values() if _text(h, "SOPClassUID") == sop_class}
            )
            ae.add_requested_context(sop_class, [*syntaxes, "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        assoc = self._associate(ae, f"store {len(to_send)} instance(s)")
        stored: list[str] = []
        failed: list[tuple[str, str]] = []
        try:
            for path, header in to_send.items():
                sop = _text(header, "SOPInstanceUID")
                status = assoc.send_c_store(path)
                if not status:
                    raise self._aborted(f"store instance {sop}")
                code = int(status.Status)
                if code in (0x0000, 0xB000, 0xB007, 0xB006):
                    stored.append(sop)
                else:
                    failed.append((sop, f"C-STORE status 0x{code:04X}"))
        finally:
            if assoc.is_established:
                assoc.release()
        if failed:
            raise PacsRejectedError(
                f"The PACS {self.name} refused {len(failed)} of {len(to_send)} instance(s).",
                failed,
                tuple(stored),
                already,
            )
        return StoreOutcome(tuple(stored), already)
