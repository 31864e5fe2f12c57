"""Slicer-side code of the MedAI Explainability module: the worker process and the scene.

The dependency installer, the worker's Python and the search path of ``MedAIExtension`` are shared with the MedAI
Segmentation module, and the staging of the input volume (DICOM series or NRRD) with MedAI Nodule Tracking (both
declared module dependencies, so their ``...Lib`` packages are importable). Importing ``MedAISegmentationLib`` first
makes ``MedAIExtension`` importable in a source checkout as well.
"""

from MedAISegmentationLib import InputError, MedAIError, ensureDependencies

from MedAIExplainabilityLib.logic import ExplainabilityLogic, ExplainJob

__all__ = ["ExplainJob", "ExplainabilityLogic", "InputError", "MedAIError", "ensureDependencies"]
