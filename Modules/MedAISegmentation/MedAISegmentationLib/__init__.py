"""Slicer-side code of the MedAI Segmentation module: the worker job, the result in the scene, DICOM SEG export.

The dependency installer, the worker's Python, input staging and the job lifecycle are ``MedAICommonLib``'s (the
hidden MedAI Common module, a declared dependency); importing it first makes ``MedAIExtension`` importable in a
source checkout as well.
"""

from MedAICommonLib import InputError, MedAIError, ensureDependencies

from MedAISegmentationLib.logic import INPUT_ROLE, STATISTICS_ROLE, SegmentationJob, SegmentationLogic

__all__ = [
    "INPUT_ROLE",
    "STATISTICS_ROLE",
    "InputError",
    "MedAIError",
    "SegmentationJob",
    "SegmentationLogic",
    "ensureDependencies",
]
