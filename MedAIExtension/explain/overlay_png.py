"""Key-slice pictures of an explanation: the image in grey with the map blended in a heat colour scale.

Used for the PNG overlays and the DICOM Secondary Capture (for PACS viewers without overlay support). Each
picture is an orthogonal plane of the input grid through the map's peak, turned the way radiologists read it
(axial/coronal: patient's right on the left of the picture; superior or anterior up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from MedAIExtension.io.image import Image

__all__ = ["KeySlice", "heat_colors", "key_slices"]

_PLANE_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}
# desired RAS direction of picture x (left→right) and y (top→bottom) for each plane (by its normal)
_PICTURE_AXES = {
    2: (np.array([-1.0, 0, 0]), np.array([0, -1.0, 0])),  # axial: x toward patient left, y toward posterior
    1: (np.array([-1.0, 0, 0]), np.array([0, 0, -1.0])),  # coronal: x toward left, y toward inferior
    0: (np.array([0, -1.0, 0]), np.array([0, 0, -1.0])),  # sagittal: x toward posterior, y toward inferior
}


@dataclass(frozen=True, eq=False)
class KeySlice:
    """One picture: plane name, slice index along its array axis, RGB uint8 pixels."""

    plane: str
    index: int
    rgb: np.ndarray


def heat_colors(t: np.ndarray) -> np.ndarray:
    """A black-red-yellow-white heat scale for values in [0, 1] → RGB floats."""
    t = np.clip(t, 0.0, 1.0)
    return np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=-1)


def _grey(image: Image, values: np.ndarray) -> np.ndarray:
    if image.modality == "CT":
        low, high = -1000.0, 400.0
    else:
        low, high = (float(v) for v in np.percentile(image.array, [1, 99]))
        high = high if high > low else low + 1.0
    return np.clip((values.astype(np.float32) - low) / (high - low), 0.0, 1.0)


def _orient(plane: np.ndarray, axes: Sequence[int], image: Image, normal_ras: int) -> tuple[np.ndarray, np.ndarray]:
    """Transpose/flip a 2D slice (array axes ``axes``) so picture x/y follow :data:`_PICTURE_AXES`."""
    directions = {0: image.direction_ras[:, 2], 1: image.direction_ras[:, 1], 2: image.direction_ras[:, 0]}
    spacing = {0: image.spacing[2], 1: image.spacing[1], 2: image.spacing[0]}
    want_x, _ = _PICTURE_AXES[normal_ras]
    a, b = axes
    # the array axis closest to picture x becomes the columns
    if abs(directions[a] @ want_x) > abs(directions[b] @ want_x):
        plane, (row_axis, col_axis) = plane.transpose(1, 0, 2), (b, a)
    else:
        row_axis, col_axis = a, b
    want_x, want_y = _PICTURE_AXES[normal_ras]
    if directions[col_axis] @ want_x < 0:
        plane = plane[:, ::-1]
    if directions[row_axis] @ want_y < 0:
        plane = plane[::-1, :]
    return plane, np.array([spacing[row_axis], spacing[col_axis]])


def _resize(rgb: np.ndarray, spacing_rc: np.ndarray, target: int = 384) -> np.ndarray:
    from PIL import Image as PILImage

    height_mm, width_mm = rgb.shape[0] * spacing_rc[0], rgb.shape[1] * spacing_rc[1]
    scale = target / max(height_mm, width_mm)
    size = (max(int(round(width_mm * scale)), 1), max(int(round(height_mm * scale)), 1))
    return np.asarray(PILImage.fromarray(rgb).resize(size, PILImage.Resampling.BILINEAR))


def key_slices(
    image: Image,
    values: Image,
    window: Sequence[float],
    threshold: float,
    opacity: float = 0.5,
) -> list[KeySlice]:
    """Axial, coronal and sagittal pictures through the peak of ``values`` (a map on ``image``'s grid)."""
    data = values.array
    peak = np.unravel_index(int(np.argmax(data)), data.shape) if np.any(data > 0) else tuple(s // 2 for s in data.shape)
    low, high = float(window[0]), float(window[1])
    pictures = []
    for axis in range(3):
        # which anatomical axis does this array axis (k=0, j=1, i=2) run along?
        direction = image.direction_ras[:, 2 - axis]
        normal = int(np.argmax(np.abs(direction)))
        grey = _grey(image, np.take(image.array, peak[axis], axis=axis))
        heat = np.take(data, peak[axis], axis=axis).astype(np.float32)
        t = (heat - low) / (high - low) if high > low else np.zeros_like(heat)
        shown = heat > threshold
        rgb = np.repeat(grey[..., None], 3, axis=2)
        rgb[shown] = (1 - opacity) * rgb[shown] + opacity * heat_colors(t[shown])
        rest = [a for a in range(3) if a != axis]
        plane, spacing = _orient(rgb, rest, image, normal)
        pixels = _resize((np.clip(plane, 0, 1) * 255).astype(np.uint8), spacing)
        pictures.append(KeySlice(_PLANE_NAMES[normal], int(peak[axis]), pixels))
    order = {"axial": 0, "coronal": 1, "sagittal": 2}
    return sorted(pictures, key=lambda p: order[p.plane])
