"""The codes of the tracking SR: MedAI's private coding scheme, the measurement and evaluation concepts and units,
and the limits both the writer and the reader of the report rely on. The list of codes is in
:mod:`MedAIExtension.dicom.sr`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from MedAIExtension.labels import CodedTerm

__all__ = ["PRIVATE_SCHEME", "NoduleKind"]


class NoduleKind(StrEnum):
    """Attenuation class used by Lung-RADS: the one nodule-kind vocabulary (tracking and the phantoms re-export it).

    It lives with the SR's codes so that the report can be written without knowing the tracking pipeline;
    :mod:`MedAIExtension.tracking.types` re-exports it.
    """

    SOLID = "solid"
    PART_SOLID = "part-solid"
    GROUND_GLASS = "ground-glass"


#: Coding scheme designator of MedAI's private codes (DICOM reserves designators starting with "99").
PRIVATE_SCHEME = "99MEDAI"

_SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
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
_MASS = CodedTerm("4147007", "SCT", "Mass")
_LATERALITY = CodedTerm("272741003", "SCT", "Laterality")
_LATERALITIES: dict[str, CodedTerm] = {
    "right": CodedTerm("24028007", "SCT", "Right"),
    "left": CodedTerm("7771000", "SCT", "Left"),
}
_LUNG_ZONES: dict[str, CodedTerm] = {
    "upper": CodedTerm("281392002", "SCT", "Upper zone of lung"),
    "middle": CodedTerm("281393007", "SCT", "Middle zone of lung"),
    "lower": CodedTerm("281394001", "SCT", "Lower zone of lung"),
}
_RECOMMENDATION = CodedTerm("121075", "DCM", "Recommendation")
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
_LOCATION = CodedTerm("LOCATION", PRIVATE_SCHEME, "Location (side, lung zone, image)")
_GROWTH = CodedTerm("GROWTH", PRIVATE_SCHEME, "Growth assessment")
_NELSON = CodedTerm("NELSON", PRIVATE_SCHEME, "NELSON category")
_BORDERLINE = CodedTerm("BORDERLINE", PRIVATE_SCHEME, "Size near a category threshold")
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
