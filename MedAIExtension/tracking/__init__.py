"""Longitudinal lung-nodule tracking: detect, segment, measure, register, match, grow, categorise (Qt-free).

>>> from MedAIExtension.tracking import track_nodules, write_tracking_outputs  # doctest: +SKIP
>>> result = track_nodules(baseline_ct, followup_ct)                           # doctest: +SKIP
>>> write_tracking_outputs(result, "tracked/")                                # doctest: +SKIP

The names below are loaded on first use (PEP 562 ``__getattr__``): importing a light module of the package
(``tracking.types`` for the nodule vocabulary, ``tracking.commands`` for ``medai --help``) does not load the
pipeline with its detectors, registration and writers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from MedAIExtension.lazy_exports import lazy_exports

if TYPE_CHECKING:  # the same names as _EXPORTS, for type checkers and readers
    from MedAIExtension.tracking.outputs import (
        TrackingOutcome,
        TrackRequest,
        track_to_folder,
        write_study_dicom,
        write_tracking_outputs,
    )
    from MedAIExtension.tracking.pipeline import TrackingOptions, assess_study, track_nodules
    from MedAIExtension.tracking.prior import adopt_prior_tracking
    from MedAIExtension.tracking.results import StudyResult, TrackingResult
    from MedAIExtension.tracking.scene import TrackingNodes, load_tracking_into_scene

#: Exported name -> the module of this package that defines it.
_EXPORTS = {
    "StudyResult": "results",
    "TrackRequest": "outputs",
    "TrackingNodes": "scene",
    "TrackingOptions": "pipeline",
    "TrackingOutcome": "outputs",
    "TrackingResult": "results",
    "adopt_prior_tracking": "prior",
    "assess_study": "pipeline",
    "load_tracking_into_scene": "scene",
    "track_nodules": "pipeline",
    "track_to_folder": "outputs",
    "write_study_dicom": "outputs",
    "write_tracking_outputs": "outputs",
}

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
