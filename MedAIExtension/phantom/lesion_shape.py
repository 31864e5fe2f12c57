"""Lobulated lesion outlines: a sphere whose radius swells towards a few random directions, same volume.

Real nodules are rarely spheres; lobulation (and spiculation) is also a sign radiologists weigh. The outline is
``r(u) = R · s · (1 + a · Σ_k w_k · max(u·v_k, 0)³)`` over unit directions ``u``: ``K`` lobes along random
directions ``v_k`` with random weights ``w_k``, amplitude ``a``, and ``s`` chosen so that the volume
(``∫ r³/3 dΩ``) equals the sphere of radius ``R``. So a lesion's ``diameter_mm`` stays its volume-equivalent
diameter and its truth volume stays ``4/3 π R³``; only its axes change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["LobedShape", "lobed_shape"]

_LOBES = 5
_QUADRATURE_POINTS = 4096


def _fibonacci_sphere(count: int) -> np.ndarray:
    """``count`` nearly uniform unit vectors (rows)."""
    index = np.arange(count) + 0.5
    polar = np.arccos(1.0 - 2.0 * index / count)
    azimuth = math.pi * (1.0 + math.sqrt(5.0)) * index
    return np.column_stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)])


@dataclass(frozen=True)
class LobedShape:
    """The outline's lobes (unit directions, weights), amplitude and volume-preserving scale."""

    directions: np.ndarray
    weights: np.ndarray
    amplitude: float
    scale: float

    def relative_radius(self, ux: np.ndarray, uy: np.ndarray, uz: np.ndarray) -> np.ndarray:
        """``r(u) / R`` for unit vectors given by their components (any matching shapes)."""
        bulge = np.zeros(np.shape(ux), dtype=np.float64)
        for (vx, vy, vz), weight in zip(self.directions, self.weights):
            bulge += weight * np.maximum(ux * vx + uy * vy + uz * vz, 0.0) ** 3
        return self.scale * (1.0 + self.amplitude * bulge)

    @property
    def max_relative_radius(self) -> float:
        """The largest ``r(u) / R`` (an upper bound: all lobes at once)."""
        return float(self.scale * (1.0 + self.amplitude * self.weights.sum()))


def lobed_shape(amplitude: float, seed: int) -> LobedShape | None:
    """The lobed outline of amplitude ``amplitude`` (0: a sphere, None) from ``seed``."""
    if amplitude <= 0.0:
        return None
    rng = np.random.default_rng([int(seed), 0x4C4F42])
    directions = rng.normal(size=(_LOBES, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    weights = rng.uniform(0.5, 1.0, size=_LOBES)
    raw = LobedShape(directions, weights, float(amplitude), 1.0)
    points = _fibonacci_sphere(_QUADRATURE_POINTS)
    mean_cube = float(np.mean(raw.relative_radius(points[:, 0], points[:, 1], points[:, 2]) ** 3))
    return LobedShape(directions, weights, float(amplitude), mean_cube ** (-1.0 / 3.0))
