"""Growth must show in the image: the attenuation mass of a nodule's place rises when it grows, not when only its
boundary is drawn differently."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from MedAIExtension.phantom import PhantomSpec
from MedAIExtension.phantom.followup import followup_spec, generate_phantom_pair
from MedAIExtension.phantom.spec import NoduleSpec
from MedAIExtension.tracking.attenuation_mass import MIN_RELATIVE_MASS_GROWTH, compare_attenuation_mass
from MedAIExtension.tracking.types import NoduleMask

GRID = {"size_ijk": (120, 96, 40), "spacing": (2.2, 2.2, 2.5), "seed": 3, "noise_hu": 25.0}


def _mask(array: np.ndarray) -> NoduleMask:
    box = ndimage.find_objects(array.astype(np.uint8))[0]
    return NoduleMask(box, array[box])


def _pair(kind: str, factor: float, rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)):
    nodule = NoduleSpec(9.0, kind, lung="right", position=(0.35, 0.2, 0.1))
    spec = followup_spec(PhantomSpec(**GRID, nodules=(nodule,)), (factor,), rotation_deg=rotation)
    return generate_phantom_pair(spec, interval_days=180)


def _transforms(pair) -> tuple[np.ndarray, np.ndarray]:
    to_baseline = np.array(pair.truth["motion"]["followup_to_baseline_ras"], dtype=float)
    return to_baseline, np.linalg.inv(to_baseline)


@pytest.mark.parametrize("kind", ["solid", "ground-glass"])
def test_growth_raises_the_mass_of_its_place(kind: str) -> None:
    pair = _pair(kind, 1.5, rotation=(0.0, 0.0, 2.0))
    base, follow = pair.baseline, pair.followup
    mass = compare_attenuation_mass(
        base.ct, follow.ct, _mask(base.nodule_mask(1)), _mask(follow.nodule_mask(1)), *_transforms(pair)
    )
    assert mass.confirms_growth and mass.relative_change > MIN_RELATIVE_MASS_GROWTH


def test_a_boundary_drawn_wider_is_not_growth() -> None:
    """The same nodule, re-noised and moved; the follow-up 'segmentation' takes in two more voxels all round."""
    pair = _pair("solid", 1.0, rotation=(0.0, 0.0, 2.0))
    base, follow = pair.baseline, pair.followup
    wider = ndimage.binary_dilation(follow.nodule_mask(1), iterations=2)
    assert wider.sum() > 2.5 * follow.nodule_mask(1).sum()  # "volume +150 %"
    mass = compare_attenuation_mass(base.ct, follow.ct, _mask(base.nodule_mask(1)), _mask(wider), *_transforms(pair))
    assert abs(mass.relative_change) < MIN_RELATIVE_MASS_GROWTH / 2 and not mass.confirms_growth
