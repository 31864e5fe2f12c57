"""Writing the tracking SR: :func:`write_tracking_sr` turns
:class:`~MedAIExtension.dicom.sr.report_item.NoduleReportItem` objects and the SEG of the same time point into a
Comprehensive 3D SR holding a TID 1500 Measurement Report.

highdicom and pydicom are imported lazily inside the functions that need them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from MedAIExtension import __version__
from MedAIExtension.atomic import save_dataset
from MedAIExtension.dicom.source import load_source_datasets
from MedAIExtension.dicom.sr.codes import (
    _ABNORMAL_STRUCTURE,
    _BORDERLINE,
    _COMMENT,
    _DEFAULT_PROCEDURE,
    _GROWTH,
    _LATERALITIES,
    _LOCATION,
    _LUNG,
    _LUNG_RADS,
    _LUNG_RADS_REASON,
    _LUNG_ZONES,
    _MASS,
    _MEASUREMENTS,
    _NELSON,
    _NODULE,
    _NODULE_TYPE,
    _NODULE_TYPES,
    _NODULES_FOUND,
    _NONE_FOUND,
    _PRIORITY,
    _QUALITATIVE_EVALUATIONS,
    _RECOMMENDATION,
    _SEG_SOP_CLASSES,
    PRIVATE_SCHEME,
    NoduleKind,
    _lung_rads_value,
    _priority_value,
)
from MedAIExtension.dicom.sr.report_item import NoduleReportItem, _lung_rads_category
from MedAIExtension.dicom.values import coded_concept, long_string
from MedAIExtension.errors import InputError, OutputError
from MedAIExtension.io.image import Image
from MedAIExtension.labels import CodedTerm

__all__ = ["write_tracking_sr"]


def _check_items(items: Sequence[NoduleReportItem]) -> list[NoduleReportItem]:
    items = list(items)
    for item in items:
        if not isinstance(item, NoduleReportItem):
            raise InputError(f"Tracking SR items must be NoduleReportItem objects, got {type(item).__name__}.")
    for attribute, what in (
        ("tracking_id", "tracking identifier"),
        ("tracking_uid", "tracking UID"),
        ("segment_number", "segment number"),
    ):
        values = [getattr(item, attribute) for item in items]
        duplicates = sorted({str(v) for v in values if values.count(v) > 1})
        if duplicates:
            raise InputError(
                f"The {what}(s) {duplicates} occur more than once in the tracking SR; each nodule needs its own {what}."
            )
    return items


def _load_seg(seg_path: Path, source_datasets: list[Any], items: Sequence[NoduleReportItem]) -> Any:
    """The SEG's header, checked to belong to the source series and to hold every item's segment."""
    import pydicom

    if not seg_path.is_file():
        raise InputError(f"The SEG {seg_path} does not exist; write the time point's SEG before its SR.")
    try:
        seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise InputError(f"Cannot read the SEG {seg_path} ({exc}); give the DICOM SEG of this time point.") from None
    if str(seg.get("SOPClassUID", "")) not in _SEG_SOP_CLASSES:
        raise InputError(
            f"{seg_path.name} is not a DICOM Segmentation (SOP class {seg.get('SOPClassUID', 'missing')}); "
            "give the SEG written with write_dicom_seg for this time point."
        )
    source = source_datasets[0]
    series_uid = str(source.SeriesInstanceUID)
    referenced_series = {str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence", [])}
    if str(seg.StudyInstanceUID) != str(source.StudyInstanceUID) or series_uid not in referenced_series:
        raise InputError(
            f"The SEG {seg_path.name} was not made from this CT series ({series_uid}); it references "
            f"{sorted(referenced_series) or 'no series'}. Give the SEG and the CT of the same time point."
        )
    numbers = {int(s.SegmentNumber) for s in seg.get("SegmentSequence", [])}
    missing = sorted({item.segment_number for item in items} - numbers)
    if missing:
        raise InputError(
            f"Segment number(s) {missing} are not in the SEG {seg_path.name}, which holds segments "
            f"{sorted(numbers)}. Use the segment numbers of the SEG written for this time point."
        )
    return seg


def _referenced_segment(seg: Any, segment_number: int, source_datasets: list[Any]) -> Any:
    """The segment with the source images it was derived from (all source images if the SEG does not say)."""
    import highdicom as hd

    try:
        return hd.sr.ReferencedSegment.from_segmentation(seg, segment_number)
    except (ValueError, AttributeError, KeyError, IndexError):
        return hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=segment_number,
            source_images=[
                hd.sr.SourceImageForSegmentation(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in source_datasets
            ],
        )


def _measurements(item: NoduleReportItem) -> list[Any]:
    """The item's numeric values as TID 300 measurements (the group states the algorithm once for all)."""
    import highdicom as hd

    values = item.measurement_values()
    out = []
    for code in _MEASUREMENTS:
        if code.key not in values:
            continue
        out.append(
            hd.sr.Measurement(
                name=coded_concept(code.name),
                value=values[code.key],
                unit=coded_concept(code.unit),
                derivation=coded_concept(code.derivation) if code.derivation else None,
            )
        )
    return out


def _finding_sites(item: NoduleReportItem) -> list[Any]:
    """Lung with the nodule's laterality; with its zone known, the zone of lung (same laterality) as well."""
    import highdicom as hd

    laterality = coded_concept(_LATERALITIES[item.laterality]) if item.laterality is not None else None
    sites = [hd.sr.FindingSite(anatomic_location=coded_concept(_LUNG), laterality=laterality)]
    if item.lung_zone is not None:
        sites.append(
            hd.sr.FindingSite(anatomic_location=coded_concept(_LUNG_ZONES[item.lung_zone]), laterality=laterality)
        )
    return sites


def _reading_texts(item: NoduleReportItem) -> list[tuple[CodedTerm, str]]:
    """The reading's free texts in report order: reason, location, growth, NELSON, borderline, management."""
    texts = [
        (_LUNG_RADS_REASON, item.lung_rads_reason),
        (_LOCATION, item.location),
        (_GROWTH, item.growth),
        (_NELSON, item.nelson),
        (_BORDERLINE, item.borderline),
        (_RECOMMENDATION, item.management),
    ]
    return [(term, text) for term, text in texts if text is not None]


def _measurement_group(
    item: NoduleReportItem, seg: Any, source_datasets: list[Any], algorithm: Any, time_point: str | None
) -> Any:
    import highdicom as hd

    evaluations = [
        hd.sr.QualitativeEvaluation(coded_concept(_NODULE_TYPE), coded_concept(_NODULE_TYPES[NoduleKind(item.kind)]))
    ]
    if item.lung_rads is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(coded_concept(_LUNG_RADS), coded_concept(_lung_rads_value(item.lung_rads)))
        )
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=item.tracking_uid, identifier=item.tracking_id),
        referenced_segment=_referenced_segment(seg, item.segment_number, source_datasets),
        time_point_context=hd.sr.TimePointContext(time_point=long_string(time_point)) if time_point else None,
        finding_type=coded_concept(_MASS if item.mass else _NODULE),
        finding_category=coded_concept(_ABNORMAL_STRUCTURE),
        finding_sites=_finding_sites(item),
        algorithm_id=algorithm,
        measurements=_measurements(item),
        qualitative_evaluations=evaluations,
    )
    for term, text in _reading_texts(item):
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=coded_concept(term), value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
            )
        )
    return group


def _no_nodule_group(algorithm: Any, time_point: str | None, category: str | None) -> Any:
    """A measurement group without ROI (TID 1501) recording that the exam showed no lung nodule."""
    import highdicom as hd

    evaluations = [hd.sr.QualitativeEvaluation(coded_concept(_NODULES_FOUND), coded_concept(_NONE_FOUND))]
    if category is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(coded_concept(_LUNG_RADS), coded_concept(_lung_rads_value(category)))
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier="Exam"),
        time_point_context=hd.sr.TimePointContext(time_point=long_string(time_point)) if time_point else None,
        finding_type=coded_concept(_NODULE),
        finding_sites=[hd.sr.FindingSite(anatomic_location=coded_concept(_LUNG))],
        algorithm_id=algorithm,
        qualitative_evaluations=evaluations,
    )


def _exam_evaluations(
    category: str | None, priority: int | None, comments: Sequence[str] = (), management: str | None = None
) -> Any:
    import highdicom as hd

    container = hd.sr.ContainerContentItem(
        name=coded_concept(_QUALITATIVE_EVALUATIONS), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    pairs = []
    if category is not None:
        pairs.append((_LUNG_RADS, _lung_rads_value(category)))
    if priority is not None:
        pairs.append((_PRIORITY, _priority_value(priority)))
    container.ContentSequence = hd.sr.ContentSequence(
        [
            *(
                hd.sr.CodeContentItem(
                    name=coded_concept(name),
                    value=coded_concept(value),
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
                for name, value in pairs
            ),
            *(
                hd.sr.TextContentItem(
                    name=coded_concept(term), value=str(text), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
                )
                for term, text in [
                    *([(_RECOMMENDATION, management)] if management else []),
                    *((_COMMENT, text) for text in comments),
                ]
            ),
        ]
    )
    return container


def write_tracking_sr(
    path: str | os.PathLike[str],
    source: Image,
    seg_path: str | os.PathLike[str] | None,
    items: Sequence[NoduleReportItem],
    *,
    series_number: int = 400,
    series_description: str = "MedAI nodule tracking",
    time_point: str | None = None,
    exam_lung_rads: str | None = None,
    observer_name: str | None = None,
    algorithm_name: str = "MedAI nodule tracking",
    algorithm_version: str | None = None,
    procedure_reported: CodedTerm = _DEFAULT_PROCEDURE,
    manufacturer: str = "MedAI",
    include_image_library: bool = False,
    reading_priority: int | None = None,
    comments: Sequence[str] = (),
    exam_management: str | None = None,
) -> Path:
    """Write the nodule tracking report of one time point as a Comprehensive 3D SR (TID 1500).

    One Volumetric ROI measurement group (TID 1411) is written per item, with its tracking identifier and UID,
    a reference to its segment in ``seg_path`` and the source CT images, its measurements and qualitative
    evaluations (see the module docstring for the codes). The SR joins the study of ``source``; the CT images
    and the SEG are listed as evidence. The file is written atomically: on any error nothing is left at ``path``.

    Args:
        path: output file (``.dcm``).
        source: the CT of this time point, read with :func:`~MedAIExtension.io.dicom_series.read_dicom_series`.
        seg_path: the SEG written for this time point from ``source`` (:func:`write_dicom_seg`); None for a
            nodule-free exam.
        items: one item per nodule; tracking identifiers, tracking UIDs and segment numbers must be unique. No
            items (with ``seg_path`` None and ``exam_lung_rads`` given) reports a nodule-free exam: one measurement
            group without ROI (TID 1501) saying no lung nodule was found, plus the exam category.
        series_number: SeriesNumber of the SR series.
        series_description: SeriesDescription of the SR series.
        time_point: optional time point label written to every group (TID 1502), e.g. ``"baseline"``.
        exam_lung_rads: optional Lung-RADS v2022 category of the whole exam (``"4A"``, ``"2S"`` ...).
        observer_name: optional person observer (DICOM PN, e.g. ``"Doe^Jane"``); the device observer (this
            software) is always recorded.
        algorithm_name: name of the tracking algorithm (device observer model and algorithm identification).
        algorithm_version: its version (default: the MedAI version).
        procedure_reported: coded procedure (TID 1500 "Procedure reported"); default LOINC 25045-6.
        manufacturer: Manufacturer of the software that made the SR.
        include_image_library: also list every source CT image with its geometry in the report's Image Library
            (TID 1600). Off by default: it adds about 4.5 kB and, in highdicom, about 0.1 s per slice. The CT
            images are always listed as evidence, and each group references the CT images its segment was
            derived from.
        reading_priority: optional triage priority of the exam, 1 (most urgent) to 5 (routine), written next to
            the exam's Lung-RADS category so a worklist reading the SR can sort by it.
        comments: free-text remarks on the exam (e.g. that the search for a prior study cannot be trusted), each
            a TEXT item "Comment" (DCM 121106) in the exam's qualitative evaluations.
        exam_management: the management the exam's category calls for (Lung-RADS v2022), a TEXT item
            "Recommendation" (DCM 121075) in the exam's qualitative evaluations.

    Returns:
        The written path.

    Raises:
        InputError: the source was not read from DICOM, the SEG does not belong to it or lacks a segment,
            items are missing or duplicated, a category is not a Lung-RADS category, or the priority is not 1..5.
        GeometryError: the source's files do not match its slices.
        OutputError: the file cannot be written.
    """
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem
    from pydicom.uid import generate_uid

    target = Path(path)
    if not isinstance(source, Image) or not source.source_files:
        raise InputError(
            "The source image was not read from DICOM (it has no source files), so the SR cannot reference its "
            "CT images or join its study. Read the CT with read_dicom_series and segment that image."
        )
    exam_category = _lung_rads_category(exam_lung_rads, "Exam Lung-RADS category")
    if reading_priority is not None and (
        isinstance(reading_priority, bool) or not isinstance(reading_priority, int) or not 1 <= reading_priority <= 5
    ):
        raise InputError(f"Reading priority {reading_priority!r} must be an integer from 1 (most urgent) to 5.")
    checked = _check_items(items)
    if checked and seg_path is None:
        raise InputError("The tracking SR references each nodule's SEG segment; give seg_path for the nodules.")
    if not checked and (seg_path is not None or exam_category is None):
        raise InputError(
            "A tracking SR without nodules reports a nodule-free exam: give no seg_path and the exam's Lung-RADS "
            "category (exam_lung_rads='1')."
        )
    if not target.parent.is_dir():
        raise OutputError(f"The folder {target.parent} does not exist; create it or choose another output path.")
    source_datasets = load_source_datasets(source, "tracking SR")
    seg = None
    if checked:
        assert seg_path is not None  # refused above: nodules need their SEG
        seg = _load_seg(Path(seg_path), source_datasets, checked)

    version = algorithm_version or __version__
    algorithm = hd.sr.AlgorithmIdentification(name=long_string(algorithm_name), version=long_string(version))
    device = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["MedAI device observer", algorithm_name, version]),
            name=long_string(algorithm_name),
            manufacturer_name=long_string(manufacturer),
            model_name=long_string(f"{algorithm_name} {version}"),
        ),
    )
    person = None
    if observer_name:
        person = hd.sr.ObserverContext(
            observer_type=hd.sr.CodedConcept("121006", "DCM", "Person"),
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=observer_name),
        )
    groups = [_measurement_group(item, seg, source_datasets, algorithm, time_point) for item in checked]
    if not groups:  # TID 1500 needs one group: a TID 1501 group stating that no nodule was found
        groups = [_no_nodule_group(algorithm, time_point, exam_category)]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=person, observer_device_context=device),
        procedure_reported=coded_concept(procedure_reported),
        imaging_measurements=groups,
        referenced_images=source_datasets if include_image_library else None,
    )
    management = (str(exam_management).strip() or None) if exam_management is not None else None
    if exam_category is not None or reading_priority is not None or comments or management:
        report[0].ContentSequence.append(_exam_evaluations(exam_category, reading_priority, comments, management))
    private_scheme = CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME,
        name="MedAI private codes",
        responsible_organization="MedAI",
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*source_datasets, *([seg] if seg is not None else [])],
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=int(series_number),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=long_string(manufacturer),
        is_complete=True,
        series_description=long_string(series_description),
        coding_schemes=[private_scheme],
        specific_character_set="ISO_IR 192",  # UTF-8: reasons contain "≥", "→"
        software_versions=long_string(f"MedAI {__version__}"),
        manufacturer_model_name=long_string(algorithm_name),
    )
    return save_dataset(sr, target, "tracking SR")
