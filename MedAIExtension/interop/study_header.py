"""Who and what a report is about: the patient and study attributes a RIS matches a report on, from DICOM.

Read from the source study's header: a pydicom dataset given by the caller, else the first of the image's
``source_files`` (headers only), else what :mod:`MedAIExtension.io.dicom_metadata` kept in ``Image.metadata`` (an
image read from NIfTI has none of it). Values are kept as DICOM text; escaping for HL7 is the writer's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image

__all__ = ["StudyHeader", "read_study_header"]

_TAGS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
)


@dataclass(frozen=True)
class StudyHeader:
    """The patient and study attributes of a report, as DICOM text (``""`` where the source has none).

    Attributes:
        patient_id: PatientID.
        patient_name: PatientName in DICOM PN form (``Family^Given^Middle^Prefix^Suffix``).
        birth_date: PatientBirthDate (``YYYYMMDD``).
        sex: PatientSex (``M``, ``F``, ``O``).
        study_uid: StudyInstanceUID.
        study_date: StudyDate (``YYYYMMDD``).
        study_time: StudyTime (``HHMMSS`` and an optional fraction).
        accession_number: AccessionNumber (the RIS's order number for the study).
        study_description: StudyDescription.
    """

    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    study_uid: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_description: str = ""

    @property
    def study_datetime(self) -> str:
        """StudyDate and StudyTime as one ``YYYYMMDD[HHMMSS]`` timestamp (``""`` without a date)."""
        date = self.study_date if len(self.study_date) == 8 and self.study_date.isdigit() else ""
        if not date:
            return ""
        time = "".join(ch for ch in self.study_time.split(".")[0] if ch.isdigit())[:6]
        return date + (time.ljust(6, "0") if len(time) >= 4 else "")


def _text(value: Any) -> str:
    """A DICOM value as text; a multi-valued one joined with DICOM's backslash (PN and text alike)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _from_dataset(dataset: Any) -> StudyHeader:
    values = {tag: _text(dataset.get(tag, "")) for tag in _TAGS}
    return StudyHeader(
        patient_id=values["PatientID"],
        patient_name=values["PatientName"],
        birth_date=values["PatientBirthDate"],
        sex=values["PatientSex"].upper(),
        study_uid=values["StudyInstanceUID"],
        study_date=values["StudyDate"],
        study_time=values["StudyTime"],
        accession_number=values["AccessionNumber"],
        study_description=values["StudyDescription"],
    )


def read_study_header(image: Image | None = None, dataset: Any | None = None) -> StudyHeader:
    """The :class:`StudyHeader` of ``dataset`` (a pydicom dataset of the study) or else of ``image``'s source.

    Raises:
        InputError: ``dataset`` is not a DICOM dataset, or a source file of ``image`` cannot be read.
    """
    import pydicom

    if dataset is not None:
        if not isinstance(dataset, pydicom.Dataset):
            raise InputError(
                f"The study header must be a pydicom Dataset (one image of the study), got {type(dataset).__name__}; "
                "pass pydicom.dcmread(<a file of the study>) or leave it out to read the image's source files."
            )
        return _from_dataset(dataset)
    if image is None:
        return StudyHeader()
    if image.source_files:
        path = image.source_files[0]
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_TAGS))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise InputError(
                f"Cannot read the source DICOM file {path.name} for the report's patient and study data "
                f"({type(exc).__name__}). Keep the input folder in place until the report is written, or pass the "
                "study's header as a pydicom dataset."
            ) from None
        return _from_dataset(header)
    return _from_dataset(image.metadata)
