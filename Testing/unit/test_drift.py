"""Drift flags on small phantoms: a training distribution from a few phantoms, then studies like them (not flagged),
with a shifted HU calibration, and with thick slices and more noise (flagged, each with its reason)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from MedAIExtension.batch.drift import (
    HIST_BINS,
    drift_score,
    input_statistics,
    training_distribution,
)
from MedAIExtension.errors import InputError
from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.phantom import LABEL_LUNG, PhantomSpec, generate_chest_phantom, random_phantom_spec


def _spec(seed: int, pixel: float = 3.0, slice_mm: float = 5.0) -> PhantomSpec:
    size = (int(round(290 / pixel)), int(round(290 / pixel)), int(round(200 / slice_mm)))
    return random_phantom_spec(seed, size_ijk=size, spacing=(pixel, pixel, slice_mm))


def _stats(spec: PhantomSpec, shift_hu: float = 0.0) -> dict:
    phantom = generate_chest_phantom(spec)
    ct = phantom.ct
    if shift_hu:
        ct = ct.with_array(ct.array.astype(np.float32) + np.float32(shift_hu))
    return input_statistics(ct, phantom.labels.array == LABEL_LUNG)


@pytest.fixture(scope="module")
def distribution() -> dict:
    """Eight training phantoms: pixels 2.8-3.5 mm, slices 4-6 mm, each seed's own noise."""
    pixels = np.linspace(2.8, 3.5, 8)
    slices = [4.0, 6.0, 5.0, 4.5, 5.5, 4.0, 6.0, 5.0]
    return training_distribution([_stats(_spec(100 + n, p, s)) for n, (p, s) in enumerate(zip(pixels, slices))])


def test_statistics_of_a_phantom() -> None:
    spec = replace(_spec(7), noise_hu=20.0)
    stats = _stats(spec)
    assert stats["slice_mm"] == pytest.approx(5.0) and stats["pixel_mm"] == pytest.approx(3.0)
    assert stats["fov_mm"] == pytest.approx(291.0, abs=3.0) and stats["length_mm"] == pytest.approx(200.0)
    assert abs(stats["air_mode_hu"] + 1000.0) < 15.0
    assert -20.0 < stats["soft_tissue_mode_hu"] < 100.0
    assert 10.0 < stats["noise_hu"] < 30.0  # 20 HU of noise, read from neighbour differences
    assert len(stats["hist_body"]) == HIST_BINS and sum(stats["hist_body"]) == pytest.approx(1.0, abs=1e-4)
    lungs = np.asarray(stats["hist_lungs"])
    edges = np.linspace(-1100, 1500, HIST_BINS + 1)
    assert edges[int(np.argmax(lungs))] < -600  # the lungs are air-like
    json.dumps(stats)  # JSON-ready for study.json


def test_in_distribution_study_is_not_flagged(distribution: dict) -> None:
    result = drift_score(_stats(_spec(200, 3.1, 5.0)), distribution)
    assert not result.out_of_distribution, result.reasons
    assert result.score < result.threshold and result.reasons == []


def test_shifted_hu_calibration_is_flagged(distribution: dict) -> None:
    result = drift_score(_stats(_spec(200, 3.1, 5.0), shift_hu=150.0), distribution)
    assert result.out_of_distribution
    assert result.features["soft_tissue_mode_hu"] > result.threshold
    assert any(r.startswith("HU calibration shifted by +1") and "soft-tissue mode" in r for r in result.reasons)


def test_thick_noisy_slices_are_flagged(distribution: dict) -> None:
    spec = replace(_spec(200, 3.1, 12.5), noise_hu=90.0)
    result = drift_score(_stats(spec), distribution)
    assert result.out_of_distribution
    assert any(r.startswith("slice spacing 12.50 mm outside training 4.00–6.00 mm") for r in result.reasons)
    assert any(r.startswith("noise ") for r in result.reasons)
    assert result.features["soft_tissue_mode_hu"] < result.threshold  # the calibration is fine


def test_bad_inputs(distribution: dict) -> None:
    spec = _spec(7)
    phantom = generate_chest_phantom(spec)
    with pytest.raises(InputError, match="lung mask has shape"):
        input_statistics(phantom.ct, np.zeros((3, 3, 3), dtype=bool))
    with pytest.raises(InputError, match="another version"):
        drift_score(_stats(spec), {**distribution, "hist_bins": 16})
    with pytest.raises(InputError, match="at least one training case"):
        training_distribution([])


def test_shipped_model_has_an_input_distribution() -> None:
    catalog = load_catalog()
    for name in ("chest-ct-lung-nodule", "chest-ct-lung-nodule-torch"):
        distribution = catalog.get(name).input_distribution
        assert distribution is not None and distribution["cases"] >= 20
        assert distribution["hist_bins"] == HIST_BINS
        assert distribution["slice_mm"]["min"] < 1.0 < 4.0 < distribution["slice_mm"]["max"]
    assert catalog.get("chest-ct-nodule-classifier").input_distribution is None
