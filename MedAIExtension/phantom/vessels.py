"""Pulmonary vessel trees that fill the lungs, grown by recursive splitting of random lung territories.

Each tree starts at a root next to the hilum. A node owns a set of random points inside the lung (its
territory); its segment runs part of the way towards the territory's centroid, then the territory is split in
two at the median along its longest principal axis and each half grows a child branch. Radii follow Murray's
law (radius ~ territory size^(1/3)), from about 5 mm diameter at the hilum to 0.8 mm at the periphery.
"""

from __future__ import annotations

import numpy as np

from MedAIExtension.phantom.anatomy import Layout, Tube, lung_bounds, lung_sdf
from MedAIExtension.phantom.spec import LungSide

__all__ = ["grow_tree", "vessel_trees"]

_POINTS_PER_TREE = 1500
_ROOT_RADIUS_MM = 3.0
_MIN_RADIUS_MM = 0.4
_BRANCH_FRACTION = 0.55  # a branch point lies this far from the node towards its territory's centroid
_PLEURA_CLEARANCE_MM = 3.0


def _lung_points(layout: Layout, side: LungSide, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` points uniformly distributed inside the lung field, at least a few mm from the pleura."""
    low, high = lung_bounds(layout, side)
    found: list[np.ndarray] = []
    total = 0
    for _ in range(100):
        candidates = rng.uniform(low, high, size=(4 * count, 3))
        inside = candidates[lung_sdf(layout, side, *candidates.T) <= -_PLEURA_CLEARANCE_MM]
        found.append(inside)
        total += len(inside)
        if total >= count:
            break
    return np.concatenate(found)[:count]


def _grow(
    root: np.ndarray,
    points: np.ndarray,
    rng: np.random.Generator,
    root_radius: float = _ROOT_RADIUS_MM,
    min_radius: float = _MIN_RADIUS_MM,
) -> list[Tube]:
    tubes: list[Tube] = []
    total = len(points)
    stack = [(root, points)]
    while stack:
        start, territory = stack.pop()
        n = len(territory)
        radius = root_radius * (n / total) ** (1.0 / 3.0)
        if radius < min_radius:
            continue
        centroid = territory.mean(axis=0)
        child_radius = radius * 0.79  # Murray's law for two equal children
        leaf = child_radius < min_radius
        end = start + (centroid - start) * (1.0 if leaf else _BRANCH_FRACTION)
        end = end + rng.normal(scale=0.08 * float(np.linalg.norm(end - start)), size=3)
        tubes.append(Tube(tuple(start), tuple(end), radius, max(child_radius, min_radius)))
        if leaf:
            continue
        centred = territory - centroid
        _, vectors = np.linalg.eigh(centred.T @ centred)
        projection = centred @ vectors[:, -1]
        order = np.argsort(projection, kind="stable")
        half = n // 2
        stack.append((end, territory[order[:half]]))
        stack.append((end, territory[order[half:]]))
    return tubes


def grow_tree(
    layout: Layout,
    side: LungSide,
    root: np.ndarray,
    rng: np.random.Generator,
    points: int,
    root_radius: float,
    min_radius: float,
) -> list[Tube]:
    """A branching tree from ``root`` filling one lung (territories of ``points`` random points), tapering
    by Murray's law from ``root_radius`` to ``min_radius``; the airway tree is grown this way too."""
    return _grow(np.asarray(root, dtype=float), _lung_points(layout, side, rng, points), rng, root_radius, min_radius)


def vessel_trees(layout: Layout, rng: np.random.Generator) -> dict[LungSide, list[Tube]]:
    """Pulmonary arteries (from the hilum) and veins (from below it, towards the left atrium) of both lungs.

    Args:
        layout: the anatomy.
        rng: random generator (seeded by the caller for reproducibility).

    Returns:
        The tubes of each lung, anatomy frame.
    """
    trees: dict[LungSide, list[Tube]] = {}
    for side in (LungSide.RIGHT, LungSide.LEFT):
        hilum = layout.hila[side]
        medial = -1.0 if side is LungSide.RIGHT else 1.0
        vein_root = hilum + np.array([medial * 4.0, 8.0, -22.0])
        tubes: list[Tube] = []
        for root in (hilum, vein_root):
            tubes.extend(_grow(root, _lung_points(layout, side, rng, _POINTS_PER_TREE), rng))
        trees[side] = tubes
    return trees
