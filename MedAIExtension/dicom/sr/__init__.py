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

The finding site is SCT Lung with the nodule's laterality (SCT 272741003 "Laterality": 24028007 Right or
7771000 Left) and, when the lung zone is known, a second finding site naming the zone (SCT 281392002 / 281393007
/ 281394001, "Upper / Middle / Lower zone of lung") with the same laterality. A lesion over 30 mm has the
finding type SCT 4147007 "Mass" instead of "Nodule".

Qualitative evaluations (CODE items, private scheme): the nodule attenuation type (NODTYPE: SOLID, PARTSOLID,
GGN) and the Lung-RADS v2022 category (LRADS: LRADS-2, LRADS-4A, ...); the reason for the category is a TEXT
item (LRADSWHY). The reading adds TEXT items: where the nodule is (LOCATION, e.g. "right lower zone, image
123"), how it changed (GROWTH), its NELSON category (NELSON), a size on a category threshold (BORDERLINE), and
the Lung-RADS v2022 management (DCM 121075 "Recommendation", also once for the exam). The exam's overall
Lung-RADS category goes into TID 1500's "Qualitative Evaluations" container (UMLS C0034375). No standard code
for a percent volume change, a volume doubling time, the solid component of a sub-solid nodule or a Lung-RADS
category was found in DICOM PS3.16 / pydicom's code dictionary, so these use the
private coding scheme ``99MEDAI``, declared in the Coding Scheme Identification Sequence of the SR.

highdicom and pydicom are imported lazily inside the functions that need them.

The package: :mod:`.codes` (the codes above), :mod:`.report_item` (:class:`NoduleReportItem`,
:func:`tracking_uid_for`), :mod:`.writer` (:func:`write_tracking_sr`) and :mod:`.reader` (:func:`read_tracking_sr`,
:func:`read_exam_lung_rads`, :func:`read_reading_priority`).
"""

from MedAIExtension.dicom.sr.codes import PRIVATE_SCHEME
from MedAIExtension.dicom.sr.reader import (
    read_exam_lung_rads,
    read_exam_management,
    read_reading_priority,
    read_tracking_sr,
)
from MedAIExtension.dicom.sr.report_item import NoduleReportItem, tracking_uid_for
from MedAIExtension.dicom.sr.writer import write_tracking_sr

__all__ = [
    "PRIVATE_SCHEME",
    "NoduleReportItem",
    "read_exam_lung_rads",
    "read_exam_management",
    "read_reading_priority",
    "read_tracking_sr",
    "tracking_uid_for",
    "write_tracking_sr",
]
