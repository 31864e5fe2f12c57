"""The gateway's pipelines: retrieve the matched series, run the shared MedAI logic, write DICOM results.

The DICOM objects are made by the same writers the CLI and the Slicer modules use (SEG, tracking SR,
Parametric Map), so a study processed by the gateway and one processed in Slicer carry the same objects.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MedAIExtension.errors import InputError
from MedAIExtension.gateway.config import Pipeline, Rule
from MedAIExtension.gateway.triage import Triage, from_alert_labels, from_lung_rads, routine
from MedAIExtension.progress import CancelToken

__all__ = ["PipelineOutput", "find_prior_study", "run_pipeline"]

#: SeriesDescription of the tracking SR the gateway writes (also how it finds a prior study's report).
TRACKING_SR_DESCRIPTION = "MedAI nodule tracking"


@dataclass
class PipelineOutput:
    """What one job produced: DICOM files to store, the study's triage, and a summary free of patient data."""

    files: list[Path]
    triage: Triage
    summary: dict[str, Any] = field(default_factory=dict)


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _retrieve(store: Any, study_uid: str, series_uid: str, folder: Path) -> Path:
    files = store.retrieve_series(study_uid, series_uid, _fresh(folder))
    if not files:
        raise InputError(f"The PACS returned no instances for series {series_uid}; the study may have been deleted.")
    return folder


def _read_series(folder: Path) -> Any:
    from MedAIExtension.io.dicom_series import read_dicom_series

    return read_dicom_series(folder)


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.dcm") if path.is_file())


def find_prior_study(store: Any, image: Any, rule: Rule, study_uid: str) -> tuple[str, str] | None:
    """The patient's most recent earlier study with a series this rule matches: ``(study_uid, series_uid)``.

    Studies are found by PatientID through the store's search (QIDO-RS); "earlier" compares StudyDate.
    """
    patient_id = str(image.metadata.get("PatientID", "")).strip()
    current_date = str(image.metadata.get("StudyDate", "")).strip()
    if not patient_id or not current_date:
        return None
    earlier = [
        study
        for study in store.search_studies(patient_id=patient_id)
        if study.study_uid != study_uid and study.study_date and study.study_date < current_date
    ]
    for study in sorted(earlier, key=lambda s: s.study_date, reverse=True):
        for series in store.search_series(study.study_uid):
            if rule.matches(series.modality, series.body_part, series.description):
                return study.study_uid, series.series_uid
    return None


def _prior_report(store: Any, prior_study: str, folder: Path) -> tuple[Path, Path] | None:
    """The prior study's MedAI tracking SR and the SEG it references, retrieved into ``folder``."""
    import pydicom

    from MedAIExtension.dicom.sr import read_tracking_sr

    series = store.search_series(prior_study)
    reports = [s for s in series if s.modality == "SR" and s.description == TRACKING_SR_DESCRIPTION]
    if not reports:
        return None
    segs: dict[str, Path] = {}  # SOPInstanceUID -> file, each SEG series retrieved once
    for seg in (s for s in series if s.modality == "SEG"):
        for path in store.retrieve_series(prior_study, seg.series_uid, _fresh(folder / "seg" / seg.series_uid)):
            segs[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    for report in reversed(reports):
        for sr_file in store.retrieve_series(prior_study, report.series_uid, _fresh(folder / "sr" / report.series_uid)):
            try:
                groups = read_tracking_sr(sr_file)
            except InputError:
                continue
            referenced = [g["seg_sop_instance_uid"] for g in groups if g["seg_sop_instance_uid"] in segs]
            if referenced:
                return sr_file, segs[referenced[0]]
    return None


def _nodule_tracking(
    rule: Rule, store: Any, study_uid: str, image: Any, job_dir: Path, device: str, token: CancelToken | None
) -> PipelineOutput:
    from MedAIExtension.dicom.source import require_single_frame_source
    from MedAIExtension.tracking import (
        TrackingOptions,
        adopt_prior_tracking,
        assess_study,
        track_nodules,
        write_study_dicom,
    )

    require_single_frame_source(image, "tracking SR")  # before the model runs: the SR cannot reference it yet
    options = TrackingOptions(model=rule.model, device=device)
    out = _fresh(job_dir / "results")
    summary: dict[str, Any] = {"pipeline": rule.pipeline.value, "prior": False}
    prior = find_prior_study(store, image, rule, study_uid) if rule.find_prior else None
    prior_image = None
    warnings: list[str] = []
    if prior is not None:
        try:
            prior_image = _read_series(_retrieve(store, prior[0], prior[1], job_dir / "prior"))
        except InputError as exc:  # a broken prior must not stop the current study from being read
            warnings.append(f"The prior study could not be read ({exc}); this study was assessed on its own.")
            summary["prior_error"] = type(exc).__name__
    if prior_image is not None:
        result = track_nodules(prior_image, image, options, token=token)
        warnings += result.warnings
        report = _prior_report(store, prior[0], job_dir / "prior-report")
        if report is not None:
            warnings += adopt_prior_tracking(result, *report)
        exam = result.exam_lung_rads["followup"]
        triage = from_lung_rads(str(exam.category), exam.reason)
        files = write_study_dicom(result, "followup", out, triage.priority)
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
        files = write_study_dicom(single, "baseline", out, triage.priority)
        summary["counts"] = {"nodules": len(single.nodules)}
    summary.update(lung_rads=str(exam.category), warnings=len(warnings))
    return PipelineOutput(sorted(files.values()), triage, summary)


def _segmentation(rule: Rule, image: Any, job_dir: Path, device: str, token: CancelToken | None) -> PipelineOutput:
    import numpy as np

    from MedAIExtension.segmentation import segment_image, write_outputs

    result = segment_image(image, rule.model, device=device, token=token)
    out = _fresh(job_dir / "results")
    files = write_outputs(
        result.labelmap,
        result.labels,
        out,
        "dicom-seg",
        source=image,
        algorithm_name=result.model.name,
        algorithm_version=result.model.version,
    )
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
    from MedAIExtension.explain.pipeline import explain_to_folder
    from MedAIExtension.explain.request import ExplainRequest

    out = _fresh(job_dir / "results")
    request = ExplainRequest(
        input=series_dir,
        model=str(rule.model),
        method=rule.explain_method,
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
    store: Any,
    study_uid: str,
    series_uid: str,
    job_dir: Path,
    device: str = "auto",
    token: CancelToken | None = None,
) -> PipelineOutput:
    """Retrieve ``series_uid`` of ``study_uid`` from ``store`` into ``job_dir`` and run ``rule``'s pipeline.

    Raises:
        InputError: the series cannot be read as an image (the job fails with this reason, no retry).
        PacsError: the PACS could not be reached (the gateway retries later).
    """
    series_dir = _retrieve(store, study_uid, series_uid, job_dir / "input")
    image = _read_series(series_dir)
    if rule.pipeline is Pipeline.NODULE_TRACKING:
        return _nodule_tracking(rule, store, study_uid, image, job_dir, device, token)
    if rule.pipeline is Pipeline.SEGMENTATION:
        return _segmentation(rule, image, job_dir, device, token)
    return _explainability(rule, series_dir, job_dir, device, None)
