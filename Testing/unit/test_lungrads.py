"""Lung-RADS v2022 categoriser: every cell of DOMAIN.md's table at both sides of its bounds, growth, new nodules,
explicit findings (benign, juxtapleural, airway, 4X), stepped management, exam category and input validation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.tracking.lungrads import (
    SIZE_RULES,
    LungRadsCategory,
    LungRadsInput,
    LungRadsResult,
    Timepoint,
    categorize_exam,
    categorize_nodule,
    follow_up_timepoint,
    is_growing,
    round_mm,
)
from MedAIExtension.tracking.types import NoduleKind, NoduleMeasurement

SOLID, PART, GGN = NoduleKind.SOLID, NoduleKind.PART_SOLID, NoduleKind.GROUND_GLASS
C = LungRadsCategory


def cat(kind: NoduleKind, timepoint: str, total: float, solid: float | None = None, **inputs: object) -> LungRadsResult:
    return categorize_nodule(LungRadsInput(kind, total, timepoint, solid_mean_diameter_mm=solid, **inputs))


# (kind, time point, total mean diameter, solid component, expected) — each DOMAIN.md cell on both sides of each bound.
TABLE_CASES = [
    # solid, baseline: < 6 → 2; ≥ 6 to < 8 → 3; ≥ 8 to < 15 → 4A; ≥ 15 → 4B
    (SOLID, "baseline", 0.5, None, "2"),
    (SOLID, "baseline", 5.9, None, "2"),
    (SOLID, "baseline", 6.0, None, "3"),
    (SOLID, "baseline", 7.9, None, "3"),
    (SOLID, "baseline", 8.0, None, "4A"),
    (SOLID, "baseline", 14.9, None, "4A"),
    (SOLID, "baseline", 15.0, None, "4B"),
    (SOLID, "baseline", 45.0, None, "4B"),
    # solid, new: < 4 → 2; 4 to < 6 → 3; 6 to < 8 → 4A; ≥ 8 → 4B
    (SOLID, "new", 3.9, None, "2"),
    (SOLID, "new", 4.0, None, "3"),
    (SOLID, "new", 5.9, None, "3"),
    (SOLID, "new", 6.0, None, "4A"),
    (SOLID, "new", 7.9, None, "4A"),
    (SOLID, "new", 8.0, None, "4B"),
    # solid, growing: < 8 → 4A; ≥ 8 → 4B
    (SOLID, "growing", 7.9, None, "4A"),
    (SOLID, "growing", 8.0, None, "4B"),
    # part-solid, baseline: total < 6 → 2; total ≥ 6 with solid < 6 → 3; solid 6 to < 8 → 4A; solid ≥ 8 → 4B
    (PART, "baseline", 5.9, 5.9, "2"),
    (PART, "baseline", 6.0, 1.0, "3"),
    (PART, "baseline", 6.0, 5.9, "3"),
    (PART, "baseline", 6.0, 6.0, "4A"),
    (PART, "baseline", 12.0, 7.9, "4A"),
    (PART, "baseline", 12.0, 8.0, "4B"),
    # part-solid, new: total < 6 → 3; new solid component < 4 → 4A; ≥ 4 → 4B
    (PART, "new", 5.9, 2.0, "3"),
    (PART, "new", 5.9, 4.5, "3"),
    (PART, "new", 6.0, 3.9, "4A"),
    (PART, "new", 6.0, 4.0, "4B"),
    # part-solid, growing: solid component < 4 → 4A; ≥ 4 → 4B
    (PART, "growing", 5.0, 3.9, "4A"),
    (PART, "growing", 12.0, 3.9, "4A"),
    (PART, "growing", 5.0, 4.0, "4B"),
    # ground-glass: < 30 at baseline, new or growing → 2; ≥ 30 at baseline or new → 3; ≥ 30 stable → 2
    (GGN, "baseline", 29.9, None, "2"),
    (GGN, "baseline", 30.0, None, "3"),
    (GGN, "new", 29.9, None, "2"),
    (GGN, "new", 30.0, None, "3"),
    (GGN, "growing", 29.9, None, "2"),
    (GGN, "growing", 30.0, None, "3"),
    (GGN, "stable", 29.9, None, "2"),
    (GGN, "stable", 30.0, None, "2"),
    (GGN, "decreased", 45.0, None, "2"),
]


@pytest.mark.parametrize(("kind", "timepoint", "total", "solid", "expected"), TABLE_CASES)
def test_every_table_cell_on_both_sides_of_its_bounds(kind, timepoint, total, solid, expected) -> None:
    result = categorize_nodule(LungRadsInput(kind, total, timepoint, solid_mean_diameter_mm=solid))
    assert result.category == C(expected), result.reason
    assert result.reason.endswith(f"→ {expected}")


def test_size_table_is_a_partition_and_every_row_is_used() -> None:
    """For every kind, time point and size (0.1 mm grid) exactly one row applies; no row is dead."""
    used: set[int] = set()
    sizes = [x / 10 for x in range(1, 401)]
    for kind, timepoint in itertools.product(NoduleKind, Timepoint):
        for total in sizes:
            solids = [s for s in sizes[::3] if s <= total] if kind is PART else [None]
            for solid in solids:
                status = LungRadsInput(kind, total, timepoint, solid_mean_diameter_mm=solid)
                hits = [i for i, rule in enumerate(SIZE_RULES) if rule.matches(status)]
                assert len(hits) == 1, (status, hits)
                used.update(hits)
    assert used == set(range(len(SIZE_RULES)))


def test_reason_names_the_rule_in_words() -> None:
    assert cat(SOLID, "baseline", 7.2).reason == "solid nodule, baseline, mean diameter 7.2 mm (≥ 6 to < 8 mm) → 3"
    assert cat(PART, "new", 7.0, 3.0).reason == (
        "part-solid nodule, new, total mean diameter 7.0 mm (≥ 6 mm) with solid component 3.0 mm (< 4 mm) → 4A"
    )
    assert "stable or slowly growing" in cat(GGN, "stable", 31.0).reason


def test_sizes_are_rounded_half_up_to_a_tenth_before_the_thresholds() -> None:
    assert round_mm(5.95) == 6.0 and round_mm(5.94) == 5.9 and round_mm(np.float32(7.25)) == 7.3
    assert cat(SOLID, "baseline", 5.95).category == C.C3
    assert cat(SOLID, "baseline", 5.94).category == C.C2
    assert LungRadsInput(SOLID, 7.1234, "baseline").mean_diameter_mm == 7.1


# ---- growth ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prior", "current", "days", "growing"),
    [
        (6.0, 7.5, 365, False),  # exactly 1.5 mm is not growth
        (6.0, 7.6, 365, True),
        (6.1, 7.6, 200, False),  # 7.6 - 6.1 is 1.5 exactly (no float error)
        (6.1, 7.7, 200, True),
        (6.05, 7.64, 100, False),  # reported sizes 6.1 → 7.6 mm
        (7.0, 6.0, 100, False),
        (6.0, 9.0, 730.5, False),  # 3.0 mm in 24 months: 1.5 mm per 12 months
        (6.0, 9.1, 730.5, True),
        (6.0, 7.6, 366, True),  # 12 calendar months in a leap year: prorated 1.597 mm
    ],
)
def test_is_growing_follows_the_lung_rads_definition(prior, current, days, growing) -> None:
    assert is_growing(prior, current, days) is growing


def test_follow_up_timepoint() -> None:
    assert follow_up_timepoint(6.0, 7.6, 180) is Timepoint.GROWING
    assert follow_up_timepoint(6.0, 7.5, 180) is Timepoint.STABLE
    assert follow_up_timepoint(6.0, 6.0, 180) is Timepoint.STABLE
    assert follow_up_timepoint(6.0, 5.9, 180) is Timepoint.DECREASED


@pytest.mark.parametrize(("prior", "current", "days"), [(-1.0, 5.0, 30), (5.0, math.nan, 30), (5.0, 6.0, 0)])
def test_is_growing_rejects_bad_input(prior, current, days) -> None:
    with pytest.raises(InputError):
        is_growing(prior, current, days)


def test_growing_nodules_use_the_growth_rows_and_the_sizes_must_agree() -> None:
    grown = cat(SOLID, "growing", 7.7, prior_mean_diameter_mm=6.0, interval_days=300)
    assert grown.category == C.C4A
    assert cat(SOLID, "growing", 9.0, prior_mean_diameter_mm=7.0, interval_days=300).category == C.C4B
    # a 5.0 mm solid nodule is 2 at baseline, but 4A once it grows
    assert cat(SOLID, "growing", 5.0).category == C.C4A
    with pytest.raises(InputError, match="contradicts"):
        LungRadsInput(SOLID, 7.0, "growing", prior_mean_diameter_mm=6.0, interval_days=300)
    with pytest.raises(InputError, match="contradicts"):
        LungRadsInput(SOLID, 8.0, "stable", prior_mean_diameter_mm=6.0, interval_days=200)


def test_crossing_a_threshold_without_growth_recategorises() -> None:
    """5.9 → 6.0 mm is not growth, but the nodule now meets the ≥ 6 mm threshold."""
    before = cat(SOLID, "baseline", 5.9)
    after = cat(SOLID, "stable", 6.0, prior_mean_diameter_mm=5.9, interval_days=365)
    assert (before.category, after.category) == (C.C2, C.C3)
    assert cat(PART, "stable", 9.0, 6.0, prior_mean_diameter_mm=9.0, interval_days=365).category == C.C4A


def test_new_nodules_have_no_prior() -> None:
    assert cat(SOLID, "new", 5.0).category == C.C3
    assert cat(SOLID, "baseline", 5.0).category == C.C2  # same size, lower category at baseline
    with pytest.raises(InputError, match="no prior"):
        LungRadsInput(SOLID, 5.0, "new", prior_mean_diameter_mm=4.0, interval_days=365)
    with pytest.raises(InputError, match="no prior"):
        LungRadsInput(SOLID, 5.0, "baseline", prior_category="3", months_since_prior=6)


# ---- explicit findings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["benign_calcification", "contains_fat"])
def test_benign_calcification_or_fat_is_category_1_at_any_size(flag) -> None:
    result = cat(SOLID, "new", 20.0, **{flag: True})
    assert result.category == C.C1
    assert ("calcification" if flag == "benign_calcification" else "fat") in result.reason
    with pytest.raises(InputError, match="benign"):
        LungRadsInput(SOLID, 20.0, "new", suspicious_features=True, **{flag: True})


def test_juxtapleural_typical_solid_nodule_below_10_mm_is_2() -> None:
    assert cat(SOLID, "baseline", 9.9, juxtapleural_typical=True).category == C.C2
    assert cat(SOLID, "new", 9.9, juxtapleural_typical=True).category == C.C2
    at_10 = cat(SOLID, "baseline", 10.0, juxtapleural_typical=True)
    assert at_10.category == C.C4A and "juxtapleural rule not applied" in at_10.reason
    assert cat(SOLID, "growing", 9.0, juxtapleural_typical=True).category == C.C4B
    assert cat(PART, "baseline", 9.0, 7.0, juxtapleural_typical=True).category == C.C4A
    assert cat(SOLID, "baseline", 9.9).category == C.C4A  # the shape is an explicit input, never guessed


def test_subsegmental_airway_nodule_is_2() -> None:
    result = cat(SOLID, "baseline", 12.0, airway_subsegmental=True)
    assert result.category == C.C2 and "subsegmental airway" in result.reason


@pytest.mark.parametrize(
    ("kind", "timepoint", "total", "solid"),
    [(SOLID, "baseline", 6.0, None), (SOLID, "new", 7.0, None), (SOLID, "baseline", 20.0, None),
     (PART, "baseline", 8.0, 6.5), (GGN, "new", 31.0, None)],
)  # fmt: skip
def test_suspicious_features_make_category_3_or_4_nodules_4x(kind, timepoint, total, solid) -> None:
    result = cat(kind, timepoint, total, solid, suspicious_features=True)
    assert result.category == C.C4X and result.reason.endswith("→ 4X")


def test_suspicious_features_do_not_raise_a_category_2_nodule() -> None:
    result = cat(SOLID, "baseline", 5.9, suspicious_features=True)
    assert result.category == C.C2 and "4X applies to category 3 or 4" in result.reason


# ---- stepped management ------------------------------------------------------------------------------------------


def test_stepped_management_3_to_2_after_6_months() -> None:
    kw = {"prior_mean_diameter_mm": 7.0, "interval_days": 182, "prior_category": "3"}
    assert cat(SOLID, "stable", 7.0, months_since_prior=6, **kw).category == C.C2
    assert cat(SOLID, "decreased", 6.5, months_since_prior=6, **kw).category == C.C2
    early = cat(SOLID, "stable", 7.0, months_since_prior=5.96, **kw)  # months are not rounded
    assert early.category == C.C3 and "needs ≥ 6" in early.reason
    assert cat(PART, "stable", 7.0, 3.0, prior_category="3", months_since_prior=6).category == C.C2


def test_stepped_management_4a_to_3_after_3_months() -> None:
    assert cat(SOLID, "stable", 9.0, prior_category="4A", months_since_prior=3).category == C.C3
    assert cat(SOLID, "stable", 9.0, prior_category="4a", months_since_prior=2.9).category == C.C4A
    assert cat(SOLID, "decreased", 7.0, prior_category="4A", months_since_prior=3).category == C.C3


def test_no_step_down_when_growing_crossing_a_threshold_or_suspicious() -> None:
    assert cat(SOLID, "growing", 7.5, prior_category="4A", months_since_prior=3).category == C.C4A
    crossed = cat(SOLID, "stable", 8.0, prior_mean_diameter_mm=7.9, interval_days=182, prior_category="3",
                  months_since_prior=6)  # fmt: skip
    assert crossed.category == C.C4A and "crossed into a higher size category" in crossed.reason
    assert cat(SOLID, "stable", 7.0, prior_category="3", months_since_prior=6, suspicious_features=True).category == (
        C.C4X
    )
    assert cat(SOLID, "stable", 7.0, prior_category="2", months_since_prior=12).category == C.C3  # no rule for 2


def test_stepped_management_inputs_come_together() -> None:
    with pytest.raises(InputError, match="together"):
        LungRadsInput(SOLID, 7.0, "stable", prior_category="3")
    with pytest.raises(InputError, match="together"):
        LungRadsInput(SOLID, 7.0, "stable", months_since_prior=6)
    with pytest.raises(InputError, match="together"):
        LungRadsInput(SOLID, 7.0, "stable", prior_mean_diameter_mm=7.0)
    with pytest.raises(InputError, match="Unknown Lung-RADS category"):
        LungRadsInput(SOLID, 7.0, "stable", prior_category="5", months_since_prior=6)


# ---- exam category -----------------------------------------------------------------------------------------------


def test_exam_category_is_the_highest_nodule_category() -> None:
    results = [cat(SOLID, "baseline", 4.0), cat(PART, "baseline", 9.0, 6.5), cat(GGN, "baseline", 35.0)]
    exam = categorize_exam(results)
    assert exam.category == C.C4A
    assert results[1].reason in exam.reason and "3 nodule" in exam.reason
    assert categorize_exam([*results, cat(SOLID, "baseline", 9.0, suspicious_features=True)]).category == C.C4X
    assert categorize_exam([cat(SOLID, "baseline", 4.0, benign_calcification=True)]).category == C.C1


def test_no_nodules_is_category_1() -> None:
    exam = categorize_exam([])
    assert exam.category == C.C1 and exam.reason == "no lung nodules"


def test_category_ranks_are_ordered() -> None:
    order = ["1", "2", "3", "4A", "4B", "4X"]
    assert [c.value for c in sorted(LungRadsCategory, key=lambda c: c.rank)] == order
    assert max([C.C4B, C.C4X, C.C3], key=lambda c: c.rank) is C.C4X
    with pytest.raises(InputError):
        categorize_exam([C.C3])  # type: ignore[list-item]


# ---- validation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "inputs", "match"),
    [
        ((SOLID, -1.0, "baseline"), {}, "mean_diameter_mm"),
        ((SOLID, 0.0, "baseline"), {}, "> 0"),
        ((SOLID, math.nan, "baseline"), {}, "finite"),
        ((SOLID, True, "baseline"), {}, "finite"),
        (("calcified", 5.0, "baseline"), {}, "Unknown nodule kind"),
        ((SOLID, 5.0, "resolved"), {}, "Unknown time point"),
        ((PART, 8.0, "baseline"), {}, "solid_mean_diameter_mm"),
        ((PART, 8.0, "baseline"), {"solid_mean_diameter_mm": 8.5}, "larger than the whole"),
        ((PART, 8.0, "baseline"), {"solid_mean_diameter_mm": 0.0}, "> 0"),
        ((SOLID, 8.0, "baseline"), {"solid_mean_diameter_mm": -2.0}, "≥ 0"),
        ((SOLID, 8.0, "baseline"), {"suspicious_features": "yes"}, "True or False"),
        ((SOLID, 8.0, "stable"), {"prior_mean_diameter_mm": 8.0, "interval_days": -5}, "interval_days"),
    ],
)
def test_invalid_input_raises_input_error(args, inputs, match) -> None:
    with pytest.raises(InputError, match=match):
        LungRadsInput(*args, **inputs)


def test_string_inputs_are_normalised() -> None:
    status = LungRadsInput("part_solid", 8.04, "BASELINE", solid_mean_diameter_mm=6.0)
    assert status.kind is PART and status.timepoint is Timepoint.BASELINE and status.mean_diameter_mm == 8.0
    with pytest.raises(InputError):
        categorize_nodule("solid 7 mm")  # type: ignore[arg-type]


def test_from_measurement_uses_the_tracking_measurement() -> None:
    def measurement(kind: NoduleKind, mean: float, solid: float) -> NoduleMeasurement:
        return NoduleMeasurement((0.0, 0.0, 0.0), 300.0, mean + 1, mean - 1, mean, -300.0, kind, 50.0, solid)

    part = LungRadsInput.from_measurement(measurement(PART, 9.0, 6.5), "baseline")
    assert categorize_nodule(part).category == C.C4A
    ggn = LungRadsInput.from_measurement(measurement(GGN, 12.0, 0.0), Timepoint.NEW)
    assert categorize_nodule(ggn).category == C.C2
    solid = LungRadsInput.from_measurement(measurement(SOLID, 6.0, 6.0), "new", suspicious_features=True)
    assert categorize_nodule(solid).category == C.C4X
