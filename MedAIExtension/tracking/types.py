"""The data the tracking pipeline passes between its steps: candidates, nodule masks, measurements, findings.

Also the nodule vocabulary shared by tracking, the phantoms and the review tools: :class:`NoduleKind` (solid,
part-solid, ground-glass; defined beside the SR codes, which :mod:`MedAIExtension.dicom` may not import from
tracking) and :class:`NoduleStatus` (persistent, new, resolved, baseline).

Coordinates are RAS millimetres (Slicer's convention); arrays are indexed ``[k, j, i]`` like :class:`Image`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from MedAIExtension.dicom.sr.codes import NoduleKind

__all__ = [
    "MASS_DIAMETER_MM",
    "Candidate",
    "Finding",
    "LungSide",
    "NoduleKind",
    "NoduleMask",
    "NoduleMeasurement",
    "NoduleStatus",
    "NoduleTrend",
]


#: A lesion larger than 3 cm is a mass, not a nodule (Fleischner Society glossary).
MASS_DIAMETER_MM = 30.0


class LungSide(StrEnum):
    """The patient's side (of a lung, a nodule)."""

    RIGHT = "right"
    LEFT = "left"


class NoduleStatus(StrEnum):
    """Where a nodule is seen: in both studies, at follow-up only, at baseline only, or in a single study.

    The values are those written to the JSON, CSV and table outputs (``"persistent"``, ``"new"``, ...).
    """

    PERSISTENT = "persistent"  # in the baseline and the follow-up
    NEW = "new"  # at follow-up only
    RESOLVED = "resolved"  # at baseline only
    BASELINE = "baseline"  # a study assessed without a prior (assess_study)


class NoduleTrend(StrEnum):
    """How a nodule seen in both studies changed, judged against its measurement uncertainty.

    GROWING / SHRINKING only when the volume change exceeds what re-measuring the same nodule would give
    (:mod:`MedAIExtension.tracking.repeatability`); otherwise STABLE ("stable within measurement error").
    """

    GROWING = "growing"
    SHRINKING = "shrinking"
    STABLE = "stable within measurement error"


@dataclass(frozen=True)
class Candidate:
    """A place that may hold a nodule, before segmentation.

    Attributes:
        center_ras: (R, A, S) in mm.
        diameter_mm: rough size estimate (blob scale or model component size).
        confidence: 0..1, higher is more nodule-like.
        source: ``"model"``, ``"classical"``, ``"model+classical"``, ``"mass"`` (the mass detector) or
            ``"propagated"`` (found again at a nodule's registered position in the other study).
    """

    center_ras: tuple[float, float, float]
    diameter_mm: float
    confidence: float
    source: str


@dataclass(frozen=True)
class NoduleMask:
    """A nodule's voxels: a boolean ``mask`` inside the index ``box`` (``[k, j, i]`` slices) of its image."""

    box: tuple[slice, slice, slice]
    mask: np.ndarray

    def full(self, shape: tuple[int, int, int]) -> np.ndarray:
        """The mask on the whole image grid."""
        out = np.zeros(shape, dtype=bool)
        out[self.box] = self.mask
        return out

    @property
    def voxel_count(self) -> int:
        """Number of voxels in the mask."""
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True)
class NoduleMeasurement:
    """Size and attenuation of one nodule at one time point (Lung-RADS conventions, see DOMAIN.md).

    Axes are measured in the axial plane on the slice where the long axis is longest; diameters are rounded to
    0.1 mm, volumes are mm³. For part-solid nodules the ``solid_*`` fields describe the solid component; for
    solid nodules they equal the whole nodule; for ground-glass nodules they are 0.
    """

    center_ras: tuple[float, float, float]
    volume_mm3: float
    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    mean_hu: float
    kind: NoduleKind
    solid_volume_mm3: float
    solid_mean_diameter_mm: float
    touches_pleura: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def is_mass(self) -> bool:
        """Whether the lesion is a mass: mean diameter over 30 mm (Fleischner glossary), not a nodule."""
        return self.mean_diameter_mm > MASS_DIAMETER_MM


@dataclass
class Finding:
    """A segmented, measured nodule at one time point."""

    candidate: Candidate
    mask: NoduleMask
    measurement: NoduleMeasurement
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def is_mass(self) -> bool:
        """Whether this finding is a mass (> 30 mm mean diameter), whichever detector found it."""
        return self.measurement.is_mass
