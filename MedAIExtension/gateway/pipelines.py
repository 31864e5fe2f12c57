"""The gateway's pipelines: retrieve the matched series, run the shared MedAI logic, write DICOM results.

The DICOM objects are made by the same writers the CLI and the Slicer modules use (SEG, tracking SR,
Parametric Map), so a study processed by the gateway and one processed in Slicer carry the same objects.

Everything comes from the PACS through :class:`~MedAIExtension.gateway.boundary.PacsBoundary`. Folders inside a job
folder are named by their role (``input``, ``prior``, ``prior-report/seg-1`` …), never by a UID or other PACS text.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MedAIExtension import __version__
from MedAIExtension.atomic import atomic_path
from MedAIExtension.dicom.source import require_single_frame_source
from MedAIExtension.dicom.sr import read_tracking_sr
from MedAIExtension.errors import InputError, MedAIError
from MedAIExtension.explain.pipeline import explain_to_folder
from MedAIExtension.explain.request import ExplainRequest
from MedAIExtension.explain.types import ExplainMethod
from MedAIExtension.gateway.boundary import PacsBoundary, Skipped
from MedAIExtension.gateway.config import Pipeline, RisSettings, Rule
from MedAIExtension.gateway.kill_points import kill_point
from MedAIExtension.interop.triage import Triage, from_alert_labels, from_lung_rads, routine
from MedAIExtension.io.dicom_series import read_dicom_series
from MedAIExtension.io.image import Image
from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.pacs.errors import PacsNotFoundError
from MedAIExtension.progress import CancelToken
from MedAIExtension.segmentation.pipeline import SegmentRequest, segment_to_folder
from MedAIExtension.tracking import (
    TrackingOptions,
    adopt_prior_tracking,
    assess_study,
    track_nodules,
    write_study_dicom,
)
from MedAIExtension.tracking.presentation_state import write_tracking_presentation_state
from MedAIExtension.tracking.results import StudyResult, TrackingResult

__all__ = ["PipelineOutput", "PriorLookup", "find_prior_study", "run_pipeline"]

#: Where a tracking job's RIS report is written inside the job folder, and its files.
REPORT_FOLDER = "report"
ORU_NAME = "oru.hl7"
FHIR_NAME = "diagnostic_report.json"

#: SeriesDescription of the tracking SR the gateway writes (also how it finds a prior study's report).
TRACKING_SR_DESCRIPTION = "MedAI nodule tracking"


@dataclass
class PipelineOutput:
    """What one job produced: DICOM files to store, the study's triage, and a summary free of patient data."""

    files: list[Path]
    triage: Triage
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PriorLookup:
    """The outcome of the prior-study search.

    Attributes:
        prior: ``(study_uid, series_uid)`` of the prior study's matching series, or None.
        trusted: False when the search may have missed the prior (the follow-up must not pass for a baseline
            silently: the journal, the log and the SR say so).
        reason: why it cannot be trusted.
    """

    prior: tuple[str, str] | None
    trusted: bool = True
    reason: str = ""


def _fresh(folder: Path) -> Path:
    """An empty folder at ``folder`` (a path the gateway named itself, inside the job folder)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _retrieve(pacs: PacsBoundary, study_uid: str, series_uid: str, folder: Path, skipped: Skipped) -> Path:
    pacs.retrieve(study_uid, series_uid, _fresh(folder), skipped)
    return folder


def _read_series(folder: Path) -> Image:
    return read_dicom_series(folder)


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.dcm") if path.is_file())


def find_prior_study(pacs: PacsBoundary, image: Image, rule: Rule, study_uid: str, skipped: Skipped) -> PriorLookup:
    """The patient's most recent earlier study with a series this rule matches.

    Studies are found by exact PatientID (:meth:`PacsBoundary.patient_studies`: Orthanc's REST find, or a broader
    QIDO-RS query filtered here, so any character works); "earlier" compares StudyDate. The lookup is *untrusted*
    when the current study has no PatientID or StudyDate, or when an answer had to be refused.
    """
    patient_id = str(image.metadata.get("PatientID", "")).strip()
    current_date = str(image.metadata.get("StudyDate", "")).strip()
    if not patient_id:
        return PriorLookup(None, False, "the study has no PatientID, so earlier studies cannot be searched")
    if not current_date:
        return PriorLookup(None, False, "the study has no StudyDate, so no earlier study can be told apart")
    found = pacs.patient_studies(patient_id, skipped)
    earlier = [s for s in found.studies if s.study_uid != study_uid and s.study_date < current_date]
    for study in sorted(earlier, key=lambda s: s.study_date, reverse=True):
        for series in pacs.series(study.study_uid, skipped):
            if rule.matches(series.modality, series.body_part, series.description):
                return PriorLookup((study.study_uid, series.series_uid), found.trusted, found.reason)
    return PriorLookup(None, found.trusted, found.reason)


def _retrieve_optional(
    pacs: PacsBoundary, study_uid: str, series_uid: str, folder: Path, skipped: Skipped
) -> list[Path]:
    """A series the job can do without: empty when the PACS has none of it or refused all of it (noted)."""
    try:
        return pacs.retrieve(study_uid, series_uid, _fresh(folder), skipped)
    except PacsNotFoundError:
        return []


def _prior_report(pacs: PacsBoundary, prior_study: str, folder: Path, skipped: Skipped) -> tuple[Path, Path] | None:
    """The prior study's MedAI tracking SR and the SEG it references, retrieved into ``folder``.

    Sub-folders are numbered (``seg-1``, ``sr-1`` …); measurement groups whose UIDs are not UIDs are refused, and a
    report left with none is not used.
    """
    import pydicom

    series = pacs.series(prior_study, skipped)
    reports = [s for s in series if s.modality == "SR" and s.description == TRACKING_SR_DESCRIPTION]
    if not reports:
        return None
    segs: dict[str, Path] = {}  # SOPInstanceUID -> file, each SEG series retrieved once
    for number, seg in enumerate((s for s in series if s.modality == "SEG"), start=1):
        for path in _retrieve_optional(pacs, prior_study, seg.series_uid, folder / f"seg-{number}", skipped):
            segs[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    for number, report in enumerate(reversed(reports), start=1):
        for sr_file in _retrieve_optional(pacs, prior_study, report.series_uid, folder / f"sr-{number}", skipped):
            try:
                groups = pacs.tracking_groups(read_tracking_sr(sr_file), skipped)
            except InputError:
                continue
            referenced = [g["seg_sop_instance_uid"] for g in groups if g["seg_sop_instance_uid"] in segs]
            if referenced:
                return sr_file, segs[referenced[0]]
    return None


def _presentation_state(
    result: TrackingResult | StudyResult, which: str, out: Path, files: dict[str, Path], warnings: list[str]
) -> None:
    """Add the study's Presentation State (the nodules circled and labelled, lung window) to the stored files; a
    PR that cannot be made is a warning, not a failed job (the SEG and SR carry the findings)."""
    try:
        files["presentation-state"] = write_tracking_presentation_state(result, which, out / "presentation_state.dcm")
    except InputError as exc:
        warnings.append(f"No presentation state: {exc}")


def _ris_report(
    result: TrackingResult | StudyResult, rule: Rule, triage: Triage, job_dir: Path, ris: RisSettings | None
) -> None:
    """Write the study's HL7 ORU^R01 (and FHIR DiagnosticReport) into ``<job>/report/`` for the RIS, when one is
    configured; the gateway sends it once the results are in the PACS (:mod:`.report_delivery`)."""
    if ris is None:
        return
    from MedAIExtension.interop.fhir_report import write_fhir_report  # lazy: only with a RIS configured
    from MedAIExtension.interop.hl7_oru import build_oru  # lazy: as above
    from MedAIExtension.interop.report_text import report_content  # lazy: as above

    model, version = _model_named(rule)
    content = report_content(result, model=model, model_version=version, triage=triage)
    folder = _fresh(job_dir / REPORT_FOLDER)
    message = build_oru(
        content,
        sending_application=ris.sending_application,
        sending_facility=ris.sending_facility,
        receiving_application=ris.receiving_application,
        receiving_facility=ris.receiving_facility,
    )
    with atomic_path(folder / ORU_NAME) as tmp:
        tmp.write_text(message, encoding="utf-8", newline="")
    if ris.fhir_folder is not None:
        write_fhir_report(content, folder / FHIR_NAME)


def _model_named(rule: Rule) -> tuple[str, str]:
    """The AI named in the report: the rule's catalogue model and its version, or MedAI's classical detector."""
    if rule.model is None:
        return "MedAI classical nodule detector", __version__
    try:
        return rule.model, load_catalog().get(rule.model).version
    except MedAIError:
        return rule.model, ""


def _nodule_tracking(
    rule: Rule,
    pacs: PacsBoundary,
    study_uid: str,
    image: Image,
    job_dir: Path,
    device: str,
    token: CancelToken | None,
    skipped: Skipped,
    ris: RisSettings | None = None,
) -> PipelineOutput:
    require_single_frame_source(image, "tracking SR")  # before the model runs: the SR cannot reference it yet
    options = TrackingOptions(model=rule.model, device=device)
    out = _fresh(job_dir / "results")
    summary: dict[str, Any] = {"pipeline": rule.pipeline.value, "prior": False}
    lookup = find_prior_study(pacs, image, rule, study_uid, skipped) if rule.find_prior else PriorLookup(None)
    prior = lookup.prior
    prior_image = None
    warnings: list[str] = []
    comments: list[str] = []
    if not lookup.trusted:
        summary["prior_lookup"] = f"untrusted: {lookup.reason}"
        pacs.log("prior_lookup_untrusted", level="warning", reason=lookup.reason, found=prior is not None)
        comments.append(
            f"The search for earlier studies of this patient cannot be trusted ({lookup.reason}); "
            + ("a prior study may be missing." if prior else "this exam was assessed as a baseline without one.")
        )
    if prior is not None:
        try:
            prior_image = _read_series(_retrieve(pacs, prior[0], prior[1], job_dir / "prior", skipped))
        except (InputError, PacsNotFoundError) as exc:  # a broken prior must not stop the current study
            warnings.append(f"The prior study could not be read ({exc}); this study was assessed on its own.")
            summary["prior_error"] = type(exc).__name__
            comments.append("The prior study could not be read; this exam was assessed on its own.")
    if prior_image is not None:
        assert prior is not None  # the prior image was read from it
        result = track_nodules(prior_image, image, options, token=token)
        warnings += result.warnings
        report = _prior_report(pacs, prior[0], job_dir / "prior-report", skipped)
        if report is not None:
            try:
                warnings += adopt_prior_tracking(result, *report)
            except InputError as exc:  # an unreadable prior report: fresh Tracking UIDs, said in the SR
                pacs.refuse(skipped, "prior tracking report", f"it cannot be used ({type(exc).__name__})")
                comments.append("The prior study's MedAI report could not be read; nodules got new Tracking UIDs.")
                report = None
        exam = result.exam_lung_rads["followup"]
        triage = from_lung_rads(str(exam.category), exam.reason)
        files = write_study_dicom(result, "followup", out, triage.priority, comments=comments)
        _presentation_state(result, "followup", out, files, warnings)
        _ris_report(result, rule, triage, job_dir, ris)
        summary.update(
            prior=True,
            prior_report=report is not None,
            interval_days=result.interval_days,
            registered=result.registered,
            counts={s: sum(1 for n in result.nodules if n.status == s) for s in ("persistent", "new", "resolved")},
        )
    else:
        single = assess_study(image, options, token=token)
        warnings += single.warnings
        exam = single.exam_lung_rads["baseline"]
        triage = from_lung_rads(str(exam.category), exam.reason)
        files = write_study_dicom(single, "baseline", out, triage.priority, comments=comments)
        _presentation_state(single, "baseline", out, files, warnings)
        _ris_report(single, rule, triage, job_dir, ris)
        summary["counts"] = {"nodules": len(single.nodules)}
    summary.update(lung_rads=str(exam.category), warnings=len(warnings))
    return PipelineOutput(sorted(files.values()), triage, summary)


def _segmentation(rule: Rule, image: Image, job_dir: Path, device: str, token: CancelToken | None) -> PipelineOutput:
    import numpy as np

    if rule.model is None:
        raise InputError(f"The rule {rule.name!r} runs the segmentation pipeline but names no model; set its 'model'.")
    out = _fresh(job_dir / "results")
    request = SegmentRequest(input=image, model=rule.model, output=out, formats=("dicom-seg",), device=device)
    outcome = segment_to_folder(request, token=token)
    result, files = outcome.result, outcome.files
    voxel_ml = float(np.prod(image.spacing)) / 1000.0
    counts = np.bincount(np.asarray(result.labelmap.array, dtype=np.int64).ravel())
    volumes = {
        label.name: float(counts[label.value]) * voxel_ml if label.value < counts.size else 0.0
        for label in result.labels
    }
    summary = {"pipeline": rule.pipeline.value, "volumes_ml": {k: round(v, 3) for k, v in volumes.items()}}
    return PipelineOutput([files["dicom-seg"]], from_alert_labels(volumes, rule.alert_labels), summary)


def _explainability(
    rule: Rule, series_dir: Path, job_dir: Path, device: str, progress: Callable[[float, str], None] | None
) -> PipelineOutput:
    out = _fresh(job_dir / "results")
    request = ExplainRequest(
        input=series_dir,
        model=str(rule.model),
        method=ExplainMethod.parse(rule.explain_method),
        output=out,
        device=device,
        sanity=rule.sanity,
    )
    document = explain_to_folder(request, progress=progress)
    files = _dicom_files(out)
    summary = {"pipeline": rule.pipeline.value, "method": str(document.get("method", rule.explain_method))}
    return PipelineOutput(files, routine("explanation map"), summary)


def run_pipeline(
    rule: Rule,
    pacs: PacsBoundary,
    study_uid: str,
    series_uid: str,
    job_dir: Path,
    device: str = "auto",
    token: CancelToken | None = None,
    skipped: Skipped | None = None,
    ris: RisSettings | None = None,
) -> PipelineOutput:
    """Retrieve ``series_uid`` of ``study_uid`` through ``pacs`` into ``job_dir`` and run ``rule``'s pipeline.

    Args:
        skipped: receives the objects refused on the way (``{"what", "reason"}``), for the journal.
        ris: nodule tracking: also write the study's RIS report into ``<job>/report/`` (:data:`REPORT_FOLDER`).

    Raises:
        InputError: the series cannot be read as an image (the job fails with this reason, no retry).
        PacsError: the PACS could not be reached or the transfer was cut (the gateway retries later).
    """
    skipped = [] if skipped is None else skipped
    series_dir = _retrieve(pacs, study_uid, series_uid, job_dir / "input", skipped)
    kill_point("retrieve")
    image = _read_series(series_dir)
    if rule.pipeline is Pipeline.NODULE_TRACKING:
        return _nodule_tracking(rule, pacs, study_uid, image, job_dir, device, token, skipped, ris)
    if rule.pipeline is Pipeline.SEGMENTATION:
        return _segmentation(rule, image, job_dir, device, token)
    return _explainability(rule, series_dir, job_dir, device, None)
