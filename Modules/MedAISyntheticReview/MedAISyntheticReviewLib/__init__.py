"""Slicer-side code of the MedAI Synthetic Review module: a review project and the volume nodes it shows
(:mod:`.logic`, Qt-free), its long steps as worker jobs (:mod:`.jobs`), Qt helpers (:mod:`.gui`).

The dependency installer, the search path of ``MedAIExtension`` and the job lifecycle come from ``MedAICommonLib``
(the hidden MedAI Common module, a declared dependency), imported first.
"""

import MedAICommonLib  # noqa: F401 - first: makes MedAIExtension importable in a source checkout

from MedAISyntheticReviewLib.logic import BLINDED_ROUNDING_RANGE, ReviewLogic

__all__ = ["BLINDED_ROUNDING_RANGE", "ReviewLogic"]
