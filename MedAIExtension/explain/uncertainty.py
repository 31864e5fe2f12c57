"""Segmentation uncertainty: per-voxel predictive entropy from test-time flips and/or MC dropout.

Every sample runs the engine's own sliding window (:func:`~MedAIExtension.models.inference.predict_scores`) on the
engine's prepared input (body crop, model grid, normalisation): a *flip* sample mirrors the input along model-grid
axes and mirrors the scores back; an *MC-dropout* sample runs a torch model with its dropout layers active. The
softmax probabilities of all samples are averaged on the model grid, then

- **entropy** ``H(p̄) = -Σ_c p̄_c ln p̄_c`` of the mean probabilities, divided by ``ln L`` (L = output channels,
  background included), so 0 means every sample is certain of one class and 1 means all classes are equally
  likely (unit ``"1"``; multiply by :attr:`UncertaintyResult.max_entropy_nats` for nats);
- **mutual information** (BALD) ``H(p̄) - mean_s H(p_s)`` on the same scale, when there is more than one sample:
  the part of the entropy that comes from the samples disagreeing, not from each sample being unsure;
- the **label map**: arg-max of the mean probabilities, cleaned up exactly as :func:`run_inference` does.

Maps are resampled linearly from the model grid onto the input grid (0 outside the body crop, where the engine
predicts background without looking). A per-segment table (mean and 95th percentile entropy, share of voxels above
a threshold) lists the most uncertain segment first, so annotators know where to check first.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError, ModelError
from MedAIExtension.io.image import Image
from MedAIExtension.models.backends import Backend, TorchBackend
from MedAIExtension.models.catalog import ModelEntry
from MedAIExtension.models.inference import (
    InferenceOptions,
    PreparedInput,
    map_to_input,
    predict_scores,
    prepare_input,
    scores_to_labelmap,
)
from MedAIExtension.models.memory import free_gpu_memory, is_out_of_memory
from MedAIExtension.progress import Progress

__all__ = [
    "ENTROPY_UNIT",
    "FLIP_COMBINATIONS",
    "SegmentUncertainty",
    "UncertaintyResult",
    "entropy_of",
    "segment_table",
    "segmentation_uncertainty",
    "softmax",
]

#: Unit of the entropy and mutual-information maps: dimensionless, as a fraction of ``ln L`` (UCUM ``"1"``).
ENTROPY_UNIT = "1"

#: Model-grid array axes (0 = k, 1 = j, 2 = i) mirrored by each test-time sample, in the order they are used:
#: none, then each single axis (left-right first on an LPS grid), then pairs, then all three.
FLIP_COMBINATIONS: tuple[tuple[int, ...], ...] = ((), (2,), (1,), (0,), (1, 2), (0, 2), (0, 1), (0, 1, 2))

_AXIS_NAMES = "kji"


@dataclass(frozen=True)
class SegmentUncertainty:
    """How uncertain the model is inside one segment of the label map.

    Attributes:
        value: the label value in the label map.
        name: the label's name from the catalogue.
        voxels: number of voxels of the segment.
        volume_ml: its volume in millilitres.
        mean_entropy: mean normalised entropy (0..1) over its voxels.
        p95_entropy: 95th percentile of the normalised entropy over its voxels.
        uncertain_fraction: share of its voxels whose entropy exceeds the result's threshold.
        mean_mutual_information: mean normalised mutual information (None with a single sample).
    """

    value: int
    name: str
    voxels: int
    volume_ml: float
    mean_entropy: float
    p95_entropy: float
    uncertain_fraction: float
    mean_mutual_information: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "value": self.value,
            "name": self.name,
            "voxels": self.voxels,
            "volume_ml": round(self.volume_ml, 4),
            "mean_entropy": round(self.mean_entropy, 6),
            "p95_entropy": round(self.p95_entropy, 6),
            "uncertain_fraction": round(self.uncertain_fraction, 6),
            "mean_mutual_information": (
                None if self.mean_mutual_information is None else round(self.mean_mutual_information, 6)
            ),
        }


@dataclass(frozen=True, eq=False)
class UncertaintyResult:
    """Uncertainty maps on the input grid plus the per-segment table and facts about the run.

    Attributes:
        entropy: float32 normalised predictive entropy (0..1, unit :data:`ENTROPY_UNIT`) on the input grid.
        labelmap: uint8 label map (arg-max of the mean probabilities, post-processed) on the input grid.
        segments: one row per segment of ``labelmap``, most uncertain (highest mean entropy) first.
        mutual_information: float32 normalised mutual information (BALD) on the input grid; None for one sample.
        samples: predictions averaged (flips × MC-dropout passes).
        flips: the model-grid axes mirrored by each flip, e.g. ``((), (2,))``.
        mc_dropout: MC-dropout passes per flip (0: dropout off).
        threshold: the entropy above which a voxel counts as uncertain in ``segments``.
        max_entropy_nats: ``ln L``; multiply a map by it for nats.
        notes: what the user should know (skipped MC dropout, smaller batches after running out of memory, ...).
        provider: what ran the model.
        seconds: wall time of the whole run.
        windows: sliding windows run over all samples.
        model_grid_shape: the model grid's array shape ``(K, J, I)`` ((0, 0, 0) when nothing was run).
    """

    entropy: Image
    labelmap: Image
    segments: list[SegmentUncertainty]
    mutual_information: Image | None
    samples: int
    flips: tuple[tuple[int, ...], ...]
    mc_dropout: int
    threshold: float
    max_entropy_nats: float
    notes: list[str] = field(default_factory=list)
    provider: str = ""
    seconds: float = 0.0
    windows: int = 0
    model_grid_shape: tuple[int, int, int] = (0, 0, 0)

    @property
    def unit(self) -> str:
        """Unit of :attr:`entropy` and :attr:`mutual_information` (:data:`ENTROPY_UNIT`)."""
        return ENTROPY_UNIT

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no voxel arrays)."""
        return {
            "method": "uncertainty",
            "measure": "predictive entropy of the mean softmax probabilities",
            "unit": ENTROPY_UNIT,
            "normalisation": f"divided by ln(L) = {self.max_entropy_nats:.6f} nats (L = output channels)",
            "max_entropy_nats": self.max_entropy_nats,
            "samples": self.samples,
            "flips": [[_AXIS_NAMES[a] for a in flip] for flip in self.flips],
            "mc_dropout": self.mc_dropout,
            "mutual_information": self.mutual_information is not None,
            "threshold": self.threshold,
            "segments": [segment.to_dict() for segment in self.segments],
            "notes": list(self.notes),
            "provider": self.provider,
            "seconds": round(self.seconds, 3),
            "windows": self.windows,
            "model_grid_shape": list(self.model_grid_shape),
        }


def softmax(scores: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the first (channel) axis of ``scores`` ``(C, ...)``; in place when ``out is scores``."""
    if out is None:
        out = np.array(scores, dtype=np.float32)
    elif out is not scores:
        np.copyto(out, scores)
    out -= out.max(axis=0, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=0, keepdims=True)
    return out


def entropy_of(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats over the first (channel) axis of ``probabilities`` ``(C, ...)`` (float32).

    Channels are visited one at a time, so only one extra channel-sized array is allocated.
    """
    entropy = np.zeros(probabilities.shape[1:], dtype=np.float32)
    for channel in probabilities:
        term = np.log(np.maximum(channel, np.float32(1e-30)))
        term *= channel
        entropy -= term
    np.maximum(entropy, 0.0, out=entropy)
    return entropy


def segment_table(
    labelmap: np.ndarray,
    entropy: np.ndarray,
    entry: ModelEntry,
    voxel_volume_mm3: float,
    threshold: float,
    mutual_information: np.ndarray | None = None,
) -> list[SegmentUncertainty]:
    """One :class:`SegmentUncertainty` per non-zero value of ``labelmap``, highest mean entropy first."""
    rows = []
    names = {label.value: label.name for label in entry.labels}
    for value in np.unique(labelmap):
        if value == 0:
            continue
        mask = labelmap == value
        values = entropy[mask]
        rows.append(
            SegmentUncertainty(
                value=int(value),
                name=names.get(int(value), f"Label {int(value)}"),
                voxels=int(values.size),
                volume_ml=float(values.size * voxel_volume_mm3 / 1000.0),
                mean_entropy=float(values.mean(dtype=np.float64)),
                p95_entropy=float(np.percentile(values, 95)),
                uncertain_fraction=float(np.count_nonzero(values > threshold) / values.size),
                mean_mutual_information=(
                    None if mutual_information is None else float(mutual_information[mask].mean(dtype=np.float64))
                ),
            )
        )
    rows.sort(key=lambda row: (-row.mean_entropy, row.value))
    return rows


def _dropout_layers(module: Any) -> list[Any]:
    """The dropout sub-modules of a torch (or scripted) module that actually drop something (``p > 0``)."""
    import torch

    layers = []
    for sub in module.modules():
        is_dropout = isinstance(sub, torch.nn.modules.dropout._DropoutNd) or "Dropout" in str(
            getattr(sub, "original_name", "")
        )
        if is_dropout and float(getattr(sub, "p", 0.0)) > 0.0:
            layers.append(sub)
    return layers


@contextlib.contextmanager
def _dropout_active(layers: list[Any], seed: int) -> Iterator[None]:
    """Switch only the dropout layers to training mode (batch norm stays frozen), with a fixed random stream."""
    if not layers:
        yield
        return
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # seeds the CPU and every CUDA generator; fork_rng restores them afterwards
        try:
            for layer in layers:
                layer.train()
            yield
        finally:
            for layer in layers:
                layer.eval()


def _sample_probabilities(
    prepared: PreparedInput,
    backend: Backend,
    flip: tuple[int, ...],
    batch_size: int,
    progress: Progress,
    notes: list[str],
) -> tuple[np.ndarray, int, int]:
    """Softmax probabilities of one sample; halves the window batch on out-of-memory. Returns (p, windows, batch)."""
    while True:
        try:
            scores, windows = predict_scores(
                prepared, backend, flip_axes=flip, batch_size=batch_size, progress=progress
            )
            return softmax(scores, out=scores), windows, batch_size
        except Exception as error:  # ONNX Runtime and torch raise several types on out-of-memory
            if not is_out_of_memory(error):
                raise
            free_gpu_memory()
            if batch_size <= 1:
                raise ModelError(
                    "The model ran out of memory even with one sliding window per call. Use a smaller window "
                    "(InferenceOptions.roi_size), run on the CPU, or close other programs using the memory."
                ) from None
            batch_size = max(batch_size // 2, 1)
            notes.append(f"Ran out of memory; continued with {batch_size} window(s) per call.")


def _check_arguments(
    entry: ModelEntry, backend: Backend, tta_flips: int, mc_dropout: int, threshold: float
) -> list[Any]:
    """Validate the request; returns the dropout layers to activate (empty when MC dropout is off)."""
    if isinstance(tta_flips, bool) or not isinstance(tta_flips, int | np.integer) or not 1 <= tta_flips <= 8:
        raise InputError(
            f"tta_flips must be 1..8 flip combinations including the unflipped input, got {tta_flips!r}. "
            "Use 1 for no flips, 2 for a left-right flip, 4 for one flip per axis, 8 for all combinations."
        )
    if isinstance(mc_dropout, bool) or not isinstance(mc_dropout, int | np.integer) or mc_dropout < 0:
        raise InputError(f"mc_dropout must be a number of passes ≥ 0 (0 switches it off), got {mc_dropout!r}.")
    if not 0.0 < float(threshold) < 1.0:
        raise InputError(f"The uncertainty threshold is a normalised entropy in (0, 1), got {threshold!r}.")
    if entry.is_classifier:
        raise ModelError(
            f"{entry.name} is a classification model; uncertainty maps need a segmentation model (one score per "
            "voxel). Use --method gradcam, occlusion or ig with this model."
        )
    if len(entry.labels) < 1:
        raise ModelError(f"{entry.name} lists no labels, so it has no classes to be uncertain about.")
    if mc_dropout == 0:
        return []
    if not isinstance(backend, TorchBackend):
        raise ModelError(
            f"MC dropout needs a torch model (TorchScript or MONAI bundle), but {entry.name} runs on "
            f"{backend.provider}. Use test-time flips only (mc_dropout=0, tta_flips 2..8) or a torch version "
            "of the model."
        )
    layers = _dropout_layers(backend.module)
    if not layers and tta_flips == 1:
        raise ModelError(
            f"{entry.name} has no active dropout layers (none, or all with p = 0), so MC dropout would repeat the "
            "same prediction. Use test-time flips instead (tta_flips 2..8, mc_dropout=0)."
        )
    return layers


def segmentation_uncertainty(
    image: Image,
    entry: ModelEntry,
    backend: Backend,
    *,
    tta_flips: int = 4,
    mc_dropout: int = 0,
    threshold: float = 0.5,
    seed: int = 0,
    options: InferenceOptions | None = None,
    progress: Progress | Callable[[float, str], None] | None = None,
) -> UncertaintyResult:
    """Per-voxel predictive entropy (and mutual information) of a segmentation model on ``image``'s grid.

    Args:
        image: the input volume (e.g. a CT in HU).
        entry: the catalogue entry of a segmentation model.
        backend: the loaded model (:func:`~MedAIExtension.models.backends.load_backend`).
        tta_flips: flip combinations including the unflipped input, 1..8 (see :data:`FLIP_COMBINATIONS`; the
            axes are the model grid's).
        mc_dropout: passes per flip with the dropout layers active (torch models only; 0 = off). A model without
            dropout layers gets a note and flips only, or ModelError when only MC dropout was asked for.
        threshold: normalised entropy above which a voxel counts as uncertain in the segment table.
        seed: seed of the dropout masks (same seed, same maps).
        options: window overlap, batch size, body crop and post-processing, as for :func:`run_inference`.
        progress: ``callback(fraction, message)`` or a :class:`Progress` (raises CancelledError when cancelled).

    Returns:
        The maps on the input grid, the per-segment table and facts about the run.

    Raises:
        InputError: ``tta_flips`` outside 1..8, a negative ``mc_dropout`` or a threshold outside (0, 1).
        ModelError: a classification model, MC dropout on an ONNX model or on a model without dropout layers
            (flips off), or out-of-memory with one window per call.
        CancelledError: the user cancelled; nothing is returned.
    """
    started = time.perf_counter()
    layers = _check_arguments(entry, backend, tta_flips, mc_dropout, threshold)
    options = options or InferenceOptions()
    progress = Progress.of(progress)
    notes: list[str] = []
    if mc_dropout and not layers:
        notes.append(
            f"{entry.name} has no active dropout layers; MC dropout was skipped and the uncertainty comes from "
            f"{tta_flips} test-time flips only."
        )
        mc_dropout = 0
    flips = FLIP_COMBINATIONS[: int(tta_flips)]
    passes = max(int(mc_dropout), 1)
    samples = len(flips) * passes
    channels = len(entry.labels) + 1
    max_entropy = math.log(channels)

    prepared = prepare_input(image, entry, options, progress.stage(0.0, 0.05))
    if prepared is None:
        zeros = image.with_array(np.zeros(image.shape, dtype=np.float32), modality="")
        notes.append("Nothing in the image is above the model's body threshold: empty label map, zero uncertainty.")
        return UncertaintyResult(
            entropy=zeros,
            labelmap=image.with_array(np.zeros(image.shape, dtype=np.uint8), modality="SEG"),
            segments=[],
            mutual_information=zeros if samples > 1 else None,
            samples=0,
            flips=flips,
            mc_dropout=int(mc_dropout),
            threshold=float(threshold),
            max_entropy_nats=max_entropy,
            notes=notes,
            provider=backend.provider,
            seconds=time.perf_counter() - started,
        )

    mean: np.ndarray | None = None
    expected: np.ndarray | None = None  # sum over samples of each sample's entropy (for mutual information)
    windows = 0
    batch_size = prepared.batch_size
    run = progress.stage(0.05, 0.9)
    with _dropout_active(layers, seed):
        for index, (flip, _) in enumerate(product(flips, range(passes))):
            stage = run.stage(index / samples, (index + 1) / samples)
            stage(0.0, f"sample {index + 1}/{samples}")
            probabilities, count, batch_size = _sample_probabilities(prepared, backend, flip, batch_size, stage, notes)
            windows += count
            if probabilities.shape[0] != channels:
                raise ModelError(
                    f"{entry.name} outputs {probabilities.shape[0]} channels but its catalogue entry lists "
                    f"{channels - 1} labels plus background. Fix the entry's labels to match the model."
                )
            if samples > 1:
                sample_entropy = entropy_of(probabilities)
                if expected is None:
                    expected = sample_entropy
                else:
                    expected += sample_entropy
                del sample_entropy
            if mean is None:
                mean = probabilities
            else:
                mean += probabilities
            del probabilities
    assert mean is not None
    mean /= np.float32(samples)
    prepared = prepared.without_data()

    finish = progress.stage(0.9, 1.0)
    finish(0.0, "entropy of the mean prediction")
    entropy_model = entropy_of(mean)
    mutual_model = None
    if expected is not None:
        expected /= np.float32(samples)
        mutual_model = np.maximum(entropy_model - expected, 0.0)
        del expected
        mutual_model /= np.float32(max_entropy)
    entropy_model /= np.float32(max_entropy)
    labelmap = scores_to_labelmap(mean, prepared, entry, image, options.postprocess, finish.stage(0.0, 0.5))
    del mean
    finish(0.5, "mapping the uncertainty onto the input grid")
    entropy = np.clip(map_to_input(entropy_model, prepared, image), 0.0, 1.0)
    del entropy_model
    mutual = None
    if mutual_model is not None:
        mutual = np.clip(map_to_input(mutual_model, prepared, image), 0.0, 1.0)
        del mutual_model
    finish(0.9, "per-segment uncertainty")
    segments = segment_table(labelmap, entropy, entry, image.voxel_volume_mm3, float(threshold), mutual)
    finish(1.0, "done")
    map_metadata = {**image.metadata, "description": "predictive entropy (normalised)"}
    return UncertaintyResult(
        entropy=image.with_array(entropy, modality="", metadata=map_metadata),
        labelmap=image.with_array(labelmap, modality="SEG"),
        segments=segments,
        mutual_information=(
            None
            if mutual is None
            else image.with_array(
                mutual, modality="", metadata={**image.metadata, "description": "mutual information (normalised)"}
            )
        ),
        samples=samples,
        flips=flips,
        mc_dropout=int(mc_dropout),
        threshold=float(threshold),
        max_entropy_nats=max_entropy,
        notes=notes,
        provider=backend.provider,
        seconds=time.perf_counter() - started,
        windows=windows,
        model_grid_shape=prepared.model_shape,
    )
