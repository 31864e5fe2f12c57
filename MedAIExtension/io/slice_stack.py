"""Ordering the slices (or frames) of a volume along their normal, and checking they form one regular stack.

Shared by the single-frame series reader and the multi-frame reader, so both refuse the same broken stacks
(duplicates, missing slices, uneven spacing, gantry tilt) with the same advice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from MedAIExtension.errors import GeometryError
from MedAIExtension.io.geometry import LPS_TO_RAS

__all__ = ["DUPLICATE_MM", "SPACING_TOLERANCE", "stack_affine", "stack_order"]

#: Relative tolerance on slice spacing (and pixel spacing) within one volume.
SPACING_TOLERANCE = 0.01
#: Two slices closer than this (mm) along the normal share a position.
DUPLICATE_MM = 1e-3


def stack_order(
    positions: np.ndarray, normal: np.ndarray, *, unit: str = "slice", whole: str = "series"
) -> tuple[np.ndarray, np.ndarray]:
    """Sort slice positions along ``normal`` and check they form one evenly spaced stack along it.

    Args:
        positions: (N, 3) slice positions (ImagePositionPatient, LPS mm), N ≥ 2.
        normal: unit slice normal.
        unit: what one position is called in messages (``"slice"``, ``"frame"``).
        whole: what the stack is called in messages (``"series"``, ``"multi-frame image"``).

    Returns:
        The sorting order (indices into ``positions``) and the step vector from one sorted slice to the next.

    Raises:
        GeometryError: duplicate positions, missing slices, uneven spacing, or slices not stacked along their
            normal — each with what to do.
    """
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    steps = np.diff(along)
    if np.any(steps < DUPLICATE_MM):
        raise GeometryError(
            f"Two or more {unit}s of this {whole} share the same position (duplicate files or several acquisitions "
            "in one series). Remove the duplicates or pick one acquisition."
        )
    median = float(np.median(steps))
    if np.any(np.abs(steps - median) > SPACING_TOLERANCE * median + 1e-3):
        worst = int(np.argmax(np.abs(steps - median)))
        if steps[worst] > 1.5 * median:
            missing = round(steps[worst] / median) - 1
            raise GeometryError(
                f"The {whole} is missing about {missing} {unit}(s) between positions {along[worst]:.2f} and "
                f"{along[worst + 1]:.2f} mm (gap {steps[worst]:.2f} mm, usual spacing {median:.2f} mm). "
                f"Re-export the complete {whole}."
            )
        raise GeometryError(
            f"The {unit} spacing is uneven (from {steps.min():.3f} to {steps.max():.3f} mm). MedAI needs evenly "
            f"spaced {unit}s; resample the {whole} to a regular grid (e.g. in Slicer) first."
        )
    sorted_positions = positions[order]
    step_vector = (sorted_positions[-1] - sorted_positions[0]) / (len(order) - 1)
    if np.linalg.norm(np.cross(step_vector / np.linalg.norm(step_vector), normal)) > 1e-3:
        raise GeometryError(
            f"The {unit}s are not stacked along their normal (gantry tilt or sheared stack). "
            f"Correct the tilt / resample the {whole} to a regular grid first."
        )
    return order, step_vector


def stack_affine(
    orientation: np.ndarray, pixel_spacing: Sequence[float] | np.ndarray, step_vector: np.ndarray, origin: np.ndarray
) -> np.ndarray:
    """The IJK-to-RAS affine of a sorted stack.

    Args:
        orientation: ImageOrientationPatient (row direction, then column direction; LPS).
        pixel_spacing: PixelSpacing (row spacing, column spacing) in mm.
        step_vector: LPS step from one sorted slice to the next (from :func:`stack_order`).
        origin: ImagePositionPatient of the first sorted slice (LPS mm).
    """
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(orientation[:3], dtype=float) * pixel_spacing[1]
    lps[:3, 1] = np.asarray(orientation[3:], dtype=float) * pixel_spacing[0]
    lps[:3, 2] = step_vector
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps
