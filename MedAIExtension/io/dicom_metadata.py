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
    # who and how (cohort subgroups: MedAIExtension.batch.study.acquisition_of)
    "PatientSex",
    "PatientAge",
    "Manufacturer",
    "ManufacturerModelName",
    "SliceThickness",
    "ConvolutionKernel",
    "ContrastBolusAgent",
)


def _text(value: Any) -> str:
    """A DICOM value as text; a multi-valued one joined with DICOM's backslash."""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def series_metadata(dataset: Any) -> dict[str, str]:
    """The :data:`SERIES_METADATA_KEYS` of a dataset as text (empty when absent; multiple values joined by ``\\``)."""
    return {key: _text(dataset.get(key, "")) for key in SERIES_METADATA_KEYS}
