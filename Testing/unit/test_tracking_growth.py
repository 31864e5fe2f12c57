"""Volume change, volume doubling time and the study interval (DOMAIN.md, "Growth rate")."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.io import Image
from MedAIExtension.tracking.growth import (
    nodule_change,
    parse_dicom_date,
    study_interval_days,
    volume_doubling_time_days,
)


def test_doubling_in_exactly_the_interval_gives_the_interval() -> None:
    assert volume_doubling_time_days(100.0, 200.0, 365.0) == pytest.approx(365.0)
    assert volume_doubling_time_days(100.0, 400.0, 180.0) == pytest.approx(90.0)
    # the textbook case: 26 % more diameter is one doubling
    assert volume_doubling_time_days(100.0, 100.0 * 1.26**3, 200.0) == pytest.approx(200.0, rel=1e-3)


@pytest.mark.parametrize("v2", [100.0, 80.0])
def test_stable_or_shrinking_nodules_have_no_doubling_time(v2: float) -> None:
    assert volume_doubling_time_days(100.0, v2, 90.0) is None


@pytest.mark.parametrize(("v1", "v2", "days"), [(0.0, 10.0, 10.0), (10.0, -1.0, 10.0), (10.0, 20.0, 0.0)])
def test_impossible_inputs_are_refused(v1: float, v2: float, days: float) -> None:
    with pytest.raises(InputError):
        volume_doubling_time_days(v1, v2, days)


def test_nodule_change_reports_percent_vdt_and_diameter() -> None:
    change = nodule_change(268.1, 400.0, 8.0, 9.1, 180.0)
    assert change.volume_change_mm3 == pytest.approx(131.9)
    assert change.volume_change_percent == pytest.approx(100 * 131.9 / 268.1)
    assert change.vdt_days == pytest.approx(180 * math.log(2) / math.log(400 / 268.1))
    assert change.mean_diameter_change_mm == pytest.approx(1.1)
    assert "VDT" in change.growth_text and "+49.2 %" in change.growth_text


def _image(date: str, patient: str = "P1") -> Image:
    return Image(
        np.zeros((2, 2, 2), dtype=np.int16), np.eye(4), "CT", metadata={"StudyDate": date, "PatientID": patient}
    )


def test_interval_comes_from_the_study_dates() -> None:
    assert study_interval_days(_image("20250115"), _image("20250714")) == 180.0
    assert parse_dicom_date("2025.01.15") == dt.date(2025, 1, 15)
    assert study_interval_days(_image(""), _image(""), interval_days=30) == 30.0


def test_swapped_or_undated_studies_are_refused_with_the_fix() -> None:
    with pytest.raises(InputError, match="swapped"):
        study_interval_days(_image("20250714"), _image("20250115"))
    with pytest.raises(InputError, match="--interval-days"):
        study_interval_days(_image(""), _image("20250115"))
    with pytest.raises(InputError, match="YYYYMMDD"):
        study_interval_days(_image("15/01/2025"), _image("20250115"))
    with pytest.raises(InputError, match="positive"):
        study_interval_days(_image(""), _image(""), interval_days=-3)
