"""DICOM objects written and read by MedAI: Segmentation (SEG), tracking SR (TID 1500) and conformance checks.

highdicom, pydicom and SimpleITK are imported lazily inside the functions that need them.
"""

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
    "DciodvfyReport",
    "Dsr2xmlReport",
    "EmptySegmentationError",
    "MissingToolError",
    "NoduleReportItem",
    "find_dcmqi_tool",
    "find_tool",
    "read_dicom_seg",
    "read_dicom_seg_with_dcmqi",
    "read_exam_lung_rads",
    "read_tracking_sr",
    "run_dciodvfy",
    "run_dsr2xml",
    "segment_value_map",
    "tracking_uid_for",
    "validate_with_dciodvfy",
    "write_dicom_seg",
    "write_tracking_sr",
]
