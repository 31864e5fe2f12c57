"""Slicer-side code of the MedAI Segmentation module: what MedAIExtension must not do (pip installs, the
application's scene and DICOM database, starting child processes from inside Slicer).

Importing this package first makes ``MedAIExtension`` importable in a source checkout as well.
"""

import sys

from MedAISegmentationLib.dependencies import packageParent

if str(packageParent()) not in sys.path:  # in a source checkout MedAIExtension is two folders above the module
    sys.path.insert(0, str(packageParent()))

from MedAIExtension.errors import InputError, MedAIError
from MedAISegmentationLib.dependencies import (
    ensureDependencies,
    missingRequirements,
    requirementsFile,
    workerPython,
)
from MedAISegmentationLib.logic import INPUT_ROLE, STATISTICS_ROLE, SegmentationJob, SegmentationLogic

__all__ = [
    "INPUT_ROLE",
    "STATISTICS_ROLE",
    "InputError",
    "MedAIError",
    "SegmentationJob",
    "SegmentationLogic",
    "ensureDependencies",
    "missingRequirements",
    "packageParent",
    "requirementsFile",
    "workerPython",
]
