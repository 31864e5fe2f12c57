"""Input preparation for a model: foreground crop, resampling to the model grid (the resampling itself lives in
:mod:`MedAIExtension.io.resample`), intensity normalisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from MedAIExtension.errors import ModelError
from MedAIExtension.io.geometry import LPS_TO_RAS, affine_from_parts
from MedAIExtension.io.image import Image
from MedAIExtension.io.resample import _resampled_sitk, resample_array, resample_to_grid

__all__ = [
    "crop_grid",
    "crop_image",
    "foreground_bounding_box",
    "grid_corners",
    "model_grid",
    "normalize_intensity",
    "orientation_direction_lps",
    "resample_array",
    "resample_normalized",
    "resample_to_grid",
]

_LETTER_TO_LPS = {
    "L": (1.0, 0.0, 0.0),
    "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0),
    "A": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0),
    "I": (0.0, 0.0, -1.0),
}


def orientation_direction_lps(code: str) -> np.ndarray:
    """3x3 LPS direction (columns = i, j, k) for an orientation code such as ``"LPS"`` or ``"RAS"``.

    Each letter names where increasing i, j, k point (ITK/nibabel convention).
    """
    code = code.upper()
    if len(code) != 3 or any(c not in _LETTER_TO_LPS for c in code):
        raise ModelError(f"Orientation code {code!r} is invalid; use three letters such as LPS or RAS.")
    direction = np.array([_LETTER_TO_LPS[c] for c in code]).T
    if abs(abs(np.linalg.det(direction)) - 1.0) > 1e-6:
        raise ModelError(f"Orientation code {code!r} repeats an axis; use one of L/R, P/A, S/I each.")
    return direction


def grid_corners(affine: np.ndarray, size_ijk: tuple[int, ...] | np.ndarray, pad: float = 0.0) -> np.ndarray:
    """Physical positions (8, 3) of a grid's corner voxel centres, moved outwards by ``pad`` voxels."""
    size = np.asarray(size_ijk, dtype=float)
    lows, highs = -pad * np.ones(3), size - 1.0 + pad
    corners = np.array(
        [[i, j, k] for i in (lows[0], highs[0]) for j in (lows[1], highs[1]) for k in (lows[2], highs[2])]
    )
    return corners @ affine[:3, :3].T + affine[:3, 3]


def model_grid(
    image: Image, spacing: tuple[float, float, float] | None, orientation: str
) -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """The model grid (IJK-to-RAS affine, shape ``(K, J, I)``) that covers ``image``.

    Axes follow ``orientation`` (or the image's own axes for ``"native"``), spacing is ``spacing`` (or the
    image's). Returns None when the image is already on such a grid (no resampling needed).
    """
    lps = image.ijk_to_lps
    src_spacing = image.spacing
    src_dir = lps[:3, :3] / src_spacing
    direction = src_dir if orientation == "native" else orientation_direction_lps(orientation)
    new_spacing = np.asarray(spacing if spacing is not None else src_spacing, dtype=float)
    if orientation != "native" and spacing is None:
        # keep each physical axis's spacing: permute the source spacing to the new axes
        align = np.abs(direction.T @ src_dir)
        new_spacing = np.array([src_spacing[int(np.argmax(align[a]))] for a in range(3)])
    if np.allclose(direction, src_dir, atol=1e-6) and np.allclose(new_spacing, src_spacing, rtol=1e-4):
        return None
    local = grid_corners(lps, image.size_ijk) @ direction  # coordinates along the new axes
    low, high = local.min(axis=0), local.max(axis=0)
    shape_ijk = np.maximum(np.floor((high - low) / new_spacing + 1e-3).astype(int) + 1, 1)
    origin = direction @ low
    affine_lps = affine_from_parts(origin, new_spacing, direction)
    return LPS_TO_RAS @ affine_lps, (int(shape_ijk[2]), int(shape_ijk[1]), int(shape_ijk[0]))


def crop_grid(
    ijk_to_ras: np.ndarray, shape_kji: tuple[int, int, int], region: Image
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The part of a grid (``ijk_to_ras``, ``shape_kji``) that covers ``region``, on the same voxel lattice.

    Cropping the full image's model grid (instead of building a new grid around the cropped image) keeps the
    resampled voxels exactly where they would be without the crop.
    """
    points = grid_corners(region.ijk_to_ras, region.size_ijk, pad=0.5)
    inverse = np.linalg.inv(ijk_to_ras)
    index = points @ inverse[:3, :3].T + inverse[:3, 3]  # (i, j, k) on the grid
    full_ijk = np.array(shape_kji[::-1])
    start = np.clip(np.floor(index.min(axis=0)).astype(int), 0, full_ijk - 1)
    stop = np.clip(np.ceil(index.max(axis=0)).astype(int) + 1, start + 1, full_ijk)
    affine = ijk_to_ras.copy()
    affine[:3, 3] = ijk_to_ras[:3, :3] @ start + ijk_to_ras[:3, 3]
    size = stop - start
    return affine, (int(size[2]), int(size[1]), int(size[0]))


def resample_normalized(
    image: Image, ijk_to_ras: np.ndarray, shape_kji: tuple[int, int, int], normalization: Mapping[str, Any]
) -> np.ndarray:
    """``normalize_intensity(resample_array(image, ...))`` (linear) without the intermediate copy.

    The normalisation reads the resampled voxels in place (a view of SimpleITK's buffer) and writes the only
    float32 copy.
    """
    import SimpleITK as sitk

    resampled = _resampled_sitk(image, ijk_to_ras, shape_kji, True, None)
    return normalize_intensity(sitk.GetArrayViewFromImage(resampled), normalization)


def foreground_bounding_box(
    image: Image, threshold: float, margin_mm: float = 10.0, stride: int = 4
) -> tuple[slice, slice, slice] | None:
    """Bounding box ``(k, j, i)`` slices of the largest connected region above ``threshold`` plus a margin.

    The search runs on a strided copy (cheap on a 512×512×300 CT); the margin covers the stride. Returns None
    when nothing is above the threshold.
    """
    from scipy import ndimage

    coarse = image.array[::stride, ::stride, ::stride] > threshold
    if not coarse.any():
        return None
    labels, count = ndimage.label(coarse)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        coarse = labels == int(np.argmax(sizes))
    idx = np.nonzero(coarse)
    spacing_kji = image.spacing[::-1]
    box = []
    for axis in range(3):
        pad = int(np.ceil(margin_mm / spacing_kji[axis])) + stride
        lo = max(int(idx[axis].min()) * stride - pad, 0)
        hi = min(int(idx[axis].max()) * stride + pad + 1, image.shape[axis])
        box.append(slice(lo, hi))
    return tuple(box)  # type: ignore[return-value]


def crop_image(image: Image, box: tuple[slice, slice, slice]) -> Image:
    """The sub-image ``image.array[box]`` with its affine shifted to the new first voxel."""
    k0, j0, i0 = (s.start or 0 for s in box)
    affine = image.ijk_to_ras.copy()
    affine[:3, 3] = image.ijk_to_ras[:3, :3] @ np.array([i0, j0, k0]) + image.ijk_to_ras[:3, 3]
    return Image(image.array[box], affine, modality=image.modality, metadata=dict(image.metadata))


def normalize_intensity(array: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """Apply the catalogue's intensity normalisation; returns float32."""
    kind = spec.get("type", "none")
    data = array.astype(np.float32, copy=True)
    if kind == "none":
        return data
    if kind == "clip_scale":
        a_min, a_max = float(spec["a_min"]), float(spec["a_max"])
        b_min, b_max = float(spec.get("b_min", 0.0)), float(spec.get("b_max", 1.0))
        if spec.get("clip", True):
            np.clip(data, a_min, a_max, out=data)
        data -= a_min
        data *= (b_max - b_min) / (a_max - a_min)
        data += b_min
        return data
    if kind == "zscore":
        values = data[data != 0] if spec.get("nonzero") else data
        mean, std = float(values.mean()), float(values.std())
        data -= mean
        data /= std if std > 0 else 1.0
        return data
    raise ModelError(f"Unknown intensity normalisation {kind!r}; use none, clip_scale or zscore.")
