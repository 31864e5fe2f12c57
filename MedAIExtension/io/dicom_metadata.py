"""The DICOM attributes an image read from a series (or a multi-frame object) keeps in ``Image.metadata``."""

from __future__ import annotations

from typing import Any

__all__ = ["SERIES_METADATA_KEYS", "series_metadata"]

#: DICOM attributes kept in ``Image.metadata`` of an image read from (or derived into) a series.
SERIES_METADATA_KEYS = (
    "PatientID",
    "PatientName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "StudyDate",
    "FrameOfReferenceUID",
)


def series_metadata(dataset: Any) -> dict[str, str]:
    """The :data:`SERIES_METADATA_KEYS` of a dataset as text (empty when absent)."""
    return {key: str(dataset.get(key, "")) for key in SERIES_METADATA_KEYS}
