"""Masses in the tracking pipeline: found once, segmented, reported as masses with no VDT; none where there is none.

Issue 17: a real 45 mm mass was not reported at all because the nodule detector stops at 30 mm. Here a pair of
phantom studies holds a central 45 mm mass and a 36 mm mass against the chest wall (no change between the
studies, rigid motion and new noise).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from MedAIExtension.phantom import NoduleSpec, PhantomSpec, generate_chest_phantom
from MedAIExtension.phantom.followup import followup_spec, generate_phantom_pair
from MedAIExtension.progress import Progress
from MedAIExtension.tracking.pipeline import TrackingOptions, TrackingResult, analyse_timepoint, track_nodules
from MedAIExtension.tracking.types import NoduleStatus

SIZE = (200, 160, 110)  # a whole chest at 1.8 x 1.8 x 2.5 mm
SPACING = (1.8, 1.8, 2.5)
MASSES = (
    NoduleSpec(45.0, "solid", lung="right", position=(0.0, 0.0, -0.1)),
    NoduleSpec(36.0, "solid", lung="left", position=(0.5, 0.1, 0.0), juxta_pleural=True),
)
SMALL = NoduleSpec(10.0, "solid", lung="right", position=(0.3, 0.2, 0.55))
OPTIONS = TrackingOptions(model=None, interval_days=120)


@functools.cache
def _pair() -> tuple[TrackingResult, dict]:
    baseline = PhantomSpec(size_ijk=SIZE, spacing=SPACING, seed=23, nodules=(*MASSES, SMALL))
    spec = followup_spec(baseline, (1.0, 1.0, 1.0), rotation_deg=(0.0, 0.0, 3.0), translation_mm=(4.0, -2.0, 0.0))
    pair = generate_phantom_pair(spec, interval_days=120)
    return track_nodules(pair.baseline.ct, pair.followup.ct, OPTIONS), pair.truth


def test_each_mass_is_found_once_and_reported_as_a_mass_without_a_vdt() -> None:
    result, truth = _pair()
    rows = {r["tracking_id"]: r for r in result.rows()}
    for nodule in result.nodules:
        print(
            f"{nodule.tracking_id} {nodule.status} {nodule.trend} mass={nodule.is_mass} "
            f"{rows[nodule.tracking_id]['baseline_mean_diameter_mm']} -> "
            f"{rows[nodule.tracking_id]['followup_mean_diameter_mm']} mm, vdt {rows[nodule.tracking_id]['vdt_days']}, "
            f"{nodule.lung_rads.reason if nodule.lung_rads else ''}"
        )
    print("\n".join(result.warnings))
    for spec, item in zip(MASSES, truth["nodules"][:2], strict=True):
        centre = np.asarray(item["baseline"]["center_ras"])
        near = [
            n
            for n in result.nodules
            if n.baseline is not None
            and np.linalg.norm(np.asarray(n.baseline.measurement.center_ras) - centre) < spec.radius_mm
        ]
        assert len(near) == 1, f"the {spec.diameter_mm:g} mm mass is reported {len(near)} times"
        mass = near[0]
        assert mass.status is NoduleStatus.PERSISTENT and mass.is_mass
        assert mass.baseline is not None and mass.baseline.candidate.source == "mass"
        assert mass.baseline.measurement.mean_diameter_mm == pytest.approx(spec.diameter_mm, rel=0.2)
        row = rows[mass.tracking_id]
        assert row["is_mass"] and row["vdt_days"] is None and row["trend"] is not None
        assert mass.lung_rads is not None and str(mass.lung_rads.category) == "4B"  # solid ≥ 15 mm
        assert "mass" in mass.lung_rads.reason
    small = [n for n in result.nodules if not n.is_mass and n.status is NoduleStatus.PERSISTENT]
    assert small, "the 10 mm nodule is still tracked beside the masses"
    assert not any(n.status is NoduleStatus.NEW for n in result.nodules)


def test_a_chest_without_masses_gets_no_mass_finding() -> None:
    nodules = (
        NoduleSpec(25.0, "solid", lung="right", position=(0.3, 0.0, 0.2)),
        NoduleSpec(12.0, "ground-glass", lung="left", position=(0.4, 0.2, -0.2), juxta_pleural=True),
    )
    phantom = generate_chest_phantom(PhantomSpec(size_ijk=SIZE, spacing=SPACING, seed=21, nodules=nodules))
    result = analyse_timepoint(phantom.ct, OPTIONS, Progress(None))
    assert result.findings, "the nodules are found"
    assert not [f for f in result.findings if f.candidate.source == "mass" or f.is_mass]
