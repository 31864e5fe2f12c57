"""The read-only records a :class:`~MedAIExtension.review.store.ReviewStore` hands out."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["GradeRecord", "ImageRecord", "ImageRole", "ImportFailure", "ImportReport", "ReaderSession", "Trial"]


class ImageRole(StrEnum):
    """Whether an image of a review project is generated or a real reference."""

    SYNTHETIC = "synthetic"
    REAL = "real"


@dataclass(frozen=True)
class ImageRecord:
    """One image of a review project.

    Attributes:
        id: the project's image id (1, 2, ...).
        role: :class:`ImageRole` (compares equal to ``"synthetic"`` / ``"real"``).
        path: absolute path of the volume file or DICOM folder it was added from.
        sha256: content hash over voxel values and geometry (see :func:`~MedAIExtension.review.store.image_sha256`).
        shape: array shape ``(K, J, I)`` (slices, rows, columns), as :attr:`Image.shape`.
        spacing: voxel spacing along i, j, k in mm.
        modality: ``"CT"``, ``"MR"`` or ``""`` when unknown.
        provenance: generator, version, seed, parent and anything else recorded with the image.
        added_at: UTC time it was added (ISO 8601).
        duplicate: True when ``add_image`` found the same content already in the project and added nothing.
        parent_id: id of the real image in this project that a synthetic image derives from, if known.
        added_by: who added it, if given.
    """

    id: int
    role: ImageRole
    path: str
    sha256: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    modality: str
    provenance: dict[str, Any]
    added_at: str
    duplicate: bool = False
    parent_id: int | None = None
    added_by: str | None = None


@dataclass(frozen=True)
class GradeRecord:
    """One grade a reviewer gave to one image (re-grades are new records; history is kept).

    Attributes:
        id: grade id; a larger id is a later grade.
        image_id: the graded image.
        reviewer: who graded.
        accept: True accept, False reject, None no decision.
        realism: 1 (obviously synthetic) .. 5 (indistinguishable from real), or None.
        artifacts: artifact flags from the project vocabulary.
        comment: free text.
        seconds: time spent on the grade, if measured.
        graded_at: UTC time of the commit (ISO 8601).
    """

    id: int
    image_id: int
    reviewer: str
    accept: bool | None
    realism: int | None
    artifacts: tuple[str, ...]
    comment: str
    seconds: float | None
    graded_at: str


@dataclass(frozen=True)
class Trial:
    """One trial of a blinded reader session (0-based ``index`` in presentation order).

    Attributes:
        index: position in the session's sequence, 0-based.
        image_id: the image shown.
        is_synthetic: the truth.
        said_synthetic: the reader's answer, None while unanswered.
        confidence: the reader's confidence 1 (guess) .. 5 (certain), or None.
        seconds: time the reader took, if measured.
        answered_at: UTC time of the answer, None while unanswered.
    """

    index: int
    image_id: int
    is_synthetic: bool
    said_synthetic: bool | None
    confidence: int | None
    seconds: float | None
    answered_at: str | None

    @property
    def answered(self) -> bool:
        """Whether the reader has answered this trial."""
        return self.answered_at is not None


@dataclass(frozen=True)
class ReaderSession:
    """A blinded reader session: who reads, the seed of its order, and how far they got.

    Attributes:
        id: session id.
        reviewer: the reader.
        seed: the seed the caller used to randomise the order, if any.
        created_at: UTC creation time (ISO 8601).
        n_trials: number of trials.
        n_answered: number of answered trials.
    """

    id: int
    reviewer: str
    seed: int | None
    created_at: str
    n_trials: int
    n_answered: int

    @property
    def complete(self) -> bool:
        """Whether every trial is answered."""
        return self.n_answered >= self.n_trials


@dataclass(frozen=True)
class ImportFailure:
    """A manifest row that was not imported, and why.

    Attributes:
        row: 1-based data row (CSV: the header is row 0) or 1-based entry of a JSON list.
        path: the row's path as written (``""`` if missing).
        reason: the error message (what is wrong and how to fix it).
    """

    row: int
    path: str
    reason: str


@dataclass(frozen=True)
class ImportReport:
    """What :meth:`~MedAIExtension.review.store.ReviewStore.import_manifest` did with each row.

    Attributes:
        added: images new to the project.
        duplicates: rows whose content (same sha256 and role) was already in the project; nothing was added.
        failed: rows that could not be imported; the other rows were still imported.
    """

    added: tuple[ImageRecord, ...] = ()
    duplicates: tuple[ImageRecord, ...] = ()
    failed: tuple[ImportFailure, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Whether every row was imported or recognised as a duplicate."""
        return not self.failed

    def summary(self) -> str:
        """One line of counts, then one line per failed row."""
        lines = [
            f"{len(self.added)} added, {len(self.duplicates)} duplicate(s) already in the project (not added again), "
            f"{len(self.failed)} failed."
        ]
        lines += [f"  row {f.row} ({f.path or 'no path'}): {f.reason}" for f in self.failed]
        return "\n".join(lines)
