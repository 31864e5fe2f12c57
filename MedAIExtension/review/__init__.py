"""Synthetic Data Review: expert grading, blinded reader studies, realism metrics and memorization checks of
generated images against real ones, persisted in one SQLite project file per review.

:class:`ReviewStore` is the project; :mod:`~MedAIExtension.review.workflow` runs each review step on it (the CLI
``medai review …`` and the Slicer module share it). Heavy libraries (torch, MONAI, scikit-image) are imported only
by the steps that need them.
"""

from MedAIExtension.review.store import (
    DEFAULT_ARTIFACTS,
    SCHEMA_VERSION,
    GradeRecord,
    ImageRecord,
    ImportReport,
    ProjectLockedError,
    ReaderSession,
    ReviewStore,
    Trial,
    image_sha256,
)

__all__ = [
    "DEFAULT_ARTIFACTS",
    "SCHEMA_VERSION",
    "GradeRecord",
    "ImageRecord",
    "ImportReport",
    "ProjectLockedError",
    "ReaderSession",
    "ReviewStore",
    "Trial",
    "image_sha256",
]
