"""Phantom-v2 patients scanned twice with no true change: the test that growth is only declared when it is real.

Each pair is one :func:`~MedAIExtension.phantom.acquisition.random_ct_spec` patient (random acquisition, lung
findings, lesions, sometimes a mass) re-scanned after a random rigid repositioning (up to 3 degrees about each
axis and 8 mm along each; less when a lesion would leave the field of view) with a new noise realisation; every
lesion keeps its volume. A tracker must report no lesion as growing and none as new on such a pair.
"""

from __future__ import annotations

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.phantom.acquisition import random_ct_spec
from MedAIExtension.phantom.followup_model import FollowupSpec, followup_spec

__all__ = ["NO_CHANGE_SEEDS", "no_change_followup"]

#: The 20 no-change pairs of issue 17 (seeds never used for training or the held-out detection set; 9604 draws a
#: patient too small for its fat layer and is skipped).
NO_CHANGE_SEEDS: tuple[int, ...] = (9600, 9601, 9602, 9603, *range(9605, 9621))


def no_change_followup(seed: int, max_voxels: int = 1_500_000) -> FollowupSpec:
    """The no-change pair of ``seed``: its baseline and a rigidly moved, re-noised follow-up of the same patient."""
    spec, _ = random_ct_spec(
        seed, fov_mm=(300.0, 240.0, 160.0), max_nodules=4, mass_probability=0.25, max_voxels=max_voxels
    )
    rng = np.random.default_rng([int(seed), 0x4E43])
    rotation = rng.uniform(-3.0, 3.0, size=3)
    translation = rng.uniform(-8.0, 8.0, size=3)
    for scale in (1.0, 0.5, 0.25):  # a lesion at the edge of the field of view must stay inside it
        try:
            return followup_spec(
                spec,
                (1.0,) * len(spec.nodules),
                rotation_deg=tuple(float(v) for v in rotation * scale),
                translation_mm=tuple(float(v) for v in translation * scale),
            )
        except InputError:
            continue
    return followup_spec(spec, (1.0,) * len(spec.nodules))
