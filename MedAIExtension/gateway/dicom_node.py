"""MedAI as a DICOM node: a C-STORE SCP (pynetdicom) that receives studies for the gateway.

With a ``listen`` section the gateway accepts associations on the configured address and port from the allowed
calling AE titles only (others are rejected at association time), takes C-ECHO and C-STORE of any storage SOP
class, and files each received instance into ``<workdir>/incoming/`` (a :class:`~MedAIExtension.pacs.folder_store.
FolderStore`: folders named by UID only when it is a plain UID, else by a hash). An instance whose Study, Series or
SOP Instance UID is not a UID is refused with a failure status and never written. A study counts as complete
("stable", as Orthanc's StableAge decides for the Orthanc feed) once no instance of it arrived for
``stable_seconds``; :meth:`DicomNode.take_stable` hands it to the gateway, which journals its jobs exactly as for
the other feeds. A study that receives more instances later is handed over again.

:class:`LocalFirstStore` is the store the gateway's pipelines read through in this mode: a received study is
read from the incoming folder, everything else (prior studies) from the PACS, and results go to the PACS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from MedAIExtension.dicom.uids import is_valid_uid
from MedAIExtension.errors import InputError
from MedAIExtension.gateway.config import ListenSettings
from MedAIExtension.gateway.pacs_store import GatewayStore
from MedAIExtension.pacs.dimse import no_delay
from MedAIExtension.pacs.folder_store import FolderStore, safe_name
from MedAIExtension.pacs.records import SeriesRecord, StoreOutcome, StudyRecord

__all__ = ["INCOMING_FOLDER", "DicomNode", "LocalFirstStore"]

#: Where received instances wait for their jobs, in the gateway's work folder.
INCOMING_FOLDER = "incoming"

_SUCCESS = 0x0000
_CANNOT_UNDERSTAND = 0xC000  # "Error: cannot understand": the instance's UIDs are not UIDs
_OUT_OF_RESOURCES = 0xA700
_VERIFICATION = "1.2.840.10008.1.1"


class DicomNode:
    """The C-STORE SCP (see the module docstring); :meth:`start` binds it, :meth:`stop` closes it."""

    def __init__(self, settings: ListenSettings, incoming: FolderStore, log: Any) -> None:
        self.settings = settings
        self.incoming = incoming
        self.log = log
        self._lock = threading.Lock()
        self._arrivals: dict[str, tuple[int, float]] = {}  # study -> (instances received, last arrival)
        self._handed: dict[str, int] = {}  # study -> instances it had when handed to the gateway
        self._server: Any = None

    def start(self) -> None:
        """Bind and serve in background threads.

        Raises:
            InputError: the address or port cannot be bound (in use, or not this machine's).
        """
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        ae = AE(ae_title=self.settings.ae_title)
        ae.require_calling_aet = list(self.settings.allowed_calling_aes)
        ae.add_supported_context(_VERIFICATION)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ACCEPTED, lambda event: no_delay(event.assoc)),
        ]
        address = (self.settings.address, self.settings.port)
        try:
            self._server = ae.start_server(address, block=False, evt_handlers=handlers)
        except OSError as exc:
            raise InputError(
                f"The DICOM node cannot listen on {self.settings.address}:{self.settings.port} ({exc.strerror or exc})."
                " Pick a free port (listen.port) and an address of this machine (listen.address)."
            ) from None
        self.log("dicom_node_started", ae_title=self.settings.ae_title, port=self.settings.port)

    def stop(self) -> None:
        """Stop accepting associations."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_rejected(self, event: Any) -> None:
        calling = str(getattr(event.assoc.requestor, "ae_title", "") or "")
        self.log("association_refused", level="warning", calling_ae=calling[:16])

    def _on_store(self, event: Any) -> int:
        try:
            ds: Dataset = event.dataset
            ds.file_meta = event.file_meta
        except Exception:  # noqa: BLE001 - an instance pynetdicom cannot decode is refused, not fatal
            return _CANNOT_UNDERSTAND
        uids = [str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
        if not all(is_valid_uid(uid) for uid in uids):
            self.log("uid_refused", level="warning", what="received instance", reason="a UID is not a UID")
            return _CANNOT_UNDERSTAND
        try:
            self.incoming.write_dataset(ds)
        except (OSError, InputError):
            return _OUT_OF_RESOURCES
        with self._lock:
            count, _ = self._arrivals.get(uids[0], (0, 0.0))
            self._arrivals[uids[0]] = (count + 1, time.time())
        return _SUCCESS

    def take_stable(self, now: float | None = None) -> list[tuple[str, float]]:
        """Studies that got no instance for ``stable_seconds`` and changed since they were last handed over, with
        the time of their last instance."""
        now = time.time() if now is None else now
        stable = []
        with self._lock:
            for study, (count, last) in self._arrivals.items():
                if now - last >= self.settings.stable_seconds and self._handed.get(study) != count:
                    self._handed[study] = count
                    stable.append((study, last))
        return stable

    def receiving(self) -> bool:
        """Whether some study received instances it has not been handed over with yet."""
        with self._lock:
            return any(self._handed.get(study) != count for study, (count, _) in self._arrivals.items())


class LocalFirstStore:
    """The gateway's store with a DICOM node: received studies from ``incoming``, the rest from ``remote``."""

    def __init__(self, incoming: FolderStore, remote: GatewayStore) -> None:
        self.incoming = incoming
        self.remote = remote
        self.name = remote.name

    def _local(self, study_uid: str) -> bool:
        return (self.incoming.root / safe_name(study_uid)).is_dir()

    def search_series(self, study_uid: str) -> list[SeriesRecord]:
        """The series of a received study, else the PACS's."""
        if self._local(study_uid):
            return self.incoming.search_series(study_uid)
        return self.remote.search_series(study_uid)

    def instance_uids(self, study_uid: str, series_uid: str) -> set[str]:
        """The instances of a received series, else the PACS's."""
        if self._local(study_uid):
            return self.incoming.instance_uids(study_uid, series_uid)
        return self.remote.instance_uids(study_uid, series_uid)

    def iter_instances(self, study_uid: str, series_uid: str) -> Iterator[Dataset]:
        """A received series from the incoming folder, else from the PACS."""
        if self._local(study_uid):
            return self.incoming.iter_instances(study_uid, series_uid)
        return self.remote.iter_instances(study_uid, series_uid)

    def find_patient_studies(self, patient_id: str) -> list[StudyRecord]:
        """Prior studies: the PACS's."""
        return self.remote.find_patient_studies(patient_id)

    def store(self, files: Sequence[Path]) -> StoreOutcome:
        """Results go to the PACS."""
        return self.remote.store(files)
