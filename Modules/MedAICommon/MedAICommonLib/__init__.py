"""Slicer-side code shared by the MedAI modules: what MedAIExtension must not do (pip installs, the application's
scene and DICOM database, starting and polling child processes from inside Slicer).

* :mod:`.dependencies` — the Python packages MedAI needs, installed on first use; the worker's Python;
* :mod:`.staging` — a volume handed to the worker as its DICOM series or as NRRD; Slicer's temporary folder;
* :mod:`.dicom_database` — Slicer's DICOM database as a MedAI DICOM store;
* :mod:`.jobs` — the job record and logic base: start, poll, cancel, run a worker process (it derives from Slicer's
  ScriptedLoadableModuleLogic);
* :mod:`.widget` — the widget mixin: apply-or-cancel, polling, progress, errors, parameter node (Qt).

Those two are imported from their modules, not here, so this package imports without the Slicer application.

Importing this package first makes ``MedAIExtension`` importable in a source checkout as well.
"""

import sys

from MedAICommonLib.dependencies import packageParent

if str(packageParent()) not in sys.path:  # in a source checkout MedAIExtension is two folders above the module
    sys.path.insert(0, str(packageParent()))

from MedAICommonLib.dependencies import ensureDependencies, missingRequirements, requirementsFile, workerPython
from MedAIExtension.errors import InputError, MedAIError

__all__ = [
    "InputError",
    "MedAIError",
    "ensureDependencies",
    "missingRequirements",
    "packageParent",
    "requirementsFile",
    "workerPython",
]
