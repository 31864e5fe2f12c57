"""Follow-up to baseline registration and nodule matching on phantoms moved by a known patient motion.

The follow-up is the same analytic patient sampled on a grid moved by the inverse of a rigid motion M and then
labelled with the nominal axial affine, so in the follow-up's RAS an anatomical point p (baseline RAS) lies at
M p: a physical patient motion with exact truth. Figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from MedAIExtension.errors import CancelledError, InputError
from MedAIExtension.io.image import Image
from MedAIExtension.phantom import SAGITTAL, AnatomySpec, NoduleSpec, PhantomSpec, generate_chest_phantom, make_affine
from MedAIExtension.progress import CancelToken
from MedAIExtension.tracking.matching import Match, match_nodules, sphere_overlap
from MedAIExtension.tracking.registration import Registration, register_followup

GRID = {"size_ijk": (128, 128, 112), "spacing": (2.5, 2.5, 3.0), "seed": 3}
PERSISTENT = {
    "A": NoduleSpec(8.0, "solid", lung="right", position=(0.35, 0.25, 0.35)),
    "B": NoduleSpec(12.0, "part-solid", solid_fraction=0.5, lung="left", position=(0.35, -0.35, -0.3)),
    "C": NoduleSpec(10.0, "ground-glass", lung="right", position=(0.2, -0.45, -0.45)),
    "D": NoduleSpec(5.0, "solid", lung="left", position=(0.6, 0.0, 0.2), juxta_pleural=True),
}
RESOLVED = NoduleSpec(6.0, "solid", lung="right", position=(0.45, 0.3, -0.25))
NEW = NoduleSpec(5.0, "solid", lung="left", position=(0.3, 0.45, 0.45))
GROWN_A = dataclasses.replace(PERSISTENT["A"], diameter_mm=10.0)
BASELINE_NAMES = ("A", "B", "C", "D", "R")
FOLLOWUP_NAMES = ("N", "C", "A", "D", "B")  # another order than the baseline, with a new nodule first


def _motion(rotvec_deg: tuple[float, float, float], shift_mm: tuple[float, float, float]) -> np.ndarray:
    """4x4 RAS motion of the patient about the anatomical centre (the origin): p -> R p + t."""
    motion = np.eye(4)
    motion[:3, :3] = Rotation.from_rotvec(np.radians(rotvec_deg)).as_matrix()
    motion[:3, 3] = shift_mm
    return motion


def _moved_followup(spec: PhantomSpec, motion: np.ndarray) -> tuple[Image, np.ndarray, dict]:
    """The patient of ``spec`` moved by ``motion``, imaged on ``spec``'s nominal grid: (CT, lung mask, truth)."""
    nominal = spec.ijk_to_ras
    sampled = np.linalg.inv(motion) @ nominal  # where each nominal voxel looks in the patient
    direction = sampled[:3, :3] / np.linalg.norm(sampled[:3, :3], axis=0)
    center = np.linalg.inv(motion) @ np.append(spec.center_ras, 1.0)
    moved = dataclasses.replace(spec, direction_ras=direction, center_ras=tuple(center[:3]))
    assert np.allclose(moved.ijk_to_ras, sampled, atol=1e-6)
    phantom = generate_chest_phantom(moved)
    ct = Image(phantom.ct.array, nominal, modality="CT")
    centers = [motion[:3, :3] @ n["center_ras"] + motion[:3, 3] for n in phantom.truth["nodules"]]
    # the construction itself: each nodule's voxels (nominal affine) are centred where the motion puts it
    for index, expected in enumerate(centers, start=1):
        ijk = np.argwhere(phantom.nodule_ids.array == index)[:, ::-1].mean(axis=0)
        assert np.linalg.norm(nominal[:3, :3] @ ijk + nominal[:3, 3] - expected) < 1.5
    return ct, phantom.labels.array > 0, {"centers": np.array(centers), "truth": phantom.truth}


@pytest.fixture(scope="module")
def baseline():
    spec = PhantomSpec(nodules=(*(PERSISTENT[k] for k in "ABCD"), RESOLVED), **GRID)
    return generate_chest_phantom(spec)


@pytest.fixture(scope="module")
def moved_cases(baseline):
    """Per motion name, lazily: (follow-up CT, follow-up lungs, truth, registration, seconds)."""
    cache: dict[str, tuple] = {}

    def get(name: str) -> tuple:
        if name not in cache:
            followup, lungs, truth = _moved_followup(_followup_spec(), _motion(*MOTIONS[name]))
            result, seconds = _register_timed(baseline.ct, followup, baseline.labels.array > 0, lungs)
            cache[name] = (followup, lungs, truth, result, seconds)
        return cache[name]

    return get


def _followup_spec() -> PhantomSpec:
    nodules = {"N": NEW, "C": PERSISTENT["C"], "A": GROWN_A, "D": PERSISTENT["D"], "B": PERSISTENT["B"]}
    return PhantomSpec(nodules=tuple(nodules[name] for name in FOLLOWUP_NAMES), **GRID)


def _baseline_centers(phantom) -> np.ndarray:
    return np.array([n["center_ras"] for n in phantom.truth["nodules"]])


def _rotation_deg(matrix: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(matrix[:3, :3]).magnitude()))


def _register_timed(*args, **kwargs) -> tuple[Registration, float]:
    start = time.perf_counter()
    result = register_followup(*args, **kwargs)
    return result, time.perf_counter() - start


# ---- registration ----------------------------------------------------------------------------------------------

MOTIONS = {
    "R-axis": ((5.0, 0.0, 0.0), (10.0, 0.0, 0.0)),
    "A-axis": ((0.0, 5.0, 0.0), (0.0, -10.0, 0.0)),
    "S-axis": ((0.0, 0.0, 5.0), (0.0, 0.0, 10.0)),
    "combined": ((3.0, -2.5, 3.0), (6.0, -5.5, 6.0)),  # 4.9 degrees, 9.8 mm
}


@pytest.mark.parametrize("name", list(MOTIONS))
def test_moved_followup_is_registered_and_every_nodule_matched(baseline, moved_cases, name):
    rotvec, shift = MOTIONS[name]
    motion = _motion(rotvec, shift)
    _, _, truth, result, seconds = moved_cases(name)

    assert result.converged, result.message
    assert result.stages[0] == "initialise: lung centroids" and "rigid" in result.stages and not result.deformable
    assert result.sitk_transform.GetDimension() == 3
    base_centers = _baseline_centers(baseline)
    errors = {}
    for f_index, f_name in enumerate(FOLLOWUP_NAMES):
        if f_name in BASELINE_NAMES:
            b_index = BASELINE_NAMES.index(f_name)
            mapped = result.map_to_baseline(truth["centers"][f_index])
            errors[f_name] = float(np.linalg.norm(mapped - base_centers[b_index]))
    recovered = result.baseline_to_followup_ras
    print(
        f"\n[{name}] motion {_rotation_deg(motion):.2f} deg / {np.linalg.norm(shift):.1f} mm; recovered "
        f"{_rotation_deg(recovered):.2f} deg / {np.linalg.norm(recovered[:3, 3]):.1f} mm in {seconds:.1f} s; "
        f"nodule errors (mm) " + ", ".join(f"{k} {v:.2f}" for k, v in errors.items()) + f"; {result.message}"
    )
    assert max(errors.values()) < 1.5
    assert abs(_rotation_deg(recovered) - _rotation_deg(motion)) < 0.3
    assert np.abs(recovered[:3, :3] - motion[:3, :3]).max() < 0.01
    assert np.allclose(result.followup_to_baseline_ras @ result.baseline_to_followup_ras, np.eye(4), atol=1e-9)
    # the matrix, the ITK transform and map_to_followup agree on the forward direction
    assert np.allclose(result.map_to_followup(base_centers), base_centers @ recovered[:3, :3].T + recovered[:3, 3])

    radii_b = [n["diameter_mm"] / 2 for n in baseline.truth["nodules"]]
    radii_f = [n["diameter_mm"] / 2 for n in truth["truth"]["nodules"]]
    matches = match_nodules(base_centers, truth["centers"], result, radii_b, radii_f)
    named = {(BASELINE_NAMES[m.baseline] if m.baseline is not None else None,
              FOLLOWUP_NAMES[m.followup] if m.followup is not None else None) for m in matches}  # fmt: skip
    assert named == {("A", "A"), ("B", "B"), ("C", "C"), ("D", "D"), ("R", None), (None, "N")}
    assert [m.status for m in matches] == ["persistent"] * 4 + ["resolved", "new"]
    # without the registration the shifted nodules would not all pair up: the registration is what matters
    unregistered = match_nodules(base_centers, truth["centers"], None, radii_b, radii_f, gate_mm=4.0)
    assert sum(m.status == "persistent" for m in unregistered) < 4


def test_followup_on_another_grid_orientation_and_spacing(baseline):
    """A sagittal follow-up with other voxels: the registration works in physical space, not on array axes."""
    motion = _motion(*MOTIONS["combined"])
    spec = dataclasses.replace(
        _followup_spec(), size_ijk=(150, 120, 140), spacing=(2.2, 2.8, 2.4), direction_ras=tuple(map(tuple, SAGITTAL))
    )
    assert np.allclose(spec.ijk_to_ras, make_affine(spec.size_ijk, spec.spacing, SAGITTAL))
    followup, followup_lungs, truth = _moved_followup(spec, motion)
    result, seconds = _register_timed(baseline.ct, followup, baseline.labels.array > 0, followup_lungs)
    assert result.converged, result.message
    base_centers = _baseline_centers(baseline)
    errors = [
        float(np.linalg.norm(result.map_to_baseline(truth["centers"][f]) - base_centers[BASELINE_NAMES.index(n)]))
        for f, n in enumerate(FOLLOWUP_NAMES)
        if n in BASELINE_NAMES
    ]
    print(f"\n[sagittal follow-up] {seconds:.1f} s, nodule errors (mm) {np.round(errors, 2).tolist()}")
    assert max(errors) < 1.5


def test_breathing_change_uses_the_affine_stage(baseline):
    """Shallower inspiration (lungs 15 mm shorter) plus the motion: the affine stage is used and recovers it."""
    motion = _motion(*MOTIONS["combined"])
    spec = dataclasses.replace(_followup_spec(), anatomy=AnatomySpec(lung_height_mm=235.0))
    followup, followup_lungs, truth = _moved_followup(spec, motion)
    result, seconds = _register_timed(baseline.ct, followup, baseline.labels.array > 0, followup_lungs)
    assert result.converged, result.message
    assert result.stages[1:] == ["rigid", "affine"]
    base_centers = _baseline_centers(baseline)
    errors = [
        float(np.linalg.norm(result.map_to_baseline(truth["centers"][f]) - base_centers[BASELINE_NAMES.index(n)]))
        for f, n in enumerate(FOLLOWUP_NAMES)
        if n in BASELINE_NAMES
    ]
    shift = [
        float(
            np.linalg.norm(
                np.subtract(truth["truth"]["nodules"][f]["center_ras"], base_centers[BASELINE_NAMES.index(n)])
            )
        )
        for f, n in enumerate(FOLLOWUP_NAMES)
        if n in BASELINE_NAMES
    ]
    print(
        f"\n[breathing] nodules moved {np.round(shift, 1).tolist()} mm within the patient; errors after registration "
        f"{np.round(errors, 2).tolist()} mm; scale {result.details['scale_min']:.3f}..{result.details['scale_max']:.3f}"
        f" in {seconds:.1f} s; lung Dice rigid {result.details['rigid']['lung_dice']:.3f} -> affine "
        f"{result.details['affine']['lung_dice']:.3f}"
    )
    assert max(errors) < 1.5 and max(shift) > 2.0
    assert result.details["scale_min"] < 0.99
    assert result.details["affine"]["lung_dice"] > result.details["rigid"]["lung_dice"] + 0.01


def test_resampled_followup_lies_on_the_baseline(baseline, moved_cases):
    followup, followup_lungs, _, result, _ = moved_cases("combined")
    labels = followup.with_array(followup_lungs)
    on_baseline = result.resample_followup(labels, baseline.ct, label=True)
    ct_on_baseline = result.resample_followup(followup, baseline.ct)
    assert on_baseline.same_grid(baseline.ct) and ct_on_baseline.same_grid(baseline.ct)
    assert on_baseline.array.dtype == bool and ct_on_baseline.array.dtype == followup.array.dtype

    def lung_dice(mask: np.ndarray) -> float:
        truth = baseline.labels.array > 0
        return 2.0 * np.count_nonzero(mask & truth) / (np.count_nonzero(mask) + np.count_nonzero(truth))

    unregistered = Registration(np.eye(4), np.eye(4), _identity(), False, float("nan"), [], "")
    before = lung_dice(unregistered.resample_followup(labels, baseline.ct, label=True).array)
    after = lung_dice(on_baseline.array)
    inside = baseline.labels.array > 0
    hu_error = np.abs(ct_on_baseline.array[inside].astype(float) - baseline.ct.array[inside]).mean()
    print(f"\n[resample] lung Dice on the baseline grid {before:.3f} unregistered -> {after:.3f}; "
          f"mean |HU difference| in the lungs {hu_error:.0f}")  # fmt: skip
    assert after > 0.97 and after > before + 0.05
    assert hu_error < 60.0


def test_identical_scans_give_identity_with_and_without_lung_masks(baseline):
    calls: list[tuple[float, str]] = []
    with_masks = register_followup(
        baseline.ct,
        baseline.ct,
        baseline.labels.array > 0,
        baseline.labels.array > 0,
        progress=lambda f, m: calls.append((f, m)),
    )
    without_masks = register_followup(baseline.ct, baseline.ct)  # air inside the body stands in for the lungs
    for result in (with_masks, without_masks):
        matrix = result.followup_to_baseline_ras
        print(f"\n[identical] rotation {_rotation_deg(matrix):.3f} deg, shift {np.linalg.norm(matrix[:3, 3]):.3f} mm, "
              f"linear part off identity {np.abs(matrix[:3, :3] - np.eye(3)).max():.4f}; {result.message}")  # fmt: skip
        assert result.converged, result.message
        assert np.abs(matrix[:3, :3] - np.eye(3)).max() < 0.005
        assert np.linalg.norm(matrix[:3, 3]) < 0.5
        assert result.details["lung_dice_after"] > 0.99
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 10


def test_unrelated_images_are_left_unregistered(baseline):
    rng = np.random.default_rng(7)
    noise = baseline.ct.with_array(rng.integers(-1000, 400, size=baseline.ct.shape).astype(np.int16))
    lungs = baseline.labels.array > 0
    shifted_lungs = np.roll(lungs, 10, axis=0)  # a lung mask that is not where the noise is, nor where it should be
    cases = {
        "noise, no masks": register_followup(baseline.ct, noise),
        "noise with a lung mask": register_followup(baseline.ct, noise, lungs, shifted_lungs),
        "empty follow-up mask": register_followup(baseline.ct, baseline.ct, lungs, np.zeros_like(lungs)),
    }
    point = np.array([12.0, -30.0, 41.0])
    for name, result in cases.items():
        print(f"\n[{name}] converged={result.converged}: {result.message}")
        assert not result.converged
        assert "unregistered" in result.message
        assert np.array_equal(result.followup_to_baseline_ras, np.eye(4))
        assert np.array_equal(result.baseline_to_followup_ras, np.eye(4))
        assert np.allclose(result.map_to_baseline(point), point)
        assert np.allclose(result.sitk_transform.TransformPoint((1.0, 2.0, 3.0)), (1.0, 2.0, 3.0))


def test_deformable_stage_follows_a_smooth_deformation(baseline):
    """A known smooth warp (two 4-5 mm Gaussian bumps in the lungs) on top of the combined rigid motion."""
    import SimpleITK as sitk

    bumps = (((90.0, 0.0, 0.0), (3.0, -3.0, 5.0)), ((-90.0, 0.0, -20.0), (-4.0, 2.0, -4.0)))

    def displacement(points_ras: np.ndarray) -> np.ndarray:
        points = np.atleast_2d(points_ras)
        out = np.zeros_like(points, dtype=float)
        for center, vector in bumps:
            weight = np.exp(-np.sum((points - center) ** 2, axis=1) / (2 * 45.0**2))
            out += weight[:, None] * np.array(vector)
        return out

    def undeform(point: np.ndarray) -> np.ndarray:  # x with x + d(x) = point
        x = point.copy()
        for _ in range(100):
            x = point - displacement(x)[0]
        return x

    # follow-up voxel y shows the patient at D(M^-1 y), D(x) = x + d(x); LPS displacement field on a 4 mm grid
    motion = _motion(*MOTIONS["combined"])
    origin, size = np.array([-200.0, -200.0, -200.0]), (101, 101, 101)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3) * 4.0 + origin
    flip = np.array([-1.0, -1.0, 1.0])
    field = (displacement(grid * flip) * flip).reshape(*size, 3).transpose(2, 1, 0, 3)
    field_image = sitk.GetImageFromArray(field, isVector=True)
    field_image.SetOrigin(tuple(origin))
    field_image.SetSpacing((4.0, 4.0, 4.0))
    warp = sitk.DisplacementFieldTransform(sitk.Cast(field_image, sitk.sitkVectorFloat64))
    inverse_motion = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.linalg.inv(motion) @ np.diag([-1.0, -1.0, 1.0, 1.0])
    rigid = sitk.AffineTransform(inverse_motion[:3, :3].ravel().tolist(), inverse_motion[:3, 3].tolist())
    to_patient = sitk.CompositeTransform([warp, rigid])
    reference = baseline.ct.to_sitk()
    followup = Image.from_sitk(sitk.Resample(reference, reference, to_patient, sitk.sitkLinear, -1000.0), modality="CT")
    labels = sitk.Resample(baseline.labels.to_sitk(), reference, to_patient, sitk.sitkNearestNeighbor, 0)
    followup_lungs = sitk.GetArrayFromImage(labels) > 0

    base_centers = _baseline_centers(baseline)
    followup_centers = np.array([motion[:3, :3] @ undeform(p) + motion[:3, 3] for p in base_centers])
    lungs = baseline.labels.array > 0
    deformable, deformable_s = _register_timed(baseline.ct, followup, lungs, followup_lungs, deformable=True)
    assert deformable.converged, deformable.message
    assert deformable.deformable and deformable.stages[-1] == "bspline"
    assert deformable.sitk_transform.GetName() == "CompositeTransform"
    linear = (
        followup_centers @ deformable.followup_to_baseline_ras[:3, :3].T + deformable.followup_to_baseline_ras[:3, 3]
    )
    linear_errors = np.linalg.norm(linear - base_centers, axis=1)  # the linear part alone (the affine stage's result)
    errors = np.linalg.norm(deformable.map_to_baseline(followup_centers) - base_centers, axis=1)
    warp_mm = np.linalg.norm([undeform(p) - p for p in base_centers], axis=1)
    print(f"\n[deformable] warp at the nodules {np.round(warp_mm, 1).tolist()} mm; errors affine "
          f"{np.round(linear_errors, 2).tolist()} -> B-spline {np.round(errors, 2).tolist()} "
          f"({deformable_s:.1f} s); {deformable.details['bspline']}")  # fmt: skip
    assert errors.max() < 1.0 and errors.max() < linear_errors.max() - 0.3
    # map_to_baseline inverts the composite exactly: going forward again lands on the follow-up point
    assert np.allclose(
        deformable.map_to_followup(deformable.map_to_baseline(followup_centers)), followup_centers, atol=1e-3
    )
    matches = match_nodules(base_centers, followup_centers, deformable, gate_mm=3.0)
    assert [(m.baseline, m.followup) for m in matches] == [(i, i) for i in range(len(base_centers))]


def test_bad_input_raises_and_cancel_stops(baseline):
    lungs = baseline.labels.array > 0
    with pytest.raises(InputError, match="lung mask has shape"):
        register_followup(baseline.ct, baseline.ct, lungs[:-1], lungs)
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        register_followup(baseline.ct, baseline.ct, lungs, lungs, token=token)
    seen: list[float] = []
    token = CancelToken()

    def cancel_midway(fraction: float, message: str) -> None:
        seen.append(fraction)
        if fraction > 0.2:
            token.cancel()

    with pytest.raises(CancelledError):
        register_followup(baseline.ct, baseline.ct, lungs, lungs, progress=cancel_midway, token=token)
    assert max(seen) < 0.9
    identity = Registration(np.eye(4), np.eye(4), _identity(), False, float("nan"), [], "")
    with pytest.raises(InputError, match="shape"):
        identity.map_to_baseline(np.zeros((2, 2)))


def _identity():
    import SimpleITK as sitk

    return sitk.Euler3DTransform()


# ---- matching --------------------------------------------------------------------------------------------------


def _greedy(baseline: np.ndarray, followup: np.ndarray, gate: float) -> list[tuple[int, int]]:
    """Nearest pair first: what the Hungarian assignment must beat."""
    distance = np.linalg.norm(baseline[:, None] - followup[None], axis=-1)
    pairs, used_b, used_f = [], set(), set()
    for flat in np.argsort(distance, axis=None):
        i, j = np.unravel_index(flat, distance.shape)
        if distance[i, j] <= gate and i not in used_b and j not in used_f:
            pairs.append((int(i), int(j)))
            used_b.add(i)
            used_f.add(j)
    return sorted(pairs)


def test_crossed_near_pairs_are_resolved_by_global_assignment():
    baseline = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    followup = np.array([[2.5, 0.0, 0.0], [7.0, 0.0, 0.0]])  # both moved 2.5-3 mm to the right
    matches = match_nodules(baseline, followup, gate_mm=10.0)
    greedy = _greedy(baseline, followup, 10.0)
    total = sum(m.distance_mm for m in matches)
    print(f"\n[crossed pairs] Hungarian {[(m.baseline, m.followup) for m in matches]} total {total:.1f} mm; "
          f"greedy {greedy}")  # fmt: skip
    assert [(m.baseline, m.followup) for m in matches] == [(0, 0), (1, 1)]
    assert greedy == [(0, 1), (1, 0)]  # nearest-first takes the 1.5 mm cross pair and is wrong
    assert total == pytest.approx(5.5)
    # with a tighter gate greedy loses a nodule; the optimal assignment still pairs both
    assert [(m.baseline, m.followup) for m in match_nodules(baseline, followup, gate_mm=6.0)] == [(0, 0), (1, 1)]


def test_gate_new_resolved_and_size_dependent_gate():
    baseline = np.array([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0], [0.0, 60.0, 0.0]])
    followup = np.array([[0.0, 80.0, 40.0], [51.0, 1.0, 0.0], [14.0, 0.0, 0.0]])
    matches = match_nodules(baseline, followup, gate_mm=10.0)
    assert matches == [
        Match(0, None, None, None),  # 14 mm away: beyond the 10 mm gate
        Match(1, 1, pytest.approx(np.sqrt(2.0)), None),
        Match(2, None, None, None),
        Match(None, 0, None, None),
        Match(None, 2, None, None),
    ]
    # a 20 mm nodule that grew eccentrically to 30 mm: its centre moved 14 mm, within 10 + mean radius 12.5
    sized = match_nodules(baseline, followup, None, [10.0, 3.0, 3.0], [3.0, 3.0, 15.0], gate_mm=10.0)
    assert [(m.baseline, m.followup) for m in sized] == [(0, 2), (1, 1), (2, None), (None, 0)]
    assert sized[0].overlap == pytest.approx(sphere_overlap(14.0, 10.0, 15.0)) and 0 < sized[0].overlap < 1


def test_matching_is_deterministic_and_handles_empty_lists():
    rng = np.random.default_rng(3)
    baseline = rng.uniform(-100, 100, size=(12, 3))
    followup = baseline[::-1] + rng.normal(0, 1.0, size=(12, 3))
    first = match_nodules(baseline, followup)
    assert first == match_nodules(baseline, followup)
    assert [(m.baseline, m.followup) for m in first] == [(i, 11 - i) for i in range(12)]
    assert match_nodules([], followup) == [Match(None, j, None, None) for j in range(12)]
    assert match_nodules(baseline, np.zeros((0, 3))) == [Match(i, None, None, None) for i in range(12)]
    assert match_nodules([], []) == []


def test_matching_rejects_malformed_input_and_overlap_is_iou():
    with pytest.raises(InputError, match="centres"):
        match_nodules([[0.0, 0.0]], [[0.0, 0.0, 0.0]])
    with pytest.raises(InputError, match="radii"):
        match_nodules([[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], baseline_radii_mm=[1.0, 2.0])
    with pytest.raises(InputError, match="gate_mm"):
        match_nodules([[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], gate_mm=0.0)
    assert sphere_overlap(0.0, 5.0, 5.0) == pytest.approx(1.0)
    assert sphere_overlap(10.0, 5.0, 5.0) == 0.0
    assert sphere_overlap(1.0, 2.0, 4.0) == pytest.approx(1.0 / 8.0)
    half = sphere_overlap(5.0, 5.0, 5.0)  # two equal spheres one radius apart: the lens is 5/16 of each
    assert half == pytest.approx((5 / 16) / (2 - 5 / 16))
