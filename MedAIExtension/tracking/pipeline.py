"""Baseline vs follow-up chest CT: find, segment and measure nodules, register, match, grow, categorise.

The logic behind ``medai track`` and the MedAINoduleTracking Slicer module. Qt-free; nothing here writes files
(see :mod:`MedAIExtension.tracking.outputs`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from MedAIExtension.dicom.sr import tracking_uid_for
from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.models.preprocessing import crop_image
from MedAIExtension.progress import CancelToken, Progress, run_side_by_side
from MedAIExtension.segmentation.pipeline import segment_image
from MedAIExtension.tracking import lungrads
from MedAIExtension.tracking.confirmation import confirm_across
from MedAIExtension.tracking.detection import DetectionOptions, detect_candidates
from MedAIExtension.tracking.growth import nodule_change, study_interval_days
from MedAIExtension.tracking.lungrads import LungRadsExtras, LungRadsResult, Timepoint
from MedAIExtension.tracking.lungs import lung_mask
from MedAIExtension.tracking.mass_detection import mass_masks
from MedAIExtension.tracking.matching import Match, match_nodules
from MedAIExtension.tracking.measurements import measure_nodule
from MedAIExtension.tracking.nodule_segmentation import segment_nodule
from MedAIExtension.tracking.registration import Registration, register_followup
from MedAIExtension.tracking.results import StudyResult, TimepointResult, TrackedNodule, TrackingResult
from MedAIExtension.tracking.trend import judge_change, limit_warnings
from MedAIExtension.tracking.types import Finding, NoduleKind, NoduleStatus, NoduleTrend

__all__ = [
    "StudyResult",
    "TimepointResult",
    "TrackedNodule",
    "TrackingOptions",
    "TrackingResult",
    "analyse_timepoint",
    "assess_study",
    "track_nodules",
]

#: Label value of nodules in the shipped segmentation model's output.
MODEL_NODULE_LABEL = 2


@dataclass(frozen=True)
class TrackingOptions:
    """Settings of one tracking run.

    Attributes:
        model: catalogue model whose nodule label adds candidates; None for the classical detector alone.
        device: ``auto``, ``cpu`` or ``cuda`` for the model.
        deformable: add a B-spline stage inside the lungs after the affine registration.
        force: track even when the two studies belong to different patients.
        interval_days: days between the studies; default from the DICOM study dates.
        min_mean_diameter_mm: nodules with a smaller mean diameter are not reported.
        gate_mm: largest distance (after registration) at which two nodules can be the same nodule.
        suspicious: tracking ids (e.g. ``{"N2"}``) a reader marked with features suspicious for cancer (4X).
        min_single_confidence: a nodule is reported when its detection confidence reaches this in at least one
            study (a nodule seen in one study only needs it there).
        model_only_confidence: confidence of a candidate only the model found (the classical detector did not
            see a round blob there, e.g. at a vessel junction).
    """

    model: str | None = "chest-ct-lung-nodule"
    device: str = "auto"
    deformable: bool = False
    force: bool = False
    interval_days: float | None = None
    min_mean_diameter_mm: float = 3.0
    gate_mm: float = 10.0
    suspicious: frozenset[str] = frozenset()
    min_single_confidence: float = 0.6
    model_only_confidence: float = 0.5

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> TrackingOptions:
        """Options from parsed ``medai track`` / worker ``track`` arguments (argparse namespace)."""
        return cls(
            model=None if args.no_model else args.model,
            device=args.device,
            deformable=args.deformable,
            force=args.force,
            interval_days=args.interval_days,
            suspicious=frozenset(getattr(args, "suspicious", None) or ()),
        )


def _check_ct(image: Image, name: str) -> None:
    if image.modality and image.modality != "CT":
        raise InputError(f"The {name} image is {image.modality}; nodule tracking needs chest CT.")


def _check_pair(baseline: Image, followup: Image, options: TrackingOptions) -> None:
    for name, image in (("baseline", baseline), ("follow-up", followup)):
        _check_ct(image, name)
    first = str(baseline.metadata.get("PatientID", "")).strip()
    second = str(followup.metadata.get("PatientID", "")).strip()
    if first and second and first != second and not options.force:
        raise InputError(
            f"Baseline and follow-up belong to different patients (PatientID {first!r} vs {second!r}). "
            "Pick two studies of the same patient, or pass --force if the IDs differ for a known reason."
        )


def _lung_box(image: Image, lungs: np.ndarray, margin_mm: float) -> tuple[slice, slice, slice]:
    """Index box (k, j, i) of the lungs grown by ``margin_mm``."""
    box = []
    spacing = image.spacing[::-1]
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(lungs.any(axis=other))
        pad = int(np.ceil(margin_mm / spacing[axis]))
        box.append(slice(max(int(present[0]) - pad, 0), min(int(present[-1]) + pad + 1, lungs.shape[axis])))
    return tuple(box)  # type: ignore[return-value]


def analyse_timepoint(
    image: Image,
    options: TrackingOptions,
    progress: Progress,
) -> TimepointResult:
    """Lungs, masses, nodule candidates (model + classical), one segmented and measured finding per lesion.

    Masses (lesions over 30 mm, :mod:`~MedAIExtension.tracking.mass_detection`) are found and segmented first
    (source ``"mass"``); nodule candidates on their voxels are not segmented again.
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    progress(0.0, "finding the lungs")
    lungs = lung_mask(image)
    seconds["lungs"] = time.perf_counter() - started
    model_labels = None
    if options.model:
        started = time.perf_counter()
        box = _lung_box(image, lungs, margin_mm=20.0)  # the model only needs to look at the lungs
        result = segment_image(
            crop_image(image, box), options.model, options.device, progress=progress.stage(0.05, 0.6)
        )
        model_labels = np.zeros(image.shape, dtype=np.uint8)
        model_labels[box] = result.labelmap.array
        seconds["model"] = time.perf_counter() - started
    started = time.perf_counter()
    progress(0.6, "looking for nodule candidates")
    candidates = detect_candidates(
        image,
        lungs,
        model_labels=model_labels,
        nodule_label=MODEL_NODULE_LABEL,
        options=DetectionOptions(model_confidence=options.model_only_confidence),
    )
    seconds["detection"] = time.perf_counter() - started
    started = time.perf_counter()
    findings: list[Finding] = []
    claimed = np.zeros(image.shape, dtype=bool)
    # masses first: they claim their voxels, so no nodule candidate on or inside a mass becomes a second finding
    for mass, mass_mask in mass_masks(image, lungs):
        claimed[mass_mask.box] |= mass_mask.mask
        findings.append(Finding(mass, mass_mask, measure_nodule(image, mass_mask, lungs)))
    seconds["masses"] = time.perf_counter() - started
    started = time.perf_counter()
    measure = progress.stage(0.7, 1.0)
    for index, candidate in enumerate(candidates):
        measure(index / max(len(candidates), 1), f"segmenting candidate {index + 1}/{len(candidates)}")
        mask = segment_nodule(image, candidate, lungs)
        if mask is None or mask.voxel_count == 0:
            continue
        if np.any(claimed[mask.box] & mask.mask):
            continue  # another, more confident candidate already holds this nodule
        measurement = measure_nodule(image, mask, lungs)
        if measurement.mean_diameter_mm < options.min_mean_diameter_mm:
            continue
        claimed[mask.box] |= mask.mask
        findings.append(Finding(candidate, mask, measurement))
    seconds["segmentation"] = time.perf_counter() - started
    measure(1.0, f"{len(findings)} nodules")
    return TimepointResult(image, lungs, findings, {k: round(v, 2) for k, v in seconds.items()})


def _tracking_uid(image: Image, number: int) -> str:
    seed = "|".join(str(image.metadata.get(key, "")) for key in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"))
    if not seed.strip("|"):
        seed = f"{image.array.shape}|{np.asarray(image.ijk_to_ras).round(3).tolist()}|{int(image.array.sum())}"
    return tracking_uid_for(f"medai-nodule|{seed}|{number}")


def _position_order(finding: Finding) -> tuple[float, float, float]:
    r, a, s = finding.measurement.center_ras
    return (-s, r, a)  # top to bottom, then right to left


def assess_study(
    image: Image,
    options: TrackingOptions | None = None,
    progress: Callable[[float, str], None] | None = None,
    token: CancelToken | None = None,
) -> StudyResult:
    """Find, segment, measure and categorise the nodules of one chest CT (no prior study).

    Nodules are numbered top to bottom, as :func:`track_nodules` numbers baseline nodules; each gets a Tracking
    UID derived from the study, and a baseline Lung-RADS category.

    Raises:
        InputError: the image is not a CT.
        CancelledError: ``token`` was cancelled.
    """
    options = options or TrackingOptions()
    reporter = Progress(progress, token)
    _check_ct(image, "study")
    result = analyse_timepoint(image, options, reporter.stage(0.0, 0.98))
    nodules = []
    warnings: list[str] = []
    categories: list[LungRadsResult] = []
    for number, finding in enumerate(sorted(result.findings, key=_position_order), start=1):
        tracking_id = f"N{number}"
        rads = lungrads_for(finding, None, None, tracking_id in options.suspicious)
        categories.append(rads)
        warnings.extend(f"{tracking_id}: {w}" for w in finding.measurement.warnings)
        nodules.append(
            TrackedNodule(
                number=number,
                tracking_uid=_tracking_uid(image, number),
                status=NoduleStatus.BASELINE,
                baseline=finding,
                followup=None,
                change=None,
                lung_rads=rads,
                baseline_lung_rads=rads,
            )
        )
    warnings.extend(limit_warnings(nodules, {"study": image}, options.min_mean_diameter_mm))
    exam = {"baseline": lungrads.categorize_exam(categories)}
    reporter(1.0, f"{len(nodules)} nodules")
    return StudyResult(result, nodules, exam, warnings)


def track_nodules(
    baseline: Image,
    followup: Image,
    options: TrackingOptions | None = None,
    progress: Callable[[float, str], None] | None = None,
    token: CancelToken | None = None,
) -> TrackingResult:
    """Track lung nodules from ``baseline`` to ``followup`` (two chest CTs of one patient).

    Raises:
        InputError: different patients (unless forced), follow-up dated before baseline, not a chest CT.
        CancelledError: ``token`` was cancelled.
    """
    options = options or TrackingOptions()
    reporter = Progress(progress, token)
    _check_pair(baseline, followup, options)
    interval = study_interval_days(baseline, followup, options.interval_days)
    warnings: list[str] = []
    # the two studies are analysed at the same time (~20 % faster on two cores, more on more)
    base, follow = run_side_by_side(
        [
            lambda report: analyse_timepoint(baseline, options, report),
            lambda report: analyse_timepoint(followup, options, report),
        ],
        reporter.stage(0.0, 0.8),
        labels=("baseline", "follow-up"),
    )
    reporter(0.8, "registering the follow-up to the baseline")
    registration = register_followup(
        baseline, followup, base.lungs, follow.lungs, deformable=options.deformable, token=token
    )
    if not registration.converged:
        warnings.append(
            f"Registration did not converge ({registration.message}); nodules were matched in scanner "
            "coordinates without registration — check the matches."
        )
    reporter(0.92, "matching nodules")
    matches = _match(base, follow, registration, options)
    confirmed = confirm_across(
        base,
        follow,
        registration,
        matches,
        options.min_single_confidence,
        options.gate_mm,
        options.min_mean_diameter_mm,
    )
    if confirmed:
        matches = _match(base, follow, registration, options)
    reporter(0.94, "judging growth against the measurement uncertainty")
    started = time.perf_counter()
    nodules = _tracked(
        matches, base, follow, interval, options, warnings, reporter.stage(0.94, 0.99), registration=registration
    )
    follow.seconds["growth gate"] = round(time.perf_counter() - started, 2)  # both studies' repeats
    for nodule in nodules:
        for study, finding in (("baseline", nodule.baseline), ("follow-up", nodule.followup)):
            if finding is not None:
                warnings.extend(f"{nodule.tracking_id} ({study}): {w}" for w in finding.measurement.warnings)
    for nodule in nodules:
        if any(f is not None and f.measurement.touches_pleura for f in (nodule.baseline, nodule.followup)):
            warnings.append(
                f"{nodule.tracking_id} touches the pleura: its segmentation stops at the lung boundary; check the "
                "chest-wall side before relying on its volume."
            )
    warnings.extend(
        limit_warnings(nodules, {"baseline": baseline, "follow-up": followup}, options.min_mean_diameter_mm)
    )
    # a nodule seen in a study has that study's category (see _tracked)
    baseline_categories = [r for n in nodules if n.baseline is not None and (r := n.baseline_lung_rads) is not None]
    followup_categories = [r for n in nodules if n.followup is not None and (r := n.lung_rads) is not None]
    exam = {
        "baseline": lungrads.categorize_exam(baseline_categories),
        "followup": lungrads.categorize_exam(followup_categories),
    }
    reporter(1.0, f"{len(nodules)} nodules tracked")
    return TrackingResult(base, follow, registration, nodules, interval, exam, warnings)


def _match(
    base: TimepointResult, follow: TimepointResult, registration: Registration, options: TrackingOptions
) -> list[Match]:
    return match_nodules(
        [f.measurement.center_ras for f in base.findings],
        [f.measurement.center_ras for f in follow.findings],
        registration,
        baseline_radii_mm=[f.measurement.mean_diameter_mm / 2 for f in base.findings],
        followup_radii_mm=[f.measurement.mean_diameter_mm / 2 for f in follow.findings],
        gate_mm=options.gate_mm,
    )


def _tracked(
    matches: Sequence[Match],
    base: TimepointResult,
    follow: TimepointResult,
    interval: float,
    options: TrackingOptions,
    warnings: list[str],
    progress: Progress | None = None,
    registration: Registration | None = None,
) -> list[TrackedNodule]:
    """Number the nodules (baseline ones first, by position), judge their change, categorise each.

    A nodule in both studies gets its trend against its measurement uncertainty
    (:func:`~MedAIExtension.tracking.trend.judge_change`); the Lung-RADS growing rules and the VDT apply only to
    real growth. Warnings about unrepeatable measurements are added to ``warnings``.
    """

    def order(match: Match) -> tuple[int, float, float, float]:
        if match.baseline is not None:
            return (0, *_position_order(base.findings[match.baseline]))
        assert match.followup is not None, "a match holds a finding of at least one study"
        return (1, *_position_order(follow.findings[match.followup]))

    nodules: list[TrackedNodule] = []
    for number, match in enumerate(sorted(matches, key=order), start=1):
        b = base.findings[match.baseline] if match.baseline is not None else None
        f = follow.findings[match.followup] if match.followup is not None else None
        tracking_id = f"N{number}"
        suspicious = tracking_id in options.suspicious
        baseline_rads = lungrads_for(b, None, None, suspicious) if b is not None else None
        current = lungrads_for(f, b, interval, suspicious) if f is not None else baseline_rads
        nodule = TrackedNodule(
            number=number,
            tracking_uid=_tracking_uid(base.image if b is not None else follow.image, number),
            status=match.status,
            baseline=b,
            followup=f,
            change=None,
            lung_rads=current,
            baseline_lung_rads=baseline_rads,
            distance_mm=match.distance_mm,
        )
        if b is not None and f is not None:
            first, second = b.measurement, f.measurement
            change = nodule_change(
                first.volume_mm3, second.volume_mm3, first.mean_diameter_mm, second.mean_diameter_mm, interval
            )
            judged = judge_change(tracking_id, b, f, base, follow, change, interval, progress, registration)
            warnings.extend(judged.warnings)
            nodule.change, nodule.trend = judged.change, judged.trend
            nodule.baseline_spread, nodule.followup_spread = judged.baseline_spread, judged.followup_spread
            nodule.lung_rads = lungrads_for(
                f,
                b,
                interval,
                suspicious,
                uncertainty_mm=judged.diameter_uncertainty_mm,
                within_error=judged.trend is not NoduleTrend.GROWING,
            )
        nodules.append(nodule)
    return nodules


def lungrads_for(
    finding: Finding,
    prior: Finding | None,
    interval: float | None,
    suspicious: bool,
    uncertainty_mm: float | None = None,
    within_error: bool = False,
) -> LungRadsResult:
    """Lung-RADS of ``finding``: baseline rules without ``interval``; new/growing/stable rules with it.

    ``uncertainty_mm`` (95 % limit of the mean-diameter change from measurement error) and ``within_error`` (the
    change was judged within measurement error) keep a change that is not real from the growing rules. A mass
    (> 30 mm) is categorised by the size table like any lesion; its reason says that it is a mass.
    """
    measurement = finding.measurement
    if measurement.kind is NoduleKind.PART_SOLID and measurement.solid_mean_diameter_mm <= 0:
        measurement = replace(measurement, kind=NoduleKind.GROUND_GLASS)  # no measurable solid part
    inputs: LungRadsExtras = {"suspicious_features": suspicious}
    if interval is None:
        timepoint = Timepoint.BASELINE
    elif prior is None:
        timepoint = Timepoint.NEW
    else:
        previous = prior.measurement.mean_diameter_mm
        margin = 0.0 if uncertainty_mm is None else uncertainty_mm
        timepoint = lungrads.follow_up_timepoint(previous, measurement.mean_diameter_mm, interval, margin, within_error)
        inputs["prior_mean_diameter_mm"], inputs["interval_days"] = previous, interval
        if uncertainty_mm is not None:
            inputs["diameter_uncertainty_mm"] = uncertainty_mm
        if within_error:
            inputs["stable_within_error"] = True
    result = lungrads.categorize_nodule(lungrads.LungRadsInput.from_measurement(measurement, timepoint, **inputs))
    if measurement.is_mass:
        reason = f"{result.reason}; a mass (> 30 mm), not a nodule: categorised by its size, no VDT is given"
        result = replace(result, reason=reason)
    return result
