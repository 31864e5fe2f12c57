"""DICOM objects written and read by MedAI: Segmentation (SEG), tracking SR (TID 1500), Parametric Map (explanation
and uncertainty maps), Secondary Capture (key slices for viewers without overlays) and conformance checks.

highdicom, pydicom and SimpleITK are imported lazily inside the functions that need them.
"""

from MedAIExtension.dicom.parametric_map import (
    PARAMETRIC_MAP_STORAGE,
    ParametricMapInfo,
    quantity_of,
    read_parametric_map,
    read_parametric_map_info,
    write_parametric_map,
)
from MedAIExtension.dicom.secondary_capture import (
    NOT_FOR_DIAGNOSIS,
    SECONDARY_CAPTURE_STORAGE,
    slice_patient_orientation,
    write_secondary_capture,
)
from MedAIExtension.dicom.seg import (
    EmptySegmentationError,
    read_dicom_seg,
    read_dicom_seg_with_dcmqi,
    segment_value_map,
    write_dicom_seg,
)
from MedAIExtension.dicom.sr import (
    NoduleReportItem,
    read_exam_lung_rads,
    read_reading_priority,
    read_tracking_sr,
    tracking_uid_for,
    write_tracking_sr,
)
from MedAIExtension.dicom.tools import MissingToolError, find_dcmqi_tool, find_tool
from MedAIExtension.dicom.validation import (
    DciodvfyReport,
    Dsr2xmlReport,
    run_dciodvfy,
    run_dsr2xml,
    validate_with_dciodvfy,
)

__all__ = [
    "NOT_FOR_DIAGNOSIS",
    "PARAMETRIC_MAP_STORAGE",
    "SECONDARY_CAPTURE_STORAGE",
    "DciodvfyReport",
    "Dsr2xmlReport",
    "EmptySegmentationError",
    "MissingToolError",
    "NoduleReportItem",
    "ParametricMapInfo",
    "find_dcmqi_tool",
    "find_tool",
    "quantity_of",
    "read_dicom_seg",
    "read_dicom_seg_with_dcmqi",
    "read_exam_lung_rads",
    "read_parametric_map",
    "read_parametric_map_info",
    "read_reading_priority",
    "read_tracking_sr",
    "run_dciodvfy",
    "run_dsr2xml",
    "segment_value_map",
    "slice_patient_orientation",
    "tracking_uid_for",
    "validate_with_dciodvfy",
    "write_dicom_seg",
    "write_parametric_map",
    "write_secondary_capture",
    "write_tracking_sr",
]
