"""The reading of each tracked nodule (issue 17): location, categories with reasons and management, growth in
words, masses, NELSON beside Lung-RADS, borderline sizes; and the key-slice pictures and HTML that show them.

The nodules are built by hand on a small synthetic CT, so each rule is tested at its edge.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage

from MedAIExtension.io.image import Image
from MedAIExtension.tracking.growth import nodule_change
from MedAIExtension.tracking.lungrads import LungRadsResult, categorize_exam
from MedAIExtension.tracking.pipeline import lungrads_for
from MedAIExtension.tracking.reading import (
    STABLE_WORDING,
    growth_wording,
    is_mass,
    nodule_reading,
    report_rows,
)
from MedAIExtension.tracking.registration import Registration
from MedAIExtension.tracking.repeatability import Z_95, MeasurementSpread
from MedAIExtension.tracking.report import (
    MIN_PIXELS_PER_MM,
    SCALE_BAR_COLOR,
    SCALE_BAR_MM,
    crop_size_mm,
    nodule_picture,
    tracking_html,
)
from MedAIExtension.tracking.results import StudyResult, TimepointResult, TrackedNodule, TrackingResult
from MedAIExtension.tracking.types import (
    Candidate,
    Finding,
    NoduleKind,
    NoduleMask,
    NoduleMeasurement,
    NoduleStatus,
    NoduleTrend,
)

INTERVAL = 180.0


def _image() -> Image:
    """60 x 100 x 120 mm of lung (-850 HU) at 1 mm, RAS axes: x from -60 (patient left) to +59, z 0..59."""
    array = np.full((60, 100, 120), -850, dtype=np.int16)
    affine = np.eye(4)
    affine[:3, 3] = (-60.0, -50.0, 0.0)
    return Image(array, affine, modality="CT")


def _lungs(image: Image) -> np.ndarray:
    lungs = np.zeros(image.shape, dtype=bool)
    lungs[:, 10:90, 5:115] = True  # x from -55 to +54 (midline at about 0), z 0..59
    return lungs


def _finding(
    center: tuple[float, float, float],
    mean: float,
    kind: str = "solid",
    volume: float | None = None,
    long_axis: float | None = None,
) -> Finding:
    volume = math.pi / 6.0 * mean**3 if volume is None else volume
    long_axis = mean + 0.4 if long_axis is None else long_axis
    measurement = NoduleMeasurement(
        center_ras=center,
        volume_mm3=volume,
        long_axis_mm=long_axis,
        short_axis_mm=2 * mean - long_axis,
        mean_diameter_mm=mean,
        mean_hu=-50.0,
        kind=NoduleKind(kind),
        solid_volume_mm3=volume if kind == "solid" else 0.0,
        solid_mean_diameter_mm=mean if kind == "solid" else 0.0,
    )
    box = (slice(0, 1), slice(0, 1), slice(0, 1))
    return Finding(Candidate(center, mean, 1.0, "classical"), NoduleMask(box, np.ones((1, 1, 1), bool)), measurement)


def _rads(
    finding: Finding,
    prior: Finding | None = None,
    interval: float | None = None,
    trend: NoduleTrend | None = None,
    spreads: tuple[MeasurementSpread | None, MeasurementSpread | None] = (None, None),
) -> LungRadsResult:
    """Lung-RADS as the pipeline gives it: the trend and the spreads decide whether a change counts as growth."""
    uncertainty = None
    if all(s is not None and s.stable for s in spreads):
        first, second = (s.mean_diameter_sd_mm for s in spreads if s is not None)
        uncertainty = round(Z_95 * math.hypot(first, second), 2)
    within = trend is not None and trend is not NoduleTrend.GROWING
    return lungrads_for(finding, prior, interval, False, uncertainty_mm=uncertainty, within_error=within)


def _tracked(
    baseline: Finding | None,
    followup: Finding | None,
    trend: NoduleTrend | None = None,
    spreads: tuple[MeasurementSpread | None, MeasurementSpread | None] = (None, None),
    number: int = 1,
) -> TrackedNodule:
    change = None
    if baseline is not None and followup is not None:
        b, f = baseline.measurement, followup.measurement
        change = nodule_change(b.volume_mm3, f.volume_mm3, b.mean_diameter_mm, f.mean_diameter_mm, INTERVAL)
    first = _rads(baseline) if baseline is not None else None
    if followup is None:
        current = first
    else:  # as the pipeline does: the trend and spreads decide whether the change counts as growth
        current = _rads(followup, baseline, INTERVAL, trend, spreads)
    status = (
        NoduleStatus.PERSISTENT if baseline and followup else NoduleStatus.NEW if followup else NoduleStatus.RESOLVED
    )
    return TrackedNodule(
        number=number,
        tracking_uid=f"1.2.826.0.1.3680043.10.99.{number}",
        status=status,
        baseline=baseline,
        followup=followup,
        change=change,
        lung_rads=current,
        baseline_lung_rads=first,
        baseline_spread=spreads[0],
        followup_spread=spreads[1],
        trend=trend,
    )


def _result(*nodules: TrackedNodule) -> TrackingResult:
    image = _image()
    lungs = _lungs(image)
    base = TimepointResult(image, lungs, [n.baseline for n in nodules if n.baseline is not None])
    follow = TimepointResult(image, lungs, [n.followup for n in nodules if n.followup is not None])
    registration = Registration(np.eye(4), np.eye(4), sitk.Transform(3, sitk.sitkIdentity), True, 0.0, [], "ok")
    exam = {
        "baseline": categorize_exam([r for n in nodules if n.baseline and (r := n.baseline_lung_rads)]),
        "followup": categorize_exam([r for n in nodules if n.followup and (r := n.lung_rads)]),
    }
    return TrackingResult(base, follow, registration, list(nodules), INTERVAL, exam)


def _spread(sd_mm: float) -> MeasurementSpread:
    return MeasurementSpread(volume_sd_mm3=1.0, mean_diameter_sd_mm=sd_mm, repeats=9, failed=0)


# ---- location ---------------------------------------------------------------------------------------------------
def test_location_side_zone_and_image_number() -> None:
    right_upper = _tracked(_finding((20.0, 0.0, 52.0), 8.0), _finding((20.0, 0.0, 52.0), 8.0))
    left_lower = _tracked(_finding((-30.0, 5.0, 4.0), 9.0), _finding((-30.0, 5.0, 6.0), 9.0), number=2)
    rows = report_rows(_result(right_upper, left_lower))
    assert (rows[0]["side"], rows[0]["lung_zone"]) == ("right", "upper")
    assert (rows[1]["side"], rows[1]["lung_zone"]) == ("left", "lower")
    assert rows[0]["location"] == "right upper zone, image 53"  # slice k = 52, 1-based (no DICOM files)
    assert (rows[1]["baseline_image"], rows[1]["followup_image"]) == (5, 7)


# ---- categories, reasons, management ----------------------------------------------------------------------------
def test_baseline_and_current_category_with_reason_and_management() -> None:
    nodule = _tracked(_finding((20.0, 0.0, 30.0), 7.0), _finding((20.0, 0.0, 30.0), 9.0), NoduleTrend.GROWING)
    row = report_rows(_result(nodule))[0]
    assert row["baseline_lung_rads"] == "3" and "7.0 mm" in row["baseline_lung_rads_reason"]
    assert row["baseline_management"] == "6-month LDCT."
    assert row["lung_rads"] == "4B" and "growing" in row["lung_rads_reason"]
    assert row["management"].startswith("Diagnostic chest CT")


def test_diameters_are_reported_to_one_decimal() -> None:
    nodule = _tracked(_finding((20.0, 0.0, 30.0), 8.04, long_axis=8.46), None)
    row = report_rows(_result(nodule))[0]
    assert (row["baseline_long_axis_mm"], row["baseline_short_axis_mm"], row["baseline_mean_diameter_mm"]) == (
        8.5,
        7.6,
        8.0,
    )


# ---- growth wording and masses ----------------------------------------------------------------------------------
def test_stable_trend_says_stable_instead_of_a_huge_doubling_time() -> None:
    before, after = _finding((20.0, 0.0, 30.0), 8.0, volume=268.0), _finding((20.0, 0.0, 30.0), 8.0, volume=268.9)
    nodule = _tracked(before, after, NoduleTrend.STABLE)
    assert nodule.change is not None and nodule.change.vdt_days is not None and nodule.change.vdt_days > 30000
    row = report_rows(_result(nodule))[0]
    assert row["growth"] == STABLE_WORDING
    page = tracking_html("t", [], [row], {}, {}, [])
    assert STABLE_WORDING in page and f"{nodule.change.vdt_days:.0f}" not in page


def test_growing_trend_gives_the_doubling_time_in_days() -> None:
    before, after = _finding((20.0, 0.0, 30.0), 8.0, volume=268.0), _finding((20.0, 0.0, 30.0), 10.0, volume=536.0)
    row = report_rows(_result(_tracked(before, after, NoduleTrend.GROWING)))[0]
    assert row["growth"] == "growing, VDT 180 days (volume +100 %)"
    assert row["vdt_days"] == pytest.approx(180.0)


def test_without_a_trend_nelsons_25_percent_stands_in_for_the_uncertainty() -> None:
    before = _finding((20.0, 0.0, 30.0), 8.0, volume=268.0)
    shrunk, grown = _finding((20.0, 0.0, 30.0), 6.0, volume=113.0), _finding((20.0, 0.0, 30.0), 8.4, volume=320.0)
    assert growth_wording(_tracked(before, shrunk), mass=False) == "shrinking, volume -58 %"
    assert growth_wording(_tracked(before, shrunk, NoduleTrend.STABLE), mass=False) == STABLE_WORDING
    assert growth_wording(_tracked(before, grown), mass=False) == STABLE_WORDING  # +19 %: no VDT of 703 days
    assert growth_wording(_tracked(before, grown, NoduleTrend.GROWING), mass=False).startswith("growing, VDT 7")
    assert growth_wording(_tracked(None, grown), mass=False) == "new"
    assert growth_wording(_tracked(before, None), mass=False) == "resolved"


def test_a_mass_is_called_a_mass_and_never_gets_a_doubling_time() -> None:
    before = _finding((20.0, 0.0, 30.0), 34.0, volume=20000.0, long_axis=38.0)
    after = _finding((20.0, 0.0, 30.0), 38.0, volume=28000.0, long_axis=42.0)
    nodule = _tracked(before, after, NoduleTrend.GROWING)
    assert is_mass(before) and not is_mass(_finding((0.0, 0.0, 0.0), 30.0))
    row = report_rows(_result(nodule))[0]
    assert row["finding"] == "mass" and row["vdt_days"] is None
    assert "VDT" not in row["growth"] and "mass" in row["growth"] and "+40 %" in row["growth"]
    assert row["nelson"] == "positive" and "+40 % (≥ 25 %), no doubling time given" in row["nelson_reason"]
    page = tracking_html("t", [], [row], {}, {}, [])
    assert "N1: mass, solid" in page


# ---- NELSON beside Lung-RADS ------------------------------------------------------------------------------------
def test_nelson_is_given_for_solid_nodules_with_the_difference_explained() -> None:
    agree = _tracked(_finding((20.0, 0.0, 30.0), 9.0, volume=600.0), None)  # 4A and positive
    differ = _tracked(_finding((20.0, 0.0, 30.0), 5.0, volume=70.0), None, number=2)  # 2 but indeterminate
    glass = _tracked(_finding((20.0, 0.0, 30.0), 9.0, kind="ground-glass"), None, number=3)
    rows = report_rows(_result(agree, differ, glass))
    assert rows[0]["nelson"] == "positive" and rows[0]["nelson_note"] is None
    assert rows[1]["nelson"] == "indeterminate" and rows[1]["lung_rads"] == "2"
    note = rows[1]["nelson_note"]
    assert "mean diameter (5.0 mm)" in note and "volume (70 mm³)" in note
    assert rows[2]["nelson"] is None and rows[2]["nelson_note"] is None


def test_nelson_on_follow_up_uses_the_volume_change_and_doubling_time() -> None:
    before, after = _finding((20.0, 0.0, 30.0), 6.0, volume=100.0), _finding((20.0, 0.0, 30.0), 7.0, volume=160.0)
    row = report_rows(_result(_tracked(before, after, NoduleTrend.GROWING)))[0]
    assert row["nelson"] == "positive" and "VDT 265 days" in row["nelson_reason"]
    assert row["lung_rads"] == "3" and "doubling time" in row["nelson_note"]


# ---- borderline sizes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spread", "flagged"),
    [(None, True), (_spread(0.04), False), (_spread(0.06), True), (_spread(math.inf), True)],
)
def test_borderline_margin_is_1_96_sd_or_half_a_millimetre(spread: MeasurementSpread | None, flagged: bool) -> None:
    """5.9 mm is 0.1 mm under the 6 mm threshold: flagged when 1.96 SD (or 0.5 mm without one) reaches it."""
    nodule = _tracked(_finding((20.0, 0.0, 30.0), 5.9), None, spreads=(spread, None))
    row = report_rows(_result(nodule))[0]
    if flagged:
        assert row["baseline_borderline"].startswith(
            "mean diameter 5.9 mm is within 0.1 mm of a Lung-RADS threshold (6 mm)"
        )
        assert "category 3 instead of 2" in row["baseline_borderline"]
    else:
        assert row["baseline_borderline"] is None


def test_a_size_far_from_thresholds_is_not_borderline() -> None:
    row = report_rows(_result(_tracked(_finding((20.0, 0.0, 30.0), 11.0), None)))[0]
    assert row["baseline_borderline"] is None and row["borderline"] is None


def test_single_study_reading() -> None:
    image = _image()
    finding = _finding((-20.0, 0.0, 30.0), 6.5)
    nodule = _tracked(finding, None)
    result = StudyResult(TimepointResult(image, _lungs(image), [finding]), [nodule], {"baseline": _rads(finding)})
    reading = nodule_reading(nodule, result, "baseline")
    assert reading.location is not None and reading.location.describe() == "left middle zone, image 31"
    assert reading.management == "6-month LDCT." and reading.growth is None
    assert nodule_reading(nodule, result, "followup").location is None


# ---- pictures ---------------------------------------------------------------------------------------------------
def _longest_run(mask: np.ndarray) -> int:
    best = 0
    for line in mask:
        run = 0
        for value in line:
            run = run + 1 if value else 0
            best = max(best, run)
    return best


def test_key_slice_picture_is_magnified_with_scale_bar_and_orientation(tmp_path: Path) -> None:
    """Patient's right on the image's left; >= 4 px/mm; a 10 mm yellow bar; R/L/A/P letters; text chunks."""
    image = _image()
    array = image.array.copy()
    array[25:35, 45:55, 72:82] = 40  # a bright block at x = +12..+21 mm: the patient's right
    image = image.with_array(array)
    finding = _finding((0.0, 0.0, 30.0), 10.0)
    size = crop_size_mm(10.0)
    path = nodule_picture(tmp_path / "n.png", (image, finding, (0.0, 0.0, 30.0)), None, (0.0, 1.0, 0.0), size)
    picture = PILImage.open(path)
    mm_per_pixel = float(picture.text["mm_per_pixel"])
    assert 1.0 / mm_per_pixel >= MIN_PIXELS_PER_MM and float(picture.text["scale_bar_mm"]) == SCALE_BAR_MM
    pixels = np.asarray(picture.convert("RGB"))
    n = int(round(size / mm_per_pixel))
    assert n >= 4 * size and pixels.shape[1] > 2 * n  # two panels side by side
    panel = pixels[pixels.shape[0] - n :, :n]  # the baseline panel under its caption
    yellow = np.all(panel == SCALE_BAR_COLOR, axis=-1)
    bar = _longest_run(yellow[int(0.85 * n) :])  # the bar lies in the lowest rows
    assert abs(bar - SCALE_BAR_MM / mm_per_pixel) <= 1
    grey = panel[..., 0].astype(float)
    middle = grey[n // 4 : 3 * n // 4]
    assert middle[:, : n // 2].mean() > middle[:, n // 2 :].mean() + 20  # the right-side block drawn on the left
    letters = (panel[..., 0] > 200) & (panel[..., 1] > 200) & (panel[..., 2] < 80)  # yellow, anti-aliased edges too
    for rows, columns in (
        (slice(n // 2 - n // 10, n // 2 + n // 10), slice(0, n // 10)),  # R at the left edge
        (slice(n // 2 - n // 10, n // 2 + n // 10), slice(n - n // 10, n)),  # L at the right edge
        (slice(0, n // 10), slice(n // 2 - n // 10, n // 2 + n // 10)),  # A at the top
        (slice(n - n // 10, n), slice(n // 2 - n // 10, n // 2 + n // 10)),  # P at the bottom
    ):
        assert letters[rows, columns].sum() > 20
    follow = pixels[pixels.shape[0] - n :, pixels.shape[1] - n :]
    assert not np.all(follow == SCALE_BAR_COLOR, axis=-1).any()  # the absent study: no bar, only "not seen"


def test_a_mass_gets_a_larger_crop_at_the_same_magnification() -> None:
    assert crop_size_mm(12.0) == 40.0 and crop_size_mm(45.0) == 80.0


# ---- the HTML page ----------------------------------------------------------------------------------------------
def test_html_shows_one_decimal_diameters_whole_volumes_and_the_reading() -> None:
    before = _finding((20.0, 0.0, 52.0), 6.0, volume=113.3, long_axis=6.4)
    after = _finding((20.0, 0.0, 52.0), 6.0, volume=114.2, long_axis=6.4)
    rows = report_rows(_result(_tracked(before, after, NoduleTrend.STABLE, spreads=(_spread(0.2), _spread(0.2)))))
    page = tracking_html("t", [("Interval", "180 days")], rows, {"N1": "nodules/N1.png"}, {}, [])
    assert "<td>6.0</td>" in page and "6.4 × 5.6 mm (mean 6.0 mm), 113 mm³" in page
    assert "113.3" not in page and "114.2" not in page and "114 mm³" in page
    assert "right upper zone, image 53" in page and STABLE_WORDING in page
    assert "Management (Lung-RADS v2022)" in page and "6-month LDCT." in page
    assert "within 0.1 mm of a Lung-RADS threshold (6 mm)" in page  # 6.0 mm: 0.1 mm less is category 2
    assert 'src="nodules/N1.png"' in page and "10 mm scale bar" in page
