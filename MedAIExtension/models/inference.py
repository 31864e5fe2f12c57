"""The inference engine: prepare the input, MONAI sliding-window inference, map the result back, clean it up.

Speed comes from these, all exact up to float rounding: the input is cropped to the body (largest region above
the catalogue's ``crop_foreground_above``) *before* resampling, on the whole model grid's window lattice so the
windows fall where they would without the crop; windows are batched; the network runs in its fastest form (ONNX
Runtime with full graph optimisation, or on the CPU torch with batch norms folded and the channels-last-3d layout,
see :mod:`MedAIExtension.models.torch_inference`); the scores are mapped back onto the (cropped) input grid by
:func:`~MedAIExtension.models.resample_scores.scores_to_labels`, which equals per-channel linear resampling +
arg-max (sub-voxel boundaries for small structures) but only interpolates near label boundaries; post-processing
runs on the crop, inside each label's bounding box.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.labels import bincount_slabs, label_boxes
from MedAIExtension.models.backends import Backend
from MedAIExtension.models.catalog import ModelEntry
from MedAIExtension.models.lesion_extent import grow_lesions
from MedAIExtension.models.lesion_filter import LesionComponent, filter_lesions
from MedAIExtension.models.preprocessing import (
    crop_grid,
    crop_image,
    foreground_bounding_box,
    grid_corners,
    model_grid,
    normalize_intensity,
    resample_array,
    resample_normalized,
)
from MedAIExtension.models.resample_scores import channel_argmax, scores_to_labels
from MedAIExtension.progress import Progress

__all__ = [
    "InferenceOptions",
    "InferenceResult",
    "PreparedInput",
    "count_windows",
    "map_to_input",
    "postprocess_labelmap",
    "predict_scores",
    "prepare_input",
    "run_inference",
    "scores_to_labelmap",
]


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
    values = [label.value for label in entry.labels if label.value in keep or post.min_component_mm3 > 0]
    boxes = label_boxes(labelmap, values)
    for value in values:
        if boxes.get(value) is None:
            continue
        region = labelmap[boxes[value]]  # a view: edits land in ``labelmap``
        mask = region == value
        components, count = ndimage.label(mask, structure=structure)
        sizes = bincount_slabs(components, count + 1)
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
        # component 0 is outside the mask and is kept as it is; dropped voxels are few, so find them by index
        # (a boolean-mask write over the whole box is far slower on this strided view)
        dropped = np.flatnonzero(np.logical_not(kept)[components])
        region[np.unravel_index(dropped, region.shape)] = 0
    return labelmap


@dataclass(frozen=True, eq=False)
class PreparedInput:
    """The input as the network sees it, plus what is needed to map results back onto the input grid.

    Built by :func:`prepare_input`; :func:`predict_scores` runs the network on it (as often as needed, e.g. once
    per test-time flip), :func:`scores_to_labelmap` and :func:`map_to_input` bring results back.

    Attributes:
        data: the normalised float32 network input (spatial axes only, in the model's ``axis_order``).
        model_ijk_to_ras: IJK-to-RAS affine of the model grid.
        model_shape: the model grid's array shape ``(K, J, I)``.
        region: the part of the input image (a view of its voxels) that results are mapped onto.
        box: index box ``(k, j, i)`` of ``region`` in the input image; None for the whole image.
        resampled: whether the model grid differs from ``region``'s grid (else results need no resampling).
        axis_order: ``"kji"`` or ``"ijk"``, the order of ``data``'s axes.
        roi: sliding-window size (in ``data``'s axis order).
        overlap: sliding-window overlap.
        batch_size: windows per network call.
        mode: window blending mode (``"gaussian"`` or ``"constant"``).
    """

    data: np.ndarray
    model_ijk_to_ras: np.ndarray
    model_shape: tuple[int, int, int]
    region: Image
    box: tuple[slice, slice, slice] | None
    resampled: bool
    axis_order: str
    roi: tuple[int, int, int]
    overlap: float
    batch_size: int
    mode: str

    def without_data(self) -> PreparedInput:
        """The same geometry without the network input (frees its memory once the scores exist)."""
        return replace(self, data=np.empty((0, 0, 0), dtype=np.float32))


def prepare_input(
    image: Image,
    entry: ModelEntry,
    options: InferenceOptions | None = None,
    progress: Progress | Callable[[float, str], None] | None = None,
) -> PreparedInput | None:
    """Crop ``image`` to the body, resample it onto the model grid and normalise it, as :func:`run_inference` does.

    Returns None when the catalogue asks for a body crop and nothing is above its threshold (empty result).
    """
    options = options or InferenceOptions()
    prep = Progress.of(progress)
    spec = entry.input
    roi = tuple(int(n) for n in (options.roi_size or spec.patch_size))
    overlap = entry.inference.overlap if options.overlap is None else options.overlap
    prep(0.0, "preparing input")
    box = None
    if options.crop_foreground and spec.crop_foreground_above is not None:
        box = foreground_bounding_box(image, spec.crop_foreground_above)
        if box is None:
            prep(1.0, "no foreground: empty result")
            return None
    work = crop_image(image, box) if box is not None else image
    grid = model_grid(image, spec.spacing, spec.orientation)
    if grid is not None and box is not None:
        # same voxel lattice and same window positions as without the crop, then the raw crop that covers it
        roi_kji = roi if spec.axis_order == "kji" else roi[::-1]
        grid = _snap_to_windows(*grid, *crop_grid(*grid, work), roi_kji, overlap)
        box = _raw_box(image, *grid)
        work = crop_image(image, box)
    if grid is not None:
        model_ijk_to_ras, model_shape = grid
        data = resample_normalized(work, model_ijk_to_ras, model_shape, spec.normalization)
    else:
        model_ijk_to_ras, model_shape = work.ijk_to_ras, work.shape
        data = normalize_intensity(work.array, spec.normalization)
    if spec.axis_order == "ijk":
        data = np.ascontiguousarray(data.transpose(2, 1, 0))
    prep(1.0, "input ready")
    return PreparedInput(
        data=data,
        model_ijk_to_ras=model_ijk_to_ras,
        model_shape=tuple(int(n) for n in model_shape),  # type: ignore[arg-type]
        region=work,
        box=box,
        resampled=grid is not None,
        axis_order=spec.axis_order,
        roi=roi,  # type: ignore[arg-type]
        overlap=overlap,
        batch_size=options.batch_size or entry.inference.batch_size,
        mode=options.mode or entry.inference.mode,
    )


def predict_scores(
    prepared: PreparedInput,
    backend: Backend,
    *,
    flip_axes: tuple[int, ...] = (),
    batch_size: int | None = None,
    progress: Progress | Callable[[float, str], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Sliding-window class scores ``(C, K, J, I)`` on the model grid, and the number of windows run.

    ``flip_axes`` (model-grid array axes: 0 = k, 1 = j, 2 = i) mirrors the input before the network sees it and
    mirrors the scores back, so every result lies on the unflipped model grid (test-time augmentation).
    ``batch_size`` overrides the prepared number of windows per network call.
    """
    progress = Progress.of(progress)
    axes = tuple(sorted({int(a) for a in flip_axes}))
    if any(a not in (0, 1, 2) for a in axes):
        raise InputError(f"Flip axes must be model-grid axes 0 (k), 1 (j) or 2 (i), got {flip_axes}.")
    data_axes = axes if prepared.axis_order == "kji" else tuple(2 - a for a in axes)
    data = np.ascontiguousarray(np.flip(prepared.data, data_axes)) if data_axes else prepared.data
    scores, windows = _sliding_window(
        data,
        backend,
        prepared.roi,
        prepared.overlap,
        batch_size or prepared.batch_size,
        prepared.mode,
        progress,
    )
    del data
    if data_axes:
        scores = np.ascontiguousarray(np.flip(scores, tuple(a + 1 for a in data_axes)))
    if prepared.axis_order == "ijk":
        scores = scores.transpose(0, 3, 2, 1)
    return scores, windows


def scores_to_labelmap(
    scores: np.ndarray,
    prepared: PreparedInput,
    entry: ModelEntry,
    image: Image,
    postprocess: bool = True,
    progress: Progress | Callable[[float, str], None] | None = None,
    lesion_scores: list[LesionComponent] | None = None,
) -> np.ndarray:
    """The label map (uint8, catalogue label values) on ``image``'s grid from model-grid ``scores`` (C, K, J, I).

    Arg-max after linear interpolation of the scores (probabilities work too: the arg-max only needs an order
    within each voxel), catalogue values per channel, then :func:`postprocess_labelmap` when ``postprocess``
    (and the catalogue's lesion filter, which appends every component it judged to ``lesion_scores`` when given).
    """
    progress = Progress.of(progress)
    back = progress.stage(0.0, 2 / 3)
    back(0.0, "mapping the result onto the input grid")
    if not prepared.resampled:
        sub_labels = channel_argmax(scores)
    else:
        sub_labels = scores_to_labels(scores, prepared.model_ijk_to_ras, prepared.region)
    channel_values = np.array([0] + [label.value for label in entry.labels], dtype=np.uint8)
    if int(sub_labels.max()) < len(channel_values) and not np.array_equal(
        channel_values, np.arange(len(channel_values))
    ):
        sub_labels = channel_values[sub_labels]  # channel c holds the catalogue's c-th label
    post = progress.stage(2 / 3, 1.0)
    if postprocess:
        post(0.0, "cleaning up the label map")
        postprocess_labelmap(sub_labels, entry, image.voxel_volume_mm3)
        if entry.postprocessing.lesion_filter is not None:  # learned false-positive control (issue 17)
            lesions = entry.postprocessing.lesion_filter
            filter_lesions(sub_labels, prepared.region, lesions, scored=lesion_scores)
            if lesions.extent_logit > 0.0 and lesions.label in channel_values:
                channel = int(np.flatnonzero(channel_values == lesions.label)[0])
                model_grid = prepared.model_ijk_to_ras if prepared.resampled else None
                grow_lesions(
                    sub_labels, scores, prepared.region, channel, lesions.label, lesions.extent_logit, model_grid
                )
    if prepared.box is None or sub_labels.shape == image.shape:
        labelmap = sub_labels
    else:
        labelmap = np.zeros(image.shape, dtype=np.uint8)
        labelmap[prepared.box] = sub_labels
    post(1.0, "done")
    return labelmap


def map_to_input(values: np.ndarray, prepared: PreparedInput, image: Image, fill: float = 0.0) -> np.ndarray:
    """A scalar map on the model grid (``(K, J, I)``) linearly resampled onto ``image``'s grid (float32).

    Voxels outside the body crop (and outside the model grid) get ``fill``.
    """
    values = np.asarray(values, dtype=np.float32)
    if prepared.resampled:
        model_map = Image(np.ascontiguousarray(values), prepared.model_ijk_to_ras)
        region = resample_array(model_map, prepared.region.ijk_to_ras, prepared.region.shape, linear=True, fill=fill)
    else:
        region = values
    if prepared.box is None:
        return np.ascontiguousarray(region, dtype=np.float32)
    out = np.full(image.shape, fill, dtype=np.float32)
    out[prepared.box] = region
    return out


def run_inference(
    image: Image,
    entry: ModelEntry,
    backend: Backend,
    options: InferenceOptions | None = None,
    progress: Progress | Callable[[float, str], None] | None = None,
) -> InferenceResult:
    """Segment ``image`` with a loaded ``backend`` described by ``entry``; the label map is on the input grid."""
    options = options or InferenceOptions()
    progress = Progress.of(progress)
    started = time.perf_counter()
    prepared = prepare_input(image, entry, options, progress.stage(0.0, 0.1))
    if prepared is None:
        return InferenceResult(
            image.with_array(np.zeros(image.shape, dtype=np.uint8)),
            backend.provider,
            time.perf_counter() - started,
            0,
            (0, 0, 0),
        )
    scores, windows = predict_scores(prepared, backend, progress=progress.stage(0.1, 0.85))
    prepared = prepared.without_data()
    labelmap = scores_to_labelmap(scores, prepared, entry, image, options.postprocess, progress.stage(0.85, 1.0))
    del scores
    return InferenceResult(
        labelmap=image.with_array(labelmap, modality="SEG"),
        provider=backend.provider,
        seconds=time.perf_counter() - started,
        windows=windows,
        model_grid_shape=prepared.model_shape,
    )
