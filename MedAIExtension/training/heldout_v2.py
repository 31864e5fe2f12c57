"""The shipped segmentation model on held-out phantom-v2 scans, judged as issue 17 asks.

Each scan is a :func:`~MedAIExtension.phantom.acquisition.random_ct_spec` phantom (random acquisition, lung
findings and hard negatives, lesions of 3-30 mm and often a mass of 30-70 mm) from seeds the training never uses
(9500 and up). The model runs through the same inference path as ``medai segment`` (sliding window, clean-up,
lesion filter). What is measured:

- **detection** (LUNA16 style, :mod:`MedAIExtension.segmentation.froc`): with a lesion filter, every lesion
  component the filter judged is a candidate at its centroid, ranked by the filter's score (masses first), so the
  FROC curve runs through the filter's operating point (the final label map) and beyond it, as for any candidate
  detector with false-positive reduction; without a filter each component of the final label map is a candidate
  scored by its peak lesion probability. FROC and CPM over the scans;
- **false positives ≥ 3 mm per scan**: components of at least 3 mm equivalent diameter that hit no lesion;
- **lesion Dice** of each lesion ≥ 6 mm in a box of twice its diameter around it (a miss counts 0);
- **masses**: each lesion ≥ 30 mm must be hit and at least half of it covered by the lesion label;
- **lung Dice**.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from MedAIExtension.io.image import Image
from MedAIExtension.metrics import dice
from MedAIExtension.models.backends import load_backend
from MedAIExtension.models.catalog import ModelEntry
from MedAIExtension.models.inference import map_to_input, predict_scores, prepare_input, scores_to_labelmap
from MedAIExtension.models.lesion_filter import LesionComponent
from MedAIExtension.phantom import LABEL_LUNG, LABEL_NODULE, Phantom, generate_chest_phantom
from MedAIExtension.phantom.acquisition import random_ct_spec
from MedAIExtension.phantom.spec import PhantomSpec
from MedAIExtension.segmentation.froc import Candidate, FrocResult, ScanDetections, froc, lesions_from_instances

__all__ = [
    "HELDOUT_V2_SEEDS",
    "detection_figures",
    "evaluate_v2",
    "filter_candidates",
    "heldout_v2_spec",
    "lesion_candidates",
    "lesion_dices",
    "segment_with_probability",
]

#: Seeds of the held-out phantom-v2 scans (training uses 5000-5999; the lesion filter 6000-6999).
HELDOUT_V2_SEEDS: tuple[int, ...] = tuple(range(9500, 9510))
_MIN_FP_DIAMETER_MM = 3.0
_MASS_MM = 30.0
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def heldout_v2_spec(seed: int, max_voxels: int = 6_000_000) -> PhantomSpec:
    """A held-out phantom-v2 scan: a chest field of view of 340 x 280 x 150 mm, every other scan with a mass."""
    spec, _ = random_ct_spec(
        seed, fov_mm=(340.0, 280.0, 150.0), max_nodules=4, mass_probability=0.5, max_voxels=max_voxels
    )
    return spec


def segment_with_probability(
    image: Image, entry: ModelEntry, backend: Any, scored: list[LesionComponent] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The final label map and the lesion probability, both on ``image``'s grid, from one network pass (with the
    lesion filter's judged components appended to ``scored`` when given)."""
    prepared = prepare_input(image, entry)
    if prepared is None:
        empty = np.zeros(image.shape, dtype=np.uint8)
        return empty, empty.astype(np.float32)
    scores, _ = predict_scores(prepared, backend)
    channel = 1 + [label.value for label in entry.labels].index(LABEL_NODULE)
    shifted = np.exp(scores - scores.max(axis=0, keepdims=True))
    probability = (shifted[channel] / shifted.sum(axis=0)).astype(np.float32)
    labelmap = scores_to_labelmap(scores, prepared, entry, image, lesion_scores=scored)
    return labelmap, map_to_input(probability, prepared, image)


def filter_candidates(scored: Sequence[LesionComponent]) -> list[Candidate]:
    """The lesion filter's judged components in the lungs as detection candidates, scored by the filter (1 for a
    mass, which the filter never removes); components outside the lungs' envelope are no candidates."""
    return [
        Candidate(c.center_ras, 1.0 if c.is_mass else float(c.score if c.score is not None else 1.0))
        for c in scored
        if c.in_lungs
    ]


def lesion_candidates(image: Image, labelmap: np.ndarray, probability: np.ndarray) -> list[tuple[Candidate, float]]:
    """Each lesion component as a candidate (centroid, peak probability) with its equivalent diameter."""
    components, _ = ndimage.label(labelmap == LABEL_NODULE, structure=_CONNECTIVITY)
    out = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        inside = components[box] == index
        local = np.argwhere(inside) + np.array([s.start for s in box])
        ijk = np.column_stack([local[:, ::-1].astype(float), np.ones(len(local))])
        centre = (image.ijk_to_ras @ ijk.T).T[:, :3].mean(axis=0)
        diameter = float(np.cbrt(6.0 * inside.sum() * image.voxel_volume_mm3 / np.pi))
        score = float(probability[box][inside].max())
        out.append((Candidate((float(centre[0]), float(centre[1]), float(centre[2])), score), diameter))
    return out


def lesion_dices(phantom: Phantom, labelmap: np.ndarray, min_diameter_mm: float = 6.0) -> list[float]:
    """Dice of the lesion label with each reference lesion of at least ``min_diameter_mm`` in a box of twice its
    diameter around it (a miss counts 0; neighbours in the box count as they are labelled)."""
    truth = phantom.labels.array
    out = []
    for item in phantom.truth["nodules"]:
        diameter = float(item["diameter_mm"])
        if diameter < min_diameter_mm:
            continue
        mask = phantom.nodule_mask(item["id"])
        if not mask.any():
            continue
        centre = np.argwhere(mask).mean(axis=0).round().astype(int)
        half = np.ceil(diameter / np.asarray(phantom.ct.spacing[::-1])).astype(int)
        box = tuple(slice(max(c - h, 0), c + h + 1) for c, h in zip(centre, half, strict=True))
        out.append(dice(labelmap[box] == LABEL_NODULE, truth[box] == LABEL_NODULE))
    return out


def detection_figures(detection: FrocResult) -> dict[str, Any]:
    """The detection figures both held-out evaluations report: CPM, FROC points, lesions and those hit."""
    return {
        "froc_cpm": round(detection.cpm, 4),
        "froc_sensitivity_at_fp_per_scan": {f"{k:g}": round(v, 4) for k, v in detection.sensitivity_at.items()},
        "lesions": detection.lesions,
        "lesions_detected": detection.detected,
    }


def evaluate_v2(
    entry: ModelEntry,
    seeds: Sequence[int] = HELDOUT_V2_SEEDS,
    log: Callable[[str], None] = print,
    max_voxels: int = 6_000_000,
) -> dict[str, Any]:
    """Run ``entry`` on the held-out phantom-v2 scans of ``seeds``; the figures of the module docstring."""
    backend = load_backend(entry, "cpu")
    scans: list[ScanDetections] = []
    lung_dice, lesion_dice, false_positives, masses, seconds = [], [], [], [], []
    for seed in seeds:
        phantom = generate_chest_phantom(heldout_v2_spec(seed, max_voxels))
        started = time.perf_counter()
        scored: list[LesionComponent] = []
        labelmap, probability = segment_with_probability(phantom.ct, entry, backend, scored)
        seconds.append(time.perf_counter() - started)
        truth = phantom.labels.array
        lesions = lesions_from_instances(phantom.nodule_ids)
        found = lesion_candidates(phantom.ct, labelmap, probability)
        ranked = filter_candidates(scored) if entry.postprocessing.lesion_filter is not None else None
        scans.append(ScanDetections(tuple(ranked if ranked is not None else (c for c, _ in found)), lesions))
        false = [d for c, d in found if d >= _MIN_FP_DIAMETER_MM and not any(x.contains(c.center_ras) for x in lesions)]
        false_positives.append(len(false))
        lung_dice.append(dice(labelmap == LABEL_LUNG, truth == LABEL_LUNG))
        lesion_dice += lesion_dices(phantom, labelmap)
        for item in phantom.truth["nodules"]:
            mask = phantom.nodule_mask(item["id"])
            diameter = float(item["diameter_mm"])
            if mask.any() and diameter >= _MASS_MM:
                covered = float(np.mean(labelmap[mask] == LABEL_NODULE))
                lesion = next(x for x in lesions if x.contains(item["mask_centroid_ras"] or item["center_ras"]))
                hit = any(lesion.contains(c.center_ras) for c, _ in found)
                masses.append({"seed": seed, "diameter_mm": round(diameter, 1), "hit": hit, "covered": covered})
        log(
            f"  v2 seed {seed}: {len(lesions)} lesion(s), {len(found)} component(s), {len(false)} false >= 3 mm, "
            f"lung Dice {lung_dice[-1]:.3f}, {seconds[-1]:.1f} s"
        )
    detection = froc(scans)
    return {
        "heldout_v2_seeds": list(seeds),
        "dice_lung": round(float(np.mean(lung_dice)), 4),
        "dice_lesions_ge_6mm": round(float(np.mean(lesion_dice)), 4) if lesion_dice else None,
        "lesions_ge_6mm": len(lesion_dice),
        **detection_figures(detection),
        "false_positives_ge_3mm_per_scan": round(float(np.mean(false_positives)), 2),
        "false_positives_ge_3mm_max": int(max(false_positives, default=0)),
        "masses": masses,
        "masses_found": sum(1 for m in masses if m["hit"] and m["covered"] >= 0.5),
        "seconds_per_scan": round(float(np.mean(seconds)), 1),
    }
