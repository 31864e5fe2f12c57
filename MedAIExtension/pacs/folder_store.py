"""A :class:`~MedAIExtension.pacs.stores.DicomStore` on a folder (a local disk or a mounted share).

Files are kept as ``root/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` and written atomically,
so a reader never sees half a file. Searching reads headers only (``stop_before_pixels``), one file per series.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from MedAIExtension.atomic import atomic_path, ensure_writable_directory
from MedAIExtension.errors import InputError
from MedAIExtension.pacs.errors import PacsNotFoundError, PacsRejectedError, PacsUnavailableError
from MedAIExtension.pacs.records import SeriesRecord, StoreOutcome, StudyRecord

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["FolderStore", "read_header", "safe_name", "write_instance"]

_SAFE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")


def safe_name(uid: str) -> str:
    """``uid`` as a file or folder name: itself when it is a plain UID, else a hash (no path tricks possible)."""
    if _SAFE.fullmatch(uid):
        return uid
    return "uid-" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def write_instance(ds: Any, target: Path) -> Path:
    """Write an instance received from a PACS to ``target`` atomically, completing its file meta information
    (transfer syntax, SOP class and instance) as a DICOM file requires. ``target`` is named by the caller, never by
    the instance."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    with atomic_path(target) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return target


def read_header(path: Path) -> Dataset:
    """The header (no pixel data) of a DICOM file.

    Raises:
        InputError: the file cannot be read or is not DICOM.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, AttributeError, KeyError) as exc:
        raise InputError(
            f"Cannot read {path} as a DICOM file ({type(exc).__name__}). Store DICOM files only."
        ) from None


def _text(ds: Any, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


class FolderStore:
    """A DICOM store on a folder.

    Args:
        root: the store's folder.
        create: create ``root`` when it does not exist. Off by default, so that an unmounted share is reported
            as unavailable instead of silently filling the local disk.
        name: display name (default: the folder path).
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = False, name: str | None = None) -> None:
        self.root = Path(root).expanduser()
        self.create = create
        self.name = name or str(self.root)

    def __repr__(self) -> str:
        return f"FolderStore({str(self.root)!r})"

    # ---- helpers ----------------------------------------------------------------------------------------------
    def _series_folder(self, study_uid: str, series_uid: str) -> Path:
        return self.root / safe_name(study_uid) / safe_name(series_uid)

    def _instance_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return self._series_folder(study_uid, series_uid) / f"{safe_name(sop_uid)}.dcm"

    @staticmethod
    def _instances(series_folder: Path) -> list[Path]:
        return sorted(p for p in series_folder.glob("*.dcm") if not p.name.startswith("."))

    def _series_folders(self, study_folder: Path) -> list[Path]:
        return sorted(
            p for p in study_folder.iterdir() if p.is_dir() and not p.name.startswith(".") and self._instances(p)
        )

    def _study_folders(self, study_uid: str | None) -> list[Path]:
        self.check()
        if study_uid is not None:
            folder = self.root / safe_name(study_uid)
            return [folder] if folder.is_dir() else []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    # ---- DicomStore -------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Check that the folder exists (creating it when ``create``) and can be read.

        Raises:
            PacsUnavailableError: the folder is missing (e.g. a share not mounted) or not readable.
        """
        if self.create and not self.root.exists():
            ensure_writable_directory(self.root)
        if not self.root.is_dir():
            raise PacsUnavailableError(
                f"The DICOM folder store {self.root} does not exist or is not a folder. Mount or create it, or fix "
                "the `path` setting (set `create: true` to let MedAI create it)."
            )
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise PacsUnavailableError(f"The DICOM folder store {self.root} is not readable. Fix its permissions.")

    def search_studies(
        self, patient_id: str | None = None, study_uid: str | None = None, modality: str | None = None
    ) -> list[StudyRecord]:
        """The studies matching all given filters (exact match), reading one header per series."""
        records = []
        for study_folder in self._study_folders(study_uid):
            headers = [read_header(self._instances(s)[0]) for s in self._series_folders(study_folder)]
            if not headers:
                continue
            first = headers[0]
            modalities = tuple(sorted({_text(ds, "Modality") for ds in headers} - {""}))
            record = StudyRecord(
                study_uid=_text(first, "StudyInstanceUID"),
                patient_id=_text(first, "PatientID"),
                patient_name=_text(first, "PatientName"),
                study_date=_text(first, "StudyDate"),
                accession_number=_text(first, "AccessionNumber"),
                description=_text(first, "StudyDescription"),
                modalities=modalities,
            )
            if study_uid is not None and record.study_uid != study_uid:
                continue
            if patient_id is not None and record.patient_id != patient_id:
                continue
            if modality is not None and modality not in record.modalities:
                continue
            records.append(record)
        return records

    def search_series(self, study_uid: str) -> list[SeriesRecord]:
        """The series of a study, with their instance counts (empty when the study is unknown)."""
        records = []
        for study_folder in self._study_folders(study_uid):
            for series_folder in self._series_folders(study_folder):
                instances = self._instances(series_folder)
                ds = read_header(instances[0])
                records.append(
                    SeriesRecord(
                        study_uid=_text(ds, "StudyInstanceUID"),
                        series_uid=_text(ds, "SeriesInstanceUID"),
                        modality=_text(ds, "Modality"),
                        description=_text(ds, "SeriesDescription"),
                        body_part=_text(ds, "BodyPartExamined"),
                        number_of_instances=len(instances),
                    )
                )
        return records

    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> list[Path]:
        """Copy the series' files into ``folder`` (atomically, one ``<SOPInstanceUID>.dcm`` per instance).

        Raises:
            PacsNotFoundError: the series is not in the store.
        """
        self.check()
        instances = self._instances(self._series_folder(study_uid, series_uid))
        if not instances:
            raise PacsNotFoundError(
                f"Series {series_uid} of study {study_uid} is not in the folder store {self.root}. "
                "Search the store for the series it holds."
            )
        folder = ensure_writable_directory(folder)
        paths = []
        for source in instances:
            target = folder / source.name
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
            paths.append(target)
        return paths

    def store(self, files: Sequence[Path]) -> StoreOutcome:
        """Copy DICOM files into the store; instances already there are reported, not rewritten.

        Raises:
            InputError: a file is not DICOM.
            PacsRejectedError: files without Study/Series/SOP Instance UID (the others are stored).
            PacsUnavailableError: the folder is missing.
        """
        self.check()
        stored: list[str] = []
        present: list[str] = []
        failed: list[tuple[str, str]] = []
        for path in files:
            ds = read_header(Path(path))
            sop = _text(ds, "SOPInstanceUID")
            missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID") if not _text(ds, k)]
            if missing:
                failed.append((sop or str(path), f"{Path(path).name} has no {', '.join(missing)}"))
                continue
            target = self._instance_path(_text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID"), sop)
            if target.exists():
                present.append(sop)
                continue
            ensure_writable_directory(target.parent)
            with atomic_path(target) as tmp:
                shutil.copyfile(path, tmp)
            stored.append(sop)
        if failed:
            raise PacsRejectedError(
                f"The folder store {self.root} refused {len(failed)} file(s), e.g. {failed[0][1]}. "
                "Fix or drop those files; the others were stored.",
                failed,
                tuple(stored),
                tuple(present),
            )
        return StoreOutcome(tuple(stored), tuple(present))

    def series_exists(self, study_uid: str, series_uid: str) -> bool:
        """Whether the store holds at least one instance of the series."""
        self.check()
        return bool(self._instances(self._series_folder(study_uid, series_uid)))

    # ---- what retrieve_verified and the gateway's boundary read through ------------------------------------------
    def instance_uids(self, study_uid: str, series_uid: str) -> set[str]:
        """The SOPInstanceUIDs the store holds for a series (empty when unknown)."""
        self.check()
        return {
            _text(read_header(p), "SOPInstanceUID") for p in self._instances(self._series_folder(study_uid, series_uid))
        }

    def iter_instances(self, study_uid: str, series_uid: str) -> Iterator[Dataset]:
        """The series' instances, read one at a time (a file that is not DICOM raises :class:`InputError`)."""
        import pydicom

        self.check()
        for path in self._instances(self._series_folder(study_uid, series_uid)):
            try:
                yield pydicom.dcmread(path)
            except (pydicom.errors.InvalidDicomError, OSError, ValueError) as exc:
                raise InputError(f"Cannot read {path} as a DICOM file ({type(exc).__name__}).") from None

    def find_patient_studies(self, patient_id: str) -> list[StudyRecord]:
        """The studies whose PatientID is exactly ``patient_id``."""
        return [s for s in self.search_studies(patient_id=patient_id) if s.patient_id == patient_id]

    def write_dataset(self, ds: Dataset) -> Path:
        """Write a received dataset into its place (atomically; its UIDs checked by the caller); returns the path."""
        target = self._instance_path(
            _text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID"), _text(ds, "SOPInstanceUID")
        )
        ensure_writable_directory(target.parent)
        return write_instance(ds, target)

    def remove_study(self, study_uid: str) -> None:
        """Remove every file of a study (nothing when the store does not hold it)."""
        shutil.rmtree(self.root / safe_name(study_uid), ignore_errors=True)
