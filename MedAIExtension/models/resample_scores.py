"""Mapping class scores from the model grid back onto the input grid, then arg-maxing them.

The reference method resamples every class channel onto the input grid with linear interpolation and takes
the arg-max there (sub-voxel boundaries for small structures). :func:`scores_to_labels` gives the same labels
much faster and with far less memory: a linear interpolation is a convex combination of the 8 surrounding
model-grid voxels, so wherever those 8 voxels share one arg-max label, the interpolated arg-max is that label
too. Only input voxels in "mixed" cells (near label boundaries) are interpolated, channel by channel; all
others take their cell's label. Work is done in slabs of input slices, so no full-size float array exists.
"""

from __future__ import annotations

import numpy as np

from MedAIExtension.io.image import Image
from MedAIExtension.models.preprocessing import resample_to_grid

__all__ = ["channel_argmax", "scores_to_labels", "scores_to_labels_reference"]

_MIXED = 255


def scores_to_labels_reference(scores: np.ndarray, model_ijk_to_ras: np.ndarray, target: Image) -> np.ndarray:
    """Per-channel SimpleITK linear resampling onto ``target``'s grid, then arg-max (the plain method)."""
    best: np.ndarray | None = None
    labels = np.zeros(target.shape, dtype=np.uint8)
    for channel in range(scores.shape[0]):
        channel_image = Image(np.ascontiguousarray(scores[channel]), model_ijk_to_ras)
        resampled = resample_to_grid(channel_image, target.ijk_to_ras, target.shape, linear=True, fill=-1e4).array
        if best is None:
            best = resampled
        else:
            better = resampled > best
            labels[better] = channel
            np.maximum(best, resampled, out=best)
    return labels


def channel_argmax(scores: np.ndarray) -> np.ndarray:
    """``np.argmax(scores, axis=0)`` as uint8 (first channel wins ties), several times faster for few channels.

    NumPy's arg-max along the leading axis walks memory with a large stride; comparing whole channels
    element-wise streams through contiguous memory instead.
    """
    if scores.shape[0] > 255:
        return np.argmax(scores, axis=0).astype(np.uint8)
    labels = np.zeros(scores.shape[1:], dtype=np.uint8)
    best = scores[0].copy()
    for channel in range(1, scores.shape[0]):
        better = scores[channel] > best
        labels[better] = channel
        np.maximum(best, scores[channel], out=best)
    return labels


def _cell_labels(model_labels: np.ndarray) -> np.ndarray:
    """For each cell of 2×2×2 model voxels: their common label, or 255 when they differ."""
    corner = model_labels[:-1, :-1, :-1]
    cells = corner.copy()
    for dk in (0, 1):
        for dj in (0, 1):
            for di in (0, 1):
                if dk == dj == di == 0:
                    continue
                other = model_labels[dk : dk + cells.shape[0], dj : dj + cells.shape[1], di : di + cells.shape[2]]
                cells[other != corner] = _MIXED
    return cells


def _axis_aligned(scores: np.ndarray, cells: np.ndarray, mapping: np.ndarray, target: Image) -> np.ndarray:
    """Fast path when each target axis maps onto one model axis (no rotation): separable 1-D index arrays."""
    from scipy.ndimage import map_coordinates

    model_shape_ijk = np.array(scores.shape[1:][::-1], dtype=np.float64)  # (I', J', K')
    axes, coords, inside, cell_idx = [], [], [], []
    for axis, size in enumerate(target.size_ijk):  # target i, j, k
        model_axis = int(np.argmax(np.abs(mapping[:3, axis])))
        p = np.arange(size, dtype=np.float64) * mapping[model_axis, axis] + mapping[model_axis, 3]
        limit = model_shape_ijk[model_axis]
        inside.append((p >= -0.5) & (p < limit - 0.5))
        p = np.clip(p, 0.0, limit - 1.0)
        axes.append(model_axis)
        coords.append(p)
        cell_idx.append(np.minimum(p.astype(np.int64), int(limit) - 2))
    # cells are indexed (k', j', i'); reorder them to the target's (k, j, i)
    cell_axis = {0: 2, 1: 1, 2: 0}  # model i'/j'/k' -> array axis of `cells`
    order = [cell_axis[axes[2]], cell_axis[axes[1]], cell_axis[axes[0]]]
    # separable gather: rows and columns first (a model-sized array), then the long axis slab by slab, so
    # each step streams through memory instead of one 3-D fancy index over every target voxel
    rows = np.take(np.take(cells.transpose(order), cell_idx[2], axis=0), cell_idx[1], axis=1)
    labels = np.empty(target.shape, dtype=np.uint8)
    for k0 in range(0, labels.shape[0], 8):
        np.take(rows[k0 : k0 + 8], cell_idx[0], axis=2, out=labels[k0 : k0 + 8], mode="clip")
    del rows
    labels[~inside[2]] = 0
    labels[:, ~inside[1]] = 0
    labels[:, :, ~inside[0]] = 0
    flat = np.flatnonzero(labels == _MIXED)
    if flat.size:
        mixed = np.unravel_index(flat, labels.shape)
        # model coordinates (k', j', i') of the mixed target voxels
        per_target = {2: coords[2][mixed[0]], 1: coords[1][mixed[1]], 0: coords[0][mixed[2]]}
        model_coords: list[np.ndarray] = [np.empty(0)] * 3
        for target_axis, model_axis in enumerate(axes):
            model_coords[2 - model_axis] = per_target[target_axis]
        points = np.stack(model_coords)
        del mixed, per_target, model_coords
        best = map_coordinates(scores[0], points, order=1, mode="nearest", prefilter=False)
        winner = np.zeros(best.shape, dtype=np.uint8)
        for channel in range(1, scores.shape[0]):
            value = map_coordinates(scores[channel], points, order=1, mode="nearest", prefilter=False)
            better = value > best
            winner[better] = channel
            np.maximum(best, value, out=best)
        labels.reshape(-1)[flat] = winner
    return labels


def scores_to_labels(scores: np.ndarray, model_ijk_to_ras: np.ndarray, target: Image, slab: int = 16) -> np.ndarray:
    """Arg-max labels on ``target``'s grid of the linearly interpolated ``scores`` (C, K', J', I').

    Same result as :func:`scores_to_labels_reference` (ITK's linear interpolation: points up to half a voxel
    outside the model grid are clamped to its edge; points farther out are background).
    """
    from scipy.ndimage import map_coordinates

    channels = scores.shape[0]
    model_shape = np.array(scores.shape[1:])
    if channels > 255 or np.any(model_shape < 2):
        return scores_to_labels_reference(scores, model_ijk_to_ras, target)
    model_labels = channel_argmax(scores)
    cells = _cell_labels(model_labels)
    # target index (i, j, k) -> model continuous index (i', j', k')
    mapping = np.linalg.inv(model_ijk_to_ras) @ target.ijk_to_ras
    linear = mapping[:3, :3]
    if np.count_nonzero(np.abs(linear) > 1e-9) == 3 and np.all(np.count_nonzero(np.abs(linear) > 1e-9, axis=0) == 1):
        return _axis_aligned(scores, cells, mapping, target)
    size_i, size_j, size_k = target.size_ijk
    limits = model_shape[::-1].astype(np.float64)  # (I', J', K')
    ii = np.arange(size_i, dtype=np.float64)
    jj = np.arange(size_j, dtype=np.float64)
    plane = (
        ii[None, :, None] * mapping[:3, 0][None, None, :]
        + jj[:, None, None] * mapping[:3, 1][None, None, :]
        + mapping[:3, 3][None, None, :]
    )  # (J, I, 3)
    out = np.zeros(target.shape, dtype=np.uint8)
    for k0 in range(0, size_k, slab):
        k1 = min(k0 + slab, size_k)
        ks = np.arange(k0, k1, dtype=np.float64)
        points = plane[None] + ks[:, None, None, None] * mapping[:3, 2]  # (nk, J, I, 3) in (i', j', k')
        inside = np.all((points >= -0.5) & (points < limits - 0.5), axis=-1)
        np.clip(points, 0.0, limits - 1.0, out=points)
        cell = np.minimum(points.astype(np.int64), (limits - 2).astype(np.int64))
        labels = cells[cell[..., 2], cell[..., 1], cell[..., 0]]
        labels[~inside] = 0
        mixed = inside & (labels == _MIXED)
        if mixed.any():
            coords = points[mixed][:, ::-1].T  # (3, N) in (k', j', i')
            best = map_coordinates(scores[0], coords, order=1, mode="nearest", prefilter=False)
            winner = np.zeros(best.shape, dtype=np.uint8)
            for channel in range(1, channels):
                value = map_coordinates(scores[channel], coords, order=1, mode="nearest", prefilter=False)
                better = value > best
                winner[better] = channel
                np.maximum(best, value, out=best)
            labels[mixed] = winner
        out[k0:k1] = labels
    return out
