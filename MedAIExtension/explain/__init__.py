"""Explainability: Grad-CAM, Grad-CAM++, occlusion sensitivity, integrated gradients and segmentation
uncertainty, with sanity checks, as maps on the input grid for Slicer overlays and DICOM Parametric Maps.

:func:`explain_image` computes an :class:`Explanation`; :func:`explain_to_folder` also writes every output. The
methods themselves work on the network input (``gradcam``, ``integrated_gradients``, ``occlusion``,
``uncertainty``, ``sanity`` modules); torch and captum are imported only when a method needs them.
"""

from MedAIExtension.explain.models import ExplainModel, load_explain_model
from MedAIExtension.explain.pipeline import explain_image, explain_to_folder
from MedAIExtension.explain.request import ExplainRequest, ExplainSettings, Roi, add_explain_arguments
from MedAIExtension.explain.types import GRADIENT_METHODS, ExplainMethod, Explanation, ScoreTarget

__all__ = [
    "GRADIENT_METHODS",
    "ExplainMethod",
    "ExplainModel",
    "ExplainRequest",
    "ExplainSettings",
    "Explanation",
    "Roi",
    "ScoreTarget",
    "add_explain_arguments",
    "explain_image",
    "explain_to_folder",
    "load_explain_model",
]
