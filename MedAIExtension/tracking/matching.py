"""Match nodules between a baseline and a follow-up CT: persistent, new and resolved nodules.

Follow-up centres are mapped into baseline RAS with the :class:`~MedAIExtension.tracking.registration.Registration`;
then a gated optimal assignment (Hungarian, ``scipy.optimize.linear_sum_assignment``) pairs them. Each nodule may
also stay unpaired at a cost of half its gate, so a pair is made only when its distance is within the pair's gate
``gate_mm + size_gate_factor * mean radius``, and among all such pairings the one with the smallest total cost wins
(not the greedy nearest-first one, which fails when two nodules lie close together).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.tracking.registration import Registration
from MedAIExtension.tracking.types import NoduleStatus

__all__ = ["Match", "match_nodules", "sphere_overlap"]

_FORBIDDEN = 1e12


@dataclass(frozen=True)
class Match:
    """One nodule across two time points.

    Attributes:
        baseline: index into the baseline list, or None for a new nodule.
        followup: index into the follow-up list, or None for a resolved nodule.
        distance_mm: distance between the baseline centre and the mapped follow-up centre (pairs only).
        overlap: intersection over union of the two nodules as spheres (pairs with both radii known), else None.
    """

    baseline: int | None
    followup: int | None
    distance_mm: float | None
    overlap: float | None

    @property
    def status(self) -> NoduleStatus:
        """PERSISTENT (both), NEW (follow-up only) or RESOLVED (baseline only)."""
        if self.baseline is None:
            return NoduleStatus.NEW
        return NoduleStatus.RESOLVED if self.followup is None else NoduleStatus.PERSISTENT


def match_nodules(
    baseline_centers_ras: Sequence[Sequence[float]] | np.ndarray,
    followup_centers_ras: Sequence[Sequence[float]] | np.ndarray,
    registration: Registration | None = None,
    baseline_radii_mm: Sequence[float] | np.ndarray | None = None,
    followup_radii_mm: Sequence[float] | np.ndarray | None = None,
    gate_mm: float = 10.0,
    size_gate_factor: float = 1.0,
) -> list[Match]:
    """Pair baseline and follow-up nodules.

    Args:
        baseline_centers_ras: (N, 3) baseline nodule centres, RAS mm.
        followup_centers_ras: (M, 3) follow-up nodule centres in the follow-up's own RAS.
        registration: maps follow-up points into baseline RAS; None when both already share one frame.
        baseline_radii_mm: N radii (e.g. half the mean diameter); widen the gate and give ``overlap``.
        followup_radii_mm: M radii.
        gate_mm: largest centre distance for a pair of point-like nodules, after registration.
        size_gate_factor: the gate grows by this times the pair's mean radius (a growing nodule's centre moves).

    Returns:
        Baseline nodules in their order (paired or resolved), then new follow-up nodules in their order.

    Raises:
        InputError: on malformed centres, radii or gate.
    """
    baseline = _centers(baseline_centers_ras, "baseline")
    followup = _centers(followup_centers_ras, "follow-up")
    rb = _radii(baseline_radii_mm, len(baseline), "baseline")
    rf = _radii(followup_radii_mm, len(followup), "follow-up")
    if not (math.isfinite(gate_mm) and gate_mm > 0):
        raise InputError(f"gate_mm must be a positive distance in mm, got {gate_mm!r}.")
    if not (math.isfinite(size_gate_factor) and size_gate_factor >= 0):
        raise InputError(f"size_gate_factor must be >= 0, got {size_gate_factor!r}.")
    if registration is not None and len(followup):
        followup = np.atleast_2d(registration.map_to_baseline(followup))
    n, m = len(baseline), len(followup)
    # each nodule may stay unpaired at half its own gate; a pair (i, j) is allowed within the sum of the halves
    half_b = (gate_mm + size_gate_factor * np.nan_to_num(rb)) / 2.0
    half_f = (gate_mm + size_gate_factor * np.nan_to_num(rf)) / 2.0
    distance = np.linalg.norm(baseline[:, None, :] - followup[None, :, :], axis=-1) if n and m else np.zeros((n, m))
    gate = half_b[:, None] + half_f[None, :]
    cost = np.full((n + m, m + n), _FORBIDDEN)
    cost[:n, :m] = np.where(distance <= gate, distance, _FORBIDDEN)
    cost[np.arange(n), m + np.arange(n)] = half_b  # baseline i unpaired
    cost[n + np.arange(m), np.arange(m)] = half_f  # follow-up j unpaired
    cost[n:, m:] = 0.0
    pairs: dict[int, int] = {}
    if n and m:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cost)
        pairs = {int(i): int(j) for i, j in zip(rows, cols) if i < n and j < m}
    out = []
    for i in range(n):
        j = pairs.get(i)
        if j is None:
            out.append(Match(i, None, None, None))
            continue
        overlap = None
        if not (math.isnan(rb[i]) or math.isnan(rf[j])):
            overlap = sphere_overlap(float(distance[i, j]), float(rb[i]), float(rf[j]))
        out.append(Match(i, j, float(distance[i, j]), overlap))
    paired = set(pairs.values())
    out.extend(Match(None, j, None, None) for j in range(m) if j not in paired)
    return out


def sphere_overlap(distance_mm: float, radius_a_mm: float, radius_b_mm: float) -> float:
    """Intersection over union of two spheres whose centres are ``distance_mm`` apart."""
    d, a, b = float(distance_mm), float(radius_a_mm), float(radius_b_mm)
    volume_a, volume_b = 4.0 / 3.0 * math.pi * a**3, 4.0 / 3.0 * math.pi * b**3
    if d >= a + b:
        return 0.0
    if d <= abs(a - b):
        inter = min(volume_a, volume_b)
    else:
        inter = math.pi * (a + b - d) ** 2 * (d * d + 2.0 * d * (a + b) - 3.0 * (a - b) ** 2) / (12.0 * d)
    union = volume_a + volume_b - inter
    return inter / union if union > 0 else 0.0


def _centers(points: Sequence[Sequence[float]] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.size == 0:
        return np.zeros((0, 3))
    if array.ndim != 2 or array.shape[1] != 3 or not np.isfinite(array).all():
        raise InputError(
            f"The {name} nodule centres must be finite (N, 3) RAS coordinates, got shape {array.shape}. "
            "Pass one (R, A, S) triple per nodule."
        )
    return array


def _radii(radii: Sequence[float] | np.ndarray | None, count: int, name: str) -> np.ndarray:
    if radii is None:
        return np.full(count, np.nan)
    array = np.asarray(radii, dtype=float).reshape(-1)
    if len(array) != count:
        raise InputError(f"Got {len(array)} {name} radii for {count} {name} nodules; give one radius per nodule.")
    if not (np.isfinite(array).all() and (array > 0).all()):
        raise InputError(f"The {name} radii must be positive millimetres, got {array.tolist()}.")
    return array
