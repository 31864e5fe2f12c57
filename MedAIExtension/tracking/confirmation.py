"""Looking again in the other study: a nodule is "new" (or "resolved") only when nothing of it is there.

A finding of one study that the matching left unpaired is looked for at its registered position in the other
study, first by segmenting a nodule there (:func:`~MedAIExtension.tracking.nodule_segmentation.segment_nodule`),
then, when that finds nothing usable, by the image itself: the finding's voxels are carried into the other study
with the registration (nearest neighbour, pulled from the other grid) and the attenuation found there is compared
with the finding's own. When the other study holds at least half the finding's contrast over the parenchyma at
that place, the same structure is there (the detector or the segmentation missed it, e.g. at a vessel junction
whose boundary falls differently with new noise): the carried voxels become a finding of the other study and the
two are matched as one persistent nodule, whose change the growth gate then judges. Only an empty place leaves a
finding new or resolved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.resample import resample_array
from MedAIExtension.models.preprocessing import crop_image
from MedAIExtension.tracking.matching import Match
from MedAIExtension.tracking.measurements import measure_nodule
from MedAIExtension.tracking.nodule_segmentation import segment_nodule
from MedAIExtension.tracking.registration import Registration
from MedAIExtension.tracking.results import TimepointResult
from MedAIExtension.tracking.types import Candidate, Finding, NoduleMask, NoduleMeasurement

__all__ = ["carry_mask", "confirm_across", "overlap"]

#: Share of a finding's contrast over the parenchyma the other study must hold at its place to count as "there".
SAME_STRUCTURE_CONTRAST = 0.5
_CONTEXT_MM = 5.0


def overlap(a: NoduleMask, b: NoduleMask) -> bool:
    """Whether two :class:`NoduleMask` of one image share a voxel (compared inside their common box)."""
    starts = [max(x.start or 0, y.start or 0) for x, y in zip(a.box, b.box, strict=True)]
    stops = [min(x.stop, y.stop) for x, y in zip(a.box, b.box, strict=True)]
    if any(lo >= hi for lo, hi in zip(starts, stops, strict=True)):
        return False
    part_a = a.mask[tuple(slice(lo - (x.start or 0), hi - (x.start or 0)) for lo, hi, x in zip(starts, stops, a.box))]
    part_b = b.mask[tuple(slice(lo - (y.start or 0), hi - (y.start or 0)) for lo, hi, y in zip(starts, stops, b.box))]
    return bool(np.any(part_a & part_b))


def confirm_across(
    base: TimepointResult,
    follow: TimepointResult,
    registration: Registration,
    matches: Sequence[Match],
    min_single_confidence: float,
    gate_mm: float,
    min_mean_diameter_mm: float,
) -> bool:
    """Look again where a one-study nodule should be in the other study; drop unconfirmed weak findings.

    The detectors can miss a nodule in one study (smaller, fainter, next to a vessel). For each unmatched,
    confident finding the nodule is looked for at its registered position in the other study (see the module
    docstring); a nodule found there joins that study's findings (source ``"propagated"``). Unmatched findings
    below ``min_single_confidence`` are dropped, and so are pairs below it in both studies. Returns True when the
    finding lists changed.
    """
    changed = False
    drop: dict[int, set[int]] = {0: set(), 1: set()}
    for match in matches:
        if match.baseline is not None and match.followup is not None:
            pair = (base.findings[match.baseline], follow.findings[match.followup])
            if max(f.candidate.confidence for f in pair) < min_single_confidence:
                drop[0].add(match.baseline)  # weak in both studies (e.g. model-only at a vessel junction)
                drop[1].add(match.followup)
            continue
        side = 0 if match.followup is None else 1  # the study that has the finding
        index = match.baseline if side == 0 else match.followup
        assert index is not None, "a match holds a finding of at least one study"
        source, other = (base, follow) if side == 0 else (follow, base)
        finding = source.findings[index]
        if finding.candidate.confidence < min_single_confidence:
            drop[side].add(index)
            continue
        to_other = registration.baseline_to_followup_ras if side == 0 else registration.followup_to_baseline_ras
        centre = np.asarray(finding.measurement.center_ras, dtype=float)
        mapped = registration.map_to_followup(centre) if side == 0 else registration.map_to_baseline(centre)
        seed = Candidate(
            (float(mapped[0]), float(mapped[1]), float(mapped[2])),
            finding.measurement.mean_diameter_mm,
            finding.candidate.confidence,
            "propagated",
        )
        found = _segmented_again(other, seed, mapped, gate_mm, min_mean_diameter_mm)
        if found is None:
            found = _same_structure(source, other, finding, np.asarray(to_other, dtype=float), seed)
        if found is None:
            continue
        found.extra["propagated_from"] = "baseline" if side == 0 else "followup"
        other.findings.append(found)
        changed = True
    for side, result in ((0, base), (1, follow)):
        if drop[side]:
            result.findings[:] = [f for index, f in enumerate(result.findings) if index not in drop[side]]
            changed = True
    return changed


def _segmented_again(
    other: TimepointResult, seed: Candidate, mapped: np.ndarray, gate_mm: float, min_mean_diameter_mm: float
) -> Finding | None:
    """A nodule segmented at ``seed`` in ``other`` that no finding there holds yet, or None."""
    mask = segment_nodule(other.image, seed, other.lungs)
    if mask is None or mask.voxel_count == 0:
        return None
    if any(overlap(f.mask, mask) for f in other.findings):
        return None
    measurement = measure_nodule(other.image, mask, other.lungs)
    if np.linalg.norm(np.subtract(measurement.center_ras, mapped)) > gate_mm:
        return None
    if measurement.mean_diameter_mm < min_mean_diameter_mm:
        return None
    return Finding(seed, mask, measurement)


def _box_in(shape: tuple[int, ...], lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
    start = np.maximum(np.floor(lo).astype(int), 0)
    stop = np.minimum(np.ceil(hi).astype(int) + 1, np.asarray(shape))
    if np.any(stop <= start):
        return None
    k, j, i = (slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
    return k, j, i


def carry_mask(source: Image, other: Image, mask: NoduleMask, to_other: np.ndarray) -> NoduleMask | None:
    """``mask`` of ``source`` carried to ``other``'s grid by the 4x4 RAS transform ``to_other`` (nearest); None
    when nothing of it lands in ``other``."""
    corners = np.array([[b.start, b.stop - 1] for b in mask.box], dtype=float)  # (k, j, i) x (lo, hi)
    kji = np.array(np.meshgrid(*corners, indexing="ij")).reshape(3, -1).T
    ras = kji[:, ::-1] @ source.ijk_to_ras[:3, :3].T + source.ijk_to_ras[:3, 3]
    there = ras @ to_other[:3, :3].T + to_other[:3, 3]
    to_index = np.linalg.inv(other.ijk_to_ras)
    ijk = there @ to_index[:3, :3].T + to_index[:3, 3]
    box = _box_in(other.shape, ijk[:, ::-1].min(axis=0) - 1, ijk[:, ::-1].max(axis=0) + 1)
    if box is None:
        return None
    # the mask's own grid, placed where the transform takes it, resampled (nearest) onto the other study's box
    placed = to_other @ crop_image(source, mask.box).ijk_to_ras
    moved = Image(mask.mask.astype(np.uint8), placed)
    target = crop_image(other, box)
    carried = resample_array(moved, target.ijk_to_ras, target.shape, linear=False, fill=0).astype(bool)
    if not carried.any():
        return None
    return NoduleMask(box, carried)


def _local(result: TimepointResult, mask: NoduleMask) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """The box around ``mask`` with a few mm of context, the mask in it and the HU values there."""
    spacing = np.asarray(result.image.spacing, dtype=float)[::-1]
    pad = np.ceil(_CONTEXT_MM / spacing).astype(int)
    box = _box_in(
        result.image.shape,
        np.array([b.start for b in mask.box]) - pad,
        np.array([b.stop - 1 for b in mask.box]) + pad,
    )
    assert box is not None, "the mask lies in the image"
    inside = np.zeros(tuple(b.stop - b.start for b in box), dtype=bool)
    inside[tuple(slice(m.start - b.start, m.stop - b.start) for m, b in zip(mask.box, box, strict=True))] = mask.mask
    return box, inside, np.asarray(result.image.array[box], dtype=np.float32)


def _contrast(result: TimepointResult, mask: NoduleMask) -> float:
    """Mean HU inside ``mask`` over the median of the lung voxels around it (within a few mm)."""
    box, inside, hu = _local(result, mask)
    around = ndimage.binary_dilation(inside, iterations=2) & ~inside & result.lungs[box] & (hu < -400.0)
    parenchyma = float(np.median(hu[around])) if around.any() else -850.0
    return float(hu[inside].mean()) - parenchyma


def _measure_there(result: TimepointResult, mask: NoduleMask) -> NoduleMeasurement:
    """Measure ``mask`` in ``result``; where that study's lung mask misses the place (a lesion on the lung mask's
    edge), the aerated voxels (< -400 HU) around the mask count as the parenchyma it is measured against."""
    try:
        return measure_nodule(result.image, mask, result.lungs)
    except InputError:
        box, inside, hu = _local(result, mask)
        lungs = result.lungs.copy()
        lungs[box] |= ndimage.binary_dilation(inside, iterations=4) & ~inside & (hu < -400.0)
        return measure_nodule(result.image, mask, lungs)


def _same_structure(
    source: TimepointResult, other: TimepointResult, finding: Finding, to_other: np.ndarray, seed: Candidate
) -> Finding | None:
    """The finding's voxels carried to ``other`` when it holds the same structure there (see the module)."""
    carried = carry_mask(source.image, other.image, finding.mask, to_other)
    if carried is None or any(overlap(f.mask, carried) for f in other.findings):
        return None
    own = _contrast(source, finding.mask)
    if own <= 0 or _contrast(other, carried) < SAME_STRUCTURE_CONTRAST * own:
        return None  # an empty place: the finding is new (or resolved)
    try:
        measurement = _measure_there(other, carried)
    except InputError:
        return None  # nothing aerated around it to measure against: it cannot be confirmed there
    return Finding(seed, carried, measurement, {"found_by": "the finding's voxels carried over"})
