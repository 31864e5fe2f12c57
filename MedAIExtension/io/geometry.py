"""Coordinate-system conversions: LPS (DICOM, ITK) <-> RAS (Slicer, NIfTI) and IJK <-> physical space.

Conventions used throughout MedAIExtension:

* Voxel arrays are indexed ``array[k, j, i]`` (slice, row, column), the numpy order of SimpleITK and Slicer.
* An affine is a 4x4 matrix that maps the homogeneous index ``(i, j, k, 1)`` to millimetres.
* ``ijk_to_ras`` is the primary affine (as in Slicer's ``vtkMRMLVolumeNode::GetIJKToRASMatrix``);
  ``ijk_to_lps`` differs only by the sign of the first two rows.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LPS_TO_RAS",
    "affine_from_parts",
    "affine_parts",
    "ijk_to_physical",
    "lps_to_ras",
    "physical_to_ijk",
    "ras_to_lps",
]

#: Flips the sign of x and y: LPS <-> RAS (the matrix is its own inverse).
LPS_TO_RAS: np.ndarray = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(matrix_or_points: np.ndarray) -> np.ndarray:
    """Convert a 4x4 affine (to LPS) into one to RAS, or an (N, 3) array of LPS points into RAS points."""
    m = np.asarray(matrix_or_points, dtype=float)
    if m.shape == (4, 4):
        return LPS_TO_RAS @ m
    return m * np.array([-1.0, -1.0, 1.0])


def ras_to_lps(matrix_or_points: np.ndarray) -> np.ndarray:
    """Convert a 4x4 affine (to RAS) into one to LPS, or an (N, 3) array of RAS points into LPS points."""
    return lps_to_ras(matrix_or_points)


def affine_from_parts(origin: np.ndarray, spacing: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Build an IJK-to-physical affine from origin (3,), spacing (3,) and a 3x3 direction (columns = axes)."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction, dtype=float) @ np.diag(np.asarray(spacing, dtype=float))
    affine[:3, 3] = np.asarray(origin, dtype=float)
    return affine


def affine_parts(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split an affine into (origin, spacing, direction); spacing are the column norms."""
    affine = np.asarray(affine, dtype=float)
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise ValueError("affine has a zero-length axis")
    return affine[:3, 3].copy(), spacing, linear / spacing


def ijk_to_physical(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Map (N, 3) continuous indices (i, j, k) to physical points with ``affine``."""
    ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def physical_to_ijk(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 3) physical points to continuous indices (i, j, k) with the inverse of ``affine``."""
    points = np.atleast_2d(np.asarray(points, dtype=float))
    inverse = np.linalg.inv(affine)
    return points @ inverse[:3, :3].T + inverse[:3, 3]
