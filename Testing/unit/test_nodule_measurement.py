"""Nodule segmentation and measurement against phantoms with exact truth (volume, diameter, kind, solid part).

Each case renders a small field of view around one nodule (the anatomy is analytic, so a reduced field of view
shows the same patient), segments it from its true centre and measures it. The figures are printed
(``pytest -s``) and the Lung-RADS-relevant targets asserted: volume within 3 % of the analytic sphere volume,
mean diameter within 0.5 mm, the right attenuation class, the solid part of part-solid nodules within 10 %.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from MedAIExtension.errors import InputError
from MedAIExtension.phantom import AXIAL, SAGITTAL, NoduleSpec, PhantomSpec, generate_chest_phantom
from MedAIExtension.phantom.anatomy import build_layout, lung_sdf, nodule_center
from MedAIExtension.phantom.chest import Phantom
from MedAIExtension.phantom.spec import AnatomySpec, LungSide
from MedAIExtension.phantom.vessels import vessel_trees
from MedAIExtension.tracking.measurements import measure_nodule
from MedAIExtension.tracking.nodule_segmentation import segment_nodule
from MedAIExtension.tracking.types import Candidate, NoduleKind, NoduleMask, NoduleMeasurement

#: Image noise of the phantoms (HU). Ground-glass volumetry is noise-limited: at 20 HU a 6-8 mm ground-glass
#: nodule's volume scatters by about 2.5 % (SD), so the 3 % target is checked at a moderate noise level.
NOISE_HU = 10.0
SEED = 3

GRIDS = {
    "axial 0.7x0.7x1.25": ((0.7, 0.7, 1.25), AXIAL),
    "isotropic 1.0": ((1.0, 1.0, 1.0), AXIAL),
    "sagittal 1.0": ((1.0, 1.0, 1.0), SAGITTAL),
    "oblique 0.9x0.9x1.1": (
        (0.9, 0.9, 1.1),
        Rotation.from_euler("xyz", [20, -30, 15], degrees=True).as_matrix() @ AXIAL,
    ),
}

#: kind, diameter, solid fraction, lung, position (lateral, anterior, superior), juxta-pleural
NODULES = [
    ("solid", 6.0, None, "right", (0.35, 0.2, 0.3), False),
    ("ground-glass", 6.0, None, "left", (0.3, -0.1, 0.2), False),
    ("ground-glass", 10.0, None, "right", (0.2, -0.45, -0.3), False),
    ("part-solid", 8.0, 0.5, "left", (0.35, 0.3, -0.2), False),
    ("part-solid", 12.0, 0.5, "left", (0.3, -0.35, -0.3), False),
    ("solid", 8.0, None, "left", (0.6, 0.0, 0.2), True),
    ("ground-glass", 10.0, None, "right", (0.5, 0.3, 0.1), True),
]


def _phantom(nodule: NoduleSpec, spacing, direction, noise: float = NOISE_HU, margin_mm: float = 22.0) -> Phantom:
    """A phantom whose field of view is centred on the nodule (diameter + margin wide)."""
    anatomy = AnatomySpec()
    centre = nodule_center(build_layout(anatomy), nodule) + np.asarray(anatomy.center_ras)
    size = tuple(int(math.ceil((nodule.diameter_mm + margin_mm) / s)) for s in spacing)
    spec = PhantomSpec(
        size_ijk=size,
        spacing=spacing,
        direction_ras=direction,
        center_ras=tuple(float(v) for v in centre),
        nodules=(nodule,),
        seed=SEED,
        noise_hu=noise,
        anatomy=anatomy,
    )
    return generate_chest_phantom(spec)


def _run(phantom: Phantom, lungs: np.ndarray | None) -> tuple[NoduleMask, NoduleMeasurement]:
    truth = phantom.truth["nodules"][0]
    candidate = Candidate(tuple(truth["center_ras"]), truth["diameter_mm"], 1.0, "test")
    mask = segment_nodule(phantom.ct, candidate, lungs)
    assert mask is not None, "no nodule segmented at the true centre"
    return mask, measure_nodule(phantom.ct, mask, lungs)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _check(phantom: Phantom, mask: NoduleMask, result: NoduleMeasurement, label: str) -> None:
    truth = phantom.truth["nodules"][0]
    error = 100.0 * (result.volume_mm3 / truth["volume_mm3"] - 1.0)
    dice = _dice(mask.full(phantom.ct.shape), phantom.nodule_mask(1))
    line = (
        f"{label:22s} {truth['kind']:12s} {truth['diameter_mm']:4.1f} mm  volume {result.volume_mm3:7.1f} / "
        f"{truth['volume_mm3']:7.1f} mm3 ({error:+5.2f} %)  axes {result.long_axis_mm:4.1f} x "
        f"{result.short_axis_mm:4.1f}  mean {result.mean_diameter_mm:4.1f}  kind {result.kind.value:12s} "
        f"dice {dice:.3f}"
    )
    if truth["kind"] == "part-solid":
        solid_error = 100.0 * (result.solid_volume_mm3 / truth["solid_volume_mm3"] - 1.0)
        line += f"  solid {result.solid_volume_mm3:6.1f} / {truth['solid_volume_mm3']:6.1f} ({solid_error:+5.1f} %)"
        assert abs(solid_error) <= 10.0, line
    print(line)
    assert abs(error) <= 3.0, line
    assert abs(result.mean_diameter_mm - truth["mean_diameter_mm"]) <= 0.5, line
    assert result.kind == NoduleKind(truth["kind"]), line
    assert result.touches_pleura == truth["juxta_pleural"], line
    assert np.linalg.norm(np.subtract(result.center_ras, truth["center_ras"])) < 1.0, line
    assert dice > 0.75, line


@pytest.mark.parametrize("grid", list(GRIDS))
def test_volume_diameter_and_kind_on_several_grids(grid: str) -> None:
    spacing, direction = GRIDS[grid]
    for kind, diameter, fraction, lung, position, juxta in NODULES:
        nodule = NoduleSpec(diameter, kind, fraction, lung=lung, position=position, juxta_pleural=juxta)
        phantom = _phantom(nodule, spacing, direction)
        mask, result = _run(phantom, phantom.labels.array > 0)
        _check(phantom, mask, result, grid)
        if kind == "solid":
            assert result.solid_volume_mm3 == result.volume_mm3
            assert result.solid_mean_diameter_mm == result.mean_diameter_mm
        if kind == "ground-glass":
            assert result.solid_volume_mm3 == 0.0 and result.solid_mean_diameter_mm == 0.0


def _touching_centres(diameter: float, side: str) -> list[tuple[np.ndarray, float]]:
    """Nodule centres (RAS) whose sphere overlaps a 0.9-1.4 mm radius vessel of the phantom by 0.3 mm."""
    anatomy = AnatomySpec()
    layout = build_layout(anatomy)
    radius = 0.5 * diameter
    found = []
    for tube in vessel_trees(layout, np.random.default_rng([SEED, 0]))[LungSide(side)]:
        start, end = np.array(tube.p0), np.array(tube.p1)
        vessel = 0.5 * (tube.r0 + tube.r1)
        length = float(np.linalg.norm(end - start))
        if not 0.9 <= vessel <= 1.4 or length < 1.5 * diameter:
            continue
        axis = (end - start) / length
        across = np.cross(axis, [0.0, 0.0, 1.0])
        centre = 0.5 * (start + end) + across / np.linalg.norm(across) * (radius + vessel - 0.3)
        if lung_sdf(layout, LungSide(side), *centre.reshape(3, 1))[0] < -(radius + 3.0):
            found.append((centre + layout.origin_ras, vessel))
    return found


@pytest.mark.parametrize(("kind", "which"), [("solid", 0), ("ground-glass", 1), ("part-solid", 2)])
def test_vessel_touching_the_nodule_adds_no_volume(kind: str, which: int) -> None:
    centre, vessel = _touching_centres(8.0, "right")[which]
    nodule = NoduleSpec(8.0, kind, 0.5 if kind == "part-solid" else None, center_ras=tuple(centre))
    phantom = _phantom(nodule, (0.8, 0.8, 0.8), AXIAL)
    truth = phantom.nodule_mask(1)
    # The vessel really touches: dense voxels right outside the sphere.
    touching = ndimage.binary_dilation(truth, iterations=2) & ~truth & (phantom.ct.array > -500)
    assert np.count_nonzero(touching) >= 20
    mask, result = _run(phantom, phantom.labels.array > 0)
    print(f"vessel radius {vessel:.2f} mm touching, {np.count_nonzero(touching)} dense voxels next to the nodule")
    _check(phantom, mask, result, "touching vessel 0.8")


def _in_lung_volume(centre: np.ndarray, radius: float, anatomy: AnatomySpec) -> float:
    """Volume (mm³) of the part of a sphere inside the lung fields (Monte Carlo, 400k points)."""
    layout = build_layout(anatomy)
    points = np.random.default_rng(0).uniform(-radius, radius, size=(400_000, 3))
    points = points[np.linalg.norm(points, axis=1) <= radius] + centre - layout.origin_ras
    inside = np.zeros(len(points), dtype=bool)
    for side in LungSide:
        inside |= lung_sdf(layout, side, *points.T) <= 0.0
    return 4.0 / 3.0 * math.pi * radius**3 * float(inside.mean())


@pytest.mark.parametrize("kind", ["solid", "ground-glass"])
def test_juxta_pleural_nodule_stops_at_the_chest_wall_without_a_lung_mask(kind: str) -> None:
    nodule = NoduleSpec(8.0, kind, lung="left", position=(0.6, 0.0, 0.2), juxta_pleural=True)
    phantom = _phantom(nodule, (0.8, 0.8, 1.0), AXIAL)
    truth = phantom.truth["nodules"][0]
    mask, result = _run(phantom, None)
    in_lung = _in_lung_volume(np.array(truth["center_ras"]), 4.0, AnatomySpec())
    print(
        f"no lung mask, juxta-pleural {kind}: volume {result.volume_mm3:.1f} mm3, sphere {truth['volume_mm3']:.1f}, "
        f"part inside the lung {in_lung:.1f}"
    )
    # The sphere pokes into the chest wall, where it has the wall's attenuation: the measurable nodule is the
    # part on the lung side, up to the whole sphere.
    assert 0.97 * in_lung <= result.volume_mm3 <= 1.03 * truth["volume_mm3"]
    assert result.touches_pleura
    assert result.kind == NoduleKind(kind)
    chest_wall = phantom.labels.array == 0
    assert np.count_nonzero(mask.full(phantom.ct.shape) & chest_wall) <= 5


def test_seed_on_plain_parenchyma_finds_no_nodule() -> None:
    nodule = NoduleSpec(8.0, "solid", lung="right", position=(0.3, 0.2, 0.2))
    phantom = _phantom(nodule, (1.0, 1.0, 1.0), AXIAL, margin_mm=40.0)
    hu = phantom.ct.array
    lungs = phantom.labels.array > 0
    # Parenchyma at least 4 mm from anything dense (vessels, the nodule, the chest wall).
    dense = ndimage.binary_dilation((hu > -600) | ~lungs, iterations=4)
    spots = np.argwhere(~dense & lungs)
    assert len(spots) > 0
    kji = spots[len(spots) // 2]
    centre = phantom.ct.ijk_to_ras @ np.append(kji[::-1].astype(float), 1.0)
    for candidate_mm in (4.0, 8.0):
        candidate = Candidate(tuple(float(v) for v in centre[:3]), candidate_mm, 0.5, "test")
        assert segment_nodule(phantom.ct, candidate, lungs) is None
        assert segment_nodule(phantom.ct, candidate, None) is None


def test_thick_slices_warn_for_small_nodules() -> None:
    nodule = NoduleSpec(6.0, "solid", lung="right", position=(0.35, 0.2, 0.3))
    thick = _phantom(nodule, (0.7, 0.7, 3.0), AXIAL)
    _, result = _run(thick, thick.labels.array > 0)
    print(f"3 mm slices, 6 mm nodule: volume {result.volume_mm3:.1f} mm3, warnings {result.warnings}")
    assert any("slices too thick" in w for w in result.warnings)
    thin = _phantom(nodule, (0.7, 0.7, 1.25), AXIAL)
    _, result = _run(thin, thin.labels.array > 0)
    assert not any("slices too thick" in w for w in result.warnings)


def test_bad_inputs_raise_input_errors() -> None:
    nodule = NoduleSpec(8.0, "solid", lung="right", position=(0.35, 0.2, 0.3))
    phantom = _phantom(nodule, (1.0, 1.0, 1.0), AXIAL)
    lungs = phantom.labels.array > 0
    truth = phantom.truth["nodules"][0]
    candidate = Candidate(tuple(truth["center_ras"]), 8.0, 1.0, "test")
    with pytest.raises(InputError, match="lung mask"):
        segment_nodule(phantom.ct, candidate, lungs[:-1])
    with pytest.raises(InputError, match="outside the image"):
        segment_nodule(phantom.ct, Candidate((500.0, 0.0, 0.0), 8.0, 1.0, "test"), lungs)
    with pytest.raises(InputError, match="max_diameter_mm"):
        segment_nodule(phantom.ct, candidate, lungs, max_diameter_mm=-1.0)
    mask = segment_nodule(phantom.ct, candidate, lungs)
    assert mask is not None
    with pytest.raises(InputError, match="empty"):
        measure_nodule(phantom.ct, NoduleMask(mask.box, np.zeros_like(mask.mask)), lungs)
    with pytest.raises(InputError, match="does not match"):
        measure_nodule(phantom.ct, NoduleMask(mask.box, mask.mask[:-1]), lungs)
    outside = (slice(0, 5), slice(0, 5), slice(phantom.ct.shape[2] - 2, phantom.ct.shape[2] + 3))
    with pytest.raises(InputError, match="inside the image"):
        measure_nodule(phantom.ct, NoduleMask(outside, np.ones((5, 5, 5), dtype=bool)), lungs)


#: Anatomy of a slimmer patient (the vessel trees differ from the default one's).
SLIM = AnatomySpec(body_semi_axes_mm=(115.0, 82.0), fat_mm=8.0, lung_height_mm=160.0)


def _thin_vessel_centre(anatomy: AnatomySpec, seed: int, diameter: float) -> tuple[np.ndarray, float]:
    """Centre (RAS) of a nodule overlapping the first 0.8-1.2 mm radius vessel of the phantom by 0.5 mm."""
    layout = build_layout(anatomy)
    radius = 0.5 * diameter
    for side in LungSide:
        for tube in vessel_trees(layout, np.random.default_rng([seed, 0]))[side]:
            start, end = np.array(tube.p0), np.array(tube.p1)
            vessel = 0.5 * (tube.r0 + tube.r1)
            length = float(np.linalg.norm(end - start))
            if not 0.8 <= vessel <= 1.2 or length < diameter:
                continue
            axis = (end - start) / length
            across = np.cross(axis, [0.0, 0.0, 1.0])
            centre = 0.5 * (start + end) + across / np.linalg.norm(across) * (radius + vessel - 0.5)
            if lung_sdf(layout, side, *centre.reshape(3, 1))[0] < -(radius + 3.0):
                return centre + layout.origin_ras, vessel
    raise AssertionError("the phantom has no thin vessel away from the pleura")


@pytest.mark.parametrize(("name", "seed"), [("default", 2), ("slim", 4)])
def test_thin_vessel_along_a_small_solid_nodule_adds_no_volume(name: str, seed: int) -> None:
    """A 6.5 mm solid nodule against a thin vessel (clinical grid, 20 HU noise): the vessel's partial volume
    in the nodule's boundary voxels must not inflate the volume (it did by 5 % and 37 % on these cases)."""
    anatomy = AnatomySpec() if name == "default" else SLIM
    diameter = 6.5
    centre, vessel = _thin_vessel_centre(anatomy, seed, diameter)
    spacing = (0.85, 0.85, 1.25)
    spec = PhantomSpec(
        size_ijk=tuple(int(math.ceil((diameter + 22.0) / s)) for s in spacing),
        spacing=spacing,
        direction_ras=AXIAL,
        center_ras=tuple(float(v) for v in centre),
        nodules=(NoduleSpec(diameter, "solid", center_ras=tuple(float(v) for v in centre)),),
        seed=seed,
        noise_hu=20.0,
        anatomy=anatomy,
    )
    phantom = generate_chest_phantom(spec)
    truth = phantom.truth["nodules"][0]
    _, result = _run(phantom, phantom.labels.array > 0)
    error = 100.0 * (result.volume_mm3 / truth["volume_mm3"] - 1.0)
    line = (
        f"{name} seed {seed}: vessel radius {vessel:.2f} mm, volume {result.volume_mm3:.1f} / "
        f"{truth['volume_mm3']:.1f} mm3 ({error:+.2f} %), mean diameter {result.mean_diameter_mm:.1f} mm"
    )
    print(line)
    assert abs(error) <= 3.0, line
    assert abs(result.mean_diameter_mm - truth["mean_diameter_mm"]) <= 0.5, line
    assert result.kind is NoduleKind.SOLID, line


def _moved_nodule_spec(noise_seed: int) -> PhantomSpec:
    """A small field of view, on the study's own voxel grid, around the moved 6 mm nodule of a phantom pair's
    follow-up (patient turned 5 degrees, 0.85 x 0.85 x 1.25 mm, 20 HU), one noise realisation of it."""
    from MedAIExtension.phantom.followup import followup_spec

    baseline = PhantomSpec(
        size_ijk=(290, 216, 150),
        spacing=(0.85, 0.85, 1.25),
        seed=5,
        anatomy=SLIM,
        nodules=(
            NoduleSpec(8.0, "solid", lung="right", position=(0.35, 0.25, 0.35)),
            NoduleSpec(12.0, "part-solid", solid_fraction=0.5, lung="left", position=(0.35, -0.35, -0.3)),
            NoduleSpec(10.0, "ground-glass", lung="right", position=(0.2, -0.45, -0.45)),
            NoduleSpec(6.5, "solid", lung="left", position=(0.2, 0.3, 0.45)),
        ),
    )
    followup = followup_spec(baseline, (2.0, 1.0, 1.3, 0.8), (0.0, 0.0, 5.0), (10.0, 0.0, 0.0)).followup
    nodule = followup.nodules[3]
    affine = followup.ijk_to_ras
    centre = np.asarray(followup.pose_ras)[:3] @ np.append(nodule.center_ras, 1.0)
    size = np.array([28, 28, 20])
    corner = np.rint(np.linalg.solve(affine[:3, :3], centre - affine[:3, 3])).astype(int) - size // 2
    middle = affine[:3, :3] @ (corner + (size - 1) / 2.0) + affine[:3, 3]  # the study's own voxel grid
    return dataclasses.replace(
        followup,
        size_ijk=tuple(int(v) for v in size),
        center_ras=tuple(float(v) for v in middle),
        nodules=(nodule,),
        noise_seed=100 + noise_seed,
    )


def _volume_error(phantom: Phantom) -> float:
    """Volume error (%) of the phantom's one nodule, segmented from its true centre and measured."""
    truth = phantom.truth["nodules"][0]
    _, result = _run(phantom, phantom.labels.array > 0)
    assert result.kind is NoduleKind.SOLID
    return 100.0 * (result.volume_mm3 / truth["volume_mm3"] - 1.0)


@functools.lru_cache(maxsize=1)
def _moved_nodule_errors() -> tuple[float, ...]:
    """Volume errors (%) of the pair's moved 6 mm nodule over eight noise realisations (see the tests below)."""
    return tuple(_volume_error(generate_chest_phantom(_moved_nodule_spec(seed))) for seed in range(8))


def test_vessel_lying_along_a_moved_patients_nodule_adds_no_volume() -> None:
    """The 6 mm solid nodule of the follow-up of a phantom pair (patient turned 5 degrees, clinical grid, 20 HU)
    has a vessel lying flat along one side: its partial volume raised that whole side of the surface (+6 % on the
    full study). Over eight noise realisations of a small field of view around it the volume must be unbiased
    within 3 % (it was +4.2 % on average before the leave-one-cap-out check of the surface, +2.7 % with it, and
    +0.3 % with the foreign-density check of the boundary voxels)."""
    errors = _moved_nodule_errors()
    mean, median = float(np.mean(errors)), float(np.median(errors))
    line = f"volume errors {np.round(errors, 2).tolist()} %: mean {mean:+.2f} %, median {median:+.2f} %"
    print(line)
    assert abs(mean) <= 3.0, line
    assert max(abs(e) for e in errors) <= 8.0, line


def test_every_noise_realisation_of_the_moved_nodule_within_3_percent() -> None:
    """Issue 3's target per nodule, for a thin vessel lying flat along a 6 mm nodule: every realisation within
    3 % (5 of the 8 read +3.1..+6.4 % before the foreign-density check)."""
    errors = _moved_nodule_errors()
    assert max(abs(e) for e in errors) <= 3.0, f"volume errors {np.round(errors, 2).tolist()} %"


def test_moved_nodule_without_noise_shows_no_vessel_bias() -> None:
    """Without image noise only the vessel's partial volume can move the surface: the volume must be within 1 %
    (it read +2.9 % before the foreign-density check of the boundary voxels)."""
    spec = dataclasses.replace(_moved_nodule_spec(0), noise_hu=0.0)
    error = _volume_error(generate_chest_phantom(spec))
    print(f"noise-free moved nodule: volume error {error:+.2f} %")
    assert abs(error) <= 1.0, f"{error:+.2f} %"
