"""Nodule results for the report tests (issue 21): a hand-built follow-up on a small synthetic CT, in which each
kind of change occurs once (growth beyond the measurement error, a stable nodule, a resolved and a new one), and
a DICOM header with the patient and study attributes a RIS matches on.

The records are the pipeline's own (:class:`TrackingResult`, Lung-RADS by :func:`lungrads_for`, the change by
:func:`nodule_change`); only the segmentation is skipped, so the tests take milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
import pydicom
import SimpleITK as sitk

from MedAIExtension.io.image import Image
from MedAIExtension.tracking.growth import nodule_change
from MedAIExtension.tracking.lungrads import categorize_exam
from MedAIExtension.tracking.pipeline import lungrads_for
from MedAIExtension.tracking.registration import Registration
from MedAIExtension.tracking.results import TimepointResult, TrackedNodule, TrackingResult
from MedAIExtension.tracking.types import (
    Candidate,
    Finding,
    NoduleKind,
    NoduleMask,
    NoduleMeasurement,
    NoduleStatus,
    NoduleTrend,
)

__all__ = ["INTERVAL_DAYS", "NASTY_NAME", "follow_up_result", "study_dataset"]

INTERVAL_DAYS = 180.0
#: A patient name holding every HL7 delimiter (family ``O|Brien&Co~X\\Y``, given ``Ann``).
NASTY_NAME = "O|Brien&Co~X\\Y^Ann"


def _finding(center: tuple[float, float, float], mean: float, volume: float) -> Finding:
    measurement = NoduleMeasurement(
        center_ras=center,
        volume_mm3=volume,
        long_axis_mm=mean + 0.4,
        short_axis_mm=mean - 0.4,
        mean_diameter_mm=mean,
        mean_hu=-50.0,
        kind=NoduleKind.SOLID,
        solid_volume_mm3=volume,
        solid_mean_diameter_mm=mean,
    )
    box = (slice(0, 1), slice(0, 1), slice(0, 1))
    return Finding(Candidate(center, mean, 1.0, "classical"), NoduleMask(box, np.ones((1, 1, 1), bool)), measurement)


def _nodule(number: int, before: Finding | None, after: Finding | None, trend: NoduleTrend | None) -> TrackedNodule:
    change = None
    if before is not None and after is not None:
        b, f = before.measurement, after.measurement
        change = nodule_change(b.volume_mm3, f.volume_mm3, b.mean_diameter_mm, f.mean_diameter_mm, INTERVAL_DAYS)
    first = lungrads_for(before, None, None, False) if before is not None else None
    within = trend is not None and trend is not NoduleTrend.GROWING
    current = lungrads_for(after, before, INTERVAL_DAYS, False, within_error=within) if after is not None else first
    status = {
        (True, True): NoduleStatus.PERSISTENT,
        (False, True): NoduleStatus.NEW,
        (True, False): NoduleStatus.RESOLVED,
    }[(before is not None, after is not None)]
    return TrackedNodule(
        number=number,
        tracking_uid=f"1.2.826.0.1.3680043.10.99.{number}",
        status=status,
        baseline=before,
        followup=after,
        change=change,
        lung_rads=current,
        baseline_lung_rads=first,
        trend=trend,
    )


def follow_up_result() -> TrackingResult:
    """N1 grows (8 → 10 mm, volume doubled: a doubling time), N2 is stable within measurement error, N3 resolved,
    N4 new; the CT is 60 x 100 x 120 mm of lung at 1 mm (no DICOM source)."""
    array = np.full((60, 100, 120), -850, dtype=np.int16)
    affine = np.eye(4)
    affine[:3, 3] = (-60.0, -50.0, 0.0)
    image = Image(array, affine, modality="CT")
    lungs = np.zeros(image.shape, dtype=bool)
    lungs[:, 10:90, 5:115] = True
    volume = math.pi / 6.0
    nodules = [
        _nodule(1, _finding((20.0, 0, 50.0), 8.0, 268.0), _finding((20.0, 0, 50.0), 10.0, 536.0), NoduleTrend.GROWING),
        _nodule(2, _finding((-30.0, 5, 30.0), 6.0, 113.0), _finding((-30.0, 5, 30.0), 6.1, 114.0), NoduleTrend.STABLE),
        _nodule(3, _finding((25.0, 10.0, 10.0), 5.0, volume * 125), None, None),
        _nodule(4, None, _finding((-20.0, -5.0, 8.0), 4.5, volume * 4.5**3), None),
    ]  # fmt: skip
    base = TimepointResult(image, lungs, [n.baseline for n in nodules if n.baseline is not None])
    follow = TimepointResult(image, lungs, [n.followup for n in nodules if n.followup is not None])
    registration = Registration(np.eye(4), np.eye(4), sitk.Transform(3, sitk.sitkIdentity), True, 0.0, [], "ok")
    exam = {
        "baseline": categorize_exam([r for n in nodules if n.baseline and (r := n.baseline_lung_rads)]),
        "followup": categorize_exam([r for n in nodules if n.followup and (r := n.lung_rads)]),
    }
    return TrackingResult(base, follow, registration, nodules, INTERVAL_DAYS, exam)


def study_dataset(name: str = NASTY_NAME, accession: str = "ACC-2026-0042") -> pydicom.Dataset:
    """A DICOM header of the current study: patient, study date/time, accession number, StudyInstanceUID."""
    ds = pydicom.Dataset()
    ds.PatientID = "MRN-7^|&~\\1"
    ds.PatientName = name
    ds.PatientBirthDate = "19580317"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.99.1000"
    ds.StudyDate = "20260105"
    ds.StudyTime = "093015.25"
    ds.AccessionNumber = accession
    ds.StudyDescription = "CT chest low dose"
    return ds
