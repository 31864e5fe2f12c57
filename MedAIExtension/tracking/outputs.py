"""Writing a tracking result: JSON + CSV table, per-study SEG/SR (DICOM), .seg.nrrd, the transform, HTML report.

Everything is written into a hidden staging folder inside the output folder and moved into place only when all
of it succeeded, so an error or a cancel leaves no partial output.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.atomic import check_output_directory, ensure_writable_directory, staged_output
from MedAIExtension.dicom import segment_value_map, write_dicom_seg
from MedAIExtension.dicom.source import frame_of_reference_allows, require_single_frame_source
from MedAIExtension.dicom.sr import NoduleReportItem, write_tracking_sr
from MedAIExtension.errors import OutputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.loader import load_image
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.mrml import close_scene, create_scene, labelmap_to_segmentation_node, write_seg_nrrd
from MedAIExtension.progress import CancelToken, Progress
from MedAIExtension.tracking.pipeline import StudyResult, TrackingOptions, TrackingResult, track_nodules
from MedAIExtension.tracking.reading import Readings, exam_management, report_readings, report_rows
from MedAIExtension.tracking.recommendations import NelsonResult
from MedAIExtension.tracking.report import NoduleSide, crop_size_mm, nodule_picture, tracking_html

__all__ = ["TrackRequest", "TrackingOutcome", "track_to_folder", "write_study_dicom", "write_tracking_outputs"]

TIMEPOINTS = ("baseline", "followup")


def _csv_value(value: object) -> object:
    if isinstance(value, list):
        return " ".join(f"{v:g}" for v in value)
    return "" if value is None else value


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(rows[0]) if rows else ["tracking_id", "status"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_value(row.get(key)) for key in columns})


def _write_seg_nrrd(result: TrackingResult, labelmap: Image, timepoint: str, path: Path) -> None:
    scene = create_scene()
    try:
        node = labelmap_to_segmentation_node(scene, labelmap, result.labels(), f"{timepoint} nodules")
        write_seg_nrrd(node, path)
    finally:
        close_scene(scene)


def _timepoint_image(result: TrackingResult | StudyResult, timepoint: str) -> Image:
    if timepoint == "baseline":
        return result.baseline.image
    assert isinstance(result, TrackingResult), "a single-study result has only the baseline"
    return result.followup.image


def _report_items(
    result: TrackingResult | StudyResult, timepoint: str, readings: Readings | None = None
) -> list[NoduleReportItem]:
    """The SR items of ``timepoint``: measurements and the reading (``readings`` from report_readings)."""
    readings = readings if readings is not None else report_readings(result)
    items = []
    for nodule in result.nodules:
        finding = nodule.baseline if timepoint == "baseline" else nodule.followup
        if finding is None:
            continue
        m = finding.measurement
        reading = readings[(nodule.number, timepoint)]
        rads = reading.lung_rads
        change = nodule.change if timepoint == "followup" else None
        where = reading.location
        items.append(
            NoduleReportItem(
                tracking_id=nodule.tracking_id,
                tracking_uid=nodule.tracking_uid,
                segment_number=nodule.number,  # the label value; mapped to the SEG's segment number later
                kind=m.kind.value,
                center_ras=(float(m.center_ras[0]), float(m.center_ras[1]), float(m.center_ras[2])),
                volume_mm3=float(m.volume_mm3),
                long_axis_mm=round(float(m.long_axis_mm), 1),
                short_axis_mm=round(float(m.short_axis_mm), 1),
                mean_diameter_mm=round(float(m.mean_diameter_mm), 1),
                mean_hu=float(m.mean_hu),
                solid_volume_mm3=float(m.solid_volume_mm3) if m.kind.value == "part-solid" else None,
                solid_mean_diameter_mm=(
                    round(float(m.solid_mean_diameter_mm), 1) if m.kind.value == "part-solid" else None
                ),
                volume_change_percent=change.volume_change_percent if change else None,
                vdt_days=change.vdt_days if change and not reading.mass else None,  # a mass gets no VDT
                diameter_change_mm=change.mean_diameter_change_mm if change else None,
                lung_rads=str(rads.category) if rads else None,
                lung_rads_reason=rads.reason if rads else None,
                laterality=str(where.side) if where is not None and where.side is not None else None,
                lung_zone=str(where.zone) if where is not None and where.zone is not None else None,
                location=where.describe() if where is not None else None,
                mass=reading.mass,
                management=reading.management,
                growth=reading.growth,
                nelson=_nelson_text(reading.nelson, reading.nelson_note),
                borderline=reading.borderline,
            )
        )
    return items


def _nelson_text(nelson: NelsonResult | None, note: str | None) -> str | None:
    """The NELSON category with its criterion, and why it differs from Lung-RADS when it does."""
    if nelson is None:
        return None
    text = f"{nelson.category} ({nelson.reason})"
    return f"{text}. {note}" if note else text


def _write_dicom(
    result: TrackingResult | StudyResult,
    labelmap: Image,
    timepoint: str,
    staging: Path,
    names: dict[str, str],
    reading_priority: int | None = None,
    negative_report: bool = False,
    comments: Sequence[str] = (),
    readings: Readings | None = None,
) -> None:
    image = _timepoint_image(result, timepoint)
    items = _report_items(result, timepoint, readings)
    if not items:
        if negative_report:  # no SEG (nothing segmented); an SR stating the nodule-free exam and its category
            sr_path = staging / f"{timepoint}_sr.dcm"
            write_tracking_sr(
                sr_path,
                image,
                None,
                [],
                time_point=timepoint,
                exam_lung_rads=str(result.exam_lung_rads[timepoint].category),
                algorithm_name="MedAI nodule tracking",
                reading_priority=reading_priority,
                comments=comments,
                exam_management=exam_management(result, timepoint),
            )
            names[f"{timepoint}_sr"] = sr_path.name
        return  # the JSON/HTML report states the nodule-free exam (Lung-RADS 1)
    labels = [n.label for n in result.nodules if (n.baseline if timepoint == "baseline" else n.followup)]
    seg_path = staging / f"{timepoint}_seg.dcm"
    write_dicom_seg(
        labelmap,
        image,
        labels,
        seg_path,
        algorithm_name="MedAI nodule tracking",
        algorithm_version="1",
        series_description=f"MedAI nodules ({timepoint})",
    )
    names[f"{timepoint}_seg"] = seg_path.name
    import pydicom

    number_of = {value: number for number, value in segment_value_map(pydicom.dcmread(seg_path)).items()}
    items = [replace(item, segment_number=number_of[item.segment_number]) for item in items]
    sr_path = staging / f"{timepoint}_sr.dcm"
    exam = result.exam_lung_rads[timepoint]
    write_tracking_sr(
        sr_path,
        image,
        seg_path,
        items,
        time_point=timepoint,
        exam_lung_rads=str(exam.category),
        algorithm_name="MedAI nodule tracking",
        reading_priority=reading_priority,
        comments=comments,
        exam_management=exam_management(result, timepoint),
    )
    names[f"{timepoint}_sr"] = sr_path.name


def write_study_dicom(
    result: TrackingResult | StudyResult,
    timepoint: str,
    folder: str | os.PathLike[str],
    reading_priority: int | None = None,
    comments: Sequence[str] = (),
) -> dict[str, Path]:
    """Write the DICOM SEG and tracking SR of one time point of ``result`` into ``folder``.

    ``timepoint`` is ``"baseline"`` or ``"followup"`` (a :class:`StudyResult` has only ``"baseline"``).
    ``reading_priority`` (1 most urgent .. 5) is written into the SR next to the exam's Lung-RADS category, and
    ``comments`` (free text, e.g. that the prior-study search cannot be trusted) as exam-level comments.

    Returns:
        ``{"<timepoint>_seg": path, "<timepoint>_sr": path}``; for a study without nodules only the SR, which
        states the nodule-free exam and its category (nothing was segmented, so no SEG). Each file is written
        atomically.
    """
    if timepoint not in TIMEPOINTS or (isinstance(result, StudyResult) and timepoint != "baseline"):
        raise ValueError(f"timepoint must be one of {TIMEPOINTS} (a single-study result has only 'baseline').")
    out = ensure_writable_directory(folder)
    names: dict[str, str] = {}
    try:
        _write_dicom(
            result,
            result.labelmap(timepoint),
            timepoint,
            out,
            names,
            reading_priority,
            negative_report=True,
            comments=comments,
        )
    except OSError as exc:
        raise OutputError(f"Writing the {timepoint} SEG/SR into {out} failed ({exc.strerror or exc}).") from None
    return {kind: out / name for kind, name in names.items()}


def write_tracking_outputs(
    result: TrackingResult,
    output_dir: str | os.PathLike[str],
    dicom: bool | None = None,
    progress: Callable[[float, str], None] | None = None,
    inputs: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write everything about ``result`` into ``output_dir``; returns ``{kind: path}``.

    ``inputs``: where the studies were read from (``{"baseline": path, "followup": path}``), kept in tracking.json
    so that a viewer (``medai view``) can show the result over them.

    ``dicom``: write SEG + SR per study (default: when both studies were read from DICOM); a study without
    nodules gets only its SR, which states the nodule-free exam and its Lung-RADS category.
    """
    reporter = Progress(progress)
    both_dicom = bool(result.baseline.image.source_files and result.followup.image.source_files)
    if dicom is None:
        dicom = both_dicom
    names: dict[str, str] = {}
    with staged_output(output_dir) as staged:
        staging = staged.folder
        readings = report_readings(result)
        rows = report_rows(result, readings)
        reporter(0.05, "writing the nodule table")
        _write_csv(rows, staging / "tracking.csv")
        names["table_csv"] = "tracking.csv"
        for index, timepoint in enumerate(TIMEPOINTS):
            reporter(0.1 + 0.3 * index, f"writing the {timepoint} segmentation")
            labelmap = result.labelmap(timepoint)  # built once, written three ways
            _write_seg_nrrd(result, labelmap, timepoint, staging / f"{timepoint}_nodules.seg.nrrd")
            names[f"{timepoint}_seg_nrrd"] = f"{timepoint}_nodules.seg.nrrd"
            write_volume_file(labelmap, staging / f"{timepoint}_nodules.nii.gz")
            names[f"{timepoint}_labels"] = f"{timepoint}_nodules.nii.gz"
            if dicom:
                _write_dicom(result, labelmap, timepoint, staging, names, negative_report=True, readings=readings)
        transform = getattr(result.registration, "sitk_transform", None)
        if transform is not None:
            import SimpleITK as sitk

            sitk.WriteTransform(transform, str(staging / "followup_to_baseline.tfm"))
            names["transform"] = "followup_to_baseline.tfm"
        reporter(0.8, "drawing the nodules")
        (staging / "nodules").mkdir()
        pictures = {}
        for nodule, row in zip(result.nodules, rows, strict=True):
            sides: list[NoduleSide | None] = []
            for finding, image in ((nodule.baseline, result.baseline.image), (nodule.followup, result.followup.image)):
                sides.append((image, finding, finding.measurement.center_ras) if finding is not None else None)
            if sides[0] is None and sides[1] is not None:
                r, a, s = result.registration.map_to_baseline(np.asarray([sides[1][2]]))[0]
                sides[0] = (result.baseline.image, None, (float(r), float(a), float(s)))
            name = f"nodules/{nodule.tracking_id}.png"
            findings = [f for f in (nodule.baseline, nodule.followup) if f is not None]
            longest = max(f.measurement.long_axis_mm for f in findings)
            captions = [
                f"{when}, image {row[f'{key}_image']}" if row.get(f"{key}_image") is not None else when
                for when, key in (("baseline", "baseline"), ("follow-up", "followup"))
            ]
            nodule_picture(staging / name, sides[0], sides[1], nodule.label.color, crop_size_mm(longest), captions)
            pictures[nodule.tracking_id] = name
        summary = result.summary()
        summary["exam_management"] = {key: exam_management(result, key) for key in result.exam_lung_rads}
        facts = [
            ("Interval", f"{result.interval_days:g} days"),
            ("Registration", "converged" if result.registered else "FAILED — unregistered result"),
            ("Nodules", ", ".join(f"{k} {v}" for k, v in summary["counts"].items())),
            *[
                (f"Lung-RADS {key}", f"{value['category']} — {value['reason']}")
                for key, value in summary["exam_lung_rads"].items()
            ],
            *[(f"Management ({key}, Lung-RADS v2022)", text) for key, text in summary["exam_management"].items()],
        ]
        names["report"] = "report.html"
        (staging / "report.html").write_text(
            tracking_html("MedAI nodule tracking", facts, rows, pictures, dict(names), result.warnings),
            encoding="utf-8",
        )
        document = {"summary": summary, "nodules": rows, "files": dict(names), **({"inputs": inputs} if inputs else {})}
        (staging / "tracking.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
        names["table_json"] = "tracking.json"
        reporter(0.95, "moving results into place")
        entries = {**names, "pictures": "nodules"}
        staged.commit(name.split("/")[0] for name in entries.values())  # folders (nodules/) as a whole
        reporter(1.0, "done")
        return {kind: staged.output / name for kind, name in entries.items()}


@dataclass(frozen=True)
class TrackRequest:
    """What :func:`track_to_folder` tracks and where its results go.

    ``baseline`` and ``followup`` are DICOM folders, NIfTI/NRRD files, or images already read.
    """

    baseline: str | os.PathLike[str] | Image
    followup: str | os.PathLike[str] | Image
    output: Path
    options: TrackingOptions = field(default_factory=TrackingOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))


@dataclass(frozen=True)
class TrackingOutcome:
    """What :func:`track_to_folder` did: the tracking result and the files written (``{kind: path}``)."""

    result: TrackingResult
    files: dict[str, Path]


def track_to_folder(
    request: TrackRequest,
    progress: Callable[[float, str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    token: CancelToken | None = None,
) -> TrackingOutcome:
    """Load both studies, track their nodules and write every output into ``request.output``.

    Every check that can fail is made before the work: the output folder; with two DICOM studies, that the SEG
    and SR can reference them (a multi-frame source is refused; without a FrameOfReferenceUID the DICOM objects
    are left out with a warning). Nothing is written when any step fails (files are staged). The result's own
    warnings are left to the caller (``result.warnings``).
    """
    check_output_directory(request.output)
    reporter = Progress(progress, token)
    reporter(0.0, "reading the baseline study")
    baseline = request.baseline if isinstance(request.baseline, Image) else load_image(request.baseline, warn=warn)
    reporter(0.01, "reading the follow-up study")
    followup = request.followup if isinstance(request.followup, Image) else load_image(request.followup, warn=warn)
    dicom = bool(baseline.source_files and followup.source_files)
    if dicom:  # DICOM in: the SEG and SR are written, checked up front
        for image in (baseline, followup):
            require_single_frame_source(image, "tracking SR")
        studies = [("baseline", baseline), ("follow-up", followup)]
        dicom = frame_of_reference_allows(studies, "the DICOM SEG and SR objects", warn)
    result = track_nodules(baseline, followup, request.options, progress=reporter.stage(0.02, 0.9), token=token)
    inputs = {
        key: str(Path(source).resolve())
        for key, source in (("baseline", request.baseline), ("followup", request.followup))
        if not isinstance(source, Image)
    }
    files = write_tracking_outputs(
        result, request.output, dicom=dicom, progress=reporter.stage(0.9, 1.0), inputs=inputs or None
    )
    return TrackingOutcome(result, files)
