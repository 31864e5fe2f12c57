"""Reading a tracking SR (or any TID 1500 Measurement Report with volumetric groups): the nodule groups
(:func:`read_tracking_sr`), the exam's Lung-RADS category and the reading priority.

highdicom and pydicom are imported lazily inside the functions that need them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from MedAIExtension.dicom.sr.codes import (
    _BORDERLINE,
    _GROWTH,
    _LATERALITIES,
    _LOCATION,
    _LUNG_RADS,
    _LUNG_RADS_REASON,
    _LUNG_ZONES,
    _MASS,
    _MEASUREMENTS,
    _NELSON,
    _NODULE_TYPE,
    _NODULE_TYPES,
    _PRIORITY,
    _PRIORITY_VALUES,
    _QUALITATIVE_EVALUATIONS,
    _RECOMMENDATION,
    PRIVATE_SCHEME,
)
from MedAIExtension.errors import InputError
from MedAIExtension.labels import CodedTerm

__all__ = ["read_exam_lung_rads", "read_exam_management", "read_reading_priority", "read_tracking_sr"]


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
        if code.derivation is None:
            matches = derivation is None
        else:
            matches = derivation is not None and _same(derivation, code.derivation)
        if matches:
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


def _first_text(group: Any, term: CodedTerm) -> str | None:
    texts = _text_items(group, term)
    return texts[0] if texts else None


def _sites(group: Any) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """The finding sites (``{"site", "code", "laterality"}``), the laterality and the lung zone they give."""
    sites, laterality, zone = [], None, None
    for site in group.finding_sites:
        side = site.laterality
        side_name = None
        if side is not None:
            side_name = next((k for k, term in _LATERALITIES.items() if _same(side, term)), str(side.meaning))
        sites.append({"site": str(site.value.meaning), "code": _code_value(site.value), "laterality": side_name})
        laterality = laterality or side_name
        zone = zone or next((k for k, term in _LUNG_ZONES.items() if _same(site.value, term)), None)
    return sites, laterality, zone


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
    sites, laterality, zone = _sites(group)
    finding_type = group.finding_type
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
        "finding_type": str(finding_type.meaning) if finding_type is not None else None,
        "mass": finding_type is not None and _same(finding_type, _MASS),
        "finding_sites": sites,
        "laterality": laterality,
        "lung_zone": zone,
        "location": _first_text(group, _LOCATION),
        "growth": _first_text(group, _GROWTH),
        "nelson": _first_text(group, _NELSON),
        "borderline": _first_text(group, _BORDERLINE),
        "management": _first_text(group, _RECOMMENDATION),
    }


def read_tracking_sr(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the nodule measurement groups of a tracking SR (or any TID 1500 report with volumetric groups).

    Returns:
        One dict per measurement group, in file order: ``tracking_id``, ``tracking_uid``, ``segment_number`` and
        ``seg_sop_instance_uid`` (the referenced segment), ``source_sop_instance_uids`` (the CT images of that
        segment), ``kind``, ``time_point``, ``measurements`` (key -> ``{"value": float, "unit": UCUM code}``;
        keys as :meth:`NoduleReportItem.measurement_values`, or the code meaning for other measurements),
        ``lung_rads`` and ``lung_rads_reason``; the reading: ``finding_type`` (its meaning, "Nodule" or
        "Mass") and ``mass``, ``finding_sites`` (``{"site", "code", "laterality"}`` each), ``laterality``
        (``"right"``/``"left"``) and ``lung_zone`` (``"upper"``/``"middle"``/``"lower"``) from them,
        ``location``, ``growth``, ``nelson``, ``borderline`` and ``management`` (free texts). Absent values are
        None.

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


def read_exam_management(path: str | os.PathLike[str]) -> str | None:
    """The exam-level management recommendation (Lung-RADS v2022) of a tracking SR, or None when it has none.

    Raises:
        InputError: the file is not a readable TID 1500 Structured Report.
    """
    report = _open_report(path)
    for item in report[0].ContentSequence:
        if item.ValueType != "CONTAINER" or not _same(item.ConceptNameCodeSequence[0], _QUALITATIVE_EVALUATIONS):
            continue
        for child in item.get("ContentSequence", []):
            if child.ValueType == "TEXT" and _same(child.ConceptNameCodeSequence[0], _RECOMMENDATION):
                return str(child.TextValue)
    return None


def read_reading_priority(path: str | os.PathLike[str]) -> int | None:
    """The exam's reading priority (1 most urgent .. 5) written by the gateway, or None when the report has none.

    Raises:
        InputError: the file is not a readable TID 1500 Structured Report.
    """
    code = _exam_code(path, _PRIORITY)
    match = None if code is None else _PRIORITY_VALUES.match(str(code.CodeValue))
    return int(match.group(1)) if match else None
