"""Mass detection: lesions over 30 mm are found (in the lung, against the chest wall), vessels and the heart are not."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.phantom import NoduleSpec, PhantomSpec, generate_chest_phantom
from MedAIExtension.tracking.lungs import lung_mask
from MedAIExtension.tracking.mass_detection import MassOptions, mass_candidates

SIZE = (200, 160, 110)  # a whole chest at 1.8 x 1.8 x 2.5 mm (quick, and not our usual grid)
SPACING = (1.8, 1.8, 2.5)


@functools.cache
def _case(nodules: tuple[NoduleSpec, ...], seed: int = 21):
    phantom = generate_chest_phantom(PhantomSpec(size_ijk=SIZE, spacing=SPACING, nodules=nodules, seed=seed))
    return phantom, lung_mask(phantom.ct)


def _distance(candidate, truth) -> float:
    return float(np.linalg.norm(np.asarray(candidate.center_ras) - np.asarray(truth["center_ras"])))


@pytest.mark.parametrize(
    "mass",
    [
        NoduleSpec(45.0, "solid", lung="right", position=(0.0, 0.0, -0.1)),
        NoduleSpec(36.0, "solid", lung="left", position=(0.5, 0.1, 0.0), juxta_pleural=True),
        NoduleSpec(50.0, "part-solid", lung="right", position=(0.1, -0.2, -0.3)),
    ],
    ids=["central 45 mm", "against the chest wall 36 mm", "part-solid 50 mm"],
)
def test_a_mass_is_found_once_with_its_size(mass: NoduleSpec) -> None:
    small = NoduleSpec(12.0, "solid", lung="left" if mass.lung == "right" else "right", position=(0.3, 0.2, 0.3))
    phantom, lungs = _case((mass, small))
    found = mass_candidates(phantom.ct, lungs)
    truth = phantom.truth["nodules"][0]
    assert len(found) == 1, f"expected one mass, got {found}"
    assert _distance(found[0], truth) < 6.0
    assert found[0].diameter_mm == pytest.approx(mass.diameter_mm, rel=0.2)
    assert found[0].source == "mass"


@pytest.mark.parametrize("seed", [21, 22])
def test_no_mass_in_a_chest_with_only_vessels_and_nodules(seed: int) -> None:
    nodules = (
        NoduleSpec(25.0, "solid", lung="right", position=(0.3, 0.0, 0.2)),
        NoduleSpec(20.0, "ground-glass", lung="left", position=(0.4, 0.2, -0.2), juxta_pleural=True),
    )
    phantom, lungs = _case(nodules, seed)
    assert mass_candidates(phantom.ct, lungs) == []


def test_inputs_are_checked() -> None:
    phantom, lungs = _case(())
    with pytest.raises(InputError, match="lung mask"):
        mass_candidates(phantom.ct, lungs[:-1])
    with pytest.raises(InputError, match="min_diameter_mm"):
        MassOptions(min_diameter_mm=5.0)
    assert mass_candidates(phantom.ct, np.zeros_like(lungs)) == []
