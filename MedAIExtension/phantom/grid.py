"""Voxel grids for the phantom: standard acquisition directions, :func:`make_affine` and chunked coordinates.

The phantom's anatomy lives in physical RAS millimetres; a grid only decides where it is sampled. Directions
are 3x3 matrices whose *columns* are the RAS unit vectors of the i, j and k axes (as ``Image.direction_ras``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.geometry import affine_from_parts

__all__ = ["AXIAL", "CORONAL", "SAGITTAL", "make_affine", "normalized_direction"]

#: DICOM axial with identity LPS orientation: i -> patient left, j -> posterior, k -> superior. Viewed in array
#: order, row 0 is anterior and column 0 is the patient's right (the radiological convention).
AXIAL: np.ndarray = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
#: DICOM sagittal (ImageOrientationPatient 0\1\0\0\0\-1): i -> posterior, j -> inferior, k -> patient right.
SAGITTAL: np.ndarray = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
#: DICOM coronal (ImageOrientationPatient 1\0\0\0\0\-1): i -> patient left, j -> inferior, k -> posterior.
CORONAL: np.ndarray = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])

_MIN_ABS_DET = 1e-3


def normalized_direction(direction_ras: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Validate a 3x3 direction matrix (columns = axes) and scale its columns to unit length.

    Args:
        direction_ras: 3x3 matrix whose columns are the RAS directions of i, j and k.

    Returns:
        The matrix with unit columns, as float64.

    Raises:
        InputError: if it is not a finite, non-degenerate 3x3 matrix.
    """
    try:
        matrix = np.array(direction_ras, dtype=float)
    except (TypeError, ValueError) as error:
        raise InputError(f"direction_ras must be a 3x3 matrix of numbers, got {direction_ras!r}") from error
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        raise InputError(f"direction_ras must be a finite 3x3 matrix (columns = i, j, k axes), got {matrix.tolist()}")
    norms = np.linalg.norm(matrix, axis=0)
    if np.any(norms <= 0):
        raise InputError("direction_ras has a zero column; give each of i, j, k a direction.")
    matrix = matrix / norms
    if abs(np.linalg.det(matrix)) < _MIN_ABS_DET:
        raise InputError(
            "direction_ras is degenerate (two axes are parallel); use three independent axis directions, "
            "e.g. phantom.AXIAL, SAGITTAL or CORONAL."
        )
    return matrix


def make_affine(
    size_ijk: Sequence[int],
    spacing: Sequence[float],
    direction_ras: Sequence[Sequence[float]] | np.ndarray | None = None,
    center_ras: Sequence[float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """Build an IJK-to-RAS affine whose volume is centred at ``center_ras``.

    Args:
        size_ijk: number of voxels along i, j, k (columns, rows, slices).
        spacing: voxel spacing along i, j, k in millimetres.
        direction_ras: 3x3 matrix, columns = RAS unit vectors of i, j, k; default :data:`AXIAL`.
        center_ras: RAS position of the centre of the volume (midway between the first and last voxel centres).

    Returns:
        The 4x4 ``ijk_to_ras`` matrix.
    """
    size = np.asarray(size_ijk, dtype=float)
    spacing_arr = np.asarray(spacing, dtype=float)
    if size.shape != (3,) or spacing_arr.shape != (3,) or np.any(spacing_arr <= 0) or np.any(size < 1):
        raise InputError(f"size_ijk and spacing need three positive values each, got {size_ijk!r}, {spacing!r}")
    direction = normalized_direction(AXIAL if direction_ras is None else direction_ras)
    linear = direction @ np.diag(spacing_arr)
    origin = np.asarray(center_ras, dtype=float) - linear @ ((size - 1.0) / 2.0)
    return affine_from_parts(origin, spacing_arr, direction)


Block = tuple[slice, slice, slice]


class ChunkGrid:
    """Coordinates of voxel centres in the anatomy frame, produced slab by slab (a few slices at a time).

    The anatomy frame is RAS translated so that the phantom's anatomical centre is the origin.
    """

    def __init__(self, ijk_to_ras: np.ndarray, shape_kji: tuple[int, int, int], frame_origin_ras: np.ndarray):
        self.affine = np.asarray(ijk_to_ras, dtype=float)
        self.shape = shape_kji
        self.linear = self.affine[:3, :3]
        self.offset = self.affine[:3, 3] - np.asarray(frame_origin_ras, dtype=float)
        self.spacing = np.linalg.norm(self.linear, axis=0)
        self.units = self.linear / self.spacing  # columns: unit direction of i, j, k
        self.inverse = np.linalg.inv(self.linear)
        self.min_width = float(self.spacing.min()) * 0.5
        self.mean_width = float(np.cbrt(abs(np.linalg.det(self.linear))))
        # An axis-permutation direction (axial, sagittal, coronal in any order) allows a cheaper width formula.
        rounded = np.abs(np.rint(self.units))
        self._axis_spacing: np.ndarray | None = None
        if np.allclose(np.abs(self.units), rounded, atol=1e-9) and np.allclose(rounded.sum(axis=0), 1.0):
            self._axis_spacing = (rounded @ self.spacing).astype(np.float32)  # spacing seen along x, y, z

    def slab(self, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Anatomy-frame x, y, z (float32, shape ``(k1-k0, J, I)``) of the voxel centres of slices k0..k1-1."""
        _, nj, ni = self.shape
        i = np.arange(ni, dtype=np.float64)
        j = np.arange(nj, dtype=np.float64)
        k = np.arange(k0, k1, dtype=np.float64)
        out = []
        for axis in range(3):
            a_i, a_j, a_k = self.linear[axis]
            kj = (self.offset[axis] + a_k * k)[:, None, None] + (a_j * j)[None, :, None]
            out.append((kj.astype(np.float32) + (a_i * i).astype(np.float32)[None, None, :]).astype(np.float32))
        return out[0], out[1], out[2]

    def slab_float64(self, block: Block, k0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact (float64) anatomy-frame coordinates of a block of the slab that starts at slice ``k0``."""
        ks, js, is_ = block
        k = np.arange(ks.start + k0, ks.stop + k0, dtype=np.float64)[:, None, None]
        j = np.arange(js.start, js.stop, dtype=np.float64)[None, :, None]
        i = np.arange(is_.start, is_.stop, dtype=np.float64)[None, None, :]
        x, y, z = (
            self.offset[a] + self.linear[a, 0] * i + self.linear[a, 1] * j + self.linear[a, 2] * k for a in range(3)
        )
        return x, y, z

    def index_ranges(self, lows: np.ndarray, highs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index ranges ``[first, last)`` (N x 3, i j k, clipped to the grid) covering N anatomy-frame boxes."""
        lows = np.atleast_2d(np.asarray(lows, dtype=float))
        highs = np.atleast_2d(np.asarray(highs, dtype=float))
        first = np.full(lows.shape, np.inf)
        last = np.full(lows.shape, -np.inf)
        for bits in itertools.product((0, 1), repeat=3):
            corner = np.where(np.array(bits, dtype=bool), highs, lows)
            ijk = (corner - self.offset) @ self.inverse.T
            np.minimum(first, ijk, out=first)
            np.maximum(last, ijk, out=last)
        size = np.array(self.shape[::-1])
        first = np.clip(np.floor(first), 0, size).astype(int)
        last = np.clip(np.ceil(last) + 1, 0, size).astype(int)
        return first, last

    def block(self, low: np.ndarray, high: np.ndarray, k0: int, k1: int) -> Block | None:
        """Index block (relative to the slab k0..k1) covering the anatomy-frame box ``[low, high]``; None if empty."""
        first, last = self.index_ranges(low, high)
        return slab_block(first[0], last[0], k0, k1)

    def width(self, nx: np.ndarray, ny: np.ndarray, nz: np.ndarray | None) -> np.ndarray:
        """Extent of a voxel along the unit normal (nx, ny, nz): the width of the partial-volume ramp (mm).

        A box voxel crosses a plane with normal n over ``sum_a spacing_a * |n . u_a|``; a thick slice therefore
        blurs surfaces that cross it, as a real slice profile does.
        """
        if self._axis_spacing is not None:
            sx, sy, sz = (float(v) for v in self._axis_spacing)
            w = np.abs(nx) * sx
            w += np.abs(ny) * sy
            if nz is not None:
                w += np.abs(nz) * sz
        else:
            w = np.zeros(np.shape(nx), dtype=np.float32)
            for a in range(3):
                ux, uy, uz = (float(v) for v in self.units[:, a])
                dot = nx * ux + ny * uy
                if nz is not None:
                    dot += nz * uz
                w += np.abs(dot) * float(self.spacing[a])
        np.maximum(w, self.min_width, out=w)
        return w


def slab_block(first: np.ndarray, last: np.ndarray, k0: int, k1: int) -> Block | None:
    """The part of the index range ``[first, last)`` (i, j, k) inside slices k0..k1, relative to the slab."""
    ka, kb = max(int(first[2]), k0), min(int(last[2]), k1)
    if ka >= kb or first[0] >= last[0] or first[1] >= last[1]:
        return None
    return slice(ka - k0, kb - k0), slice(int(first[1]), int(last[1])), slice(int(first[0]), int(last[0]))


def intersect(a: Block, b: Block) -> tuple[Block, Block] | None:
    """Intersection of two blocks: (absolute block, block relative to ``b``), or None if they do not overlap."""
    absolute = []
    relative = []
    for sa, sb in zip(a, b, strict=True):
        lo, hi = max(sa.start, sb.start), min(sa.stop, sb.stop)
        if lo >= hi:
            return None
        absolute.append(slice(lo, hi))
        relative.append(slice(lo - sb.start, hi - sb.start))
    return (absolute[0], absolute[1], absolute[2]), (relative[0], relative[1], relative[2])
