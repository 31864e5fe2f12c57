"""Slicer-side code of the MedAI Nodule Tracking module: the worker process, the scene, the DICOM database.

The dependency installer, the worker's Python and the search path of ``MedAIExtension`` are shared with the MedAI
Segmentation module (a declared module dependency, so ``MedAISegmentationLib`` is importable): importing it first
makes ``MedAIExtension`` importable in a source checkout as well.
"""

from MedAISegmentationLib import InputError, MedAIError, ensureDependencies

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
