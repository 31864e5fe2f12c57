"""Slicer-side code of the MedAI Synthetic Review module: a review project and the volume nodes it shows.

Qt-free (the scene is a parameter), so it is tested on the ``slicer-core`` wheel. The dependency installer and the
search path of ``MedAIExtension`` come from the MedAI Segmentation module (a declared module dependency): the module
file imports ``MedAISegmentationLib`` before this package.
"""

from MedAISyntheticReviewLib.logic import BLINDED_ROUNDING_RANGE, ReviewLogic

__all__ = ["BLINDED_ROUNDING_RANGE", "ReviewLogic"]
