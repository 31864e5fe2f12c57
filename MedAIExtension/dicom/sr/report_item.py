"""The tracking SR's input record: :class:`NoduleReportItem` (one nodule at one time point, checked on
construction) and :func:`tracking_uid_for`, the deterministic Tracking Unique Identifier of a nodule lineage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from MedAIExtension.dicom.sr.codes import (
    _LATERALITIES,
    _LUNG_RADS_PATTERN,
    _LUNG_ZONES,
    _MEASUREMENTS,
    NoduleKind,
)
from MedAIExtension.dicom.values import LO_MAX
from MedAIExtension.errors import InputError

__all__ = ["MeasuredNodule", "NoduleReportItem", "tracking_uid_for"]


class MeasuredNodule(Protocol):
    """What :meth:`NoduleReportItem.from_measurement` reads from a measurement (e.g. the tracking pipeline's
    ``NoduleMeasurement``); the SR does not import its callers' records."""

    center_ras: tuple[float, float, float]
    volume_mm3: float
    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    mean_hu: float
    kind: NoduleKind | str
    solid_volume_mm3: float
    solid_mean_diameter_mm: float


def _finite(value: Any, what: str, *, minimum: float | None = None, strict: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise InputError(f"{what} must be a finite number, got {value!r}.")
    if minimum is not None and (number < minimum or (strict and number == minimum)):
        relation = ">" if strict else ">="
        raise InputError(f"{what} must be {relation} {minimum:g}, got {value!r}.")
    return number


def _optional(value: Any, what: str, **limits: Any) -> float | None:
    return None if value is None else _finite(value, what, **limits)


def _check_uid(uid: Any, what: str) -> str:
    from pydicom.uid import UID

    text = str(uid or "")
    if not UID(text).is_valid:
        raise InputError(
            f"{what} {uid!r} is not a valid DICOM UID (digits and dots, at most 64 characters). "
            "Make tracking UIDs with tracking_uid_for()."
        )
    return text


def _lung_rads_category(value: Any, what: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip().upper()
    if not _LUNG_RADS_PATTERN.match(text):
        raise InputError(
            f"{what} {value!r} is not a Lung-RADS v2022 category; use one of 0, 1, 2, 3, 4A, 4B, 4X "
            "(optionally with the S modifier, e.g. '2S')."
        )
    return text


@dataclass(frozen=True)
class NoduleReportItem:
    """One nodule at one time point, as written to the tracking SR.

    Attributes:
        tracking_id: human-readable Tracking Identifier, e.g. ``"N1"`` (unique within a report).
        tracking_uid: Tracking Unique Identifier; the same UID for the same nodule in every report of a patient.
        segment_number: number of this nodule's segment in the SEG written for this time point.
        kind: ``"solid"``, ``"part-solid"`` or ``"ground-glass"`` (str or :class:`NoduleKind`).
        volume_mm3: nodule volume.
        long_axis_mm: longest axial diameter.
        short_axis_mm: longest diameter perpendicular to the long axis in the same plane.
        mean_diameter_mm: Lung-RADS size, (long + short) / 2.
        mean_hu: mean attenuation in HU, or None.
        center_ras: nodule centre (R, A, S) mm, or None. Not written: the referenced segment places the nodule.
        solid_volume_mm3: volume of the solid component of a part-solid nodule, or None.
        solid_mean_diameter_mm: mean diameter of that solid component, or None.
        volume_change_percent: follow-up only: volume change from the prior study in % (None at baseline).
        vdt_days: follow-up only: volume doubling time in days; None when the nodule is not growing.
        diameter_change_mm: follow-up only: change of the mean diameter from the prior study.
        lung_rads: Lung-RADS v2022 category of this nodule (``"2"``, ``"4A"`` ...), or None.
        lung_rads_reason: why that category was given (free text), or None.
        laterality: ``"right"`` or ``"left"`` (the patient's side), or None; written as the finding site's
            laterality.
        lung_zone: ``"upper"``, ``"middle"`` or ``"lower"`` third of the lungs, or None; written as a second
            finding site (SCT "Upper/Middle/Lower zone of lung") with the same laterality.
        location: where a reader finds it, e.g. ``"right lower zone, image 123"`` (free text), or None.
        mass: the lesion is a mass (mean diameter > 30 mm): its finding type is SCT "Mass", not "Nodule".
        management: the Lung-RADS v2022 management of its category (free text), or None.
        growth: how it changed since the prior study, in words (e.g. "stable within measurement error"), or None.
        nelson: the NELSON category of a solid nodule with its criterion (free text), or None.
        borderline: a sentence when its size sits on a Lung-RADS threshold within the measurement margin, or None.

    The constructor validates every field, so an item is never half-valid; bad values raise :class:`InputError`.
    """

    tracking_id: str
    tracking_uid: str
    segment_number: int
    kind: NoduleKind | str
    volume_mm3: float
    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    mean_hu: float | None = None
    center_ras: tuple[float, float, float] | None = None
    solid_volume_mm3: float | None = None
    solid_mean_diameter_mm: float | None = None
    volume_change_percent: float | None = None
    vdt_days: float | None = None
    diameter_change_mm: float | None = None
    lung_rads: str | None = None
    lung_rads_reason: str | None = None
    laterality: str | None = None
    lung_zone: str | None = None
    location: str | None = None
    mass: bool = False
    management: str | None = None
    growth: str | None = None
    nelson: str | None = None
    borderline: str | None = None

    def __post_init__(self) -> None:
        tracking_id = str(self.tracking_id or "").strip()
        if not tracking_id or len(tracking_id) > LO_MAX:
            raise InputError(f"Tracking identifier {self.tracking_id!r} must be 1..{LO_MAX} characters, e.g. 'N1'.")
        object.__setattr__(self, "tracking_id", tracking_id)
        object.__setattr__(self, "tracking_uid", _check_uid(self.tracking_uid, f"Tracking UID of {tracking_id}"))
        if isinstance(self.segment_number, bool) or not isinstance(self.segment_number, int) or self.segment_number < 1:
            raise InputError(
                f"Segment number of {tracking_id} must be an integer >= 1 (the nodule's segment in the SEG), "
                f"got {self.segment_number!r}."
            )
        try:
            kind = NoduleKind(getattr(self.kind, "value", self.kind))
        except ValueError:
            options = ", ".join(repr(k.value) for k in NoduleKind)
            raise InputError(f"Nodule kind {self.kind!r} of {tracking_id} is not one of {options}.") from None
        object.__setattr__(self, "kind", kind)
        name = f"{tracking_id}: "
        object.__setattr__(self, "volume_mm3", _finite(self.volume_mm3, name + "volume_mm3", minimum=0, strict=True))
        for field_name in ("long_axis_mm", "short_axis_mm", "mean_diameter_mm"):
            object.__setattr__(self, field_name, _finite(getattr(self, field_name), name + field_name, minimum=0))
        if self.short_axis_mm > self.long_axis_mm + 1e-6:
            raise InputError(
                f"{name}short axis {self.short_axis_mm:g} mm is longer than the long axis {self.long_axis_mm:g} mm; "
                "swap them or re-measure."
            )
        object.__setattr__(self, "mean_hu", _optional(self.mean_hu, name + "mean_hu"))
        if self.center_ras is not None:
            center = tuple(_finite(v, name + "center_ras") for v in self.center_ras)
            if len(center) != 3:
                raise InputError(f"{name}center_ras must be three numbers (R, A, S), got {self.center_ras!r}.")
            object.__setattr__(self, "center_ras", center)
        for field_name in ("solid_volume_mm3", "solid_mean_diameter_mm"):
            object.__setattr__(self, field_name, _optional(getattr(self, field_name), name + field_name, minimum=0))
        change = _optional(self.volume_change_percent, name + "volume_change_percent", minimum=-100.0)
        object.__setattr__(self, "volume_change_percent", change)
        vdt = _optional(self.vdt_days, name + "vdt_days", minimum=0, strict=True)
        if vdt is not None and (change is None or change <= 0):
            raise InputError(
                f"{name}a volume doubling time needs a growing nodule (volume_change_percent > 0, got {change!r}); "
                "give vdt_days=None when the nodule is not growing or at baseline."
            )
        object.__setattr__(self, "vdt_days", vdt)
        object.__setattr__(self, "diameter_change_mm", _optional(self.diameter_change_mm, name + "diameter_change_mm"))
        object.__setattr__(self, "lung_rads", _lung_rads_category(self.lung_rads, f"{name}Lung-RADS category"))
        reason = None if self.lung_rads_reason is None else str(self.lung_rads_reason).strip() or None
        if reason is not None and self.lung_rads is None:
            raise InputError(f"{name}lung_rads_reason was given without a lung_rads category; give both or neither.")
        object.__setattr__(self, "lung_rads_reason", reason)
        self._check_reading(name)

    def _check_reading(self, name: str) -> None:
        """Validate and normalise the reading fields (site, mass flag, free texts)."""
        for field_name, allowed in (("laterality", _LATERALITIES), ("lung_zone", _LUNG_ZONES)):
            value = getattr(self, field_name)
            if value is None:
                continue
            text = str(getattr(value, "value", value)).strip().lower()
            if text not in allowed:
                raise InputError(f"{name}{field_name} {value!r} must be one of {sorted(allowed)} or None.")
            object.__setattr__(self, field_name, text)
        if not isinstance(self.mass, bool):
            raise InputError(f"{name}mass must be True or False, got {self.mass!r}.")
        for field_name in ("location", "management", "growth", "nelson", "borderline"):
            value = getattr(self, field_name)
            object.__setattr__(self, field_name, None if value is None else str(value).strip() or None)

    @classmethod
    def from_measurement(
        cls,
        tracking_id: str,
        tracking_uid: str,
        segment_number: int,
        measurement: MeasuredNodule,
        **follow_up: Any,
    ) -> NoduleReportItem:
        """Build an item from a measurement such as the tracking pipeline's ``NoduleMeasurement``.

        The solid component is filled in for part-solid nodules only. ``follow_up`` passes the remaining
        fields (``volume_change_percent``, ``vdt_days``, ``diameter_change_mm``, ``lung_rads``,
        ``lung_rads_reason`` and the reading: ``laterality``, ``lung_zone``, ``location``, ``mass``,
        ``management``, ``growth``, ``nelson``, ``borderline``).
        """
        part_solid = NoduleKind(measurement.kind) is NoduleKind.PART_SOLID
        return cls(
            tracking_id=tracking_id,
            tracking_uid=tracking_uid,
            segment_number=segment_number,
            kind=measurement.kind,
            volume_mm3=measurement.volume_mm3,
            long_axis_mm=measurement.long_axis_mm,
            short_axis_mm=measurement.short_axis_mm,
            mean_diameter_mm=measurement.mean_diameter_mm,
            mean_hu=measurement.mean_hu,
            center_ras=measurement.center_ras,
            solid_volume_mm3=measurement.solid_volume_mm3 if part_solid else None,
            solid_mean_diameter_mm=measurement.solid_mean_diameter_mm if part_solid else None,
            **follow_up,
        )

    def measurement_values(self) -> dict[str, float]:
        """The numeric values written to the SR, keyed like :func:`read_tracking_sr`'s ``measurements``."""
        values = {code.key: getattr(self, code.key) for code in _MEASUREMENTS}
        return {key: float(value) for key, value in values.items() if value is not None}


def tracking_uid_for(seed: str) -> str:
    """A deterministic Tracking Unique Identifier derived from ``seed``.

    The same seed always gives the same UID, so re-running the tracking of a patient reproduces its UIDs. Use
    a seed that names the nodule's lineage uniquely, e.g. ``f"{patient_id}/{baseline_study_uid}/N1"``.

    Raises:
        InputError: ``seed`` is empty.
    """
    from pydicom.uid import generate_uid

    if not isinstance(seed, str) or not seed.strip():
        raise InputError("tracking_uid_for needs a non-empty seed naming the nodule, e.g. 'PATIENT/STUDY/N1'.")
    return str(generate_uid(entropy_srcs=["MedAI nodule tracking UID", seed]))
