"""Memorization check: planted near-copies of real images are flagged, other patients are not."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MedAIExtension.errors import CancelledError, InputError
from MedAIExtension.io.image import Image
from MedAIExtension.phantom import generate_chest_phantom, random_phantom_spec
from MedAIExtension.phantom.grid import make_affine
from MedAIExtension.progress import CancelToken, Progress
from MedAIExtension.review.memorization import DEFAULT_THRESHOLD, memorization_check

SIZE = (64, 64, 48)
SPACING = (5.0, 5.0, 6.0)


def _phantom(seed: int, size: tuple[int, int, int] = SIZE, spacing: tuple[float, float, float] = SPACING) -> Image:
    ct = generate_chest_phantom(random_phantom_spec(seed, size_ijk=size, spacing=spacing)).ct
    return Image(ct.array, ct.ijk_to_ras, modality="CT", metadata={"id": f"patient-{seed}"})


@pytest.fixture(scope="module")
def real() -> list[Image]:
    return [_phantom(seed) for seed in range(3)]


def _near_copy(
    image: Image, seed: int, shift: tuple[float, float, float], angle: float, axes: tuple[int, int]
) -> Image:
    """A real image moved by a few voxels, rotated ≤ 3°, rescaled in intensity and given new noise."""
    rng = np.random.default_rng(seed)
    data = ndimage.rotate(image.array.astype(np.float32), angle, axes=axes, reshape=False, order=1, cval=-1024)
    data = ndimage.shift(data, shift, order=1, cval=-1024)
    data = data * rng.uniform(0.96, 1.04) + rng.uniform(-15, 15) + rng.normal(0.0, 25.0, data.shape)
    return image.with_array(data.astype(np.float32), metadata={"id": f"copy-of-{image.metadata['id']}"})


def _with_lesion(image: Image) -> Image:
    data = image.array.astype(np.float32).copy()
    k, j, i = np.indices(data.shape)
    centre = np.array(data.shape) // 2 + np.array([0, -6, 12])
    data[(k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2 < 9] = 40.0
    return image.with_array(data, metadata={"id": "lesion"})


def test_flags_every_near_copy_and_no_unrelated_image(real: list[Image]) -> None:
    synthetic = [
        _near_copy(real[0], 1, (2.0, -3.0, 1.0), 3.0, (1, 2)),
        _near_copy(real[1], 2, (-3.0, 2.0, -2.0), -3.0, (0, 1)),
        _near_copy(real[2], 3, (1.0, 1.0, 3.0), 2.0, (0, 2)),
        _with_lesion(_near_copy(real[1], 4, (0.0, 2.0, 0.0), 1.0, (1, 2))),
        _phantom(30),
        _phantom(31),
    ]
    messages: list[str] = []
    matches = memorization_check(synthetic, real, progress=lambda _f, m: messages.append(m))
    assert messages and len(matches) == len(synthetic)
    assert [m.real_index for m in matches[:4]] == [0, 1, 2, 1]
    assert [m.flagged for m in matches] == [True, True, True, True, False, False]
    copies = [m.similarity for m in matches[:4]]
    others = [m.similarity for m in matches[4:]]
    gap = min(copies) - max(others)
    print(f"near-copies {min(copies):.3f}..{max(copies):.3f}, others <= {max(others):.3f}, gap {gap:.3f}")
    assert min(copies) >= DEFAULT_THRESHOLD > max(others)
    first = matches[0].to_dict()
    assert first["synthetic_id"] == "copy-of-patient-0" and first["real_id"] == "patient-0"
    assert first["flagged"] is True and len(first["shift_voxels"]) == 3
    # the pre-filter keeps the true parent among the candidates: the same answer as aligning with every real image
    exhaustive = memorization_check(synthetic[:1], real, candidates=0, refine=len(real))
    assert exhaustive[0].real_index == 0
    assert exhaustive[0].similarity == pytest.approx(matches[0].similarity, abs=0.02)


def _zoomed(image: Image, scale: float, size: tuple[int, int, int] | None = None, spacing: float = 0.0) -> Image:
    """A real image resampled with a SimpleITK scaling about its centre (``scale`` > 1: the anatomy shrinks), onto
    its own grid or onto one of ``size`` voxels of ``spacing`` mm with the same centre, given new noise."""
    moving = sitk.GetImageFromArray(image.array.astype(np.float32))
    moving.SetSpacing([float(v) for v in image.spacing])
    centre = [(n - 1) / 2.0 * d for n, d in zip(moving.GetSize(), moving.GetSpacing())]
    grid = moving
    if size is not None:
        grid = sitk.Image([int(v) for v in size], sitk.sitkFloat32)
        grid.SetSpacing([spacing] * 3)
        grid.SetOrigin([c - (n - 1) / 2.0 * spacing for c, n in zip(centre, size)])
    transform = sitk.ScaleTransform(3, (scale,) * 3)
    transform.SetCenter(centre)
    data = sitk.GetArrayFromImage(sitk.Resample(moving, grid, transform, sitk.sitkLinear, -1024.0))
    data = data + np.random.default_rng(int(scale * 100)).normal(0.0, 20.0, data.shape)
    centre_ras = (image.ijk_to_ras @ np.array([(n - 1) / 2.0 for n in moving.GetSize()] + [1.0]))[:3]
    affine = image.ijk_to_ras
    if size is not None:
        affine = make_affine(size, (spacing,) * 3, image.direction_ras, centre_ras)
    return Image(data.astype(np.float32), affine, modality="CT", metadata={"id": f"zoom-{scale}"})


def _mirrored(image: Image, axis: int) -> Image:
    """An image flipped along array axis ``axis`` (k, j, i) and given new noise."""
    data = np.flip(image.array.astype(np.float32), axis)
    data = data + np.random.default_rng(axis).normal(0.0, 20.0, data.shape)
    return image.with_array(data.astype(np.float32), metadata={"id": f"mirror-{image.metadata['id']}"})


def test_flags_zoomed_and_mirrored_copies_and_no_unrelated_image(real: list[Image]) -> None:
    """A 10 % zoom in or out (one onto another grid), mirrored copies and a copy on a shorter field of view are
    flagged with the right parent, zoom and mirroring; another patient, mirrored or not, is not (the check searches
    zoom and mirroring for them too)."""
    synthetic = [
        _zoomed(real[0], 0.9),  # sampled closer to the centre: a 10 % zoom-in
        _zoomed(real[1], 1.1, (80, 80, 72), 4.0),  # a 10 % zoom-out onto a 4 mm grid (the same field of view)
        _mirrored(real[2], 2),  # left-right
        _mirrored(real[0], 0),  # superior-inferior
        _zoomed(real[2], 1.0, (64, 64, 40), 6.0),  # unzoomed onto a grid 48 mm shorter: padding at both ends
        _phantom(33),
        _mirrored(_phantom(30), 2),
    ]
    matches = memorization_check(synthetic, real)
    found = [(m.real_index, round(m.similarity, 3), round(m.zoom, 3), m.mirrored) for m in matches]
    print(f"zoomed/mirrored copies and others: {found}")
    assert [m.real_index for m in matches[:5]] == [0, 1, 2, 0, 2]
    assert [m.flagged for m in matches] == [True, True, True, True, True, False, False]
    assert matches[0].zoom == pytest.approx(1 / 0.9, abs=0.02) and matches[1].zoom == pytest.approx(1 / 1.1, abs=0.02)
    assert [m.mirrored for m in matches[:5]] == ["", "", "left-right", "superior-inferior", ""]
    assert min(m.similarity for m in matches[:5]) - max(m.similarity for m in matches[5:]) > 0.1
    assert matches[0].to_dict()["zoom"] == matches[0].zoom


def test_near_copies_on_a_finer_grid() -> None:
    """Finer input voxels (block-averaged to the working grid): a sub-voxel shift and a rotation still score high."""
    size, spacing = (96, 96, 80), (3.75, 3.75, 4.5)
    real = [_phantom(seed, size, spacing) for seed in range(2)]
    synthetic = [
        _near_copy(real[0], 5, (1.5, -2.5, 0.5), -3.0, (1, 2)),
        _near_copy(real[1], 6, (-0.5, 1.5, 2.5), 2.5, (0, 2)),
        _phantom(32, size, spacing),
    ]
    matches = memorization_check(synthetic, real)
    assert [m.real_index for m in matches[:2]] == [0, 1]
    assert [m.flagged for m in matches] == [True, True, False]
    gap = min(m.similarity for m in matches[:2]) - matches[2].similarity
    print(f"finer grid: near-copies {[round(m.similarity, 3) for m in matches[:2]]}, other {matches[2].similarity:.3f}")
    # the zoom search lets another phantom patient (the same template at another size) come closer: 0.78 here
    assert gap > 0.1


def test_bad_input(real: list[Image]) -> None:
    with pytest.raises(InputError, match="real reference set is empty"):
        memorization_check(real, [])
    with pytest.raises(InputError, match="synthetic set is empty"):
        memorization_check([], real)
    with pytest.raises(InputError, match="threshold"):
        memorization_check(real, real, threshold=2.0)
    odd = generate_chest_phantom(random_phantom_spec(5, size_ijk=(48, 48, 40), spacing=(6.5, 6.5, 7.0))).ct
    with pytest.raises(InputError, match=r"Synthetic image 0 .*resample"):
        memorization_check([odd], real, resample=False)
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        memorization_check(real, real, progress=Progress(None, token))
