"""Occlusion sensitivity for any model (ONNX Runtime included), batched, with an exact fast path for torch chains.

A box of ``mask_size`` voxels slides over the input with ``stride``; for every position the box is replaced by the
baseline value and the target's score (probability) is recorded. Each voxel gets the mean score over the windows
that covered it (the *raw map*); the *sensitivity map* is the unoccluded score minus the raw map, so positive
values mark voxels whose occlusion lowers the score (important for the decision).

Window placement and blending are those of :class:`monai.visualize.OcclusionSensitivity` with
``overlap = 1 - stride / mask_size``: MONAI's sliding-window scan (``stride`` apart along each axis, the last
window moved back to end at the image border), a plain average over overlapping windows for a constant baseline
(MONAI ``mode=<float>`` or ``"mean_img"``), and for ``baseline="gaussian"`` MONAI's Gaussian occlusion with its
Gaussian-weighted average. So the maps agree with MONAI's for the same model (with MONAI's ``activate`` set to the
same softmax: MONAI itself picks sigmoid or softmax from the number of *input* channels).

Speed comes from doing less network work, never from approximating:

- windows whose occlusion changes no input voxel (the box already equals the baseline) are not run: their score
  is the unoccluded score;
- with ``roi`` only the windows touching the ROI are run;
- given the torch ``module`` behind ``predict`` and a chain network (local layers, a global average pool, a head —
  the shipped classifier and its TorchScript export), each occluded forward pass is computed incrementally on the
  changed receptive-field cone only (:mod:`MedAIExtension.explain.occlusion_incremental`), after checking once
  that this reproduces the module's own output; otherwise batches of occluded images go through ``predict``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError, MedAIError, ModelError
from MedAIExtension.explain.occlusion_incremental import IncrementalOcclusion, NotAChainError, decompose_chain
from MedAIExtension.explain.torch_model import torch_device
from MedAIExtension.explain.types import ScoreTarget
from MedAIExtension.models.memory import free_gpu_memory, is_out_of_memory
from MedAIExtension.progress import Progress, ProgressCallback

__all__ = ["OcclusionResult", "occlusion_sensitivity", "occlusion_windows"]

#: Agreement (probabilities) needed between the incremental path and the module's own output before it is used.
_VERIFY_ATOL = 1e-5

#: Upper bound of the windows per batch of the incremental path (its windows need little memory each).
_MAX_INCREMENTAL_BATCH = 128

_OUT_OF_MEMORY = (
    "Out of memory while running the model on one image; free memory (close other programs), crop the image "
    "or use a smaller ROI, and try again."
)


@dataclass
class OcclusionResult:
    """An occlusion-sensitivity map on the network input grid ``S``.

    Attributes:
        raw: float32 ``S``: the target score with the window covering the voxel occluded, averaged over the
            overlapping windows (Gaussian-weighted for ``baseline="gaussian"``); the unoccluded score outside the
            ROI.
        sensitivity: float32 ``S``: ``base_score - raw`` (positive = occluding it lowers the score); 0 outside the
            ROI.
        base_score: the target score of the unoccluded input.
        windows_evaluated: windows whose occluded input went through the network.
        windows_skipped: windows not run because occluding them changes no input voxel (score = base score).
        windows_total: windows of the full scan (those outside the ROI are neither evaluated nor skipped).
        batch_size: windows per batch at the end: smaller than asked after an out-of-memory retry; larger on the
            incremental path, whose windows need a fraction of a full pass's memory (as many as fit in the memory
            of ``batch_size`` full passes, at most 128).
        engine: ``"incremental"`` (exact receptive-field updates of a torch chain) or ``"generic"`` (``predict``).
        mask_size, stride: per spatial dimension.
        baseline: the fill value used (``"gaussian"`` for MONAI's Gaussian occlusion).
        notes: what happened on the way (fallbacks, out-of-memory retries), in words.
    """

    raw: np.ndarray
    sensitivity: np.ndarray
    base_score: float
    windows_evaluated: int
    windows_skipped: int
    windows_total: int
    batch_size: int
    engine: str
    mask_size: tuple[int, ...]
    stride: tuple[int, ...]
    baseline: float | str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (without the maps themselves)."""
        return {
            "method": "occlusion",
            "mask_size": list(self.mask_size),
            "stride": list(self.stride),
            "baseline": self.baseline,
            "base_score": self.base_score,
            "windows_evaluated": self.windows_evaluated,
            "windows_skipped": self.windows_skipped,
            "windows_total": self.windows_total,
            "batch_size": self.batch_size,
            "engine": self.engine,
            "notes": list(self.notes),
        }


def _per_dim(value: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, int | np.integer) else tuple(value)
    if len(values) != n or not all(isinstance(v, int | np.integer) for v in values):
        raise InputError(f"The occlusion {what} must be one integer or {n} integers, got {value!r}.")
    return tuple(int(v) for v in values)


def _axis_starts(size: int, mask: int, stride: int) -> list[int]:
    """Window starts along one axis exactly as MONAI's ``dense_patch_slices`` places them."""
    if mask == size:
        return [0]
    count = next((d for d in range(math.ceil(size / stride)) if d * stride + mask >= size), 0) + 1
    return [min(d * stride, size - mask) for d in range(count)]


def occlusion_windows(
    shape: Sequence[int], mask_size: int | Sequence[int] = 8, stride: int | Sequence[int] = 4
) -> np.ndarray:
    """All occlusion windows of a scan over ``shape``: an int array ``(W, D, 2)`` of ``[start, stop)`` per axis.

    The order and positions are those of MONAI's sliding-window scan (last axis fastest).
    """
    n = len(shape)
    masks, strides = _per_dim(mask_size, n, "mask size"), _per_dim(stride, n, "stride")
    starts = [_axis_starts(int(s), m, t) for s, m, t in zip(shape, masks, strides, strict=True)]
    grid = np.stack(np.meshgrid(*[np.asarray(s) for s in starts], indexing="ij"), axis=-1).reshape(-1, n)
    return np.stack([grid, grid + np.asarray(masks)], axis=-1).astype(np.int64)


def _validate(
    x: np.ndarray, mask_size: Any, stride: Any, roi: Sequence[slice] | None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[slice, ...] | None]:
    shape = x.shape[2:]
    n = len(shape)
    masks, strides = _per_dim(mask_size, n, "mask size"), _per_dim(stride, n, "stride")
    if any(m < 1 for m in masks):
        raise InputError(f"The occlusion mask size must be ≥ 1 voxel, got {masks}; use a positive mask size.")
    if any(m > s for m, s in zip(masks, shape, strict=True)):
        raise InputError(
            f"The occlusion mask {masks} is larger than the image {tuple(shape)}; use a mask size of at most "
            f"{tuple(shape)} voxels."
        )
    if any(t < 1 for t in strides):
        raise InputError(f"The occlusion stride must be ≥ 1 voxel, got {strides}; use a stride of 1 or more.")
    if any(t > m for t, m in zip(strides, masks, strict=True)):
        raise InputError(
            f"The occlusion stride {strides} is larger than the mask {masks}, so some voxels would never be "
            "occluded; use a stride of at most the mask size."
        )
    if roi is None:
        return masks, strides, None
    roi = tuple(roi)
    if len(roi) != n or not all(isinstance(s, slice) for s in roi):
        raise InputError(f"The ROI must be {n} slices (one per image axis), got {roi!r}.")
    clipped = []
    for s, size in zip(roi, shape, strict=True):
        if s.step not in (None, 1):
            raise InputError(f"The ROI slice {s} has a step; give a contiguous box (step 1).")
        start, stop, _ = s.indices(size)
        if stop <= start:
            raise InputError(
                f"The ROI {roi} lies outside the image of shape {tuple(shape)} or is empty; place the ROI over the "
                "image."
            )
        clipped.append(slice(start, stop))
    return masks, strides, tuple(clipped)


@dataclass(frozen=True, eq=False)
class _Occluder:
    """How a window is occluded and how overlapping windows are blended (MONAI's modes).

    ``value``: the box is set to this constant (blending: plain mean). ``multiplier`` (Gaussian mode): the box is
    multiplied by ``1 - gaussian`` (``(C, *mask)``) and windows are blended with a Gaussian importance map.
    """

    value: float
    multiplier: np.ndarray | None = None
    weights: np.ndarray | None = None

    def occluded(self, box: np.ndarray) -> np.ndarray | float:
        """The new values of an image box ``(..., C, *mask)``."""
        return self.value if self.multiplier is None else box * self.multiplier

    def changes(self, box: np.ndarray) -> bool:
        """Whether occluding this box changes any voxel."""
        return not np.array_equal(np.broadcast_to(self.occluded(box), box.shape), box)


def _occluder(x: np.ndarray, baseline: float | str, masks: tuple[int, ...]) -> _Occluder:
    if isinstance(baseline, str):
        choice = baseline.strip().lower()
        if choice in ("mean", "mean_img"):
            return _Occluder(float(np.float32(x.mean(dtype=np.float64))))
        if choice == "gaussian":
            import torch
            from monai.data.utils import compute_importance_map
            from monai.visualize import OcclusionSensitivity

            multiplier, _ = OcclusionSensitivity.gaussian_occlusion(torch.from_numpy(x[:1]), masks)
            weights = compute_importance_map(masks, mode="gaussian", dtype=torch.float32)
            return _Occluder(math.nan, multiplier[0].numpy().astype(np.float32), weights.numpy().astype(np.float64))
        raise InputError(f"Unknown occlusion baseline {baseline!r}; give a number (e.g. 0.0), 'mean' or 'gaussian'.")
    value = float(baseline)
    if not math.isfinite(value):
        raise InputError(f"The occlusion baseline must be a finite number, got {baseline!r}.")
    return _Occluder(value)


def _window_sums(volume: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """The sum of ``volume`` (``S``) inside each window (``(W, D, 2)``), from its summed-volume table."""
    table = np.pad(volume.astype(np.int64 if volume.dtype == bool else np.float64), [(1, 0)] * volume.ndim)
    for axis in range(volume.ndim):
        table = table.cumsum(axis=axis)
    total = np.zeros(len(windows), dtype=table.dtype)
    for corner in itertools.product((0, 1), repeat=volume.ndim):
        sign = -1 if (volume.ndim - sum(corner)) % 2 else 1
        total += sign * table[tuple(windows[:, axis, c] for axis, c in enumerate(corner))]
    return total


def _spread(windows: np.ndarray, values: np.ndarray, masks: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Per voxel, the sum of ``values`` over the windows (all of size ``masks``, distinct starts) that cover it:
    the values placed at the window starts, then a running box sum of the mask's length along every axis."""
    grid = np.zeros(tuple(shape), dtype=np.float64)
    grid[tuple(windows[:, :, 0].T)] = values
    for axis, mask in enumerate(masks):
        running = grid.cumsum(axis=axis)
        grid = running.copy()
        lead = [slice(None)] * len(shape)
        lag = [slice(None)] * len(shape)
        lead[axis], lag[axis] = slice(mask, None), slice(None, -mask)
        grid[tuple(lead)] -= running[tuple(lag)]
    return grid


def _model_failed(error: BaseException) -> ModelError:
    return ModelError(
        f"The model failed on the occluded images ({type(error).__name__}: {str(error)[:300]}). Check that it "
        "accepts a float32 batch of the input's shape and returns one row of outputs per image."
    )


class _BatchRunner:
    """Runs windows in batches, halving the batch on out-of-memory and reporting progress."""

    def __init__(self, batch_size: int, notes: list[str], report: Progress) -> None:
        self.batch_size = batch_size
        self.notes = notes
        self.report = report

    def run(self, windows: np.ndarray, evaluate: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        scores = np.empty(len(windows), dtype=np.float64)
        done = 0
        while done < len(windows):
            self.report(done / max(len(windows), 1), f"Occlusion: window {done} of {len(windows)}")
            chunk = windows[done : done + self.batch_size]
            try:
                scores[done : done + len(chunk)] = evaluate(chunk)
            except MedAIError:
                raise
            except Exception as error:
                if not is_out_of_memory(error):
                    raise _model_failed(error) from error
                if self.batch_size == 1:
                    raise ModelError(_OUT_OF_MEMORY) from error
                free_gpu_memory()
                self.notes.append(f"Out of memory with {self.batch_size} windows per batch; retried with fewer.")
                self.batch_size = max(1, self.batch_size // 2)
                continue
            done += len(chunk)
        self.report(1.0, f"Occlusion: {len(windows)} windows done")
        return scores


def _scores(outputs: Any, target: ScoreTarget) -> np.ndarray:
    values = target.score(outputs, activate=True)
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _window_box(window: np.ndarray, sample: int = 0) -> tuple[int | slice, ...]:
    """The index of ``window`` (rows of start, stop per spatial axis) in sample ``sample`` of an (N, C, *S) array."""
    return (sample, slice(None), *(slice(int(a), int(b)) for a, b in window))


def _generic_evaluator(
    predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, occluder: _Occluder, target: ScoreTarget
) -> Callable[[np.ndarray], np.ndarray]:
    buffer: dict[int, np.ndarray] = {}

    def evaluate(windows: np.ndarray) -> np.ndarray:
        n = len(windows)
        batch = buffer.get(n)
        if batch is None:
            buffer.clear()  # a smaller batch after out-of-memory: drop the big buffer
            batch = np.repeat(x, n, axis=0)
            buffer[n] = batch
        boxes = [_window_box(w, i) for i, w in enumerate(windows)]
        for box in boxes:
            batch[box] = occluder.occluded(batch[box])
        try:
            outputs = predict(batch)
        finally:
            for box in boxes:  # restore only what was occluded
                batch[box] = x[(0, *box[1:])]
        if outputs is None or np.ndim(outputs) < 2 or np.shape(outputs)[0] != n:
            raise ModelError(
                f"The model returned outputs of shape {np.shape(outputs)} for a batch of {n}; it must return one "
                "row per input (N, L) or (N, L, *S). Check the model's batch dimension."
            )
        return _scores(outputs, target)

    return evaluate


def _activated(outputs: Any) -> Any:
    """Probabilities as :meth:`ScoreTarget.score` computes them (softmax over channels, sigmoid for one)."""
    outputs = outputs.float()
    return outputs.sigmoid() if outputs.shape[1] == 1 else outputs.softmax(1)


def _incremental_evaluator(
    module: Any,
    x: np.ndarray,
    masks: tuple[int, ...],
    occluder: _Occluder,
    target: ScoreTarget,
    base_score: float,
    notes: list[str],
) -> tuple[Callable[[np.ndarray], np.ndarray], float, Callable[[np.ndarray], np.ndarray]] | None:
    """The exact receptive-field path for a torch chain module, how many of its windows take the memory of one
    full forward pass and the window order that batches best; None (with a note) when it does not apply."""
    import torch

    module = getattr(module, "module", module)  # a loaded TorchBackend carries its module
    if not isinstance(module, torch.nn.Module):
        notes.append("Generic path (every occluded image through the model): no torch module was given.")
        return None
    try:
        try:
            layers, tail = decompose_chain(module, x.ndim - 2)
        except NotAChainError as reason:
            raise NotAChainError(
                f"the module is not a simple chain of local layers ending in a global average pool ({reason})"
            ) from None
        device = torch_device(None, module)
        tensor = torch.from_numpy(x).to(device)
        engine = IncrementalOcclusion(layers, tail, tensor)
        with torch.inference_mode():
            reference = module(tensor)
        mine = engine.base_output()
        if tuple(mine.shape) != tuple(reference.shape) or not torch.allclose(
            _activated(mine), _activated(reference), atol=_VERIFY_ATOL, rtol=0.0
        ):
            raise NotAChainError("the module's layer-by-layer forward pass differs from its own output")
        own_score = float(_scores(reference, target)[0])
        if abs(own_score - base_score) > 1e-4:
            raise NotAChainError(
                f"the module scores {own_score:.6f} but predict() scores {base_score:.6f}, so it is not the model "
                "that predict() runs"
            )
    except NotAChainError as reason:
        notes.append(f"Generic path (every occluded image through the model): {reason}.")
        return None
    multiplier = None if occluder.multiplier is None else torch.from_numpy(occluder.multiplier).to(device)

    def evaluate(windows: np.ndarray) -> np.ndarray:
        if multiplier is None:
            fill = torch.tensor(occluder.value, dtype=tensor.dtype, device=device)
        else:
            boxes = [tensor[_window_box(w)] for w in windows]
            fill = torch.stack(boxes) * multiplier
        return _scores(engine.outputs(windows, fill), target)

    start = (np.asarray(x.shape[2:]) - np.asarray(masks)) // 2  # a central window has the widest cone
    return evaluate, engine.memory_ratio(np.stack([start, start + np.asarray(masks)], axis=-1)), engine.order


def occlusion_sensitivity(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    target: ScoreTarget,
    *,
    mask_size: int | Sequence[int] = 8,
    stride: int | Sequence[int] = 4,
    baseline: float | str = 0.0,
    roi: Sequence[slice] | None = None,
    batch_size: int = 32,
    module: Any | None = None,
    progress: Progress | ProgressCallback | Callable[[float, str], None] | None = None,
) -> OcclusionResult:
    """Occlusion sensitivity of ``target`` for the network input ``x``.

    Args:
        predict: maps a float32 batch ``(N, C, *S)`` to outputs ``(N, L)`` or ``(N, L, *S)`` (numpy or torch);
            any backend (torch, TorchScript, ONNX Runtime).
        x: the network input ``(1, C, *S)``, float32, already normalised as the model expects.
        target: which score is explained; probabilities (``target.score(..., activate=True)``) are compared.
        mask_size: occluded box size in voxels, one number or one per axis.
        stride: step between windows in voxels (1 ≤ stride ≤ mask size), one number or one per axis.
        baseline: the value written into the occluded box, a number or ``"mean"`` (the image mean); or
            ``"gaussian"``: MONAI's Gaussian occlusion (the box multiplied by ``1 - gaussian``, windows blended with
            a Gaussian importance map), identical to MONAI's ``mode="gaussian"``.
        roi: optional box (one slice per axis of ``S``): only windows touching it are run and the map is given
            inside it (exactly the full-scan values there); outside it the sensitivity is 0.
        batch_size: occluded images per batch (halved automatically on out-of-memory); the incremental path runs
            as many windows together as fit in the memory of that many full forward passes (at most 128).
        module: the torch (or TorchScript) module behind ``predict``; enables the exact incremental fast path
            when it is a chain of local layers ending in a global average pool.
        progress: progress callback or :class:`~MedAIExtension.progress.Progress` (cancellation raises
            :class:`~MedAIExtension.errors.CancelledError`).

    Returns:
        The raw and sensitivity maps with the base score, window counts, batch size, engine and notes.

    Raises:
        InputError: bad input (shape, mask larger than the image, stride < 1, ROI outside the image).
        ModelError: the model fails or runs out of memory even one window at a time.
        CancelledError: cancelled through ``progress``.
    """
    x = np.asarray(x)
    if x.ndim < 3 or x.shape[0] != 1:
        raise InputError(
            f"The occlusion input must be one image (1, C, *S), got shape {x.shape}; add the batch and channel axes."
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"The occlusion input must be float32, got {x.dtype}; normalise the image first.")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if batch_size < 1:
        raise InputError(f"The batch size must be ≥ 1, got {batch_size}.")
    masks, strides, box = _validate(x, mask_size, stride, roi)
    occluder = _occluder(x, baseline, masks)
    report = Progress.of(progress)
    report(0.0, "Occlusion: scoring the unoccluded image")
    notes: list[str] = []

    try:
        base_score = float(_scores(predict(x.copy()), target)[0])
    except MedAIError:
        raise
    except Exception as error:
        raise (ModelError(_OUT_OF_MEMORY) if is_out_of_memory(error) else _model_failed(error)) from error
    windows = occlusion_windows(x.shape[2:], masks, strides)
    total = len(windows)
    if box is not None:
        touching = np.all(
            (windows[:, :, 0] < [s.stop for s in box]) & (windows[:, :, 1] > [s.start for s in box]), axis=1
        )
        windows = windows[touching]
    if occluder.multiplier is None:  # a constant fill changes nothing where the box already holds it
        unchanged = _window_sums((x[0] != occluder.value).any(axis=0), windows) == 0
    else:
        unchanged = np.array([not occluder.changes(x[_window_box(w)]) for w in windows], dtype=bool)
    unchanged = unchanged.reshape(len(windows))
    to_run = windows[~unchanged]

    incremental = None
    if module is not None and len(to_run):
        incremental = _incremental_evaluator(module, x, masks, occluder, target, base_score, notes)
    order = np.arange(len(to_run))
    if incremental is not None:
        engine, (evaluate, ratio, best_order) = "incremental", incremental
        order = best_order(to_run)  # windows with the same box sizes side by side: batches with little padding
        # a window's cone needs a fraction of a full pass's memory: run more windows per batch (fewer, larger
        # operations; many small ones are slow, most of all with several threads on a busy CPU)
        windows_per_batch = int(min(max(batch_size, batch_size * ratio), max(batch_size, _MAX_INCREMENTAL_BATCH)))
    else:
        engine, evaluate, windows_per_batch = "generic", _generic_evaluator(predict, x, occluder, target), batch_size
    runner = _BatchRunner(windows_per_batch, notes, report.stage(0.02, 0.98))
    scores = np.empty(len(to_run))
    scores[order] = runner.run(to_run[order], evaluate) if len(to_run) else np.empty(0)

    shape = x.shape[2:]
    window_scores = np.full(len(windows), base_score)
    window_scores[~unchanged] = scores
    if occluder.weights is None:
        count = _spread(windows, np.ones(len(windows)), masks, shape)
        total_score = _spread(windows, window_scores, masks, shape)
    else:
        total_score = np.zeros(shape, dtype=np.float64)
        count = np.zeros(shape, dtype=np.float64)
        for w, score in zip(windows, window_scores, strict=True):
            region = tuple(slice(int(a), int(b)) for a, b in w)
            count[region] += occluder.weights
            total_score[region] += occluder.weights * score
    raw = np.full(shape, base_score, dtype=np.float64)
    inside = np.zeros(shape, dtype=bool)
    inside[box if box is not None else ...] = True
    inside &= count > 0
    raw[inside] = total_score[inside] / count[inside]
    report(1.0, "Occlusion: done")
    return OcclusionResult(
        raw=raw.astype(np.float32),
        sensitivity=(base_score - raw).astype(np.float32),
        base_score=base_score,
        windows_evaluated=len(to_run),
        windows_skipped=int(unchanged.sum()),
        windows_total=total,
        batch_size=runner.batch_size,
        engine=engine,
        mask_size=masks,
        stride=strides,
        baseline=baseline if isinstance(baseline, str) and occluder.multiplier is not None else occluder.value,
        notes=notes,
    )
