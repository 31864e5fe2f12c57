"""Lobulated lesion outlines: a sphere whose radius swells towards a few random directions, same volume.

Real nodules are rarely spheres; lobulation (and spiculation) is also a sign radiologists weigh. The outline is
``r(u) = R · s · (1 + a · Σ_k w_k · max(u·v_k, 0)³)`` over unit directions ``u``: ``K`` lobes along random
directions ``v_k`` with random weights ``w_k``, amplitude ``a``, and ``s`` chosen so that the volume
(``∫ r³/3 dΩ``) equals the sphere of radius ``R``. So a lesion's ``diameter_mm`` stays its volume-equivalent
diameter and its truth volume stays ``4/3 π R³``; only its axes change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LobedShape", "lobed_shape"]

_LOBES = 5
_SPIKES = 14
_SPIKE_WIDTH = 0.09  # radians
_QUADRATURE_POINTS = 4096
_SPIKE_QUADRATURE_POINTS = 16384  # narrow spikes need a finer sphere


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
    spike_directions: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    spike_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def relative_radius(self, ux: np.ndarray, uy: np.ndarray, uz: np.ndarray) -> np.ndarray:
        """``r(u) / R`` for unit vectors given by their components (any matching shapes)."""
        bulge = np.zeros(np.shape(ux), dtype=np.float64)
        for (vx, vy, vz), weight in zip(self.directions, self.weights):
            bulge += weight * np.maximum(ux * vx + uy * vy + uz * vz, 0.0) ** 3
        radius = 1.0 + self.amplitude * bulge
        for (sx, sy, sz), length in zip(self.spike_directions, self.spike_lengths):
            radius += length * np.exp((ux * sx + uy * sy + uz * sz - 1.0) / _SPIKE_WIDTH**2)
        return self.scale * radius

    @property
    def max_relative_radius(self) -> float:
        """An upper bound of ``r(u) / R``: all lobes at once plus the longest spikes where they may overlap."""
        spikes = np.sort(self.spike_lengths)[::-1][:2].sum() if self.spike_lengths.size else 0.0
        return float(self.scale * (1.0 + self.amplitude * self.weights.sum() + spikes))


def lobed_shape(amplitude: float, seed: int, spiculation: float = 0.0) -> LobedShape | None:
    """The outline with lobes of amplitude ``amplitude`` and spikes of relative length up to ``spiculation``
    (both 0: a sphere, None) from ``seed``."""
    if amplitude <= 0.0 and spiculation <= 0.0:
        return None
    rng = np.random.default_rng([int(seed), 0x4C4F42])
    directions = rng.normal(size=(_LOBES, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    weights = rng.uniform(0.5, 1.0, size=_LOBES)
    spikes, lengths = np.zeros((0, 3)), np.zeros(0)
    if spiculation > 0.0:
        spike_rng = np.random.default_rng([int(seed), 0x535049])  # lobes stay as they were without spikes
        spikes = spike_rng.normal(size=(_SPIKES, 3))
        spikes /= np.linalg.norm(spikes, axis=1, keepdims=True)
        lengths = float(spiculation) * spike_rng.uniform(0.3, 1.0, size=_SPIKES)
    raw = LobedShape(directions, weights, float(amplitude), 1.0, spikes, lengths)
    points = _fibonacci_sphere(_SPIKE_QUADRATURE_POINTS if spiculation > 0.0 else _QUADRATURE_POINTS)
    mean_cube = float(np.mean(raw.relative_radius(points[:, 0], points[:, 1], points[:, 2]) ** 3))
    return LobedShape(directions, weights, float(amplitude), mean_cube ** (-1.0 / 3.0), spikes, lengths)
