"""Slicer-side code of the MedAI Nodule Tracking module: the worker job, the scene, the DICOM database.

The dependency installer, the worker's Python, input staging and the job lifecycle are ``MedAICommonLib``'s (the
hidden MedAI Common module, a declared dependency); importing it first makes ``MedAIExtension`` importable in a
source checkout as well.
"""

from MedAICommonLib import InputError, MedAIError, ensureDependencies

from MedAINoduleTrackingLib.logic import DICOM_FILE_KEYS, OUTPUT_ATTRIBUTE, TrackingJob, TrackingLogic

__all__ = [
    "DICOM_FILE_KEYS",
    "OUTPUT_ATTRIBUTE",
    "InputError",
    "MedAIError",
    "TrackingJob",
    "TrackingLogic",
    "ensureDependencies",
]
