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

This module generates and writes the pair and its truth; the growth/motion model (:class:`FollowupSpec`,
:func:`followup_spec`, :func:`motion_matrix` and their checks) lives in :mod:`MedAIExtension.phantom.followup_model`
and is re-exported here.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.atomic import ensure_writable_directory
from MedAIExtension.errors import InputError
from MedAIExtension.io.geometry import LPS_TO_RAS
from MedAIExtension.phantom.chest import Phantom, generate_chest_phantom
from MedAIExtension.phantom.followup_model import (
    FollowupNodule,
    FollowupSpec,
    followup_spec,
    motion_matrix,
)
from MedAIExtension.phantom.spec import NoduleSpec, PhantomSpec
from MedAIExtension.phantom.study import write_phantom_study
from MedAIExtension.progress import Progress
from MedAIExtension.tracking.types import NoduleKind, NoduleStatus

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

_MAX_PATIENT_ID = 64  # DICOM LO


@dataclass(frozen=True, eq=False)
class PhantomPair:
    """Two generated studies of one phantom patient and the truth that links them."""

    baseline: Phantom
    followup: Phantom
    spec: FollowupSpec
    truth: dict[str, Any]


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
            "kind": NoduleKind((nodule.baseline or nodule.followup).kind).value,  # type: ignore[union-attr]
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
def _interval(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float) or float(value) != int(value):
        raise InputError(f"interval_days must be a whole number of days, got {value!r}.")
    if int(value) <= 0:
        raise InputError(
            f"interval_days must be positive (the follow-up comes after the baseline), got {value!r}; "
            "give the number of days between the two studies."
        )
    return int(value)


def _check_date(value: object) -> None:
    if not isinstance(value, dt.date):
        raise InputError(f"baseline_date must be a datetime.date, got {value!r}.")


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
