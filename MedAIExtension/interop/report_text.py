"""The report a RIS takes, as content and as plain text: what MedAI found in the current study of a nodule result.

:func:`report_content` gathers, once, what every report format says (the HL7 ORU in
:mod:`MedAIExtension.interop.hl7_oru`, the FHIR DiagnosticReport in :mod:`MedAIExtension.interop.fhir_report` and
:func:`tracking_report_text`): per nodule its tracking ID, location (side, zone, image number), mean diameter to
0.1 mm, volume to the whole mm³, growth in words (a volume doubling time only for growth beyond the measurement
uncertainty, else "stable within measurement error"), Lung-RADS category; for the exam its Lung-RADS v2022 category
with the management it calls for and the reading priority; the AI model and version; and the line
:data:`PRELIMINARY`. The readings are those of the SR and the HTML report (:func:`report_readings`), so every output
says the same thing.

The current study is the follow-up of a :class:`TrackingResult` (nodules gone since the prior are listed as
resolved) and the only study of a :class:`StudyResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from MedAIExtension import __version__
from MedAIExtension.errors import InputError
from MedAIExtension.interop.study_header import StudyHeader, read_study_header
from MedAIExtension.interop.triage import Triage, from_lung_rads
from MedAIExtension.tracking.reading import NoduleReading, report_readings
from MedAIExtension.tracking.recommendations import management_recommendation
from MedAIExtension.tracking.results import StudyResult, TrackedNodule, TrackingResult

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_VERSION",
    "PRELIMINARY",
    "NoduleLine",
    "ReportContent",
    "content_of",
    "report_content",
    "report_lines",
    "tracking_report_text",
]

#: The line every MedAI report carries: no radiologist has verified it.
PRELIMINARY = "PRELIMINARY - AI, NOT VERIFIED"
#: The algorithm named when the caller does not name the model (as in the tracking SR).
DEFAULT_MODEL = "MedAI nodule tracking"
DEFAULT_MODEL_VERSION = __version__
_TITLE = "MedAI lung nodule report (Lung-RADS v2022)"


@dataclass(frozen=True)
class NoduleLine:
    """One nodule as the report states it for the current study.

    Sizes are None for a nodule not seen in the current study (``status`` ``"resolved"``); ``prior_mean_diameter_mm``
    is its size on the prior study, when there was one. ``growth`` is the change in words (None without a prior),
    ``vdt_days`` the volume doubling time the report gives (only for growth beyond the measurement uncertainty).
    """

    tracking_id: str
    status: str
    finding: str
    kind: str
    side: str | None
    zone: str | None
    image_number: int | None
    location: str | None
    mean_diameter_mm: float | None
    long_axis_mm: float | None
    short_axis_mm: float | None
    solid_mean_diameter_mm: float | None
    volume_mm3: float | None
    prior_mean_diameter_mm: float | None
    growth: str | None
    vdt_days: float | None
    lung_rads: str | None
    lung_rads_reason: str | None

    def sentence(self) -> str:
        """The nodule in one line, e.g. ``"N1: solid nodule, right upper zone, image 52: mean diameter 10.8 mm
        (11.2 x 10.4 mm), volume 698 mm³; stable within measurement error; Lung-RADS 4A."``"""
        if self.mean_diameter_mm is None:
            before = (
                f"; prior mean diameter {self.prior_mean_diameter_mm:.1f} mm" if self.prior_mean_diameter_mm else ""
            )
            return f"{self.tracking_id}: {self.kind} {self.finding} not seen on this study (resolved){before}."
        where = f", {self.location}" if self.location else ""
        size = f"mean diameter {self.mean_diameter_mm:.1f} mm"
        if self.long_axis_mm is not None and self.short_axis_mm is not None:
            size += f" ({self.long_axis_mm:.1f} x {self.short_axis_mm:.1f} mm)"
        if self.solid_mean_diameter_mm is not None:
            size += f", solid component {self.solid_mean_diameter_mm:.1f} mm"
        if self.volume_mm3 is not None:
            size += f", volume {self.volume_mm3:.0f} mm³"
        parts = [f"{self.tracking_id}: {self.kind} {self.finding}{where}: {size}"]
        parts.append(self.growth if self.growth else "no prior study for comparison")
        if self.lung_rads:
            parts.append(f"Lung-RADS {self.lung_rads}")
        return "; ".join(parts) + "."


@dataclass(frozen=True)
class ReportContent:
    """Everything a MedAI report about one study says (see the module's description).

    Attributes:
        header: patient and study attributes from the DICOM source (for HL7 PID/OBR and FHIR).
        timepoint: ``"followup"`` (a tracking result) or ``"baseline"`` (a single study).
        interval_days: days since the prior study (None for a single study).
        nodules: one :class:`NoduleLine` per nodule.
        exam_lung_rads: the exam's Lung-RADS v2022 category (``"1"`` .. ``"4X"``), ``exam_reason`` why.
        management: the Lung-RADS v2022 management of that category.
        triage: the reading priority (1 urgent .. 5 routine) with its reason.
        model, model_version: the AI that produced the findings.
        warnings: the result's warnings (measurement or registration doubts).
    """

    header: StudyHeader
    timepoint: str
    interval_days: float | None
    nodules: tuple[NoduleLine, ...]
    exam_lung_rads: str
    exam_reason: str
    management: str
    triage: Triage
    model: str
    model_version: str
    warnings: tuple[str, ...] = ()


def _one(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def _line(nodule: TrackedNodule, reading: NoduleReading, prior: NoduleReading | None, timepoint: str) -> NoduleLine:
    finding = nodule.followup if timepoint == "followup" else nodule.baseline
    m = finding.measurement if finding is not None else None
    before = nodule.baseline.measurement if timepoint == "followup" and nodule.baseline is not None else None
    where = reading.location if reading.location is not None else (prior.location if prior is not None else None)
    kind_source = m if m is not None else before
    rads = reading.lung_rads if m is not None else None
    part_solid = m is not None and m.kind.value == "part-solid"
    return NoduleLine(
        tracking_id=nodule.tracking_id,
        status=str(nodule.status.value),
        finding=reading.finding if m is not None else (prior.finding if prior is not None else "nodule"),
        kind=kind_source.kind.value if kind_source is not None else "",
        side=str(where.side) if where is not None and where.side is not None else None,
        zone=str(where.zone) if where is not None and where.zone is not None else None,
        image_number=where.image_number if where is not None and m is not None else None,
        location=where.describe() if where is not None and m is not None else None,
        mean_diameter_mm=_one(m.mean_diameter_mm) if m is not None else None,
        long_axis_mm=_one(m.long_axis_mm) if m is not None else None,
        short_axis_mm=_one(m.short_axis_mm) if m is not None else None,
        solid_mean_diameter_mm=_one(m.solid_mean_diameter_mm) if part_solid and m is not None else None,
        volume_mm3=float(m.volume_mm3) if m is not None else None,
        prior_mean_diameter_mm=_one(before.mean_diameter_mm) if before is not None else None,
        growth=reading.growth,
        vdt_days=nodule.reported_vdt_days if m is not None and before is not None and not reading.mass else None,
        lung_rads=str(rads.category) if rads is not None else None,
        lung_rads_reason=rads.reason if rads is not None else None,
    )


def report_content(
    result: TrackingResult | StudyResult,
    *,
    dataset: Any | None = None,
    model: str = DEFAULT_MODEL,
    model_version: str = DEFAULT_MODEL_VERSION,
    triage: Triage | None = None,
) -> ReportContent:
    """What the reports about ``result``'s current study say (see the module's description).

    Args:
        result: :func:`track_nodules`' :class:`TrackingResult` or :func:`assess_study`'s :class:`StudyResult`.
        dataset: a pydicom dataset of the current study for the patient and study attributes; without it they
            are read from the first source file of the study's image (or its metadata).
        model, model_version: the AI named in the report (e.g. the catalogue model and its version).
        triage: the reading priority; by default the gateway's priority for the exam's Lung-RADS category.

    Raises:
        InputError: ``result`` is not a nodule result, or the study header cannot be read.
    """
    if isinstance(result, TrackingResult):
        timepoint, interval, study = "followup", float(result.interval_days), result.followup
    elif isinstance(result, StudyResult):
        timepoint, interval, study = "baseline", None, result.baseline
    else:
        raise InputError(
            f"A MedAI report is written from a nodule result (TrackingResult or StudyResult), got "
            f"{type(result).__name__}; pass what track_nodules or assess_study returned."
        )
    if not str(model).strip() or not str(model_version).strip():
        raise InputError("The report must name the AI model and its version; pass model= and model_version=.")
    readings = report_readings(result)
    lines = []
    for nodule in result.nodules:
        prior = readings.get((nodule.number, "baseline")) if timepoint == "followup" else None
        lines.append(_line(nodule, readings[(nodule.number, timepoint)], prior, timepoint))
    exam = result.exam_lung_rads[timepoint]
    return ReportContent(
        header=read_study_header(study.image, dataset),
        timepoint=timepoint,
        interval_days=interval,
        nodules=tuple(lines),
        exam_lung_rads=str(exam.category),
        exam_reason=exam.reason,
        management=management_recommendation(exam.category),
        triage=triage if triage is not None else from_lung_rads(str(exam.category), exam.reason),
        model=str(model).strip(),
        model_version=str(model_version).strip(),
        warnings=tuple(result.warnings),
    )


def _iso_date(dicom_date: str) -> str:
    if len(dicom_date) == 8 and dicom_date.isdigit():
        return f"{dicom_date[:4]}-{dicom_date[4:6]}-{dicom_date[6:]}"
    return dicom_date or "unknown date"


def content_of(
    result: TrackingResult | StudyResult | ReportContent,
    *,
    dataset: Any | None = None,
    model: str = DEFAULT_MODEL,
    model_version: str = DEFAULT_MODEL_VERSION,
    triage: Triage | None = None,
) -> ReportContent:
    """``result`` itself when it is already a :class:`ReportContent`, else :func:`report_content` of it."""
    if isinstance(result, ReportContent):
        return result
    return report_content(result, dataset=dataset, model=model, model_version=model_version, triage=triage)


def report_lines(content: ReportContent) -> list[str]:
    """The plain-text report of ``content``, line by line (what :func:`tracking_report_text` joins)."""
    header = content.header
    study = header.study_description or "CT chest"
    lines = [_TITLE, PRELIMINARY, ""]
    lines.append(f"Study: {study} of {_iso_date(header.study_date)}")
    if header.accession_number:
        lines.append(f"Accession number: {header.accession_number}")
    if content.interval_days is None:
        lines.append("Comparison: none (no prior study)")
    else:
        lines.append(f"Comparison: prior CT {content.interval_days:g} days earlier")
    lines.append(f"AI: {content.model} version {content.model_version} (MedAI {__version__})")
    triage = content.triage
    lines.append(f"Reading priority: {triage.priority} ({triage.label})")
    lines += ["", "Findings:"]
    if not content.nodules:
        lines.append("No lung nodules found.")
    lines += [nodule.sentence() for nodule in content.nodules]
    lines += ["", "Impression:"]
    lines.append(f"Lung-RADS {content.exam_lung_rads} (exam): {content.exam_reason}")
    lines.append(f"Recommendation (Lung-RADS v2022): {content.management}")
    if content.warnings:
        lines += ["", "Warnings:"] + [f"- {warning}" for warning in content.warnings]
    lines += [
        "",
        f"{PRELIMINARY}: automatic measurements and categories, to be reviewed by a radiologist before use.",
    ]
    return lines


def tracking_report_text(
    result: TrackingResult | StudyResult | ReportContent,
    *,
    dataset: Any | None = None,
    model: str = DEFAULT_MODEL,
    model_version: str = DEFAULT_MODEL_VERSION,
    triage: Triage | None = None,
) -> str:
    """The plain-text report of ``result``'s current study (lines joined by ``"\\n"``, ending with one).

    ``result`` is a :class:`TrackingResult`, a :class:`StudyResult` or a :class:`ReportContent` made by
    :func:`report_content` (then the other arguments are not used); the arguments are those of
    :func:`report_content`. The text names no patient (the HL7 PID and the FHIR subject do).
    """
    content = content_of(result, dataset=dataset, model=model, model_version=model_version, triage=triage)
    return "\n".join(report_lines(content)) + "\n"
