"""The MedAI report as a FHIR R4 DiagnosticReport (JSON), for a RIS or EHR that takes FHIR rather than HL7 v2.

The resource: ``status`` ``"preliminary"``; ``category`` RAD (HL7 v2 table 0074) and ``code`` LOINC 18748-4
(diagnostic imaging study); ``subject`` by the patient's identifier (PatientID; no name); ``effectiveDateTime`` the
study date; ``issued`` the report time; ``identifier`` the AccessionNumber (type ACSN);
``imagingStudy`` a reference to the ImagingStudy by its identifier ``urn:oid:<StudyInstanceUID>`` (system
``urn:dicom:uid``); ``conclusion`` the exam's Lung-RADS v2022 category, reason, management and the preliminary
disclaimer; ``conclusionCode`` the Lung-RADS category; ``presentedForm`` the plain-text report
(:func:`MedAIExtension.interop.report_text.tracking_report_text`) in base64.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from MedAIExtension.atomic import atomic_path
from MedAIExtension.errors import InputError, OutputError
from MedAIExtension.interop.report_text import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_VERSION,
    PRELIMINARY,
    ReportContent,
    content_of,
    report_lines,
)
from MedAIExtension.interop.study_header import StudyHeader
from MedAIExtension.interop.triage import Triage
from MedAIExtension.tracking.results import StudyResult, TrackingResult

__all__ = ["LUNG_RADS_SYSTEM", "diagnostic_report", "write_fhir_report"]

#: The code system of the Lung-RADS categories in ``conclusionCode`` (MedAI's; Lung-RADS has no FHIR system).
LUNG_RADS_SYSTEM = "urn:medai:lung-rads-v2022"


def _fhir_date(header: StudyHeader) -> str | None:
    """StudyDate as a FHIR date (None without one). The time is left out: a FHIR dateTime with a time needs a
    time zone, which StudyTime does not carry."""
    stamp = header.study_datetime
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}" if stamp else None


def diagnostic_report(
    result: TrackingResult | StudyResult | ReportContent,
    *,
    dataset: Any | None = None,
    triage: Triage | None = None,
    model: str = DEFAULT_MODEL,
    model_version: str = DEFAULT_MODEL_VERSION,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The FHIR R4 DiagnosticReport of ``result``'s current study as a JSON-ready dict (see the module).

    The arguments are those of :func:`MedAIExtension.interop.hl7_oru.build_oru`.

    Raises:
        InputError: the study has no StudyInstanceUID (the ImagingStudy reference needs it); ``result`` is not a
            nodule result.
    """
    content = content_of(result, dataset=dataset, model=model, model_version=model_version, triage=triage)
    header = content.header
    if not header.study_uid:
        raise InputError(
            "The study has no StudyInstanceUID, which the DiagnosticReport's ImagingStudy reference needs; pass the "
            "study's DICOM header (dataset=) or read the study from DICOM."
        )
    text = "\n".join(report_lines(content)) + "\n"
    category = content.exam_lung_rads
    conclusion = (
        f"Lung-RADS {category}: {content.exam_reason}. Recommendation (Lung-RADS v2022): {content.management} "
        f"{PRELIMINARY} ({content.model} version {content.model_version})."
    )
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": "preliminary",
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
                ]
            }
        ],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}],
            "text": "CT chest lung nodule assessment (AI)",
        },
        "issued": (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="seconds"),
        "imagingStudy": [
            {
                "type": "ImagingStudy",
                "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{header.study_uid}"},
            }
        ],
        "conclusion": conclusion,
        "conclusionCode": [
            {
                "coding": [{"system": LUNG_RADS_SYSTEM, "code": category, "display": f"Lung-RADS {category}"}],
                "text": f"Lung-RADS {category}",
            }
        ],
        "presentedForm": [
            {
                "contentType": "text/plain; charset=utf-8",
                "language": "en",
                "title": f"MedAI lung nodule report ({PRELIMINARY})",
                "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
            }
        ],
    }
    if header.accession_number:
        accession = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
        report["identifier"] = [{"type": {"coding": [accession]}, "value": header.accession_number}]
    if header.patient_id:
        report["subject"] = {"type": "Patient", "identifier": {"value": header.patient_id}}
    when = _fhir_date(header)
    if when is not None:
        report["effectiveDateTime"] = when
    return report


def write_fhir_report(
    result: TrackingResult | StudyResult | ReportContent,
    path: str | os.PathLike[str],
    **options: Any,
) -> Path:
    """Write :func:`diagnostic_report` of ``result`` (``options``: its keyword arguments) as JSON to ``path``,
    atomically (a temporary file beside it renamed into place); returns the path.

    Raises:
        InputError: as :func:`diagnostic_report`.
        OutputError: the folder of ``path`` does not exist or cannot be written.
    """
    target = Path(path)
    report = diagnostic_report(result, **options)  # everything checked before anything is written
    if not target.parent.is_dir():
        raise OutputError(
            f"The folder {target.parent} does not exist; create it or choose another path for {target.name}."
        )
    try:
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"Writing the FHIR report {target} failed ({exc.strerror or exc}).") from None
    return target
