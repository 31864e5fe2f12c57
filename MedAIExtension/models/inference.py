"""The inference engine: prepare the input, MONAI sliding-window inference, map the result back, clean it up.

Speed comes from four things, all exact up to window-blending effects at the crop border: the input is
cropped to the body (largest region above the catalogue's ``crop_foreground_above``) *before* resampling,
windows are batched, ONNX Runtime runs the graph with full optimisation, and the scores are mapped back onto
the (cropped) input grid by :func:`~MedAIExtension.models.resample_scores.scores_to_labels`, which equals
per-channel linear resampling + arg-max (sub-voxel boundaries for small structures) but only interpolates
near label boundaries. Post-processing runs on the crop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.models.backends import Backend
from MedAIExtension.models.catalog import ModelEntry
from MedAIExtension.models.preprocessing import (
    crop_grid,
    crop_image,
    foreground_bounding_box,
    grid_corners,
    model_grid,
    normalize_intensity,
    resample_to_grid,
)
from MedAIExtension.models.resample_scores import channel_argmax, scores_to_labels
from MedAIExtension.progress import Progress

__all__ = ["InferenceOptions", "InferenceResult", "count_windows", "postprocess_labelmap", "run_inference"]


@dataclass(frozen=True)
class InferenceOptions:
    """Per-run settings; ``None`` means "take the catalogue's value"."""

    overlap: float | None = None
    batch_size: int | None = None
    roi_size: tuple[int, int, int] | None = None
    mode: str | None = None
    crop_foreground: bool = True
    postprocess: bool = True

    def __post_init__(self) -> None:
        if self.overlap is not None and not 0.0 <= self.overlap < 1.0:
            raise InputError(f"Window overlap must be in [0, 1), got {self.overlap}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"Window batch size must be at least 1, got {self.batch_size}.")
        if self.roi_size is not None and (len(self.roi_size) != 3 or min(self.roi_size) < 8):
            raise InputError(f"ROI size must be three integers ≥ 8, got {self.roi_size}.")


@dataclass(frozen=True)
class InferenceResult:
    """A label map on the input grid plus facts about the run."""

    labelmap: Image
    provider: str
    seconds: float
    windows: int
    model_grid_shape: tuple[int, int, int]


def count_windows(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> int:
    """Number of sliding windows for ``shape`` (spatial), ``roi`` and ``overlap`` (as MONAI places them)."""
    count = 1
    for size, window in zip(shape, roi, strict=True):
        if window >= size:
            continue
        interval = max(int(window * (1 - overlap)), 1)
        count *= math.ceil((size - window) / interval) + 1
    return count


def _sliding_window(
    data: np.ndarray,
    backend: Backend,
    roi: tuple[int, int, int],
    overlap: float,
    batch_size: int,
    mode: str,
    progress: Progress,
) -> tuple[np.ndarray, int]:
    import torch
    from monai.inferers import sliding_window_inference

    total = max(count_windows(data.shape, roi, overlap), 1)
    done = [0]

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        progress(min(done[0] / total, 1.0), f"window {min(done[0] + 1, total)}/{total}")
        out = torch.from_numpy(backend.predict(batch.numpy()))
        done[0] += batch.shape[0]
        return out

    with torch.inference_mode():
        tensor = torch.from_numpy(data[None, None])
        scores = sliding_window_inference(
            tensor, roi_size=roi, sw_batch_size=batch_size, predictor=predictor, overlap=overlap, mode=mode
        )
    progress(1.0, f"{total} windows done")
    return scores[0].numpy(), done[0]


def _snap_to_windows(
    full_affine: np.ndarray,
    full_shape: tuple[int, int, int],
    crop_affine: np.ndarray,
    crop_shape: tuple[int, int, int],
    roi_kji: tuple[int, ...],
    overlap: float,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Grow a crop of the model grid so its sliding windows fall where they fall on the whole grid.

    MONAI places windows at multiples of the interval and the last one flush with the end; a crop that starts on
    a multiple of the interval and ends a whole number of intervals after its first window (or at the grid's end)
    gets exactly the windows of the whole grid, so the blended scores inside agree.
    """
    inverse = np.linalg.inv(full_affine)
    start_ijk = np.rint(inverse[:3, :3] @ crop_affine[:3, 3] + inverse[:3, 3]).astype(int)
    start = start_ijk[::-1]
    stop = start + np.array(crop_shape)
    new_start, new_stop = [], []
    for axis in range(3):
        size, window = full_shape[axis], int(roi_kji[axis])
        if window >= size:
            new_start.append(0)
            new_stop.append(size)
            continue
        interval = max(int(window * (1 - overlap)), 1)
        first = (int(start[axis]) // interval) * interval
        steps = max(math.ceil((int(stop[axis]) - first - window) / interval), 0)
        new_start.append(first)
        new_stop.append(min(first + window + steps * interval, size))
    affine = full_affine.copy()
    affine[:3, 3] = full_affine[:3, :3] @ np.array(new_start[::-1], dtype=float) + full_affine[:3, 3]
    shape = tuple(int(b - a) for a, b in zip(new_start, new_stop, strict=True))
    return affine, shape  # type: ignore[return-value]


def _raw_box(image: Image, affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[slice, slice, slice]:
    """The index box of ``image`` that covers the grid (``affine``, ``shape``) plus one voxel for interpolation."""
    points = grid_corners(affine, shape[::-1])
    inverse = np.linalg.inv(image.ijk_to_ras)
    index = points @ inverse[:3, :3].T + inverse[:3, 3]
    low = np.floor(index.min(axis=0)).astype(int) - 1
    high = np.ceil(index.max(axis=0)).astype(int) + 2
    size_ijk = np.array(image.size_ijk)
    low, high = np.clip(low, 0, size_ijk), np.clip(high, 0, size_ijk)
    return tuple(slice(int(low[a]), int(high[a])) for a in (2, 1, 0))  # type: ignore[return-value]


def postprocess_labelmap(labelmap: np.ndarray, entry: ModelEntry, voxel_volume_mm3: float) -> np.ndarray:
    """Keep the N largest components of the listed labels; drop small components of the others (in place).

    Components are 6-connected. Each label is processed inside its own bounding box only.
    """
    from scipy import ndimage

    post = entry.postprocessing
    keep = dict(post.keep_largest_component)
    structure = ndimage.generate_binary_structure(3, 1)
    boxes = ndimage.find_objects(labelmap) if labelmap.size else []
    for label in entry.labels:
        value = label.value
        if value not in keep and post.min_component_mm3 <= 0:
            continue
        if value < 1 or value > len(boxes) or boxes[value - 1] is None:
            continue
        region = labelmap[boxes[value - 1]]  # a view: edits land in ``labelmap``
        mask = region == value
        components, count = ndimage.label(mask, structure=structure)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        sizes[0] = 0
        if value in keep:
            if count <= keep[value]:
                continue
            kept = np.zeros(count + 1, dtype=bool)
            kept[np.argsort(sizes[1:], kind="stable")[::-1][: keep[value]] + 1] = True
            kept[0] = True
        else:
            kept = sizes * voxel_volume_mm3 >= post.min_component_mm3
            kept[0] = True
            if kept.all():
                continue
        region[~kept[components]] = 0  # component 0 is outside the mask and is kept as it is
    return labelmap


def run_inference(
    image: Image,
    entry: ModelEntry,
    backend: Backend,
    options: InferenceOptions | None = None,
    progress: Progress | Callable[[float, str], None] | None = None,
) -> InferenceResult:
    """Segment ``image`` with a loaded ``backend`` described by ``entry``; the label map is on the input grid."""
    options = options or InferenceOptions()
    progress = progress if isinstance(progress, Progress) else Progress(progress)
    started = time.perf_counter()
    spec = entry.input
    roi = tuple(options.roi_size or spec.patch_size)
    overlap = entry.inference.overlap if options.overlap is None else options.overlap
    batch_size = options.batch_size or entry.inference.batch_size
    mode = options.mode or entry.inference.mode

    prep = progress.stage(0.0, 0.1)
    prep(0.0, "preparing input")
    box = None
    if options.crop_foreground and spec.crop_foreground_above is not None:
        box = foreground_bounding_box(image, spec.crop_foreground_above)
    labelmap = np.zeros(image.shape, dtype=np.uint8)
    if box is None and options.crop_foreground and spec.crop_foreground_above is not None:
        prep(1.0, "no foreground: empty result")
        return InferenceResult(
            image.with_array(labelmap), backend.provider, time.perf_counter() - started, 0, (0, 0, 0)
        )
    work = crop_image(image, box) if box is not None else image
    grid = model_grid(image, spec.spacing, spec.orientation)
    if grid is not None and box is not None:
        # same voxel lattice and same window positions as without the crop, then the raw crop that covers it
        roi_kji = roi if spec.axis_order == "kji" else roi[::-1]
        grid = _snap_to_windows(*grid, *crop_grid(*grid, work), roi_kji, overlap)
        box = _raw_box(image, *grid)
        work = crop_image(image, box)
    model_image = resample_to_grid(work, *grid) if grid is not None else work
    prep(0.6, "normalising intensities")
    data = normalize_intensity(model_image.array, spec.normalization)
    if spec.axis_order == "ijk":
        data = np.ascontiguousarray(data.transpose(2, 1, 0))
    prep(1.0, "input ready")

    scores, windows = _sliding_window(data, backend, roi, overlap, batch_size, mode, progress.stage(0.1, 0.85))
    del data
    if spec.axis_order == "ijk":
        scores = scores.transpose(0, 3, 2, 1)

    back = progress.stage(0.85, 0.95)
    back(0.0, "mapping the result onto the input grid")
    if grid is None:
        sub_labels = channel_argmax(scores)
    else:
        sub_labels = scores_to_labels(scores, model_image.ijk_to_ras, work)
    del scores
    channel_values = np.array([0] + [label.value for label in entry.labels], dtype=np.uint8)
    if int(sub_labels.max()) < len(channel_values) and not np.array_equal(
        channel_values, np.arange(len(channel_values))
    ):
        sub_labels = channel_values[sub_labels]  # channel c holds the catalogue's c-th label
    post = progress.stage(0.95, 1.0)
    if options.postprocess:
        post(0.0, "cleaning up the label map")
        postprocess_labelmap(sub_labels, entry, image.voxel_volume_mm3)
    if box is not None:
        labelmap[box] = sub_labels
    else:
        labelmap = sub_labels
    post(1.0, "done")
    return InferenceResult(
        labelmap=image.with_array(labelmap, modality="SEG"),
        provider=backend.provider,
        seconds=time.perf_counter() - started,
        windows=windows,
        model_grid_shape=tuple(int(n) for n in model_image.shape),  # type: ignore[arg-type]
    )
