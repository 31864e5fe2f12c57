"""Where an explanation looks: the model-grid window cut from the input image, and the way back to its grid.

Classification models explain one patch of the catalogue's patch size, centred on the ROI; without an ROI only
an image that fits in the patch is accepted (its centre is explained) — a larger image needs an ROI
(:func:`check_patch_roi`), since the patch at its centre usually holds no nodule. Segmentation models explain
the *region score* of the ROI: the window is the ROI plus context, and the region is the ROI's voxels. The
window is laid out like the model's own grid (spacing and axis orientation from the catalogue), so the network
sees what it was trained on, whatever the acquisition geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.explain.request import Roi
from MedAIExtension.io.geometry import LPS_TO_RAS, affine_from_parts
from MedAIExtension.io.image import Image
from MedAIExtension.models.catalog import ModelEntry
from MedAIExtension.models.preprocessing import (
    crop_image,
    foreground_bounding_box,
    grid_corners,
    normalize_intensity,
    orientation_direction_lps,
    resample_array,
)

__all__ = ["ExplanationWindow", "check_patch_roi", "explanation_window", "patch_extent_mm", "to_input_grid"]

#: Context added around a segmentation ROI (mm on each side), so the network sees the neighbourhood.
SEGMENTATION_CONTEXT_MM = 16.0
#: Largest window (voxels) explained at once for a segmentation model; larger needs an ROI.
MAX_SEGMENTATION_WINDOW_VOXELS = 160**3
#: Window sizes are rounded up to a multiple of this (U-Nets halve the grid several times).
SIZE_MULTIPLE = 16


@dataclass(frozen=True, eq=False)
class ExplanationWindow:
    """The input to explain.

    Attributes:
        image: the input image resampled onto the window grid (original units, ``[k, j, i]``).
        data: the network input ``(1, C, *S)`` (normalised, in the network's axis order).
        region: for segmentation models, the voxels whose score is explained (``[k, j, i]`` on the window grid).
        axis_order: the network's spatial axis order (``kji`` or ``ijk``).
    """

    image: Image
    data: np.ndarray
    region: np.ndarray | None
    axis_order: str = "kji"

    def to_network(self, array_kji: np.ndarray) -> np.ndarray:
        """A ``[k, j, i]`` array in the network's axis order."""
        return array_kji if self.axis_order == "kji" else np.ascontiguousarray(array_kji.transpose(2, 1, 0))

    def from_network(self, array: np.ndarray) -> np.ndarray:
        """A spatial array in the network's axis order back to ``[k, j, i]``."""
        return array if self.axis_order == "kji" else np.ascontiguousarray(array.transpose(2, 1, 0))


def _direction_and_spacing(image: Image, entry: ModelEntry) -> tuple[np.ndarray, np.ndarray]:
    """Window axes (LPS, columns = i, j, k) and spacing, as the model's grid would have them."""
    src_spacing = image.spacing
    src_dir = image.ijk_to_lps[:3, :3] / src_spacing
    orientation = entry.input.orientation
    direction = src_dir if orientation == "native" else orientation_direction_lps(orientation)
    if entry.input.spacing is not None:
        spacing = np.asarray(entry.input.spacing, dtype=float)
    else:
        align = np.abs(direction.T @ src_dir)
        spacing = np.array([src_spacing[int(np.argmax(align[a]))] for a in range(3)])
    return direction, spacing


def patch_extent_mm(image: Image, entry: ModelEntry) -> np.ndarray:
    """Size (mm) of a classifier's input patch along the window axes (i, j, k), as laid out on ``image``."""
    _, spacing = _direction_and_spacing(image, entry)
    patch = np.array(entry.input.patch_size, dtype=float)
    patch_ijk = patch[::-1] if entry.input.axis_order == "kji" else patch
    return patch_ijk * spacing


def check_patch_roi(image: Image, entry: ModelEntry, roi: Roi | None) -> None:
    """Refuse a classifier (patch input) run without an ROI on an image larger than its patch.

    Without an ROI the patch would sit at the image centre, which on a chest CT is mediastinum, not a nodule; the
    model's score there says nothing. Raises InputError saying how to give an ROI.
    """
    if not entry.is_classifier or roi is not None:
        return
    direction, spacing = _direction_and_spacing(image, entry)
    corners = grid_corners(image.ijk_to_ras, image.size_ijk, pad=0.5) * np.array([-1.0, -1.0, 1.0])
    local = corners @ direction
    image_mm = local.max(axis=0) - local.min(axis=0)
    patch_mm = patch_extent_mm(image, entry)
    if np.all(image_mm <= patch_mm + spacing):
        return
    patch_text = "x".join(f"{v:.0f}" for v in patch_mm)
    image_text = "x".join(f"{v:.0f}" for v in image_mm)
    raise InputError(
        f"{entry.name} classifies one {patch_text} mm patch, but the image is {image_text} mm, so it needs to know "
        "where to look. Give an ROI around the structure to explain: --roi R A S SIZE_R SIZE_A SIZE_S (centre in "
        "RAS mm, then size in mm; e.g. --roi -60 20 -110 20 20 20), or place an ROI markup on it in Slicer."
    )


def _grid(center_ras: np.ndarray, shape_ijk: np.ndarray, direction: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    center_lps = center_ras * np.array([-1.0, -1.0, 1.0])
    origin = center_lps - direction @ ((shape_ijk - 1) / 2.0 * spacing)
    return LPS_TO_RAS @ affine_from_parts(origin, spacing, direction)


def _image_center_ras(image: Image) -> np.ndarray:
    return grid_corners(image.ijk_to_ras, image.size_ijk).mean(axis=0)


def _check_roi_inside(image: Image, roi: Roi) -> None:
    low, high = np.array(roi.low_ras), np.array(roi.high_ras)
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    inverse = np.linalg.inv(image.ijk_to_ras)
    ijk = corners @ inverse[:3, :3].T + inverse[:3, 3]
    size = np.array(image.size_ijk)
    if np.any(ijk.max(axis=0) < -0.5) or np.any(ijk.min(axis=0) > size - 0.5):
        extent = grid_corners(image.ijk_to_ras, image.size_ijk)
        raise InputError(
            f"The ROI (centre {np.round(roi.center_ras, 1).tolist()} mm RAS, size {list(roi.size_mm)} mm) lies "
            f"outside the image, which spans R {extent[:, 0].min():.0f}…{extent[:, 0].max():.0f}, "
            f"A {extent[:, 1].min():.0f}…{extent[:, 1].max():.0f}, S {extent[:, 2].min():.0f}…{extent[:, 2].max():.0f} "
            "mm. Place the ROI over the image."
        )


def _roi_mask(affine: np.ndarray, shape_kji: tuple[int, int, int], roi: Roi) -> np.ndarray:
    k, j, i = np.indices(shape_kji, dtype=np.float32)
    low, high = np.array(roi.low_ras), np.array(roi.high_ras)
    inside = np.ones(shape_kji, dtype=bool)
    for axis in range(3):
        coordinate = affine[axis, 0] * i + affine[axis, 1] * j + affine[axis, 2] * k + affine[axis, 3]
        inside &= (coordinate >= low[axis]) & (coordinate <= high[axis])
    return inside


def _round_up(value: float) -> int:
    return max(SIZE_MULTIPLE, int(math.ceil(value / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


def explanation_window(image: Image, entry: ModelEntry, roi: Roi | None = None) -> ExplanationWindow:
    """Cut, resample and normalise the part of ``image`` the explanation looks at (see the module docstring)."""
    if roi is not None:
        _check_roi_inside(image, roi)
    direction, spacing = _direction_and_spacing(image, entry)
    patch = np.array(entry.input.patch_size, dtype=int)
    patch_ijk = patch[::-1] if entry.input.axis_order == "kji" else patch
    if entry.is_classifier:
        center = np.array(roi.center_ras) if roi is not None else _image_center_ras(image)
        shape_ijk = patch_ijk
    else:
        if roi is not None:
            center = np.array(roi.center_ras)
            extent_lps = np.abs(direction.T @ np.array(roi.size_mm))  # ROI size along the window axes
            wanted = (extent_lps + 2 * SEGMENTATION_CONTEXT_MM) / spacing
        else:
            box = (
                foreground_bounding_box(image, entry.input.crop_foreground_above)
                if entry.input.crop_foreground_above is not None
                else None
            )
            sub = image if box is None else _crop(image, box)
            center = _image_center_ras(sub)
            corners = grid_corners(sub.ijk_to_ras, sub.size_ijk) * np.array([-1.0, -1.0, 1.0])
            local = corners @ direction
            wanted = (local.max(axis=0) - local.min(axis=0)) / spacing + 1
        shape_ijk = np.array([_round_up(v) for v in wanted])
        if int(np.prod(shape_ijk)) > MAX_SEGMENTATION_WINDOW_VOXELS:
            largest = int(
                round(MAX_SEGMENTATION_WINDOW_VOXELS ** (1 / 3) * float(spacing.min()) - 2 * SEGMENTATION_CONTEXT_MM)
            )
            raise InputError(
                f"Explaining {entry.name} over a {'x'.join(str(int(v)) for v in shape_ijk)}-voxel region is too "
                f"much at once. Give an ROI (--roi, or an ROI markup in Slicer) around the structure to explain, "
                f"at most about {largest} mm across."
            )
    affine = _grid(center, shape_ijk.astype(float), direction, spacing)
    shape_kji = (int(shape_ijk[2]), int(shape_ijk[1]), int(shape_ijk[0]))
    fill = float(entry.input.normalization.get("a_min", image.array.min())) if image.modality == "CT" else None
    values = resample_array(image, affine, shape_kji, linear=True, fill=fill)
    window_image = Image(values, affine, modality=image.modality, metadata=dict(image.metadata))
    data = normalize_intensity(values, entry.input.normalization)
    if entry.input.axis_order == "ijk":
        data = np.ascontiguousarray(data.transpose(2, 1, 0))
    channels = max(entry.input.channels, 1)
    data = np.repeat(data[None, None], channels, axis=1).astype(np.float32)
    region = None
    if not entry.is_classifier and roi is not None:
        region = _roi_mask(affine, shape_kji, roi)
    return ExplanationWindow(window_image, data, region, entry.input.axis_order)


def _crop(image: Image, box: tuple[slice, slice, slice]) -> Image:
    return crop_image(image, box)


def to_input_grid(values_kji: np.ndarray, window: Image, image: Image) -> Image:
    """A map on the window grid resampled (linear) onto ``image``'s grid; zero outside the window.

    Only the part of the input grid the window covers is resampled, so a small patch on a big CT stays cheap.
    """
    points = grid_corners(window.ijk_to_ras, window.size_ijk, pad=0.5)
    inverse = np.linalg.inv(image.ijk_to_ras)
    ijk = points @ inverse[:3, :3].T + inverse[:3, 3]
    size = np.array(image.size_ijk)
    start = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, size)
    stop = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, size)
    out = np.zeros(image.shape, dtype=np.float32)
    if np.any(stop <= start):
        return image.with_array(out, modality="")
    affine = image.ijk_to_ras.copy()
    affine[:3, 3] = image.ijk_to_ras[:3, :3] @ start + image.ijk_to_ras[:3, 3]
    shape_kji = (int(stop[2] - start[2]), int(stop[1] - start[1]), int(stop[0] - start[0]))
    source = Image(values_kji.astype(np.float32), window.ijk_to_ras)
    part = resample_array(source, affine, shape_kji, linear=True, fill=0.0)
    out[start[2] : stop[2], start[1] : stop[1], start[0] : stop[0]] = part
    return image.with_array(out, modality="")
