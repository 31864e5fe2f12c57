"""Management per Lung-RADS category, borderline sizes, and the NELSON volume criteria."""

from __future__ import annotations

import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.tracking.lungrads import LungRadsCategory, LungRadsInput, Timepoint
from MedAIExtension.tracking.recommendations import (
    NelsonCategory,
    borderline_note,
    management_recommendation,
    nelson_category,
)
from MedAIExtension.tracking.types import NoduleKind


def test_every_category_has_its_v2022_management() -> None:
    assert management_recommendation("2") == "Continue annual screening with LDCT in 12 months."
    assert management_recommendation(LungRadsCategory.C3) == "6-month LDCT."
    assert management_recommendation("4a").startswith("3-month LDCT")
    assert "tissue sampling" in management_recommendation("4B") and "tissue sampling" in management_recommendation("4X")
    for category in LungRadsCategory:
        assert management_recommendation(category)


def test_a_solid_nodule_just_under_6_mm_is_flagged() -> None:
    status = LungRadsInput(NoduleKind.SOLID, 5.9, Timepoint.BASELINE)
    note = borderline_note(status, margin_mm=0.3)
    assert note == (
        "mean diameter 5.9 mm is within 0.1 mm of a Lung-RADS threshold (6 mm): 0.1 mm more gives category 3 "
        "instead of 2"
    )


def test_a_size_far_from_every_threshold_is_not_flagged() -> None:
    assert borderline_note(LungRadsInput(NoduleKind.SOLID, 7.0, Timepoint.BASELINE), margin_mm=0.5) is None
    assert borderline_note(LungRadsInput(NoduleKind.SOLID, 5.9, Timepoint.BASELINE), margin_mm=0.0) is None


def test_a_size_just_over_a_threshold_is_flagged_downwards() -> None:
    note = borderline_note(LungRadsInput(NoduleKind.SOLID, 8.1, Timepoint.BASELINE), margin_mm=0.5)
    assert note is not None and "(8 mm): 0.2 mm less gives category 3 instead of 4A" in note


def test_growth_near_the_1_5_mm_definition_is_flagged() -> None:
    # 5.0 -> 6.6 mm in a year: growth by 1.6 mm (> 1.5) makes it 4A "growing < 8 mm"; 0.1 mm less is not growth.
    status = LungRadsInput(NoduleKind.SOLID, 6.6, Timepoint.GROWING, prior_mean_diameter_mm=5.0, interval_days=365)
    note = borderline_note(status, margin_mm=0.2)
    assert note is not None and "0.1 mm less" in note and "instead of 4A" in note


def test_the_solid_component_of_a_part_solid_nodule_is_checked() -> None:
    status = LungRadsInput(NoduleKind.PART_SOLID, 12.0, Timepoint.BASELINE, solid_mean_diameter_mm=7.9)
    note = borderline_note(status, margin_mm=0.2)
    assert note is not None and note.startswith("solid component 7.9 mm") and "4B instead of 4A" in note


def test_negative_margin_is_refused() -> None:
    with pytest.raises(InputError, match="margin"):
        borderline_note(LungRadsInput(NoduleKind.SOLID, 5.0, Timepoint.BASELINE), -0.1)


@pytest.mark.parametrize(
    ("volume", "prior", "vdt", "expected"),
    [
        (30.0, None, None, NelsonCategory.NEGATIVE),
        (120.0, None, None, NelsonCategory.INDETERMINATE),
        (600.0, None, None, NelsonCategory.POSITIVE),
        (120.0, 110.0, None, NelsonCategory.INDETERMINATE),  # +9 %: no growth, volume class
        (200.0, 100.0, 180.0, NelsonCategory.POSITIVE),  # doubled in 180 days
        (130.0, 100.0, 500.0, NelsonCategory.INDETERMINATE),
        (130.0, 100.0, 900.0, NelsonCategory.NEGATIVE),
    ],
)
def test_nelson_categories(volume, prior, vdt, expected) -> None:
    result = nelson_category(NoduleKind.SOLID, volume, prior, vdt)
    assert result is not None and result.category is expected and result.reason


def test_nelson_does_not_classify_subsolid_nodules() -> None:
    assert nelson_category(NoduleKind.GROUND_GLASS, 300.0) is None
