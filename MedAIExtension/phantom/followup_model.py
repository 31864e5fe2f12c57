"""The follow-up model of a phantom pair: nodule growth, new and resolved nodules, and the patient's rigid motion.

Here live :class:`FollowupNodule`, :class:`FollowupSpec`, :func:`motion_matrix` and
:func:`followup_spec` with their checks (volume factors, resolved ids, solid fractions, gaps between grown
nodules, field of view after the motion). All are re-exported by :mod:`MedAIExtension.phantom.followup`, which
generates and writes the pair and its truth.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.phantom.anatomy import build_layout, nodule_center
from MedAIExtension.phantom.spec import NoduleSpec, PhantomSpec, _triple
from MedAIExtension.tracking.types import NoduleKind, NoduleStatus

__all__ = [
    "FollowupNodule",
    "FollowupSpec",
    "followup_spec",
    "motion_matrix",
]


_MAX_ROTATION_DEG = 30.0
_MIN_NODULE_GAP_MM = 1.0  # as generate_chest_phantom requires


@dataclass(frozen=True)
class FollowupNodule:
    """One nodule across the two studies.

    Attributes:
        id: stable id: baseline nodules keep their baseline ids 1..N, new nodules follow (N+1, ...).
        status: PERSISTENT, NEW or RESOLVED (tracking's :class:`NoduleStatus`).
        baseline: the nodule in the baseline spec (None when new).
        followup: the nodule in the follow-up spec (None when resolved).
        volume_factor: follow-up volume / baseline volume (None unless persistent).
        baseline_label: its value in the baseline nodule-id map (None when new).
        followup_label: its value in the follow-up nodule-id map (None when resolved).
    """

    id: int
    status: NoduleStatus
    baseline: NoduleSpec | None
    followup: NoduleSpec | None
    volume_factor: float | None
    baseline_label: int | None
    followup_label: int | None


@dataclass(frozen=True)
class FollowupSpec:
    """A baseline spec, its follow-up spec and how they relate (motion and per-nodule change).

    Attributes:
        baseline: the baseline study's spec.
        followup: the follow-up study's spec: same grid, seed and anatomy; nodules changed; patient moved.
        nodules: every nodule of either study, by stable id.
        rotation_deg: (rx, ry, rz) rotation of the patient about the RAS axes, applied x first, then y, then z.
        translation_mm: shift of the patient in scanner RAS (mm), applied after the rotation.
        rotation_center_ras: the point the patient is rotated about (scanner RAS of the baseline).
    """

    baseline: PhantomSpec
    followup: PhantomSpec
    nodules: tuple[FollowupNodule, ...]
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    rotation_center_ras: tuple[float, float, float]

    @property
    def baseline_to_followup_ras(self) -> np.ndarray:
        """4x4: where a point of the patient at baseline RAS lies in the follow-up scanner frame."""
        return motion_matrix(self.rotation_deg, self.translation_mm, self.rotation_center_ras)

    @property
    def followup_to_baseline_ras(self) -> np.ndarray:
        """4x4: maps a follow-up RAS point to the corresponding (same tissue) baseline RAS point."""
        return np.linalg.inv(self.baseline_to_followup_ras)


def motion_matrix(
    rotation_deg: Sequence[float],
    translation_mm: Sequence[float],
    center_ras: Sequence[float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """The rigid 4x4 RAS transform ``x -> R (x - c) + c + t`` with ``R = Rz @ Ry @ Rx``.

    Args:
        rotation_deg: (rx, ry, rz) degrees about the R, A and S axes (right-handed: positive rz turns R towards A).
        translation_mm: (tx, ty, tz) shift in mm, RAS.
        center_ras: the rotation centre c.

    Returns:
        The 4x4 matrix.
    """
    rx, ry, rz = (math.radians(v) for v in _triple(rotation_deg, "rotation_deg"))
    t = np.array(_triple(translation_mm, "translation_mm"))
    c = np.array(_triple(center_ras, "rotation_center_ras"))
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    rot_x = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    rot_y = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rot_z = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    matrix = np.eye(4)
    matrix[:3, :3] = rot_z @ rot_y @ rot_x
    matrix[:3, 3] = c + t - matrix[:3, :3] @ c
    return matrix


def followup_spec(
    baseline: PhantomSpec,
    volume_factors: Sequence[float],
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    translation_mm: Sequence[float] = (0.0, 0.0, 0.0),
    new_nodules: Sequence[NoduleSpec] = (),
    resolved: Sequence[int] = (),
    *,
    rotation_center_ras: Sequence[float] | None = None,
    solid_fractions: Sequence[float | None] | None = None,
    noise_seed: int | None = None,
) -> FollowupSpec:
    """Describe a follow-up study of the patient of ``baseline``.

    Each persistent nodule keeps its centre in the body; its diameter is multiplied by ``factor ** (1/3)`` so
    that its analytic volume is multiplied by ``factor`` exactly (a part-solid nodule keeps its solid fraction
    unless ``solid_fractions`` says otherwise). The patient is then moved rigidly: rotated by ``rotation_deg``
    about ``rotation_center_ras`` and shifted by ``translation_mm``; the scanner grid stays the baseline's.

    Args:
        baseline: the baseline spec (its nodules get the stable ids 1..N).
        volume_factors: one follow-up/baseline volume ratio per baseline nodule (> 0; 1 = stable, 2 = doubled,
            < 1 shrinking); the value given for a resolved nodule is not used.
        rotation_deg: (rx, ry, rz) degrees about the RAS axes, applied x, then y, then z; each within ±30.
        translation_mm: (tx, ty, tz) patient shift in scanner RAS, mm.
        new_nodules: nodules seen only at follow-up (stable ids N+1, ...), placed in the body as in a
            :class:`PhantomSpec` (before the motion).
        resolved: stable ids (1..N) of baseline nodules absent at follow-up.
        rotation_center_ras: point the patient turns about; default the centre of the field of view.
        solid_fractions: optional follow-up solid fraction per baseline nodule (None keeps it); part-solid only.
        noise_seed: seed of the follow-up image noise; default the baseline's noise seed + 1.

    Returns:
        The :class:`FollowupSpec`.

    Raises:
        InputError: wrong number of factors, a factor <= 0, unknown resolved ids, a rotation beyond ±30°, grown
            nodules that overlap or exceed 60 mm, or a nodule that leaves the field of view after the motion.
    """
    if not isinstance(baseline, PhantomSpec):
        raise InputError(f"baseline must be a PhantomSpec, got {type(baseline).__name__}.")
    count = len(baseline.nodules)
    factors = _factors(volume_factors, count)
    gone = _resolved_ids(resolved, count)
    fractions = _solid_fractions(solid_fractions, count)
    extra = tuple(new_nodules)
    if not all(isinstance(n, NoduleSpec) for n in extra):
        raise InputError("new_nodules must be NoduleSpec objects (place them with center_ras or lung/position).")
    rotation = _triple(rotation_deg, "rotation_deg")
    if max(abs(v) for v in rotation) > _MAX_ROTATION_DEG:
        raise InputError(
            f"rotation_deg {rotation} is beyond ±{_MAX_ROTATION_DEG:g}° about an axis; a repositioned patient turns "
            "by a few degrees. Give smaller angles."
        )
    translation = _triple(translation_mm, "translation_mm")
    center = _triple(baseline.center_ras if rotation_center_ras is None else rotation_center_ras, "rotation_center_ras")
    if noise_seed is None:
        noise_seed = baseline.effective_noise_seed + 1

    layout = build_layout(baseline.anatomy)
    nodules: list[FollowupNodule] = []
    followup_nodules: list[NoduleSpec] = []
    body_centers: dict[int, np.ndarray] = {}
    for index, (nodule, factor) in enumerate(zip(baseline.nodules, factors, strict=True), start=1):
        center_body = nodule_center(layout, nodule) + layout.origin_ras
        body_centers[index] = center_body
        if index in gone:
            nodules.append(FollowupNodule(index, NoduleStatus.RESOLVED, nodule, None, None, index, None))
            continue
        grown = _grown(index, nodule, factor, fractions[index - 1], center_body)
        followup_nodules.append(grown)
        label = len(followup_nodules)
        nodules.append(FollowupNodule(index, NoduleStatus.PERSISTENT, nodule, grown, factor, index, label))
    for offset, nodule in enumerate(extra, start=1):
        index = count + offset
        body_centers[index] = nodule_center(layout, nodule) + layout.origin_ras
        followup_nodules.append(nodule)
        nodules.append(FollowupNodule(index, NoduleStatus.NEW, None, nodule, None, None, len(followup_nodules)))
    _check_gaps([n for n in nodules if n.followup is not None], body_centers)

    motion = motion_matrix(rotation, translation, center)
    followup = dataclasses.replace(
        baseline,
        nodules=tuple(followup_nodules),
        pose_ras=tuple((float(a), float(b), float(c), float(d)) for a, b, c, d in motion @ baseline.pose),
        noise_seed=noise_seed,
    )
    result = FollowupSpec(baseline, followup, tuple(nodules), rotation, translation, center)
    _check_field_of_view(result, body_centers)
    return result


# ---- helpers ------------------------------------------------------------------------------------------------
def _factors(values: Any, count: int) -> list[float]:
    try:
        factors = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"volume_factors must be numbers, got {values!r}.") from None
    if len(factors) != count:
        raise InputError(
            f"volume_factors has {len(factors)} value(s) but the baseline has {count} nodule(s); give one "
            "follow-up/baseline volume ratio per baseline nodule (1 = stable)."
        )
    for index, factor in enumerate(factors, start=1):
        if not math.isfinite(factor) or factor <= 0.0:
            raise InputError(
                f"Volume factor {factor!r} of nodule {index} must be a finite number > 0 (1 = stable, 2 = doubled); "
                "list a vanished nodule in resolved instead."
            )
    return factors


def _resolved_ids(values: Any, count: int) -> set[int]:
    ids: set[int] = set()
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= value <= count:
            raise InputError(f"resolved lists baseline nodule ids 1..{count}; {value!r} is not one of them.")
        if int(value) in ids:
            raise InputError(f"Nodule {value} is listed twice in resolved; list each id once.")
        ids.add(int(value))
    return ids


def _solid_fractions(values: Any, count: int) -> list[float | None]:
    if values is None:
        return [None] * count
    fractions = list(values)
    if len(fractions) != count:
        raise InputError(
            f"solid_fractions has {len(fractions)} value(s) but the baseline has {count} nodule(s); give one per "
            "baseline nodule (None keeps the baseline's)."
        )
    return fractions


def _grown(index: int, nodule: NoduleSpec, factor: float, fraction: float | None, center: np.ndarray) -> NoduleSpec:
    diameter = nodule.diameter_mm * factor ** (1.0 / 3.0)
    kind = NoduleKind(nodule.kind)
    if fraction is not None and kind is not NoduleKind.PART_SOLID:
        raise InputError(f"solid_fractions[{index - 1}] is given but nodule {index} is {kind.value}; use None.")
    try:
        return NoduleSpec(
            diameter,
            kind,
            solid_fraction=nodule.solid_fraction if fraction is None else fraction,
            center_ras=tuple(float(v) for v in center),  # type: ignore[arg-type]
        )
    except InputError as error:
        raise InputError(f"Nodule {index} at follow-up (volume factor {factor:g}): {error}") from None


def _check_gaps(nodules: list[FollowupNodule], centers: dict[int, np.ndarray]) -> None:
    for n, first in enumerate(nodules):
        for second in nodules[n + 1 :]:
            distance = float(np.linalg.norm(centers[first.id] - centers[second.id]))
            gap = distance - first.followup.radius_mm - second.followup.radius_mm  # type: ignore[union-attr]
            if gap < _MIN_NODULE_GAP_MM:
                raise InputError(
                    f"At follow-up nodules {first.id} and {second.id} overlap or touch (gap {gap:.1f} mm); "
                    "give them smaller volume factors or place the new nodule elsewhere."
                )


def _check_field_of_view(spec: FollowupSpec, centers: dict[int, np.ndarray]) -> None:
    size = np.array(spec.baseline.size_ijk, dtype=float)
    for name, study in (("baseline", spec.baseline), ("follow-up", spec.followup)):
        to_ijk = np.linalg.inv(study.ijk_to_ras) @ study.pose
        for nodule in spec.nodules:
            shape = nodule.baseline if name == "baseline" else nodule.followup
            if shape is None:
                continue
            ijk = to_ijk[:3, :3] @ centers[nodule.id] + to_ijk[:3, 3]
            margin = shape.radius_mm / np.array(study.spacing)
            if np.all(ijk - margin >= -0.5) and np.all(ijk + margin <= size - 0.5):
                continue
            where = np.round(study.pose[:3, :3] @ centers[nodule.id] + study.pose[:3, 3], 1).tolist()
            if name == "baseline":
                fix = "enlarge size_ijk or spacing, or move the nodule"
            else:
                fix = (
                    f"reduce the motion (rotation_deg {list(spec.rotation_deg)}, translation_mm "
                    f"{list(spec.translation_mm)}), or enlarge size_ijk or spacing"
                )
            raise InputError(
                f"Nodule {nodule.id} ({shape.diameter_mm:.1f} mm {NoduleKind(shape.kind).value}, centre at {name} "
                f"RAS {where}) lies partly outside the {name} field of view; {fix}."
            )
