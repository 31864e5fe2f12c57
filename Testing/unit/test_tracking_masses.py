"""Masses in the tracking pipeline: found once, segmented, reported as masses with no VDT; none where there is none.

Issue 17: a real 45 mm mass was not reported at all because the nodule detector stops at 30 mm. Here a pair of
phantom studies holds a central 45 mm mass and a 36 mm mass against the chest wall (no change between the
studies, rigid motion and new noise).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from MedAIExtension.io.image import Image
from MedAIExtension.phantom import NoduleSpec, PhantomSpec, generate_chest_phantom
from MedAIExtension.phantom.followup import followup_spec, generate_phantom_pair
from MedAIExtension.progress import Progress
from MedAIExtension.tracking.pipeline import TrackingOptions, TrackingResult, analyse_timepoint, track_nodules
from MedAIExtension.tracking.results import TrackedNodule
from MedAIExtension.tracking.trend import limit_warnings
from MedAIExtension.tracking.types import (
    Candidate,
    Finding,
    NoduleKind,
    NoduleMask,
    NoduleMeasurement,
    NoduleStatus,
)

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


def test_the_limits_of_the_method_are_stated_when_they_apply() -> None:
    def nodule(number: int, diameter: float) -> TrackedNodule:
        measurement = NoduleMeasurement(
            (0.0, 0.0, 0.0), 1.0, diameter, diameter, diameter, 0.0, NoduleKind.SOLID, 1.0, diameter
        )
        mask = NoduleMask((slice(0, 1), slice(0, 1), slice(0, 1)), np.ones((1, 1, 1), dtype=bool))
        finding = Finding(Candidate((0.0, 0.0, 0.0), diameter, 1.0, "test"), mask, measurement)
        return TrackedNodule(number, "1.2.3", NoduleStatus.BASELINE, finding, None, None, None, None)

    thick = Image(np.zeros((4, 4, 4), dtype=np.int16), np.diag([0.7, 0.7, 5.0, 1.0]), "CT")
    thin = Image(np.zeros((4, 4, 4), dtype=np.int16), np.diag([0.7, 0.7, 1.0, 1.0]), "CT")
    nodules = [nodule(1, 3.4), nodule(2, 12.0), nodule(3, 31.5)]
    warnings = limit_warnings(nodules, {"baseline": thin, "follow-up": thick}, 3.0)
    text = "\n".join(warnings)
    assert len(warnings) == 3, text
    assert "N1 (3.4 mm) is at the lower edge" in text and "N2" not in text
    assert "N3 (31.5 mm, a mass) is at the edge of the detectors' size ranges" in text
    assert "The follow-up has 5 mm slices" in text and "under ~10 mm" in text and "baseline" not in text
    assert limit_warnings([nodule(2, 12.0)], {"study": thin}, 3.0) == []
