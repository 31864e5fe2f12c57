"""Longitudinal lung-nodule tracking: detect, segment, measure, register, match, grow, categorise (Qt-free).

>>> from MedAIExtension.tracking import track_nodules, write_tracking_outputs  # doctest: +SKIP
>>> result = track_nodules(baseline_ct, followup_ct)                           # doctest: +SKIP
>>> write_tracking_outputs(result, "tracked/")                                # doctest: +SKIP
"""

from MedAIExtension.tracking.outputs import (
    TrackingOutcome,
    TrackRequest,
    track_to_folder,
    write_study_dicom,
    write_tracking_outputs,
)
from MedAIExtension.tracking.pipeline import StudyResult, TrackingOptions, TrackingResult, assess_study, track_nodules
from MedAIExtension.tracking.prior import adopt_prior_tracking
from MedAIExtension.tracking.scene import TrackingNodes, load_tracking_into_scene

__all__ = [
    "StudyResult",
    "TrackRequest",
    "TrackingNodes",
    "TrackingOptions",
    "TrackingOutcome",
    "TrackingResult",
    "adopt_prior_tracking",
    "assess_study",
    "load_tracking_into_scene",
    "track_nodules",
    "track_to_folder",
    "write_study_dicom",
    "write_tracking_outputs",
]
