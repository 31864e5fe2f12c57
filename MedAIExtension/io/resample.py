"""Resampling an image onto a grid given by its affine and shape (SimpleITK, linear or nearest neighbour).

Pure geometry, shared by model preprocessing, the DICOM writers and the review features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from MedAIExtension.io.geometry import LPS_TO_RAS, affine_parts
from MedAIExtension.io.image import Image

__all__ = ["resample_array", "resample_to_grid"]


def _resampled_sitk(
    source: Image | Any,
    ijk_to_ras: np.ndarray,
    shape_kji: tuple[int, int, int],
    linear: bool,
    fill: float | None,
) -> Any:
    """The SimpleITK image of ``source`` resampled onto the grid (see :func:`resample_array`)."""
    import SimpleITK as sitk

    if isinstance(source, Image):
        default = float(source.array.min()) if fill is None else float(fill)
        source = source.to_sitk()
    else:
        default = 0.0 if fill is None else float(fill)
    origin, spacing, direction = affine_parts(LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=float))
    pixel_type = source.GetPixelID()
    if linear and pixel_type not in (sitk.sitkFloat32, sitk.sitkFloat64):
        # ITK interpolates in double whatever the input type; writing float32 directly equals casting first
        pixel_type = sitk.sitkFloat32
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(shape_kji[2]), int(shape_kji[1]), int(shape_kji[0])])
    resampler.SetOutputOrigin([float(v) for v in origin])
    resampler.SetOutputSpacing([float(v) for v in spacing])
    resampler.SetOutputDirection([float(v) for v in direction.flatten()])
    resampler.SetInterpolator(sitk.sitkLinear if linear else sitk.sitkNearestNeighbor)
    resampler.SetDefaultPixelValue(default)
    resampler.SetOutputPixelType(pixel_type)
    return resampler.Execute(source)


def resample_array(
    source: Image | Any,
    ijk_to_ras: np.ndarray,
    shape_kji: tuple[int, int, int],
    linear: bool = True,
    fill: float | None = None,
) -> np.ndarray:
    """Resample an :class:`Image` (or a SimpleITK image) onto a grid; returns the voxel array ``[k, j, i]``.

    Only the grid (affine, shape) is needed, no reference voxels. Nearest neighbour keeps the voxel type;
    linear works in float32. ``fill`` (default: the source minimum) is used outside the source.
    """
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(_resampled_sitk(source, ijk_to_ras, shape_kji, linear, fill))


def resample_to_grid(
    image: Image,
    ijk_to_ras: np.ndarray,
    shape_kji: tuple[int, int, int],
    linear: bool = True,
    fill: float | None = None,
) -> Image:
    """Resample ``image`` onto the grid (``ijk_to_ras``, ``shape_kji``) with SimpleITK (linear or nearest)."""
    array = resample_array(image, ijk_to_ras, shape_kji, linear, fill)
    return Image(array, ijk_to_ras, modality=image.modality, metadata=dict(image.metadata))
