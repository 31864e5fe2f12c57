"""DICOM Structured Report of the nodule tracking: a Comprehensive 3D SR holding a TID 1500 Measurement Report.

One measurement group (TID 1411, Volumetric ROI Measurements) is written per nodule. Each group carries

- the Tracking Identifier (human readable, e.g. ``"N1"``) and the Tracking Unique Identifier (a UID). The same
  nodule keeps the same Tracking UID in the baseline and every follow-up report: that is how a viewer links it
  across time points (make it with :func:`tracking_uid_for`);
- a Referenced Segment: the SOP Instance UID and segment number of the nodule in the DICOM SEG written for this
  time point, with the source CT images of that segment;
- the finding (SCT Nodule), its category (SCT Morphologically Abnormal Structure) and site (SCT Lung), the
  algorithm identification and optionally the time point;
- the measurements and qualitative evaluations listed below.

Codes used (standard where DICOM / SNOMED CT has a concept, a private scheme where it has none); each
measurement is listed as ``key``: concept name, UCUM unit (the keys are those of :func:`read_tracking_sr`):

- ``volume_mm3``: (118565006, SCT, "Volume"), mm3
- ``long_axis_mm``: (103339001, SCT, "Long Axis"), mm
- ``short_axis_mm``: (103340004, SCT, "Short Axis"), mm
- ``mean_diameter_mm``: (81827009, SCT, "Diameter") with derivation (373098007, SCT, "Mean"), mm: the Lung-RADS
  size, mean of long and short axis
- ``mean_hu``: (112181, DCM, "Mean Attenuation Coefficient"), [hnsf'U]
- ``solid_volume_mm3``: (SOLIDVOL, 99MEDAI, "Solid component volume"), mm3
- ``solid_mean_diameter_mm``: (SOLIDDIAM, 99MEDAI, "Solid component mean diameter"), mm
- ``volume_change_percent``: (VOLCHG, 99MEDAI, "Volume change from prior"), %
- ``vdt_days``: (VDT, 99MEDAI, "Volume doubling time"), d
- ``diameter_change_mm``: (DIAMCHG, 99MEDAI, "Mean diameter change from prior"), mm

Qualitative evaluations (CODE items, private scheme): the nodule attenuation type (NODTYPE: SOLID, PARTSOLID,
GGN) and the Lung-RADS v2022 category (LRADS: LRADS-2, LRADS-4A, ...); the reason for the category is a TEXT
item (LRADSWHY). The exam's overall Lung-RADS category goes into TID 1500's "Qualitative Evaluations" container
(UMLS C0034375). No standard code for a percent volume change, a volume doubling time, the solid component of a
sub-solid nodule or a Lung-RADS category was found in DICOM PS3.16 / pydicom's code dictionary, so these use the
private coding scheme ``99MEDAI``, declared in the Coding Scheme Identification Sequence of the SR.

highdicom and pydicom are imported lazily inside the functions that need them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from MedAIExtension.atomic import atomic_path
from MedAIExtension.dicom.source import load_source_datasets
from MedAIExtension.errors import InputError, OutputError
from MedAIExtension.io.image import Image
from MedAIExtension.labels import CodedTerm
from MedAIExtension.tracking.types import NoduleKind, NoduleMeasurement

__all__ = [
    "PRIVATE_SCHEME",
    "NoduleReportItem",
    "read_exam_lung_rads",
    "read_reading_priority",
    "read_tracking_sr",
    "tracking_uid_for",
    "write_tracking_sr",
]

#: Coding scheme designator of MedAI's private codes (DICOM reserves designators starting with "99").
PRIVATE_SCHEME = "99MEDAI"

_SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
_LO_MAX = 64
_LUNG_RADS_PATTERN = re.compile(r"^(0|1|2|3|4A|4B|4X)S?$")

# ---- codes --------------------------------------------------------------------------------------------------
_MM3 = CodedTerm("mm3", "UCUM", "cubic millimeter")
_MM = CodedTerm("mm", "UCUM", "mm")
_PERCENT = CodedTerm("%", "UCUM", "Percent")
_DAY = CodedTerm("d", "UCUM", "day")
_HU = CodedTerm("[hnsf'U]", "UCUM", "Hounsfield unit")

_NODULE = CodedTerm("27925004", "SCT", "Nodule")
_ABNORMAL_STRUCTURE = CodedTerm("49755003", "SCT", "Morphologically Abnormal Structure")
_LUNG = CodedTerm("39607008", "SCT", "Lung")
_MEAN = CodedTerm("373098007", "SCT", "Mean")
_QUALITATIVE_EVALUATIONS = CodedTerm("C0034375", "UMLS", "Qualitative Evaluations")
_DEFAULT_PROCEDURE = CodedTerm("25045-6", "LN", "CT unspecified body region")

_NODULE_TYPE = CodedTerm("NODTYPE", PRIVATE_SCHEME, "Nodule attenuation type")
_NODULE_TYPES: dict[NoduleKind, CodedTerm] = {
    NoduleKind.SOLID: CodedTerm("SOLID", PRIVATE_SCHEME, "Solid"),
    NoduleKind.PART_SOLID: CodedTerm("PARTSOLID", PRIVATE_SCHEME, "Part-solid"),
    NoduleKind.GROUND_GLASS: CodedTerm("GGN", PRIVATE_SCHEME, "Ground-glass"),
}
_LUNG_RADS = CodedTerm("LRADS", PRIVATE_SCHEME, "Lung-RADS v2022 category")
_LUNG_RADS_REASON = CodedTerm("LRADSWHY", PRIVATE_SCHEME, "Lung-RADS category reason")
_NODULES_FOUND = CodedTerm("NODFOUND", PRIVATE_SCHEME, "Lung nodules found")
_NONE_FOUND = CodedTerm("NONE", PRIVATE_SCHEME, "None found")
_PRIORITY = CodedTerm("PRIORITY", PRIVATE_SCHEME, "Reading priority")
_COMMENT = CodedTerm("121106", "DCM", "Comment")
_PRIORITY_VALUES = re.compile(r"^PRIORITY-([1-5])$")


def _priority_value(priority: int) -> CodedTerm:
    return CodedTerm(f"PRIORITY-{priority}", PRIVATE_SCHEME, f"Reading priority {priority} (1 = most urgent)")


def _lung_rads_value(category: str) -> CodedTerm:
    return CodedTerm(f"LRADS-{category}", PRIVATE_SCHEME, f"Lung-RADS {category}")


@dataclass(frozen=True)
class _MeasurementCode:
    key: str
    name: CodedTerm
    unit: CodedTerm
    derivation: CodedTerm | None = None


_MEASUREMENTS: tuple[_MeasurementCode, ...] = (
    _MeasurementCode("volume_mm3", CodedTerm("118565006", "SCT", "Volume"), _MM3),
    _MeasurementCode("long_axis_mm", CodedTerm("103339001", "SCT", "Long Axis"), _MM),
    _MeasurementCode("short_axis_mm", CodedTerm("103340004", "SCT", "Short Axis"), _MM),
    _MeasurementCode("mean_diameter_mm", CodedTerm("81827009", "SCT", "Diameter"), _MM, derivation=_MEAN),
    _MeasurementCode("mean_hu", CodedTerm("112181", "DCM", "Mean Attenuation Coefficient"), _HU),
    _MeasurementCode("solid_volume_mm3", CodedTerm("SOLIDVOL", PRIVATE_SCHEME, "Solid component volume"), _MM3),
    _MeasurementCode(
        "solid_mean_diameter_mm", CodedTerm("SOLIDDIAM", PRIVATE_SCHEME, "Solid component mean diameter"), _MM
    ),
    _MeasurementCode(
        "volume_change_percent", CodedTerm("VOLCHG", PRIVATE_SCHEME, "Volume change from prior"), _PERCENT
    ),
    _MeasurementCode("vdt_days", CodedTerm("VDT", PRIVATE_SCHEME, "Volume doubling time"), _DAY),
    _MeasurementCode(
        "diameter_change_mm", CodedTerm("DIAMCHG", PRIVATE_SCHEME, "Mean diameter change from prior"), _MM
    ),
)


# ---- the report item ----------------------------------------------------------------------------------------
def _finite(value: Any, what: str, *, minimum: float | None = None, strict: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise InputError(f"{what} must be a finite number, got {value!r}.")
    if minimum is not None and (number < minimum or (strict and number == minimum)):
        relation = ">" if strict else ">="
        raise InputError(f"{what} must be {relation} {minimum:g}, got {value!r}.")
    return number


def _optional(value: Any, what: str, **limits: Any) -> float | None:
    return None if value is None else _finite(value, what, **limits)


def _check_uid(uid: Any, what: str) -> str:
    from pydicom.uid import UID

    text = str(uid or "")
    if not UID(text).is_valid:
        raise InputError(
            f"{what} {uid!r} is not a valid DICOM UID (digits and dots, at most 64 characters). "
            "Make tracking UIDs with tracking_uid_for()."
        )
    return text


def _lung_rads_category(value: Any, what: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip().upper()
    if not _LUNG_RADS_PATTERN.match(text):
        raise InputError(
            f"{what} {value!r} is not a Lung-RADS v2022 category; use one of 0, 1, 2, 3, 4A, 4B, 4X "
            "(optionally with the S modifier, e.g. '2S')."
        )
    return text


@dataclass(frozen=True)
class NoduleReportItem:
    """One nodule at one time point, as written to the tracking SR.

    Attributes:
        tracking_id: human-readable Tracking Identifier, e.g. ``"N1"`` (unique within a report).
        tracking_uid: Tracking Unique Identifier; the same UID for the same nodule in every report of a patient.
        segment_number: number of this nodule's segment in the SEG written for this time point.
        kind: ``"solid"``, ``"part-solid"`` or ``"ground-glass"`` (str or :class:`NoduleKind`).
        volume_mm3: nodule volume.
        long_axis_mm: longest axial diameter.
        short_axis_mm: longest diameter perpendicular to the long axis in the same plane.
        mean_diameter_mm: Lung-RADS size, (long + short) / 2.
        mean_hu: mean attenuation in HU, or None.
        center_ras: nodule centre (R, A, S) mm, or None. Not written: the referenced segment places the nodule.
        solid_volume_mm3: volume of the solid component of a part-solid nodule, or None.
        solid_mean_diameter_mm: mean diameter of that solid component, or None.
        volume_change_percent: follow-up only: volume change from the prior study in % (None at baseline).
        vdt_days: follow-up only: volume doubling time in days; None when the nodule is not growing.
        diameter_change_mm: follow-up only: change of the mean diameter from the prior study.
        lung_rads: Lung-RADS v2022 category of this nodule (``"2"``, ``"4A"`` ...), or None.
        lung_rads_reason: why that category was given (free text), or None.

    The constructor validates every field, so an item is never half-valid; bad values raise :class:`InputError`.
    """

    tracking_id: str
    tracking_uid: str
    segment_number: int
    kind: NoduleKind | str
    volume_mm3: float
    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    mean_hu: float | None = None
    center_ras: tuple[float, float, float] | None = None
    solid_volume_mm3: float | None = None
    solid_mean_diameter_mm: float | None = None
    volume_change_percent: float | None = None
    vdt_days: float | None = None
    diameter_change_mm: float | None = None
    lung_rads: str | None = None
    lung_rads_reason: str | None = None

    def __post_init__(self) -> None:
        tracking_id = str(self.tracking_id or "").strip()
        if not tracking_id or len(tracking_id) > _LO_MAX:
            raise InputError(f"Tracking identifier {self.tracking_id!r} must be 1..{_LO_MAX} characters, e.g. 'N1'.")
        object.__setattr__(self, "tracking_id", tracking_id)
        object.__setattr__(self, "tracking_uid", _check_uid(self.tracking_uid, f"Tracking UID of {tracking_id}"))
        if isinstance(self.segment_number, bool) or not isinstance(self.segment_number, int) or self.segment_number < 1:
            raise InputError(
                f"Segment number of {tracking_id} must be an integer >= 1 (the nodule's segment in the SEG), "
                f"got {self.segment_number!r}."
            )
        try:
            kind = NoduleKind(getattr(self.kind, "value", self.kind))
        except ValueError:
            options = ", ".join(repr(k.value) for k in NoduleKind)
            raise InputError(f"Nodule kind {self.kind!r} of {tracking_id} is not one of {options}.") from None
        object.__setattr__(self, "kind", kind)
        name = f"{tracking_id}: "
        object.__setattr__(self, "volume_mm3", _finite(self.volume_mm3, name + "volume_mm3", minimum=0, strict=True))
        for field_name in ("long_axis_mm", "short_axis_mm", "mean_diameter_mm"):
            object.__setattr__(self, field_name, _finite(getattr(self, field_name), name + field_name, minimum=0))
        if self.short_axis_mm > self.long_axis_mm + 1e-6:
            raise InputError(
                f"{name}short axis {self.short_axis_mm:g} mm is longer than the long axis {self.long_axis_mm:g} mm; "
                "swap them or re-measure."
            )
        object.__setattr__(self, "mean_hu", _optional(self.mean_hu, name + "mean_hu"))
        if self.center_ras is not None:
            center = tuple(_finite(v, name + "center_ras") for v in self.center_ras)
            if len(center) != 3:
                raise InputError(f"{name}center_ras must be three numbers (R, A, S), got {self.center_ras!r}.")
            object.__setattr__(self, "center_ras", center)
        for field_name in ("solid_volume_mm3", "solid_mean_diameter_mm"):
            object.__setattr__(self, field_name, _optional(getattr(self, field_name), name + field_name, minimum=0))
        change = _optional(self.volume_change_percent, name + "volume_change_percent", minimum=-100.0)
        object.__setattr__(self, "volume_change_percent", change)
        vdt = _optional(self.vdt_days, name + "vdt_days", minimum=0, strict=True)
        if vdt is not None and (change is None or change <= 0):
            raise InputError(
                f"{name}a volume doubling time needs a growing nodule (volume_change_percent > 0, got {change!r}); "
                "give vdt_days=None when the nodule is not growing or at baseline."
            )
        object.__setattr__(self, "vdt_days", vdt)
        object.__setattr__(self, "diameter_change_mm", _optional(self.diameter_change_mm, name + "diameter_change_mm"))
        object.__setattr__(self, "lung_rads", _lung_rads_category(self.lung_rads, f"{name}Lung-RADS category"))
        reason = None if self.lung_rads_reason is None else str(self.lung_rads_reason).strip() or None
        if reason is not None and self.lung_rads is None:
            raise InputError(f"{name}lung_rads_reason was given without a lung_rads category; give both or neither.")
        object.__setattr__(self, "lung_rads_reason", reason)

    @classmethod
    def from_measurement(
        cls,
        tracking_id: str,
        tracking_uid: str,
        segment_number: int,
        measurement: NoduleMeasurement,
        **follow_up: Any,
    ) -> NoduleReportItem:
        """Build an item from the tracking pipeline's :class:`NoduleMeasurement`.

        The solid component is filled in for part-solid nodules only. ``follow_up`` passes the remaining
        fields (``volume_change_percent``, ``vdt_days``, ``diameter_change_mm``, ``lung_rads``,
        ``lung_rads_reason``).
        """
        part_solid = NoduleKind(measurement.kind) is NoduleKind.PART_SOLID
        return cls(
            tracking_id=tracking_id,
            tracking_uid=tracking_uid,
            segment_number=segment_number,
            kind=measurement.kind,
            volume_mm3=measurement.volume_mm3,
            long_axis_mm=measurement.long_axis_mm,
            short_axis_mm=measurement.short_axis_mm,
            mean_diameter_mm=measurement.mean_diameter_mm,
            mean_hu=measurement.mean_hu,
            center_ras=measurement.center_ras,
            solid_volume_mm3=measurement.solid_volume_mm3 if part_solid else None,
            solid_mean_diameter_mm=measurement.solid_mean_diameter_mm if part_solid else None,
            **follow_up,
        )

    def measurement_values(self) -> dict[str, float]:
        """The numeric values written to the SR, keyed like :func:`read_tracking_sr`'s ``measurements``."""
        values = {code.key: getattr(self, code.key) for code in _MEASUREMENTS}
        return {key: float(value) for key, value in values.items() if value is not None}


def tracking_uid_for(seed: str) -> str:
    """A deterministic Tracking Unique Identifier derived from ``seed``.

    The same seed always gives the same UID, so re-running the tracking of a patient reproduces its UIDs. Use
    a seed that names the nodule's lineage uniquely, e.g. ``f"{patient_id}/{baseline_study_uid}/N1"``.

    Raises:
        InputError: ``seed`` is empty.
    """
    from pydicom.uid import generate_uid

    if not isinstance(seed, str) or not seed.strip():
        raise InputError("tracking_uid_for needs a non-empty seed naming the nodule, e.g. 'PATIENT/STUDY/N1'.")
    return str(generate_uid(entropy_srcs=["MedAI nodule tracking UID", seed]))


# ---- writing ------------------------------------------------------------------------------------------------
def _concept(term: CodedTerm) -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept(value=term.value, scheme_designator=term.scheme, meaning=term.meaning[:_LO_MAX])


def _lo(text: str) -> str:
    return str(text).replace("\\", "/")[:_LO_MAX]


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
                name=_concept(code.name),
                value=values[code.key],
                unit=_concept(code.unit),
                derivation=_concept(code.derivation) if code.derivation else None,
            )
        )
    return out


def _measurement_group(
    item: NoduleReportItem, seg: Any, source_datasets: list[Any], algorithm: Any, time_point: str | None
) -> Any:
    import highdicom as hd

    evaluations = [hd.sr.QualitativeEvaluation(_concept(_NODULE_TYPE), _concept(_NODULE_TYPES[item.kind]))]
    if item.lung_rads is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(_concept(_LUNG_RADS), _concept(_lung_rads_value(item.lung_rads)))
        )
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=item.tracking_uid, identifier=item.tracking_id),
        referenced_segment=_referenced_segment(seg, item.segment_number, source_datasets),
        time_point_context=hd.sr.TimePointContext(time_point=_lo(time_point)) if time_point else None,
        finding_type=_concept(_NODULE),
        finding_category=_concept(_ABNORMAL_STRUCTURE),
        finding_sites=[hd.sr.FindingSite(anatomic_location=_concept(_LUNG))],
        algorithm_id=algorithm,
        measurements=_measurements(item),
        qualitative_evaluations=evaluations,
    )
    if item.lung_rads_reason is not None:
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=_concept(_LUNG_RADS_REASON),
                value=item.lung_rads_reason,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


def _no_nodule_group(algorithm: Any, time_point: str | None, category: str | None) -> Any:
    """A measurement group without ROI (TID 1501) recording that the exam showed no lung nodule."""
    import highdicom as hd

    evaluations = [hd.sr.QualitativeEvaluation(_concept(_NODULES_FOUND), _concept(_NONE_FOUND))]
    if category is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(_concept(_LUNG_RADS), _concept(_lung_rads_value(category))))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier="Exam"),
        time_point_context=hd.sr.TimePointContext(time_point=_lo(time_point)) if time_point else None,
        finding_type=_concept(_NODULE),
        finding_sites=[hd.sr.FindingSite(anatomic_location=_concept(_LUNG))],
        algorithm_id=algorithm,
        qualitative_evaluations=evaluations,
    )


def _exam_evaluations(category: str | None, priority: int | None, comments: Sequence[str] = ()) -> Any:
    import highdicom as hd

    container = hd.sr.ContainerContentItem(
        name=_concept(_QUALITATIVE_EVALUATIONS), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
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
                    name=_concept(name), value=_concept(value), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
                )
                for name, value in pairs
            ),
            *(
                hd.sr.TextContentItem(
                    name=_concept(_COMMENT), value=str(text), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
                )
                for text in comments
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

    from MedAIExtension import __version__

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
    seg = _load_seg(Path(seg_path), source_datasets, checked) if checked else None

    version = algorithm_version or __version__
    algorithm = hd.sr.AlgorithmIdentification(name=_lo(algorithm_name), version=_lo(version))
    device = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["MedAI device observer", algorithm_name, version]),
            name=_lo(algorithm_name),
            manufacturer_name=_lo(manufacturer),
            model_name=_lo(f"{algorithm_name} {version}"),
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
        procedure_reported=_concept(procedure_reported),
        imaging_measurements=groups,
        referenced_images=source_datasets if include_image_library else None,
    )
    if exam_category is not None or reading_priority is not None or comments:
        report[0].ContentSequence.append(_exam_evaluations(exam_category, reading_priority, comments))
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
        manufacturer=_lo(manufacturer),
        is_complete=True,
        series_description=_lo(series_description),
        coding_schemes=[private_scheme],
        specific_character_set="ISO_IR 192",  # UTF-8: reasons contain "≥", "→"
        software_versions=_lo(f"MedAI {__version__}"),
        manufacturer_model_name=_lo(algorithm_name),
    )
    try:
        with atomic_path(target) as tmp:
            sr.save_as(tmp, enforce_file_format=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot write the tracking SR {target} ({exc.strerror or exc}). Choose a writable output folder."
        ) from None
    return target


# ---- reading ------------------------------------------------------------------------------------------------
def _open_report(path: str | os.PathLike[str]) -> Any:
    """The TID 1500 Measurement Report of an SR file, with one :class:`InputError` for every way it can fail."""
    import highdicom as hd
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is not a file; give the tracking SR (.dcm) to read.")
    try:
        sr = hd.sr.srread(path)
    except (OSError, ValueError, TypeError, AttributeError, KeyError, RuntimeError, InvalidDicomError) as exc:
        raise InputError(f"Cannot read {path} as a DICOM Structured Report ({exc}). Give an SR file.") from None
    report = sr.content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise InputError(
            f"{path.name} is an SR but not a TID 1500 Measurement Report; give an SR written by write_tracking_sr "
            "or another TID 1500 report."
        )
    return report


def _code_value(concept: Any) -> str:
    """The code value of a coded concept dataset (short, long or URN code value)."""
    for keyword in ("CodeValue", "LongCodeValue", "URNCodeValue"):
        if keyword in concept:
            return str(concept.get(keyword))
    return ""


def _same(concept: Any, term: CodedTerm) -> bool:
    return _code_value(concept) == term.value and str(concept.get("CodingSchemeDesignator", "")) == term.scheme


def _measurement_key(measurement: Any) -> str:
    derivation = measurement.derivation
    for code in _MEASUREMENTS:
        if not _same(measurement.name, code.name):
            continue
        if (code.derivation is None) == (derivation is None) and (
            derivation is None or _same(derivation, code.derivation)
        ):
            return code.key
    name = str(measurement.name.CodeMeaning)
    return f"{name} ({derivation.CodeMeaning})" if derivation is not None else name


def _category(value: Any) -> str:
    if str(value.get("CodingSchemeDesignator", "")) == PRIVATE_SCHEME:
        return _code_value(value).removeprefix("LRADS-")
    return str(value.get("CodeMeaning", ""))


def _text_items(group: Any, term: CodedTerm) -> list[str]:
    return [
        str(item.TextValue)
        for item in group[0].ContentSequence
        if item.ValueType == "TEXT" and _same(item.ConceptNameCodeSequence[0], term)
    ]


def _group_dict(group: Any) -> dict[str, Any]:
    measurements: dict[str, dict[str, Any]] = {}
    for measurement in group.get_measurements():
        measurements[_measurement_key(measurement)] = {
            "value": float(measurement.value),
            "unit": str(measurement.unit.value),
        }
    kind = lung_rads = None
    for evaluation in group.get_qualitative_evaluations():
        if _same(evaluation.name, _NODULE_TYPE):
            kind = next((k.value for k, term in _NODULE_TYPES.items() if _same(evaluation.value, term)), None)
        elif _same(evaluation.name, _LUNG_RADS):
            lung_rads = _category(evaluation.value)
    segment_number = seg_uid = None
    source_uids: list[str] = []
    reference = group.referenced_segment
    if reference is not None:
        segment_item = reference[0]
        seg_uid = str(segment_item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        segment_number = int(segment_item.ReferencedSOPSequence[0].ReferencedSegmentNumber)
        source_uids = [str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for item in reference[1:]]
    time_points = _text_items(group, CodedTerm("C2348792", "UMLS", "Time Point"))
    reasons = _text_items(group, _LUNG_RADS_REASON)
    return {
        "tracking_id": group.tracking_identifier,
        "tracking_uid": str(group.tracking_uid) if group.tracking_uid is not None else None,
        "segment_number": segment_number,
        "seg_sop_instance_uid": seg_uid,
        "source_sop_instance_uids": source_uids,
        "kind": kind,
        "time_point": time_points[0] if time_points else None,
        "measurements": measurements,
        "lung_rads": lung_rads,
        "lung_rads_reason": reasons[0] if reasons else None,
    }


def read_tracking_sr(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the nodule measurement groups of a tracking SR (or any TID 1500 report with volumetric groups).

    Returns:
        One dict per measurement group, in file order: ``tracking_id``, ``tracking_uid``, ``segment_number`` and
        ``seg_sop_instance_uid`` (the referenced segment), ``source_sop_instance_uids`` (the CT images of that
        segment), ``kind``, ``time_point``, ``measurements`` (key -> ``{"value": float, "unit": UCUM code}``;
        keys as :meth:`NoduleReportItem.measurement_values`, or the code meaning for other measurements),
        ``lung_rads`` and ``lung_rads_reason``. Absent values are None.

    Raises:
        InputError: the file is not a readable TID 1500 Structured Report.
    """
    report = _open_report(path)
    return [_group_dict(group) for group in report.get_volumetric_roi_measurement_groups()]


def _exam_code(path: str | os.PathLike[str], term: CodedTerm) -> Any:
    report = _open_report(path)
    for item in report[0].ContentSequence:
        if item.ValueType != "CONTAINER" or not _same(item.ConceptNameCodeSequence[0], _QUALITATIVE_EVALUATIONS):
            continue
        for child in item.get("ContentSequence", []):
            if child.ValueType == "CODE" and _same(child.ConceptNameCodeSequence[0], term):
                return child.ConceptCodeSequence[0]
    return None


def read_exam_lung_rads(path: str | os.PathLike[str]) -> str | None:
    """The exam-level Lung-RADS category of a tracking SR, or None when the report has none.

    Raises:
        InputError: the file is not a readable TID 1500 Structured Report.
    """
    code = _exam_code(path, _LUNG_RADS)
    return None if code is None else _category(code)


def read_reading_priority(path: str | os.PathLike[str]) -> int | None:
    """The exam's reading priority (1 most urgent .. 5) written by the gateway, or None when the report has none.

    Raises:
        InputError: the file is not a readable TID 1500 Structured Report.
    """
    code = _exam_code(path, _PRIORITY)
    match = None if code is None else _PRIORITY_VALUES.match(str(code.CodeValue))
    return int(match.group(1)) if match else None
