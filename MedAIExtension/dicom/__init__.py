"""DICOM objects written and read by MedAI: Segmentation (SEG) and conformance checks.

highdicom, pydicom and SimpleITK are imported lazily inside the functions that need them.
"""

from MedAIExtension.dicom.seg import (
    EmptySegmentationError,
    read_dicom_seg,
    read_dicom_seg_with_dcmqi,
    segment_value_map,
    write_dicom_seg,
)
from MedAIExtension.dicom.tools import MissingToolError, find_dcmqi_tool, find_tool
from MedAIExtension.dicom.validation import DciodvfyReport, run_dciodvfy, validate_with_dciodvfy

__all__ = [
    "DciodvfyReport",
    "EmptySegmentationError",
    "MissingToolError",
    "find_dcmqi_tool",
    "find_tool",
    "read_dicom_seg",
    "read_dicom_seg_with_dcmqi",
    "run_dciodvfy",
    "segment_value_map",
    "validate_with_dciodvfy",
    "write_dicom_seg",
]
