"""Measurement uncertainty from re-segmentation: it predicts how much a repeat scan moves the volume.

The check that matters: the same nodule rendered with several fresh noise realisations (a repeat scan) scatters
in volume by about as much as :func:`measurement_spread` predicts from one scan, and a no-change pair is never
called a change while real growth is.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.phantom import AXIAL, NoduleSpec, PhantomSpec, generate_chest_phantom
from MedAIExtension.phantom.anatomy import build_layout, nodule_center
from MedAIExtension.phantom.spec import AnatomySpec
from MedAIExtension.tracking.measurements import measure_nodule
from MedAIExtension.tracking.nodule_segmentation import segment_nodule
from MedAIExtension.tracking.repeatability import (
    MeasurementSpread,
    change_exceeds_uncertainty,
    measurement_spread,
)
from MedAIExtension.tracking.types import Candidate, NoduleMeasurement

SPACING = (0.8, 0.8, 1.25)
NOISE_HU = 20.0


def _scan(diameter: float, kind: str, noise_seed: int):
    nodule = NoduleSpec(diameter, kind, lung="right", position=(0.35, 0.2, 0.3))
    anatomy = AnatomySpec()
    centre = nodule_center(build_layout(anatomy), nodule) + np.asarray(anatomy.center_ras)
    size = tuple(int(math.ceil((diameter + 24.0) / s)) for s in SPACING)
    spec = PhantomSpec(
        size_ijk=size,
        spacing=SPACING,
        direction_ras=AXIAL,
        center_ras=tuple(float(v) for v in centre),
        nodules=(nodule,),
        seed=5,
        noise_hu=NOISE_HU,
        noise_seed=noise_seed,
        anatomy=anatomy,
    )
    return generate_chest_phantom(spec)


@functools.cache
def _measured(diameter: float, kind: str, noise_seed: int) -> tuple[object, NoduleMeasurement]:
    phantom = _scan(diameter, kind, noise_seed)
    truth = phantom.truth["nodules"][0]
    candidate = Candidate(tuple(truth["center_ras"]), truth["diameter_mm"], 1.0, "test")
    mask = segment_nodule(phantom.ct, candidate)
    assert mask is not None
    return phantom, measure_nodule(phantom.ct, mask)


@pytest.mark.parametrize("kind", ["solid", "ground-glass"])
def test_predicted_spread_matches_the_scatter_of_repeat_scans(kind: str) -> None:
    repeats = [_measured(8.0, kind, seed)[1].volume_mm3 for seed in range(11, 16)]
    observed_sd = float(np.std(repeats, ddof=1))
    phantom, first = _measured(8.0, kind, 11)
    spread = measurement_spread(phantom.ct, first, seed=1)
    print(f"{kind}: repeat-scan SD {observed_sd:.1f} mm3, predicted {spread.volume_sd_mm3:.1f} mm3 ({spread})")
    assert spread.stable and spread.failed == 0 and spread.repeats == 12  # 6 seed shifts, 3 noises, 3 grids
    # the prediction is of the order of the real scatter: neither blind to it nor so wide it hides real growth
    assert spread.volume_sd_mm3 >= 0.5 * observed_sd
    assert spread.relative_to(first.volume_mm3) < 0.03
    # and no pair of repeat scans is a change
    sds = spread.volume_sd_mm3
    assert not any(change_exceeds_uncertainty(repeats[0], sds, v, sds) for v in repeats[1:])


def test_real_growth_exceeds_the_uncertainty() -> None:
    phantom_before, before = _measured(8.0, "solid", 11)
    phantom_after, after = _measured(10.0, "solid", 12)  # +95 % volume
    sd_before = measurement_spread(phantom_before.ct, before, seed=1).volume_sd_mm3
    sd_after = measurement_spread(phantom_after.ct, after, seed=2).volume_sd_mm3
    assert change_exceeds_uncertainty(before.volume_mm3, sd_before, after.volume_mm3, sd_after)


def test_spread_has_a_floor_and_instability_is_reported() -> None:
    assert MeasurementSpread(1.0, 0.1, repeats=9, failed=4).stable
    assert not MeasurementSpread(math.inf, math.inf, repeats=9, failed=5).stable
    phantom, measured = _measured(8.0, "solid", 11)
    spread = measurement_spread(phantom.ct, measured, noise_repeats=0)
    assert spread.volume_sd_mm3 >= 0.01 * measured.volume_mm3
    assert spread.mean_diameter_sd_mm >= 0.01 / 3 * measured.mean_diameter_mm
    assert spread.repeats == 9  # 6 seed shifts and 3 grids


def test_bad_arguments() -> None:
    phantom, measured = _measured(8.0, "solid", 11)
    with pytest.raises(InputError, match="noise_repeats"):
        measurement_spread(phantom.ct, measured, noise_repeats=-1)
    with pytest.raises(InputError, match="lung mask"):
        measurement_spread(phantom.ct, measured, np.zeros((2, 2, 2), bool))
    with pytest.raises(InputError, match="negative"):
        change_exceeds_uncertainty(1.0, -1.0, 2.0, 1.0)
