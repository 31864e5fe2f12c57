"""Retrieving a series and checking what arrived before anyone reads it.

A PACS that restarts mid-answer, or a connection cut mid-transfer, can leave a WADO-RS answer that ends in the
middle of an instance; parsed naively, the last instance is a valid-looking file with half its pixels. So every
instance is checked as it arrives: it parsed, its StudyInstanceUID and SeriesInstanceUID are the ones asked for,
its UIDs follow the DICOM grammar, and its pixel data is as long as its header says. Afterwards the number of
instances is compared with the number the PACS lists for the series (QIDO-RS). A short or damaged transfer raises
:class:`~MedAIExtension.pacs.errors.PacsTransferError` (retryable, like an outage); an instance whose UIDs are not
UIDs is *refused*: left out and reported, never written under a name derived from it.

Files are written as ``00001.dcm``, ``00002.dcm``, … in arrival order: no file name comes from the PACS.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from MedAIExtension.atomic import ensure_writable_directory
from MedAIExtension.dicom.uids import uid_problem
from MedAIExtension.io.pixel_decoding import pixel_data_problem
from MedAIExtension.pacs.errors import PacsNotFoundError, PacsTransferError
from MedAIExtension.pacs.folder_store import write_instance

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["InstanceSource", "RetrievedSeries", "retrieve_verified", "transfer_damage"]

_UID_KEYWORDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")


@dataclass(frozen=True)
class RetrievedSeries:
    """What :func:`retrieve_verified` wrote.

    Attributes:
        files: the instances that passed every check, in arrival order.
        refused: ``(what, problem)`` for each instance left out (its UIDs are not UIDs, or it belongs elsewhere).
    """

    files: tuple[Path, ...]
    refused: tuple[tuple[str, str], ...] = ()


class InstanceSource(Protocol):
    """What :func:`retrieve_verified` reads a series through
    (:class:`~MedAIExtension.pacs.dicomweb.DicomWebStore` is one)."""

    def instance_uids(self, study_uid: str, series_uid: str) -> set[str]:
        """The SOPInstanceUIDs the PACS lists for the series (empty when unknown)."""
        ...

    def iter_instances(self, study_uid: str, series_uid: str) -> Iterator[Dataset]:
        """The series' instances as they arrive, parsed but not checked."""
        ...


def transfer_damage(ds: Dataset) -> str | None:
    """How the pixel data of ``ds`` shows a cut transfer (too short, cut inside a fragment, missing), or ``None``.

    Cheap structural checks only (no decoding): a damaged transfer is retried. Whether complete pixel data can be
    decoded is the readers' question (:func:`MedAIExtension.io.pixel_decoding.pixel_data_problem`), answered when
    the series is read.
    """
    if "PixelData" not in ds:
        if "Rows" in ds and "Columns" in ds and not any(k in ds for k in ("FloatPixelData", "DoubleFloatPixelData")):
            return "it has an image header but no pixel data"
        return None
    if ds.PixelData is None:
        return "its pixel data is empty"
    return pixel_data_problem(ds, decode=False)


def _header_problem(ds: Dataset, study_uid: str, series_uid: str) -> tuple[str, str] | None:
    """``(what, problem)`` when an instance's UIDs are not UIDs or it is not of the requested series."""
    for keyword in _UID_KEYWORDS:
        problem = uid_problem(str(ds.get(keyword, "")))
        if problem is not None:
            return f"{keyword} of a retrieved instance", problem
    if str(ds.StudyInstanceUID) != study_uid or str(ds.SeriesInstanceUID) != series_uid:
        return "retrieved instance", "it belongs to another study or series than the one asked for"
    return None


def retrieve_verified(store: InstanceSource, study_uid: str, series_uid: str, folder: Path) -> RetrievedSeries:
    """Retrieve a series into ``folder`` (``00001.dcm`` …), checking every instance and the instance count.

    Args:
        store: where the series is read from (:class:`InstanceSource`, e.g.
            :class:`~MedAIExtension.pacs.dicomweb.DicomWebStore`).
        study_uid, series_uid: the series, already checked to be UIDs.
        folder: an empty folder named by the caller.

    Raises:
        PacsTransferError: an instance broke off (parse failure, pixel data too short) or fewer instances arrived
            than the PACS lists: retry later.
        PacsNotFoundError: the PACS lists no instance of the series.
        PacsUnavailableError, PacsAuthError: as for every request.
    """
    folder = ensure_writable_directory(folder)
    listed = store.instance_uids(study_uid, series_uid)
    if not listed:
        raise PacsNotFoundError(
            f"The PACS lists no instance of series {series_uid} of study {study_uid}; it may have been deleted."
        )
    files: list[Path] = []
    refused: list[tuple[str, str]] = []
    arrived = 0
    for ds in store.iter_instances(study_uid, series_uid):
        arrived += 1
        damage = transfer_damage(ds)
        if damage is not None:
            raise PacsTransferError(
                f"Instance {arrived} of series {series_uid} arrived incomplete ({damage}); the transfer was cut. "
                "Nothing of it is used; try again later."
            )
        problem = _header_problem(ds, study_uid, series_uid)
        if problem is None and str(ds.SOPInstanceUID) not in listed:
            problem = ("retrieved instance", "the PACS does not list it in this series")
        if problem is not None:
            refused.append(problem)
            continue
        files.append(write_instance(ds, folder / f"{len(files) + 1:05d}.dcm"))
    if arrived < len(listed):
        raise PacsTransferError(
            f"Only {arrived} of the {len(listed)} instances the PACS lists for series {series_uid} arrived; the "
            "transfer was cut short. Nothing of it is used; try again later."
        )
    return RetrievedSeries(tuple(files), tuple(refused))
