"""Lung-nodule candidates: a classical blob detector, a segmentation model's label map, and their merge.

The classical detector needs no weights:

1. Inside the lungs' bounding box the CT (HU clipped to [-1000, 150], voxels outside the lung mask set to the
   lung's own background) is filtered with the scale-normalised Laplacian of Gaussian at physical scales for
   nodules of ``min_diameter_mm`` to ``max_diameter_mm`` (sigma in mm, so anisotropic voxels get the right kernel
   per axis; coarse scales run on block-averaged copies). Local maxima inside the lungs above
   ``min_contrast_hu`` whose Hessian on that grid is not clearly tubular go on.
2. Each of them is verified with Hessians computed only in a patch around it: its response must be a maximum
   over scale (it sets the size), and on the patch grey-opened with a ball of a third of its radius (which
   removes vessels running through or touching it) the Hessian must have three negative eigenvalues of similar
   size at its own scale and at the next finer one. A vessel branching looks round only coarsely, its branches
   show at the finer scale; a ball stays round at every scale.
3. Non-maximum suppression in millimetres keeps the most confident blob per nodule.

A model's label map gives one candidate per connected component of the nodule label. Candidates of both that
lie within a radius of each other are one nodule, reported with source ``"model+classical"``.

On the project's phantoms (1 mm voxels, vessels, every nodule kind, a third juxta-pleural) the detector found
all nodules of 5 mm or more with about 0.3 false candidates per scan (Testing/unit/test_tracking_detection.py).

This module holds the candidate-finding API and the merge; :class:`DetectionOptions` (re-exported here), the
detector's constants and its filtering/scoring helpers live in :mod:`MedAIExtension.tracking.blob_detector`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.progress import CancelToken, Progress
from MedAIExtension.tracking.blob_detector import (
    _SIGMA_PER_DIAMETER,
    DetectionOptions,
    _aligned_box,
    _Blob,
    _blobs_at_scale,
    _checked_mask,
    _Level,
    _level_factor,
    _prepared_volume,
    _sigmas,
    _suppress,
    _verify,
)
from MedAIExtension.tracking.lungs import array_spacing
from MedAIExtension.tracking.types import Candidate

__all__ = [
    "DetectionOptions",
    "candidates_from_labels",
    "classical_candidates",
    "detect_candidates",
    "merge_candidates",
]


# ---- public API ---------------------------------------------------------------------------------------------
def detect_candidates(
    image: Image,
    lungs: np.ndarray,
    model_labels: np.ndarray | Image | None = None,
    nodule_label: int = 2,
    options: DetectionOptions | None = None,
    progress: Callable[[float, str], None] | None = None,
    token: CancelToken | None = None,
) -> list[Candidate]:
    """Places in the lungs that may hold a nodule, most confident first.

    Args:
        image: chest CT in HU (any orientation).
        lungs: boolean lung mask on the image grid (``[k, j, i]``), e.g. from
            :func:`~MedAIExtension.tracking.lungs.lung_mask`.
        model_labels: optional label map of a segmentation model on the image grid (array or :class:`Image`).
        nodule_label: the nodule's value in ``model_labels``.
        options: detector settings; default :class:`DetectionOptions()`.
        progress: optional ``callback(fraction, message)``.
        token: optional cancel token, polled between steps.

    Returns:
        Candidates sorted by decreasing confidence (at most ``options.max_candidates``), sources ``"classical"``,
        ``"model"`` or ``"model+classical"``.

    Raises:
        InputError: if the lung mask or the label map does not match the image, or the lung mask is empty.
        CancelledError: if cancelled through ``token`` or a cancelling ``progress``.
    """
    options = options or DetectionOptions()
    report = Progress(progress, token)
    lungs = _checked_mask(image, lungs)
    report(0.0, "Nodule candidates")
    model: list[Candidate] = []
    if model_labels is not None:
        model = candidates_from_labels(image, model_labels, nodule_label, options)
    classical: list[Candidate] = []
    if options.classical:
        classical = classical_candidates(image, lungs, options, report.stage(0.02, 0.98))
    merged = merge_candidates(model, classical, options.merge_distance_mm)
    report(1.0, f"{len(merged[: options.max_candidates])} nodule candidate(s)")
    return merged[: int(options.max_candidates)]


def classical_candidates(
    image: Image,
    lungs: np.ndarray,
    options: DetectionOptions | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> list[Candidate]:
    """Blob candidates of the multi-scale LoG detector with Hessian vessel suppression (no weights needed).

    Args:
        image: chest CT in HU.
        lungs: boolean lung mask on the image grid.
        options: detector settings.
        progress: optional ``callback(fraction, message)``.

    Returns:
        Candidates (source ``"classical"``) sorted by decreasing confidence.
    """
    options = options or DetectionOptions()
    report = Progress.of(progress)
    lungs = _checked_mask(image, lungs)
    spacing = array_spacing(image)
    sigmas = _sigmas(options, spacing)
    box = _aligned_box(lungs, max(_level_factor(float(sigmas[-1]), s) for s in spacing))
    origin = np.array([b.start for b in box], dtype=float)
    mask = lungs[box]
    volume = _prepared_volume(image.array[box], mask, options.background_hu)
    step = float(sigmas[1] / sigmas[0]) if len(sigmas) > 1 else math.sqrt(2.0)
    levels: dict[tuple[int, ...], _Level] = {}
    blobs: list[_Blob] = []
    for n, sigma in enumerate(sigmas):
        report(0.9 * n / len(sigmas), f"Blob detection at {sigma / _SIGMA_PER_DIAMETER:.1f} mm")
        factors = tuple(_level_factor(sigma, s) for s in spacing)
        if factors not in levels:
            levels[factors] = _Level(volume, mask, factors, spacing)
        level = levels[factors]
        for blob in _blobs_at_scale(level, float(sigma), options):
            if _verify(level, blob, step, bool(n == len(sigmas) - 1), options):
                blobs.append(blob)
    del levels, volume
    report(0.95, "Suppressing overlapping blobs")
    affine = image.ijk_to_ras
    for blob in blobs:
        blob.ras = affine[:3, :3] @ (blob.kji + origin)[::-1] + affine[:3, 3]
    out = []
    for blob in _suppress(blobs, options):
        ras = blob.ras
        assert ras is not None  # set for every blob above
        out.append(
            Candidate(
                center_ras=(float(ras[0]), float(ras[1]), float(ras[2])),
                diameter_mm=float(blob.sigma_mm / _SIGMA_PER_DIAMETER),
                confidence=float(blob.confidence),
                source="classical",
            )
        )
    return out


def candidates_from_labels(
    image: Image,
    labels: np.ndarray | Image,
    nodule_label: int = 2,
    options: DetectionOptions | None = None,
) -> list[Candidate]:
    """One candidate per connected component (26-connected) of ``nodule_label`` in a model's label map.

    The centre is the component's centroid, the diameter that of the ball of the same volume; components smaller
    than a ball of ``options.min_diameter_mm`` are dropped.

    Raises:
        InputError: if the label map is not on the image grid.
    """
    options = options or DetectionOptions()
    if isinstance(labels, Image):
        if not labels.same_grid(image):
            raise InputError(
                "The model label map lies on another grid than the image; resample it onto the image grid first."
            )
        labels = labels.array
    labels = np.asarray(labels)
    if labels.shape != image.shape:
        raise InputError(
            f"The model label map has shape {labels.shape} but the image has {image.shape} (k, j, i); resample the "
            "label map onto the image grid first."
        )
    nodule = labels == nodule_label
    present = [np.flatnonzero(nodule.any(axis=other)) for other in ((1, 2), (0, 2), (0, 1))]
    if any(p.size == 0 for p in present):
        return []
    box = tuple(slice(int(p[0]), int(p[-1]) + 1) for p in present)  # work inside the labels' bounding box only
    components, count = ndimage.label(nodule[box], structure=np.ones((3, 3, 3), dtype=bool))
    index = np.nonzero(components)
    ids = components[index]
    sizes = np.bincount(ids, minlength=count + 1)[1:]
    offsets = np.array([b.start for b in box], dtype=float)
    centres = (
        np.stack([np.bincount(ids, weights=index[axis], minlength=count + 1)[1:] / sizes for axis in range(3)], axis=1)
        + offsets
    )
    voxel = image.voxel_volume_mm3
    min_volume = math.pi / 6.0 * options.min_diameter_mm**3
    out = []
    for size, kji in zip(sizes, centres, strict=True):
        volume = float(size) * voxel
        if volume < min_volume:
            continue
        ras = image.ijk_to_ras[:3, :3] @ kji[::-1] + image.ijk_to_ras[:3, 3]
        out.append(
            Candidate(
                center_ras=(float(ras[0]), float(ras[1]), float(ras[2])),
                diameter_mm=float((6.0 * volume / math.pi) ** (1.0 / 3.0)),
                confidence=float(options.model_confidence),
                source="model",
            )
        )
    return sorted(out, key=lambda c: -c.diameter_mm)


def merge_candidates(
    model: Sequence[Candidate], classical: Sequence[Candidate], distance_mm: float = 3.0
) -> list[Candidate]:
    """Merge model and classical candidates; the same nodule becomes one ``"model+classical"`` candidate.

    A model candidate and a classical one are the same nodule when their centres lie within
    ``max(distance_mm, radius of either)``; pairs are matched nearest first, one to one. The merged candidate keeps
    the model's centre and diameter (from the segmentation) and the combined confidence ``1 - (1-a)(1-b)``.
    Further classical candidates whose centre lies inside a model candidate are dropped as duplicates.

    Returns:
        All candidates sorted by decreasing confidence.
    """
    pairs = []
    for m, a in enumerate(model):
        for c, b in enumerate(classical):
            distance = _distance(a, b)
            if distance <= max(distance_mm, a.diameter_mm / 2.0, b.diameter_mm / 2.0):
                pairs.append((distance, m, c))
    pairs.sort()
    used_model: dict[int, int] = {}
    used_classical: set[int] = set()
    for _, m, c in pairs:
        if m in used_model or c in used_classical:
            continue
        used_model[m] = c
        used_classical.add(c)
    out = []
    for m, a in enumerate(model):
        if m in used_model:
            b = classical[used_model[m]]
            confidence = 1.0 - (1.0 - a.confidence) * (1.0 - b.confidence)
            out.append(Candidate(a.center_ras, a.diameter_mm, float(confidence), "model+classical"))
        else:
            out.append(a)
    for c, b in enumerate(classical):
        if c in used_classical:
            continue
        if any(_distance(a, b) <= max(distance_mm, a.diameter_mm / 2.0) for a in model):
            continue
        out.append(b)
    return sorted(out, key=lambda c: (-c.confidence, -c.diameter_mm))


def _distance(a: Candidate, b: Candidate) -> float:
    return float(np.linalg.norm(np.subtract(a.center_ras, b.center_ras)))
