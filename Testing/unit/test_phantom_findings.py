"""Phantom-v2 lungs: fissures, airways, disease textures, effusion, granulomas, scars, streaks; spiculated and
necrotic lesions; and the look checked against what real CT measures (HU of lung, fat, muscle)."""

from __future__ import annotations

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom
from MedAIExtension.phantom.acquisition import random_ct_spec
from MedAIExtension.phantom.findings_spec import LungFindingsSpec
from MedAIExtension.phantom.lesion_shape import _fibonacci_sphere, lobed_shape
from MedAIExtension.phantom.render import LABEL_LUNG, LABEL_NODULE
from MedAIExtension.phantom.spec import NoduleSpec

GRID = {"size_ijk": (160, 128, 60), "spacing": (2.2, 2.2, 4.0), "seed": 7}
NODULES = (
    NoduleSpec(14.0, "solid", lung="right", position=(0.3, 0.3, 0.2)),
    NoduleSpec(10.0, "ground-glass", lung="left", position=(0.4, 0.2, -0.2)),
)


def _phantom(findings: LungFindingsSpec, noise: float = 0.0, nodules: tuple[NoduleSpec, ...] = NODULES):
    return generate_chest_phantom(PhantomSpec(**GRID, nodules=nodules, noise_hu=noise, findings=findings))


@pytest.fixture(scope="module")
def plain():
    return _phantom(LungFindingsSpec())


@pytest.fixture(scope="module")
def everything():
    findings = LungFindingsSpec(
        fissures=True,
        airway_tree=True,
        emphysema=0.8,
        fibrosis=0.8,
        atelectasis_mm=10.0,
        effusion_mm=30.0,
        granulomas=6,
        scars=4,
        streaks_hu=80.0,
    )
    return _phantom(findings)


def test_findings_leave_the_lesions_as_the_spec_says(plain, everything) -> None:
    """Granulomas, scars and fluid keep clear of the lesions: their masks and truth do not change."""
    for a, b in zip(plain.truth["nodules"], everything.truth["nodules"], strict=True):
        assert a["mask_voxels"] == b["mask_voxels"]
    assert np.array_equal(plain.nodule_ids.array, everything.nodule_ids.array)
    assert everything.truth["findings"]["granulomas"] == 6 and "findings" not in plain.truth


def test_effusion_is_fluid_and_not_lung(plain, everything) -> None:
    lung_plain = plain.labels.array == LABEL_LUNG
    lung_after = everything.labels.array == LABEL_LUNG
    lost = lung_plain & ~lung_after & (everything.labels.array != LABEL_NODULE)
    assert lost.sum() > 0.03 * lung_plain.sum()  # a real layer of fluid, not a few voxels
    assert not (lung_after & ~lung_plain).any()
    assert abs(float(np.median(everything.ct.array[lost]))) < 60.0  # fluid, about water
    assert everything.truth["lung_volume_ml"] < plain.truth["lung_volume_ml"]


def test_granulomas_are_calcified_and_not_lesions(plain, everything) -> None:
    lung = everything.labels.array == LABEL_LUNG
    dense = lung & (everything.ct.array > 200)
    assert dense.sum() > 0 and not (lung & (plain.ct.array > 200)).any()
    assert not (dense & (everything.labels.array == LABEL_NODULE)).any()


def test_emphysema_lowers_lung_attenuation() -> None:
    lung_low = []
    for severity in (0.0, 0.5, 1.0):
        p = _phantom(LungFindingsSpec(emphysema=severity))
        lung = p.labels.array == LABEL_LUNG
        lung_low.append(float(np.mean(p.ct.array[lung] < -950)))
    assert lung_low[0] < 0.01 < lung_low[1] < lung_low[2]


def test_fissure_is_a_thin_dense_line() -> None:
    p = _phantom(LungFindingsSpec(fissures=True))
    q = _phantom(LungFindingsSpec())
    changed = (p.ct.array != q.ct.array) & (p.labels.array == LABEL_LUNG)
    assert 0.005 < changed.mean() / (q.labels.array == LABEL_LUNG).mean() < 0.2  # sheets, not volumes
    parenchyma = changed & (q.ct.array < -300)  # (vessels crossing the fissure are denser than pleura)
    assert np.all(p.ct.array[parenchyma] > q.ct.array[parenchyma])  # pleura is denser than aerated lung


def test_atelectasis_is_dependent() -> None:
    p = _phantom(LungFindingsSpec(atelectasis_mm=12.0))
    q = _phantom(LungFindingsSpec())
    dense = (p.ct.array > q.ct.array + 200) & (p.labels.array == LABEL_LUNG)
    rows = np.nonzero(dense)[1]  # j: anterior -> posterior on this axial LPS grid
    lung_rows = np.nonzero(q.labels.array == LABEL_LUNG)[1]
    assert rows.size and np.median(rows) > np.median(lung_rows)  # posterior half


def test_streaks_only_inside_the_body() -> None:
    p = _phantom(LungFindingsSpec(streaks_hu=100.0))
    q = _phantom(LungFindingsSpec())
    diff = p.ct.array.astype(int) - q.ct.array
    assert np.abs(diff).max() > 30
    assert not diff[q.ct.array < -990].any()  # air around the patient untouched


def test_spiculation_keeps_the_volume_and_reaches_out() -> None:
    points = _fibonacci_sphere(4096)
    smooth = lobed_shape(0.2, 11)
    spiky = lobed_shape(0.2, 11, spiculation=0.8)
    assert smooth is not None and spiky is not None
    radius = spiky.relative_radius(*points.T)
    assert abs(float(np.mean(radius**3)) - 1.0) < 0.02  # volume of the sphere of the same diameter
    assert radius.max() > smooth.relative_radius(*points.T).max() + 0.2
    assert radius.max() <= spiky.max_relative_radius


def test_necrotic_mass_has_a_darker_centre() -> None:
    mass = NoduleSpec(40.0, "solid", lung="left", position=(0.2, 0.0, 0.0), necrosis=0.5)
    p = generate_chest_phantom(PhantomSpec(**GRID, nodules=(mass,), noise_hu=0.0))
    ijk = np.linalg.inv(p.ct.ijk_to_ras) @ np.array([*p.truth["nodules"][0]["center_ras"], 1.0])
    k, j, i = np.round(ijk[:3][::-1]).astype(int)
    inside = p.nodule_mask(1)
    assert p.ct.array[k, j, i] < 20 and float(np.median(p.ct.array[inside])) > 20


@pytest.mark.parametrize(
    ("field", "value"),
    [("emphysema", 1.5), ("effusion_mm", -1.0), ("granulomas", 50), ("streaks_hu", float("nan"))],
)
def test_bad_findings_are_refused(field: str, value: float) -> None:
    with pytest.raises(InputError, match=field):
        LungFindingsSpec(**{field: value})


def test_bad_lesion_texture_is_refused() -> None:
    with pytest.raises(InputError, match="necrosis"):
        NoduleSpec(10.0, "ground-glass", lung="left", position=(0.2, 0.0, 0.0), necrosis=0.3)
    with pytest.raises(InputError, match="spiculation"):
        NoduleSpec(10.0, "solid", lung="left", position=(0.2, 0.0, 0.0), spiculation=2.0)


def test_random_ct_spec_draws_findings_reproducibly() -> None:
    specs = [random_ct_spec(seed)[0] for seed in range(12)]
    assert specs[3] == random_ct_spec(3)[0]
    assert sum(spec.findings.fissures for spec in specs) >= 6
    assert any(spec.findings.emphysema for spec in specs)
    without = random_ct_spec(3, findings=False)[0]
    assert not without.findings.any
    assert without.noise_hu == specs[3].noise_hu and without.size_ijk == specs[3].size_ijk


def test_hu_of_tissues_matches_real_ct() -> None:
    """Peaks of the HU histogram where real chest CT has them (see docs/phantoms.md for the sources):
    aerated lung -900..-780, subcutaneous fat -120..-80, muscle 30..60; noise does not move them."""
    spec, _ = random_ct_spec(21, fov_mm=(340.0, 280.0, 60.0), max_voxels=2_000_000)
    phantom = generate_chest_phantom(spec)
    ct, labels = phantom.ct.array, phantom.labels.array

    def peak(values: np.ndarray) -> float:
        histogram, edges = np.histogram(values, bins=np.arange(-1100, 300, 10))
        return float(edges[int(np.argmax(histogram))] + 5)

    assert -900 <= peak(ct[labels == LABEL_LUNG]) <= -780
    body = ct[(labels == 0) & (ct > -300)]
    fat = body[body < -20]
    soft = body[(body > 0) & (body < 150)]
    assert -125 <= peak(fat) <= -75
    assert 25 <= peak(soft) <= 65
