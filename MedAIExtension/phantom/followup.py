"""Follow-up studies of a phantom patient: known nodule growth, a known rigid patient motion and a later date.

The second study shows the same synthetic patient (same seed: same anatomy, vessels and lung texture; new image
noise) on the same nominal scanner grid. Between the studies the patient has moved: the body is rotated about a
point and shifted, so every structure, nodules and vessels included, appears moved in the image. Each nodule
keeps its centre in the body and grows (or shrinks) isotropically by a known volume factor; nodules may also be
new at follow-up or resolved (present at baseline only). The truth records both studies' nodules, the exact
transform between the two scanner frames and the true volume doubling time (VDT).

>>> from MedAIExtension.phantom import PhantomSpec
>>> pair = followup_spec(PhantomSpec(size_ijk=(96, 96, 48), spacing=(3.5, 3.5, 5.0)), (2.0, 1.0, 1.3, 0.7),
...                      rotation_deg=(0, 0, 5), translation_mm=(10, 0, 0))
>>> [round(n.followup.volume_mm3 / n.baseline.volume_mm3, 6) for n in pair.nodules]
[2.0, 1.0, 1.3, 0.7]
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.atomic import ensure_writable_directory
from MedAIExtension.errors import InputError
from MedAIExtension.io.geometry import LPS_TO_RAS
from MedAIExtension.phantom.anatomy import build_layout, nodule_center
from MedAIExtension.phantom.chest import Phantom, generate_chest_phantom
from MedAIExtension.phantom.spec import NoduleSpec, NoduleType, PhantomSpec, _triple
from MedAIExtension.progress import Progress

__all__ = [
    "DEFAULT_VOLUME_FACTORS",
    "FollowupNodule",
    "FollowupSpec",
    "NoduleStatus",
    "PhantomPair",
    "followup_spec",
    "generate_phantom_pair",
    "motion_matrix",
    "pair_truth",
    "write_phantom_pair",
]

#: Volume factors used when none are given, repeated over the baseline nodules: doubling (VDT = interval),
#: stable, +30 % and shrinking by 30 %.
DEFAULT_VOLUME_FACTORS: tuple[float, ...] = (2.0, 1.0, 1.3, 0.7)

_MAX_ROTATION_DEG = 30.0
_MIN_NODULE_GAP_MM = 1.0  # as generate_chest_phantom requires
_MAX_PATIENT_ID = 64  # DICOM LO


class NoduleStatus(StrEnum):
    """Whether a nodule is seen in both studies, at follow-up only or at baseline only."""

    PERSISTENT = "persistent"
    NEW = "new"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class FollowupNodule:
    """One nodule across the two studies.

    Attributes:
        id: stable id: baseline nodules keep their baseline ids 1..N, new nodules follow (N+1, ...).
        status: persistent, new or resolved.
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


@dataclass(frozen=True, eq=False)
class PhantomPair:
    """Two generated studies of one phantom patient and the truth that links them."""

    baseline: Phantom
    followup: Phantom
    spec: FollowupSpec
    truth: dict[str, Any]


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
        pose_ras=tuple(tuple(float(v) for v in row) for row in motion @ baseline.pose),
        noise_seed=noise_seed,
    )
    result = FollowupSpec(baseline, followup, tuple(nodules), rotation, translation, center)
    _check_field_of_view(result, body_centers)
    return result


def pair_truth(
    spec: FollowupSpec,
    baseline_truth: dict[str, Any],
    followup_truth: dict[str, Any],
    baseline_date: dt.date,
    interval_days: int,
    patient_id: str = "MEDAI-PHANTOM",
) -> dict[str, Any]:
    """The JSON-ready truth of a study pair (schema in :func:`write_phantom_pair`).

    Args:
        spec: the pair's spec.
        baseline_truth: ``Phantom.truth`` of the baseline study.
        followup_truth: ``Phantom.truth`` of the follow-up study.
        baseline_date: date of the baseline study.
        interval_days: days from the baseline to the follow-up study (> 0).
        patient_id: the patient's id in both studies.
    """
    interval = _interval(interval_days)
    _check_date(baseline_date)
    forward = spec.baseline_to_followup_ras
    backward = spec.followup_to_baseline_ras
    nodules = []
    for nodule in spec.nodules:
        before = _study_nodule(nodule.baseline, nodule.baseline_label, baseline_truth)
        after = _study_nodule(nodule.followup, nodule.followup_label, followup_truth)
        item: dict[str, Any] = {
            "id": nodule.id,
            "status": nodule.status.value,
            "kind": NoduleType((nodule.baseline or nodule.followup).kind).value,  # type: ignore[union-attr]
            "lung": (before or after)["lung"],  # type: ignore[index]
            "juxta_pleural": bool((nodule.baseline or nodule.followup).juxta_pleural),  # type: ignore[union-attr]
            "volume_factor": nodule.volume_factor,
            "baseline": before,
            "followup": after,
            "diameter_change_mm": None,
            "solid_diameter_change_mm": None,
            "volume_change_mm3": None,
            "volume_change_percent": None,
            "vdt_days": None,
        }
        if before is not None and after is not None:
            v1, v2 = nodule.baseline.volume_mm3, nodule.followup.volume_mm3  # type: ignore[union-attr]
            item["diameter_change_mm"] = round(after["diameter_mm"] - before["diameter_mm"], 6)
            item["solid_diameter_change_mm"] = round(after["solid_diameter_mm"] - before["solid_diameter_mm"], 6)
            item["volume_change_mm3"] = round(v2 - v1, 6)
            item["volume_change_percent"] = round(100.0 * (v2 / v1 - 1.0), 6)
            item["vdt_days"] = round(interval * math.log(2.0) / math.log(v2 / v1), 6) if v2 > v1 else None
        nodules.append(item)
    followup_date = baseline_date + dt.timedelta(days=interval)
    return {
        "generator": "MedAIExtension.phantom.followup",
        "patient_id": patient_id,
        "seed": spec.baseline.seed,
        "interval_days": interval,
        "studies": {
            "baseline": _study(baseline_date, spec.baseline, baseline_truth),
            "followup": _study(followup_date, spec.followup, followup_truth),
        },
        "motion": {
            "rotation_deg": list(spec.rotation_deg),
            "rotation_order": "R = Rz @ Ry @ Rx (about the R, A, S axes; x first)",
            "rotation_center_ras": list(spec.rotation_center_ras),
            "translation_mm": list(spec.translation_mm),
            "followup_to_baseline_ras": _matrix(backward),
            "baseline_to_followup_ras": _matrix(forward),
            "followup_to_baseline_lps": _matrix(LPS_TO_RAS @ backward @ LPS_TO_RAS),
            "baseline_to_followup_lps": _matrix(LPS_TO_RAS @ forward @ LPS_TO_RAS),
        },
        "nodules": nodules,
    }


def generate_phantom_pair(
    spec: FollowupSpec,
    interval_days: int = 180,
    baseline_date: dt.date = dt.date(2025, 1, 15),
    patient_id: str = "MEDAI-PHANTOM",
    progress: Callable[[float, str], None] | None = None,
) -> PhantomPair:
    """Generate both studies in memory (no files) with their pair truth.

    Args:
        spec: from :func:`followup_spec`.
        interval_days: days between the studies (> 0).
        baseline_date: date of the baseline study.
        patient_id: recorded in the truth.
        progress: optional ``callback(fraction, message)`` or :class:`Progress` (cancellable).
    """
    interval = _interval(interval_days)
    _check_date(baseline_date)
    reporter = Progress.of(progress)
    first = generate_chest_phantom(spec.baseline, reporter.stage(0.0, 0.5))
    second = generate_chest_phantom(spec.followup, reporter.stage(0.5, 1.0))
    truth = pair_truth(spec, first.truth, second.truth, baseline_date, interval, patient_id)
    return PhantomPair(first, second, spec, truth)


def write_phantom_pair(
    output_dir: str | os.PathLike[str],
    size_ijk: Sequence[int] = (256, 256, 160),
    spacing: Sequence[float] = (1.4, 1.4, 2.0),
    seed: int = 0,
    interval_days: int = 180,
    volume_factors: Sequence[float] | None = None,
    rotation_deg: Sequence[float] = (0.0, 0.0, 5.0),
    translation_mm: Sequence[float] = (10.0, 0.0, 0.0),
    patient_id: str = "MEDAI-PHANTOM",
    baseline_date: dt.date = dt.date(2025, 1, 15),
    *,
    baseline: PhantomSpec | None = None,
    new_nodules: Sequence[NoduleSpec] = (),
    resolved: Sequence[int] = (),
    rotation_center_ras: Sequence[float] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Path]:
    """Write a baseline and a follow-up phantom study of one patient, and their joint truth.

    Layout of ``output_dir``: ``baseline/`` and ``followup/`` (each as :func:`write_phantom_study` writes it:
    ``ct/`` DICOM series, ``ct.nii.gz``, ``labels.nii.gz``, ``nodules.nii.gz``, ``truth.json``), and
    ``truth.json`` for the pair. Both studies have the same PatientID, their own StudyInstanceUID, and the
    follow-up is ``interval_days`` after ``baseline_date``. Everything is staged and moved into place at the end.

    The pair ``truth.json``::

        generator, patient_id, seed, interval_days
        studies.{baseline,followup}: study_date (ISO), dicom_study_date (YYYYMMDD), folder, study_instance_uid,
            series_instance_uid, frame_of_reference_uid, noise_seed, ijk_to_ras (4x4), pose_ras (4x4, body ->
            scanner RAS)
        motion: rotation_deg, rotation_order, rotation_center_ras, translation_mm,
            followup_to_baseline_ras (4x4: follow-up RAS point -> same tissue's baseline RAS point),
            baseline_to_followup_ras (its inverse), and both again in LPS (ITK/DICOM) as *_lps
        nodules[]: id (stable), status (persistent|new|resolved), kind, lung, juxta_pleural, volume_factor,
            baseline / followup: null or {label_id (value in that study's nodules.nii.gz), center_ras (that
                study's scanner RAS), diameter_mm, volume_mm3 (analytic), solid_diameter_mm, solid_volume_mm3,
                mask_volume_mm3, fully_in_field_of_view},
            diameter_change_mm, solid_diameter_change_mm, volume_change_mm3, volume_change_percent,
            vdt_days (interval · ln 2 / ln(V2/V1); null unless persistent and growing)

    Args:
        output_dir: folder to write into (created if needed).
        size_ijk: voxels along i, j, k of both studies (ignored when ``baseline`` is given).
        spacing: voxel spacing in mm (ignored when ``baseline`` is given).
        seed: phantom seed (ignored when ``baseline`` is given).
        interval_days: days from the baseline to the follow-up study (integer > 0).
        volume_factors: per baseline nodule; default :data:`DEFAULT_VOLUME_FACTORS` repeated.
        rotation_deg: patient rotation (rx, ry, rz) in degrees, see :func:`followup_spec`.
        translation_mm: patient shift (tx, ty, tz) in mm, RAS.
        patient_id: DICOM PatientID of both studies.
        baseline_date: date of the baseline study.
        baseline: a full baseline spec instead of size_ijk/spacing/seed (default nodules otherwise).
        new_nodules: nodules present only at follow-up.
        resolved: stable ids of baseline nodules absent at follow-up.
        rotation_center_ras: point the patient turns about; default the centre of the field of view.
        progress: optional ``callback(fraction, message)`` or :class:`Progress` (cancellable).

    Returns:
        ``{"baseline": folder, "followup": folder, "truth": pair truth.json}`` plus each study's files as
        ``baseline_ct``, ``baseline_nifti``, ``baseline_labels``, ``baseline_nodules``, ``baseline_truth`` and
        the same with ``followup_``.

    Raises:
        InputError: bad interval, date, patient id, factors, motion (see :func:`followup_spec`).
        OutputError: the output folder cannot be written.
    """
    from MedAIExtension.phantom.study import write_phantom_study

    interval = _interval(interval_days)
    _check_date(baseline_date)
    if not isinstance(patient_id, str) or not patient_id.strip() or len(patient_id) > _MAX_PATIENT_ID:
        raise InputError(f"patient_id must be a non-empty text of at most {_MAX_PATIENT_ID} characters.")
    if baseline is None:
        baseline = PhantomSpec(size_ijk=tuple(size_ijk), spacing=tuple(spacing), seed=seed)  # type: ignore[arg-type]
    if volume_factors is None:
        volume_factors = [DEFAULT_VOLUME_FACTORS[n % len(DEFAULT_VOLUME_FACTORS)] for n in range(len(baseline.nodules))]
    spec = followup_spec(
        baseline,
        volume_factors,
        rotation_deg,
        translation_mm,
        new_nodules,
        resolved,
        rotation_center_ras=rotation_center_ras,
    )
    reporter = Progress.of(progress)
    out = ensure_writable_directory(output_dir)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".medai-staging-"))
    dates = {"baseline": baseline_date, "followup": baseline_date + dt.timedelta(days=interval)}
    specs = {"baseline": spec.baseline, "followup": spec.followup}
    try:
        written: dict[str, dict[str, Path]] = {}
        for n, name in enumerate(("baseline", "followup")):
            written[name] = write_phantom_study(
                staging / name,
                spec=specs[name],
                study_date=dates[name],
                patient_id=patient_id,
                progress=reporter.stage(0.5 * n, 0.5 * n + 0.5),
            )
        study_truth = {name: json.loads(files["truth"].read_text(encoding="utf-8")) for name, files in written.items()}
        truth = pair_truth(spec, study_truth["baseline"], study_truth["followup"], baseline_date, interval, patient_id)
        for name, files in written.items():
            truth["studies"][name].update(_dicom_ids(files["ct"]), folder=name)
        (staging / "truth.json").write_text(json.dumps(truth, indent=2), encoding="utf-8")
        reporter(1.0, "Moving the study pair into place")  # last chance to cancel: nothing is in place yet
        for name in ("baseline", "followup", "truth.json"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(staging / name, target)
        result: dict[str, Path] = {name: out / name for name in ("baseline", "followup")}
        result["truth"] = out / "truth.json"
        for name, files in written.items():
            for key, path in files.items():
                result[f"{name}_{key}"] = out / name / path.relative_to(staging / name)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---- helpers ------------------------------------------------------------------------------------------------
def _interval(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float) or float(value) != int(value):
        raise InputError(f"interval_days must be a whole number of days, got {value!r}.")
    if int(value) <= 0:
        raise InputError(
            f"interval_days must be positive (the follow-up comes after the baseline), got {value!r}; "
            "give the number of days between the two studies."
        )
    return int(value)


def _check_date(value: Any) -> None:
    if not isinstance(value, dt.date):
        raise InputError(f"baseline_date must be a datetime.date, got {value!r}.")


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
    kind = NoduleType(nodule.kind)
    if fraction is not None and kind is not NoduleType.PART_SOLID:
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
                f"Nodule {nodule.id} ({shape.diameter_mm:.1f} mm {NoduleType(shape.kind).value}, centre at {name} "
                f"RAS {where}) lies partly outside the {name} field of view; {fix}."
            )


def _study_nodule(shape: NoduleSpec | None, label: int | None, truth: dict[str, Any]) -> dict[str, Any] | None:
    if shape is None or label is None:
        return None
    rendered = truth["nodules"][label - 1]
    return {
        "label_id": label,
        "center_ras": rendered["center_ras"],
        "lung": rendered["lung"],
        "diameter_mm": round(shape.diameter_mm, 6),
        "volume_mm3": round(shape.volume_mm3, 6),
        "solid_diameter_mm": round(shape.solid_diameter_mm, 6),
        "solid_volume_mm3": round(shape.solid_volume_mm3, 6),
        "mask_volume_mm3": rendered["mask_volume_mm3"],
        "fully_in_field_of_view": rendered["fully_in_field_of_view"],
    }


def _study(date: dt.date, spec: PhantomSpec, truth: dict[str, Any]) -> dict[str, Any]:
    return {
        "study_date": date.isoformat(),
        "dicom_study_date": date.strftime("%Y%m%d"),
        "noise_seed": spec.effective_noise_seed,
        "ijk_to_ras": truth["ijk_to_ras"],
        "pose_ras": _matrix(spec.pose),
    }


def _dicom_ids(folder: Path) -> dict[str, str]:
    import pydicom

    first = pydicom.dcmread(min(folder.glob("*.dcm")), stop_before_pixels=True)
    return {
        "study_instance_uid": str(first.StudyInstanceUID),
        "series_instance_uid": str(first.SeriesInstanceUID),
        "frame_of_reference_uid": str(first.FrameOfReferenceUID),
    }


def _matrix(matrix: np.ndarray) -> list[list[float]]:
    return [[round(float(v), 12) + 0.0 for v in row] for row in matrix]
