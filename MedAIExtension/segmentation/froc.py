"""Lesion-level detection scoring: FROC curve and the LUNA16 competition performance metric (CPM).

A scan's model output is reduced to *candidates* (a centre in RAS millimetres and a score), its reference to
*lesions* (a mask component with its centre and equivalent diameter). Following LUNA16 (Setio et al., Medical
Image Analysis 2017, section 4.1):

* a candidate hits a lesion when its centre lies inside the lesion's mask or within the lesion's radius of the
  lesion's centre (the mask part matters for irregular masses whose centroid lies outside them);
* a lesion hit by several candidates counts once, with the highest of their scores; the other candidates on it
  are neither true nor false positives;
* every candidate that hits no lesion is a false positive;
* the CPM is the mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan; where the curve does
  not reach a rate, the sensitivity of its last operating point is used (LUNA16's evaluation does the same).

MONAI's ``compute_froc_curve_data`` is not used: it drops the lowest threshold (CAMELYON's convention that the
lowest score is the 0 of missed lesions), which loses the last operating point whenever every lesion is hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image

__all__ = [
    "LUNA16_FP_RATES",
    "Candidate",
    "FrocResult",
    "Lesion",
    "ScanDetections",
    "candidates_from_probability",
    "format_froc",
    "froc",
    "lesions_from_instances",
    "lesions_from_labelmap",
    "scan_detections",
]

#: False positives per scan at which the LUNA16 CPM averages the sensitivity.
LUNA16_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connected components, as lesions are labelled by readers


@dataclass(frozen=True)
class Candidate:
    """One detection: its centre in RAS millimetres and its score (higher is more confident)."""

    center_ras: tuple[float, float, float]
    score: float


@dataclass(frozen=True)
class Lesion:
    """One reference lesion: centre (RAS mm), equivalent-sphere diameter (mm) and, optionally, its voxels.

    ``voxels_kji`` are the lesion's voxel indices on the grid that ``ras_to_ijk`` maps RAS millimetres onto; a
    lesion given only by centre and diameter (as in LUNA16's annotation lists) leaves them empty.
    """

    center_ras: tuple[float, float, float]
    diameter_mm: float
    voxels_kji: frozenset[tuple[int, int, int]] = field(default=frozenset(), repr=False, compare=False)
    ras_to_ijk: np.ndarray | None = field(default=None, repr=False, compare=False)

    def contains(self, point: Sequence[float]) -> bool:
        """Whether ``point`` (RAS mm) lies within the lesion's radius of its centre or in one of its voxels."""
        p = np.asarray(point, dtype=float)
        if np.linalg.norm(p - np.asarray(self.center_ras)) <= self.diameter_mm / 2:
            return True
        if self.ras_to_ijk is None or not self.voxels_kji:
            return False
        i, j, k = np.rint(self.ras_to_ijk @ np.append(p, 1.0))[:3].astype(int)
        return (int(k), int(j), int(i)) in self.voxels_kji


@dataclass(frozen=True)
class ScanDetections:
    """What the model found in one scan and what is really there."""

    candidates: tuple[Candidate, ...]
    lesions: tuple[Lesion, ...]


@dataclass(frozen=True)
class FrocResult:
    """An FROC curve over a set of scans and its summary figures."""

    fp_per_scan: tuple[float, ...]  # one operating point per distinct score, strictest first
    sensitivity: tuple[float, ...]
    thresholds: tuple[float, ...]
    sensitivity_at: dict[float, float]  # at each of the LUNA16 false-positive rates
    cpm: float
    scans: int
    lesions: int
    detected: int  # lesions hit by any candidate, whatever its score

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (rates as strings, e.g. ``"0.125"``)."""
        return {
            "cpm": self.cpm,
            "sensitivity_at_fp_per_scan": {f"{rate:g}": value for rate, value in self.sensitivity_at.items()},
            "scans": self.scans,
            "lesions": self.lesions,
            "detected": self.detected,
            "curve": [
                {"threshold": t, "fp_per_scan": f, "sensitivity": s}
                for t, f, s in zip(self.thresholds, self.fp_per_scan, self.sensitivity)
            ],
        }


def _point(values: np.ndarray) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])


def _ras_of(image: Image, kji: np.ndarray) -> np.ndarray:
    """RAS millimetres of voxel indices given as rows of ``(k, j, i)``."""
    ijk1 = np.column_stack([kji[:, ::-1].astype(float), np.ones(len(kji))])
    return (image.ijk_to_ras @ ijk1.T).T[:, :3]


def _lesions(reference: Image, components: np.ndarray) -> tuple[Lesion, ...]:
    """One lesion per positive value of ``components`` (an integer array on ``reference``'s grid)."""
    ras_to_ijk = np.linalg.inv(reference.ijk_to_ras)
    lesions = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        local = np.argwhere(components[box] == index) + np.array([s.start for s in box])
        ras = _ras_of(reference, local)
        volume = len(local) * reference.voxel_volume_mm3
        diameter = float(np.cbrt(6.0 * volume / np.pi))
        voxels = frozenset((int(k), int(j), int(i)) for k, j, i in local)
        lesions.append(Lesion(_point(ras.mean(axis=0)), diameter, voxels, ras_to_ijk))
    return tuple(lesions)


def lesions_from_labelmap(reference: Image, label: int | Sequence[int]) -> tuple[Lesion, ...]:
    """The connected components of ``label`` (one value or several, merged) in a reference label map."""
    values = [label] if isinstance(label, int) else list(label)
    components, _ = ndimage.label(np.isin(reference.array, values), structure=_CONNECTIVITY)
    return _lesions(reference, components)


def lesions_from_instances(instances: Image) -> tuple[Lesion, ...]:
    """One lesion per distinct positive value of an instance map (e.g. a phantom's nodule ids), touching or not."""
    values = np.asarray(instances.array)
    if not np.issubdtype(values.dtype, np.integer) or values.min(initial=0) < 0:
        raise InputError("An instance map holds one non-negative integer per lesion (0 = background).")
    _, dense = np.unique(values, return_inverse=True)  # 0 stays 0 when present
    dense = dense.reshape(values.shape)
    if values.min(initial=0) != 0:
        dense = dense + 1
    return _lesions(instances, dense.astype(np.int32))


def candidates_from_probability(
    probability: Image, threshold: float = 0.5, min_volume_mm3: float = 0.0
) -> tuple[Candidate, ...]:
    """Candidates from a lesion probability map: connected regions above ``threshold``, scored by their peak.

    The centre is the probability-weighted centroid of the region; regions smaller than ``min_volume_mm3`` are
    left out.
    """
    if not 0.0 <= threshold < 1.0:
        raise InputError(f"The candidate threshold must be in [0, 1), not {threshold}.")
    values = probability.array.astype(np.float32, copy=False)
    components, _ = ndimage.label(values > threshold, structure=_CONNECTIVITY)
    candidates = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        inside = components[box] == index
        if inside.sum() * probability.voxel_volume_mm3 < min_volume_mm3:
            continue
        weights = values[box][inside]
        local = np.argwhere(inside) + np.array([s.start for s in box])
        centre = (_ras_of(probability, local) * weights[:, None]).sum(axis=0) / weights.sum()
        candidates.append(Candidate(_point(centre), float(weights.max())))
    return tuple(candidates)


def _match(scan: ScanDetections) -> tuple[list[float], list[float | None]]:
    """False-positive scores and, per lesion, the best score of a candidate on it (None when missed)."""
    best: list[float | None] = [None] * len(scan.lesions)
    false_positives = []
    for candidate in scan.candidates:
        hits = [i for i, lesion in enumerate(scan.lesions) if lesion.contains(candidate.center_ras)]
        if not hits:
            false_positives.append(candidate.score)
            continue
        centre = np.asarray(candidate.center_ras)
        nearest = min(hits, key=lambda i: float(np.linalg.norm(np.asarray(scan.lesions[i].center_ras) - centre)))
        current = best[nearest]
        best[nearest] = candidate.score if current is None else max(current, candidate.score)
    return false_positives, best


def froc(scans: Sequence[ScanDetections], fp_rates: Sequence[float] = LUNA16_FP_RATES) -> FrocResult:
    """The FROC curve of ``scans`` and the mean sensitivity at ``fp_rates`` (the CPM for the LUNA16 rates)."""
    if not scans:
        raise InputError("FROC needs at least one scan.")
    lesions = sum(len(scan.lesions) for scan in scans)
    if lesions == 0:
        raise InputError("FROC needs at least one reference lesion; the references hold none.")
    fp_scores: list[float] = []
    tp_scores: list[float] = []
    for scan in scans:
        fps, best = _match(scan)
        fp_scores += fps
        tp_scores += [score for score in best if score is not None]
    fp_array, tp_array = np.asarray(fp_scores, dtype=float), np.asarray(tp_scores, dtype=float)
    thresholds = sorted(set(fp_scores) | set(tp_scores), reverse=True)
    fp_per_scan = [float((fp_array >= t).sum()) / len(scans) for t in thresholds]
    sensitivity = [float((tp_array >= t).sum()) / lesions for t in thresholds]
    sensitivity_at = {float(rate): _sensitivity_at(rate, fp_per_scan, sensitivity) for rate in fp_rates}
    return FrocResult(
        fp_per_scan=tuple(fp_per_scan),
        sensitivity=tuple(sensitivity),
        thresholds=tuple(float(t) for t in thresholds),
        sensitivity_at=sensitivity_at,
        cpm=float(np.mean(list(sensitivity_at.values()))),
        scans=len(scans),
        lesions=lesions,
        detected=len(tp_scores),
    )


def _sensitivity_at(rate: float, fp_per_scan: Sequence[float], sensitivity: Sequence[float]) -> float:
    """Sensitivity of the curve at ``rate`` false positives per scan, linearly interpolated between points.

    The curve starts at (0 FP, 0 sensitivity) before its strictest threshold; beyond its last point it stays at
    the last point's sensitivity.
    """
    xs = [0.0, *fp_per_scan]
    ys = [0.0, *sensitivity]
    # several thresholds can share a false-positive count: keep the best sensitivity reached at each count
    best: dict[float, float] = {}
    for x, y in zip(xs, ys):
        best[x] = max(y, best.get(x, 0.0))
    points = sorted(best.items())
    return float(np.interp(rate, [p[0] for p in points], [p[1] for p in points]))


def scan_detections(prediction: Image, reference: Image, label: int, threshold: float = 0.5) -> ScanDetections:
    """What ``medai evaluate --froc`` scores for one scan: candidates from a prediction, lesions from a reference.

    A floating-point prediction is a probability map of the lesion class (candidates scored by their peak); an
    integer one is a label map, whose components of ``label`` are candidates scored 1 (a single operating point).
    """
    if np.issubdtype(prediction.array.dtype, np.floating):
        candidates = candidates_from_probability(prediction, threshold)
    else:
        mask = prediction.with_array((prediction.array == label).astype(np.float32))
        candidates = tuple(Candidate(c.center_ras, 1.0) for c in candidates_from_probability(mask, 0.5))
    return ScanDetections(candidates, lesions_from_labelmap(reference, label))


def format_froc(result: FrocResult) -> str:
    """A short table: sensitivity at each false-positive rate, the CPM, lesions found."""
    rates = "  ".join(f"{rate:g}: {value:.3f}" for rate, value in result.sensitivity_at.items())
    return (
        f"FROC over {result.scans} scan(s), {result.lesions} lesion(s), {result.detected} hit at any score\n"
        f"  sensitivity at false positives per scan  {rates}\n"
        f"  CPM (mean of those) {result.cpm:.3f}"
    )
