"""Lung-RADS v2022 categories for lung nodules and exams, driven by a table of rules (see DOMAIN.md).

Sizes are mean diameters, (long axis + perpendicular short axis) / 2, rounded half-up to 0.1 mm as Lung-RADS
reports them. Each row of :data:`SIZE_RULES` is one cell of the ACR table: nodule kind, the time points it applies
to, bounds on the whole-nodule and solid-component mean diameters (lower bound inclusive, upper bound exclusive)
and the category. Findings we cannot measure (benign calcification, fat, typical juxtapleural shape, airway
nodules, suspicious features, prior category for stepped management) are explicit inputs, never inferred.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import TypedDict, TypeVar, Unpack

from MedAIExtension.errors import InputError, MedAIError
from MedAIExtension.tracking.types import NoduleKind, NoduleMeasurement

__all__ = [
    "FEATURE_RULES", "SIZE_RULES", "STEP_DOWN_RULES", "Bounds", "FeatureRule", "LungRadsCategory", "LungRadsExtras",
    "LungRadsInput", "LungRadsResult", "SizeRule", "StepDownRule", "Timepoint", "categorize_exam", "categorize_nodule",
    "follow_up_timepoint", "is_growing", "round_mm"
]  # fmt: skip

GROWTH_MM = Decimal("1.5")  # growth = mean diameter increase > 1.5 mm within 12 months
DAYS_PER_YEAR = 365.25


class LungRadsCategory(StrEnum):
    """Lung-RADS v2022 assessment category; :attr:`rank` orders them (4X is the highest)."""

    C1 = "1"
    C2 = "2"
    C3 = "3"
    C4A = "4A"
    C4B = "4B"
    C4X = "4X"

    @property
    def rank(self) -> int:
        """0 for category 1 up to 5 for 4X, so that ``max(..., key=lambda c: c.rank)`` is the most suspicious."""
        return list(LungRadsCategory).index(self)

    @classmethod
    def parse(cls, value: LungRadsCategory | str) -> LungRadsCategory:
        """The category named by ``value`` ("3", "4a", "4A", ...); InputError if there is none."""
        try:
            return cls(str(value).strip().upper())
        except ValueError:
            raise InputError(f"Unknown Lung-RADS category {value!r}; use one of {[c.value for c in cls]}.") from None


class Timepoint(StrEnum):
    """How a nodule appears on this exam compared with earlier exams.

    BASELINE: first screening exam (no prior). NEW: absent on the prior exam. GROWING: meets the growth definition
    (:func:`is_growing`). STABLE: seen before without meeting it (includes slow growth). DECREASED: smaller.
    """

    BASELINE = "baseline"
    NEW = "new"
    GROWING = "growing"
    STABLE = "stable"
    DECREASED = "decreased"


_ALL = frozenset(Timepoint)
_KNOWN = frozenset({Timepoint.STABLE, Timepoint.DECREASED})
#: Size thresholds "at baseline" also apply to a known nodule that did not grow: crossing one re-categorises it.
_AT_SIZE = frozenset({Timepoint.BASELINE}) | _KNOWN
_NEW = frozenset({Timepoint.NEW})
_FIRST_SEEN = frozenset({Timepoint.BASELINE, Timepoint.NEW})
_GROWING = frozenset({Timepoint.GROWING})


_FLAGS = ("benign_calcification", "contains_fat", "juxtapleural_typical", "airway_subsegmental", "suspicious_features")


_E = TypeVar("_E", bound=StrEnum)


def _enum(enum: type[_E], value: str, what: str) -> _E:
    try:
        return enum(value.strip())
    except ValueError:
        raise InputError(f"Unknown {what} {value!r}; use one of {[e.value for e in enum]}.") from None


def round_mm(value: float) -> float:
    """``value`` rounded half-up to 0.1 mm (5.95 → 6.0), as Lung-RADS reports mean diameters."""
    return float(Decimal(str(float(value))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _number(name: str, value: object, unit: str, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number of {unit}, got {value!r}; pass the measured value.")
    if value < 0 or (positive and value <= 0):
        raise InputError(f"{name} must be {'> 0' if positive else '≥ 0'} {unit}, got {value}; check the input.")
    return float(value)


def _size(name: str, value: object, positive: bool = True) -> float:
    size = round_mm(_number(name, value, "millimetres", positive))
    if positive and size <= 0:
        raise InputError(f"{name} is {value} mm, which reports as 0.0 mm; a nodule must be ≥ 0.1 mm.")
    return size


def is_growing(prior_mean_diameter_mm: float, current_mean_diameter_mm: float, interval_days: float) -> bool:
    """True when the mean diameter grew by more than 1.5 mm within 12 months (Lung-RADS v2022 growth).

    Both sizes are rounded to 0.1 mm first, so 6.0 → 7.5 mm is not growth and 6.0 → 7.6 mm is. For an interval
    longer than 12 months the increase is prorated to 12 months (steady growth gives the smallest 12-month
    increase consistent with the two exams), so only growth that must have exceeded 1.5 mm in some 12 months counts.
    """
    prior = Decimal(str(_size("prior_mean_diameter_mm", prior_mean_diameter_mm)))
    current = Decimal(str(_size("current_mean_diameter_mm", current_mean_diameter_mm)))
    days = _number("interval_days", interval_days, "days")
    increase = current - prior
    if days <= DAYS_PER_YEAR:
        return increase > GROWTH_MM
    return float(increase) * DAYS_PER_YEAR / days > float(GROWTH_MM)


def follow_up_timepoint(
    prior_mean_diameter_mm: float,
    current_mean_diameter_mm: float,
    interval_days: float,
    uncertainty_mm: float = 0.0,
    within_error: bool = False,
) -> Timepoint:
    """GROWING (per :func:`is_growing`), DECREASED (smaller at 0.1 mm) or STABLE, for a nodule seen before.

    Growth must also be real: with ``uncertainty_mm`` (the 95 % limit of a mean-diameter change from measurement
    error alone, ``1.96 * sqrt(sd1² + sd2²)``) an increase not larger than it is not growth, and with
    ``within_error`` (the caller found the change within measurement error, e.g. by volume) nothing is growth.
    """
    grown = is_growing(prior_mean_diameter_mm, current_mean_diameter_mm, interval_days)
    increase = round_mm(current_mean_diameter_mm) - round_mm(prior_mean_diameter_mm)
    if grown and not within_error and increase > uncertainty_mm:
        return Timepoint.GROWING
    smaller = round_mm(current_mean_diameter_mm) < round_mm(prior_mean_diameter_mm)
    return Timepoint.DECREASED if smaller else Timepoint.STABLE


@dataclass(frozen=True)
class LungRadsInput:
    """What Lung-RADS needs about one nodule on one exam; validated and normalised on construction.

    Attributes:
        kind: solid, part-solid or ground-glass (:class:`NoduleKind` or its value).
        mean_diameter_mm: whole-nodule mean diameter (rounded to 0.1 mm here).
        timepoint: :class:`Timepoint` (or its value).
        solid_mean_diameter_mm: solid component of a part-solid nodule (required there, > 0 and ≤ the whole);
            ignored for solid and ground-glass nodules.
        prior_mean_diameter_mm, interval_days: the size on an earlier exam and the days since; when given, a
            GROWING/STABLE/DECREASED time point must agree with :func:`is_growing`.
        benign_calcification: complete, central, popcorn or concentric-ring calcification (→ 1).
        contains_fat: the nodule contains fat (→ 1).
        juxtapleural_typical: solid juxtapleural/perifissural nodule with the typical shape (→ 2 if < 10 mm).
        airway_subsegmental: subsegmental airway nodule (→ 2).
        suspicious_features: additional findings that raise suspicion of cancer (3 or 4 → 4X).
        prior_category, months_since_prior: category given on the prior exam and months since it, for stepped
            management of a stable or decreased nodule (3 at ≥ 6 months → 2; 4A at ≥ 3 months → 3).
        diameter_uncertainty_mm: 95 % limit of the mean-diameter change from measurement error alone
            (``1.96 * sqrt(sd1² + sd2²)`` of the two measurements); an increase not above it is not growth, even
            when it exceeds 1.5 mm. Needs the prior size.
        stable_within_error: the caller judged the change since the prior exam to be within measurement error
            (e.g. the volume change against its repeatability): never growth. Needs the prior size.
    """

    kind: NoduleKind
    mean_diameter_mm: float
    timepoint: Timepoint
    solid_mean_diameter_mm: float | None = None
    prior_mean_diameter_mm: float | None = None
    interval_days: float | None = None
    benign_calcification: bool = False
    contains_fat: bool = False
    juxtapleural_typical: bool = False
    airway_subsegmental: bool = False
    suspicious_features: bool = False
    prior_category: LungRadsCategory | None = None
    months_since_prior: float | None = None
    diameter_uncertainty_mm: float | None = None
    stable_within_error: bool = False

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "kind", _enum(NoduleKind, str(self.kind).lower().replace("_", "-"), "nodule kind"))
        put(self, "timepoint", _enum(Timepoint, str(self.timepoint).lower(), "time point"))
        put(self, "mean_diameter_mm", _size("mean_diameter_mm", self.mean_diameter_mm))
        if self.kind is NoduleKind.PART_SOLID:
            solid = _size("solid_mean_diameter_mm of a part-solid nodule", self.solid_mean_diameter_mm)
            if solid > self.mean_diameter_mm:
                raise InputError(
                    f"The solid component ({solid} mm) is larger than the whole part-solid nodule "
                    f"({self.mean_diameter_mm} mm); measure the whole nodule including its ground-glass part."
                )
            put(self, "solid_mean_diameter_mm", solid)
        elif self.solid_mean_diameter_mm is not None:
            put(self, "solid_mean_diameter_mm", _size("solid_mean_diameter_mm", self.solid_mean_diameter_mm, False))
        for flag in (*_FLAGS, "stable_within_error"):
            if not isinstance(getattr(self, flag), bool):
                raise InputError(f"{flag} must be True or False, got {getattr(self, flag)!r}.")
        if (self.benign_calcification or self.contains_fat) and self.suspicious_features:
            raise InputError("A nodule cannot be benign (calcification/fat) and suspicious; clear one of the flags.")
        self._check_prior(put)

    def _check_prior(self, put: Callable[[object, str, object], None]) -> None:
        has_size, has_days = self.prior_mean_diameter_mm is not None, self.interval_days is not None
        if self.timepoint in _FIRST_SEEN and (has_size or has_days or self.prior_category is not None):
            raise InputError(f"A {self.timepoint} nodule has no prior size or category; remove them or fix timepoint.")
        if has_size != has_days:
            raise InputError("Give prior_mean_diameter_mm and interval_days together (growth needs both).")
        error_given = self.diameter_uncertainty_mm is not None or self.stable_within_error
        if error_given and not has_size:
            raise InputError("A measurement uncertainty of the change needs the prior size and the interval.")
        uncertainty = 0.0
        if self.diameter_uncertainty_mm is not None:
            uncertainty = _number("diameter_uncertainty_mm", self.diameter_uncertainty_mm, "millimetres", False)
            put(self, "diameter_uncertainty_mm", uncertainty)
        if has_size:
            prior_mm = _size("prior_mean_diameter_mm", self.prior_mean_diameter_mm)
            days = _number("interval_days", self.interval_days, "days")
            put(self, "prior_mean_diameter_mm", prior_mm)
            put(self, "interval_days", days)
            derived = follow_up_timepoint(prior_mm, self.mean_diameter_mm, days, uncertainty, self.stable_within_error)
            if (derived is Timepoint.GROWING) != (self.timepoint is Timepoint.GROWING):
                raise InputError(
                    f"Time point {self.timepoint} contradicts the sizes: {self.prior_mean_diameter_mm} → "
                    f"{self.mean_diameter_mm} mm in {self.interval_days:g} days is {derived} (growth needs > 1.5 mm "
                    "within 12 months, beyond the measurement uncertainty); pass the time point from "
                    "follow_up_timepoint()."
                )
        if (self.prior_category is None) != (self.months_since_prior is None):
            raise InputError("Give prior_category and months_since_prior together (stepped management needs both).")
        if self.prior_category is not None:
            put(self, "prior_category", LungRadsCategory.parse(self.prior_category))
            put(self, "months_since_prior", _number("months_since_prior", self.months_since_prior, "months"))

    @classmethod
    def from_measurement(
        cls, measurement: NoduleMeasurement, timepoint: Timepoint | str, **inputs: Unpack[LungRadsExtras]
    ) -> LungRadsInput:
        """Build from a tracking :class:`NoduleMeasurement`; ``inputs`` are the other fields (flags, prior, ...)."""
        solid = measurement.solid_mean_diameter_mm if measurement.kind is NoduleKind.PART_SOLID else None
        when = _enum(Timepoint, str(timepoint).lower(), "time point")
        return cls(measurement.kind, measurement.mean_diameter_mm, when, solid_mean_diameter_mm=solid, **inputs)


class LungRadsExtras(TypedDict, total=False):
    """The fields of :class:`LungRadsInput` besides kind, size and time point (see there)."""

    prior_mean_diameter_mm: float
    interval_days: float
    benign_calcification: bool
    contains_fat: bool
    juxtapleural_typical: bool
    airway_subsegmental: bool
    suspicious_features: bool
    prior_category: LungRadsCategory
    months_since_prior: float
    diameter_uncertainty_mm: float
    stable_within_error: bool


@dataclass(frozen=True)
class Bounds:
    """Mean-diameter bounds in mm: ``lo`` inclusive, ``hi`` exclusive, None for unbounded."""

    lo: float | None = None
    hi: float | None = None

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies within the bounds."""
        return (self.lo is None or value >= self.lo) and (self.hi is None or value < self.hi)

    @property
    def text(self) -> str:
        """E.g. "< 6 mm", "≥ 6 to < 8 mm", "≥ 15 mm" or "" when unbounded."""
        if self.lo is None:
            return "" if self.hi is None else f"< {self.hi:g} mm"
        return f"≥ {self.lo:g} mm" if self.hi is None else f"≥ {self.lo:g} to < {self.hi:g} mm"


@dataclass(frozen=True)
class SizeRule:
    """One cell of the Lung-RADS table: kind and time points, size bounds, category and an optional note."""

    kind: NoduleKind
    timepoints: frozenset[Timepoint]
    category: LungRadsCategory
    total: Bounds = Bounds()
    solid: Bounds = Bounds()
    note: str = ""

    def matches(self, s: LungRadsInput) -> bool:
        """Whether this row applies to ``s``."""
        if s.kind is not self.kind or s.timepoint not in self.timepoints:
            return False
        solid = s.solid_mean_diameter_mm  # set for every part-solid nodule
        solid_ok = s.kind is not NoduleKind.PART_SOLID or (solid is not None and self.solid.contains(solid))
        return self.total.contains(s.mean_diameter_mm) and solid_ok


def _r(kind: NoduleKind, when: frozenset[Timepoint], cat: str, total: tuple = (None,) * 2, solid: tuple = (None,) * 2,
       note: str = "") -> SizeRule:  # fmt: skip
    return SizeRule(kind, when, LungRadsCategory(cat), Bounds(*total), Bounds(*solid), note)


_S, _P, _G = NoduleKind.SOLID, NoduleKind.PART_SOLID, NoduleKind.GROUND_GLASS
#: The Lung-RADS v2022 size table (DOMAIN.md), one row per cell: kind, time points, category, whole-nodule and
#: solid-component bounds. For every kind, time point and size exactly one row matches.
SIZE_RULES: tuple[SizeRule, ...] = (
    _r(_S, _AT_SIZE, "2", (None, 6)),
    _r(_S, _AT_SIZE, "3", (6, 8)),
    _r(_S, _AT_SIZE, "4A", (8, 15)),
    _r(_S, _AT_SIZE, "4B", (15, None)),
    _r(_S, _NEW, "2", (None, 4)),
    _r(_S, _NEW, "3", (4, 6)),
    _r(_S, _NEW, "4A", (6, 8)),
    _r(_S, _NEW, "4B", (8, None)),
    _r(_S, _GROWING, "4A", (None, 8)),
    _r(_S, _GROWING, "4B", (8, None)),
    _r(_P, _AT_SIZE, "2", (None, 6)),
    _r(_P, _AT_SIZE, "3", (6, None), (None, 6)),
    _r(_P, _AT_SIZE, "4A", (6, None), (6, 8)),
    _r(_P, _AT_SIZE, "4B", (6, None), (8, None)),
    _r(_P, _NEW, "3", (None, 6), note="a new nodule < 6 mm in total is 3 whatever its solid component"),
    _r(_P, _NEW, "4A", (6, None), (None, 4)),
    _r(_P, _NEW, "4B", (6, None), (4, None)),
    _r(_P, _GROWING, "4A", solid=(None, 4)),
    _r(_P, _GROWING, "4B", solid=(4, None)),
    _r(_G, _ALL, "2", (None, 30)),
    _r(_G, _KNOWN, "2", (30, None), note="stable or slowly growing"),
    _r(_G, _FIRST_SEEN, "3", (30, None)),
    _r(_G, _GROWING, "3", (30, None), note="growing faster than slowly, so the ≥ 30 mm threshold applies"),
)


@dataclass(frozen=True)
class FeatureRule:
    """A finding given as an explicit input that sets the category before the size table is used."""

    flag: str
    category: LungRadsCategory
    text: str
    kinds: frozenset[NoduleKind] = frozenset(NoduleKind)
    timepoints: frozenset[Timepoint] = _ALL
    below_mm: float | None = None

    def applies(self, s: LungRadsInput) -> bool:
        """Whether the flag is set and the finding's conditions hold for ``s``."""
        small = self.below_mm is None or s.mean_diameter_mm < self.below_mm
        return bool(getattr(s, self.flag)) and s.kind in self.kinds and s.timepoint in self.timepoints and small


_C1, _C2 = LungRadsCategory.C1, LungRadsCategory.C2
_JUXTA = "juxtapleural/perifissural nodule of typical shape < 10 mm"
FEATURE_RULES: tuple[FeatureRule, ...] = (
    FeatureRule("benign_calcification", _C1, "benign calcification (complete, central, popcorn or concentric rings)"),
    FeatureRule("contains_fat", _C1, "fat-containing nodule"),
    FeatureRule("airway_subsegmental", _C2, "subsegmental airway nodule"),
    FeatureRule("juxtapleural_typical", _C2, _JUXTA, frozenset({_S}), _ALL - _GROWING, below_mm=10),
)


@dataclass(frozen=True)
class StepDownRule:
    """Stepped management: a stable or decreased nodule of ``prior`` category after ``min_months`` → ``category``."""

    prior: LungRadsCategory
    min_months: float
    category: LungRadsCategory


STEP_DOWN_RULES: tuple[StepDownRule, ...] = (
    StepDownRule(LungRadsCategory.C3, 6, LungRadsCategory.C2),
    StepDownRule(LungRadsCategory.C4A, 3, LungRadsCategory.C3),
)
_SUSPICIOUS_BASE = frozenset({LungRadsCategory.C3, LungRadsCategory.C4A, LungRadsCategory.C4B})


@dataclass(frozen=True)
class LungRadsResult:
    """A category and a sentence naming the rule that gave it (and, for one nodule, the input it was given)."""

    category: LungRadsCategory
    reason: str
    input: LungRadsInput | None = field(default=None, compare=False, repr=False)


def _describe(s: LungRadsInput, rule: SizeRule | None) -> str:
    def size(what: str, mm: float | None, bounds: Bounds | None) -> str:
        return f"{what} {mm:.1f} mm" + (f" ({bounds.text})" if bounds is not None and bounds.text else "")

    total, solid = (rule.total, rule.solid) if rule is not None else (None, None)
    if s.kind is not NoduleKind.PART_SOLID:
        return f"{s.kind} nodule, {s.timepoint}, {size('mean diameter', s.mean_diameter_mm, total)}"
    whole = size("total mean diameter", s.mean_diameter_mm, total)
    return f"{s.kind} nodule, {s.timepoint}, {whole} with {size('solid component', s.solid_mean_diameter_mm, solid)}"


def _step_down(s: LungRadsInput, category: LungRadsCategory, reason: str, notes: list[str]) -> tuple:
    prior, months = s.prior_category, s.months_since_prior
    step = next((st for st in STEP_DOWN_RULES if st.prior is prior), None)
    if step is None or s.timepoint not in _KNOWN:
        return category, reason
    prior = step.prior
    assert months is not None, "a prior category comes with months_since_prior (checked on construction)"
    if category.rank > prior.rank:
        notes.append(f"no step-down from {prior}: the nodule crossed into a higher size category")
    elif months < step.min_months:
        notes.append(
            f"no step-down from {prior} after {months:g} months: stepped management needs ≥ {step.min_months:g}"
        )
    else:
        category = step.category
        reason += f"; {s.timepoint} {months:g} months after category {prior} (stepped management) → {category}"
    return category, reason


def _growth_within_error(s: LungRadsInput) -> str | None:
    """A note when the sizes meet the 1.5 mm growth definition but the change is within measurement error."""
    prior, days = s.prior_mean_diameter_mm, s.interval_days
    if (
        prior is None
        or days is None
        or s.timepoint is Timepoint.GROWING
        or not is_growing(prior, s.mean_diameter_mm, days)
    ):
        return None
    change = round_mm(s.mean_diameter_mm - prior)
    if s.diameter_uncertainty_mm is not None and not s.stable_within_error:
        return (
            f"mean diameter {prior:.1f} → {s.mean_diameter_mm:.1f} mm (+{change:.1f} mm) is within the measurement "
            f"uncertainty of ±{s.diameter_uncertainty_mm:.1f} mm: not counted as growth"
        )
    return f"mean diameter +{change:.1f} mm, but the change is within measurement error: not counted as growth"


def categorize_nodule(status: LungRadsInput) -> LungRadsResult:
    """The Lung-RADS v2022 category of one nodule, with the rule that applied spelled out in ``reason``.

    Order: explicit benign/airway/juxtapleural findings (:data:`FEATURE_RULES`), else the size table
    (:data:`SIZE_RULES`), then stepped management (:data:`STEP_DOWN_RULES`) unless the nodule crossed into a
    higher size category than its prior one or is a suspicious category 3/4 nodule, then 4X for a category 3/4
    nodule with suspicious features.
    """
    if not isinstance(status, LungRadsInput):
        raise InputError(f"categorize_nodule needs a LungRadsInput, got {type(status).__name__}; build one first.")
    for feature in FEATURE_RULES:
        if feature.applies(status):
            text = f"{_describe(status, None)}: {feature.text} → {feature.category}"
            return LungRadsResult(feature.category, text, status)
    rows = [r for r in SIZE_RULES if r.matches(status)]
    if len(rows) != 1:  # the table is a partition (tested); this guards edits to it
        raise MedAIError(f"{len(rows)} Lung-RADS rows match {status}; fix SIZE_RULES so exactly one matches.")
    rule, notes = rows[0], []
    category = rule.category
    reason = f"{_describe(status, rule)}{f', {rule.note}' if rule.note else ''} → {category}"
    if status.juxtapleural_typical:
        notes.append("juxtapleural rule not applied (solid, not growing and < 10 mm only)")
    within = _growth_within_error(status)
    if within:
        notes.append(within)
    if not (status.suspicious_features and category in _SUSPICIOUS_BASE):  # suspicious nodules are not stepped down
        category, reason = _step_down(status, category, reason, notes)
    if status.suspicious_features:
        if category in _SUSPICIOUS_BASE:
            category = LungRadsCategory.C4X
            reason += "; additional features suspicious for cancer → 4X"
        else:
            notes.append("suspicious features given, but 4X applies to category 3 or 4 nodules only")
    return LungRadsResult(category, reason + "".join(f" ({n})" for n in notes), status)


def categorize_exam(results: Sequence[LungRadsResult]) -> LungRadsResult:
    """The exam category: the highest nodule category (first one on ties); no nodules → 1."""
    if not results:
        return LungRadsResult(LungRadsCategory.C1, "no lung nodules")
    for r in results:
        if not isinstance(r, LungRadsResult):
            raise InputError(f"categorize_exam needs LungRadsResult items, got {type(r).__name__}.")
    top = max(results, key=lambda r: r.category.rank)
    return LungRadsResult(top.category, f"highest of {len(results)} nodule(s): {top.reason}")
