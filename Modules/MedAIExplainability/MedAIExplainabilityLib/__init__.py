"""Slicer-side code of the MedAI Explainability module: the worker job and the scene.

The dependency installer, the worker's Python, input staging (DICOM series or NRRD) and the job lifecycle are
``MedAICommonLib``'s (the hidden MedAI Common module, a declared dependency); importing it first makes
``MedAIExtension`` importable in a source checkout as well.
"""

from MedAICommonLib import InputError, MedAIError, ensureDependencies

from MedAIExplainabilityLib.logic import ExplainabilityLogic, ExplainJob

__all__ = ["ExplainJob", "ExplainabilityLogic", "InputError", "MedAIError", "ensureDependencies"]
