"""Deterministic synthetic chest CT phantoms with exact ground truth (lungs, nodules, volumes).

Used to test volumetry, orientation handling and DICOM round trips, and to train the project's own small
segmentation models: the anatomy is analytic, in RAS millimetres, so any grid (axial, sagittal, coronal,
oblique, either slice order) shows the same patient at the same place. :mod:`~MedAIExtension.phantom.followup`
adds a second study of the same patient with known nodule growth, patient motion and interval.

The names below are loaded on first use (:mod:`MedAIExtension.lazy_exports`): ``medai --help`` loads no renderer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from MedAIExtension.lazy_exports import lazy_exports

if TYPE_CHECKING:  # the same names as _EXPORTS, for type checkers and readers
    from MedAIExtension.phantom.chest import (
        DEFAULT_NODULES,
        LABEL_BACKGROUND,
        LABEL_LUNG,
        LABEL_NODULE,
        PHANTOM_LABELS,
        Phantom,
        generate_chest_phantom,
    )
    from MedAIExtension.phantom.followup import (
        FollowupSpec,
        NoduleStatus,
        PhantomPair,
        followup_spec,
        generate_phantom_pair,
        motion_matrix,
        write_phantom_pair,
    )
    from MedAIExtension.phantom.grid import (
        AXIAL,
        CORONAL,
        SAGITTAL,
        make_affine,
    )
    from MedAIExtension.phantom.sampling import (
        random_phantom_spec,
    )
    from MedAIExtension.phantom.spec import (
        AnatomySpec,
        LungSide,
        NoduleKind,
        NoduleSpec,
        PhantomSpec,
    )

#: Exported name -> the module of this package that defines it.
_EXPORTS = {
    "DEFAULT_NODULES": "chest",
    "LABEL_BACKGROUND": "chest",
    "LABEL_LUNG": "chest",
    "LABEL_NODULE": "chest",
    "PHANTOM_LABELS": "chest",
    "Phantom": "chest",
    "generate_chest_phantom": "chest",
    "FollowupSpec": "followup",
    "NoduleStatus": "followup",
    "PhantomPair": "followup",
    "followup_spec": "followup",
    "generate_phantom_pair": "followup",
    "motion_matrix": "followup",
    "write_phantom_pair": "followup",
    "AXIAL": "grid",
    "CORONAL": "grid",
    "SAGITTAL": "grid",
    "make_affine": "grid",
    "random_phantom_spec": "sampling",
    "AnatomySpec": "spec",
    "LungSide": "spec",
    "NoduleKind": "spec",
    "NoduleSpec": "spec",
    "PhantomSpec": "spec",
}

__all__ = [
    "AXIAL",
    "CORONAL",
    "DEFAULT_NODULES",
    "LABEL_BACKGROUND",
    "LABEL_LUNG",
    "LABEL_NODULE",
    "PHANTOM_LABELS",
    "SAGITTAL",
    "AnatomySpec",
    "FollowupSpec",
    "LungSide",
    "NoduleKind",
    "NoduleSpec",
    "NoduleStatus",
    "Phantom",
    "PhantomPair",
    "PhantomSpec",
    "followup_spec",
    "generate_chest_phantom",
    "generate_phantom_pair",
    "make_affine",
    "motion_matrix",
    "random_phantom_spec",
    "write_phantom_pair",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
