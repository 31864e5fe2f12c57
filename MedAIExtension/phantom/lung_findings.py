"""What a real chest CT shows besides the lesions: fissures, airways, disease textures, fluid, scars, artefacts.

A model trained on clean lungs calls every fissure, airway wall, scar and calcified granuloma a nodule. These
findings make the phantom lungs look like the lungs of the screening population (smokers, the elderly) and give
the hard negatives a detector must learn to ignore:

- **fissures**: the oblique fissure of each lung and the right horizontal fissure, thin planes of pleura
  (< 1 mm, blurred by the slice profile as on real CT);
- **airway tree**: segmental and subsegmental bronchi with walls, grown like the vessels from each main bronchus;
- **emphysema**: centrilobular low-attenuation areas (upper-lobe predominant) and, when severe, bullae;
- **fibrosis**: subpleural, basal reticulation with ground-glass haze;
- **atelectasis**: a dependent (posterior) band of collapsed lung of soft-tissue density;
- **effusion**: pleural fluid layering posteriorly; its voxels are not lung in the label map;
- **granulomas**: calcified nodules of 2-6 mm (benign, Lung-RADS 1): *not* in the lesion label;
- **scars**: linear parenchymal bands running to the pleura: *not* in the lesion label;
- **streaks**: beam-hardening streaks across the chest from the dense spine and shoulders.

Everything is decided here from the spec and a seeded generator (geometry only; painting is in
:mod:`~MedAIExtension.phantom.findings_render`). The default :class:`LungFindingsSpec` has none of them, so
specs written before these existed render as they did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from MedAIExtension.phantom.anatomy import Layout, Tube, lung_bounds, lung_sdf
from MedAIExtension.phantom.findings_spec import LungFindingsSpec
from MedAIExtension.phantom.vessels import grow_tree
from MedAIExtension.tracking.types import LungSide

__all__ = ["FindingsLayout", "LungFindingsSpec", "build_findings", "random_findings"]

_SIGN = {LungSide.RIGHT: 1.0, LungSide.LEFT: -1.0}
_CLEARANCE_MM = 6.0  # granulomas and scars keep this far from every lesion's surface


@dataclass(frozen=True)
class Fissure:
    """A fissure plane (anatomy frame): points with ``(p - point) . normal == 0``, limited to one lung.

    ``anterior_of`` (another fissure's index in the same lung) keeps it to the side of that plane its normal
    points to: the right horizontal fissure runs only in front of the oblique fissure.
    """

    side: LungSide
    point: tuple[float, float, float]
    normal: tuple[float, float, float]
    anterior_of: int | None = None


@dataclass(frozen=True)
class Blob:
    """A small sphere (granuloma): centre (anatomy frame), radius, attenuation."""

    center: tuple[float, float, float]
    radius: float
    hu: float


@dataclass
class FindingsLayout:
    """The concrete findings of one phantom (anatomy frame, mm)."""

    spec: LungFindingsSpec
    fissures: list[Fissure] = field(default_factory=list)
    airways: dict[LungSide, list[Tube]] = field(default_factory=dict)
    granulomas: list[Blob] = field(default_factory=list)
    scars: list[Tube] = field(default_factory=list)
    effusion_level_y: dict[LungSide, float] = field(default_factory=dict)
    texture_waves: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    texture_phases: np.ndarray = field(default_factory=lambda: np.zeros(0))
    streak_angles: np.ndarray = field(default_factory=lambda: np.zeros(0))
    streak_signs: np.ndarray = field(default_factory=lambda: np.zeros(0))


def build_findings(
    layout: Layout,
    spec: LungFindingsSpec,
    seed: int,
    lesions: Sequence[tuple[np.ndarray, float]] = (),
) -> FindingsLayout:
    """Place the findings of ``spec`` in ``layout``; ``lesions`` (centre, reach radius) are kept clear.

    The effusion stops 5 mm below the lowest lesion of its lung, so no lesion floats in fluid; granulomas and
    scars keep clear of every lesion so the lesion truth stays what the spec says.
    """
    out = FindingsLayout(spec)
    if not spec.any:
        return out
    rng = np.random.default_rng([int(seed), 0x46494E])
    if spec.fissures:
        out.fissures = _fissures(layout, rng)
    if spec.airway_tree:
        for side in (LungSide.RIGHT, LungSide.LEFT):
            root = np.asarray(layout.airways[1 if side is LungSide.RIGHT else 2].p1, dtype=float)
            out.airways[side] = grow_tree(layout, side, root, rng, points=500, root_radius=4.5, min_radius=0.7)
    waves = rng.normal(size=(10, 3))
    waves /= np.linalg.norm(waves, axis=1, keepdims=True)
    out.texture_waves = waves * (2.0 * math.pi / rng.uniform(4.0, 14.0, size=(10, 1)))
    out.texture_phases = rng.uniform(0.0, 2.0 * math.pi, size=10)
    for _ in range(spec.granulomas):
        spot = _clear_point(layout, rng, lesions, margin=3.0)
        if spot is not None:
            point, _side = spot
            out.granulomas.append(Blob(tuple(point), float(rng.uniform(1.0, 3.0)), float(rng.uniform(250.0, 900.0))))
    for _ in range(spec.scars):
        spot = _clear_point(layout, rng, lesions, margin=8.0, near_pleura=True)
        if spot is None:
            continue
        point, side = spot
        centre = layout.lungs[side][0]
        inward = centre - point
        inward /= max(float(np.linalg.norm(inward)), 1e-9)
        inward = inward + rng.normal(scale=0.35, size=3)
        inward /= np.linalg.norm(inward)
        length = float(rng.uniform(12.0, 35.0))
        radius = float(rng.uniform(0.6, 1.4))
        end = point + length * inward
        if any(_segment_gap(point, end, c, r) < radius + _CLEARANCE_MM for c, r in lesions):
            continue
        out.scars.append(Tube(tuple(point), tuple(end), radius, radius * float(rng.uniform(0.4, 0.9))))
    if spec.effusion_mm > 0.0:
        for side in (LungSide.RIGHT, LungSide.LEFT):
            centre, semi = layout.lungs[side]
            back = max(float(centre[1] - semi[1]), -float(layout.cavity[1]))  # the lung's most posterior point
            level = back + spec.effusion_mm * float(rng.uniform(0.6, 1.0))
            for centre, radius in lesions:
                if lung_sdf(layout, side, *np.asarray(centre, dtype=float).reshape(3, 1))[0] <= radius:
                    level = min(level, float(centre[1]) - radius - 5.0)
            if level > back:
                out.effusion_level_y[side] = level
    if spec.streaks_hu > 0.0:
        count = int(rng.integers(3, 8))
        out.streak_angles = rng.uniform(0.0, math.pi, size=count)
        out.streak_signs = np.where(rng.random(count) < 0.75, -1.0, 1.0) * rng.uniform(0.4, 1.0, size=count)
    return out


def _fissures(layout: Layout, rng: np.random.Generator) -> list[Fissure]:
    """The oblique fissure of each lung (posterior-superior to anterior-inferior) and the right horizontal one."""
    out: list[Fissure] = []
    hz = layout.lung_half_height
    for side in (LungSide.RIGHT, LungSide.LEFT):
        centre, semi = layout.lungs[side]
        slope = math.radians(float(rng.uniform(45.0, 62.0)))  # the fissure's angle to the axial plane
        tilt = float(rng.uniform(0.3, 0.6)) * _SIGN[side]  # runs antero-lateral to postero-medial on axial slices
        normal = np.array([tilt, math.sin(slope), math.cos(slope)])
        normal /= np.linalg.norm(normal)
        point = centre + np.array([0.0, float(rng.uniform(-0.25, 0.0)) * semi[1], float(rng.uniform(0.0, 0.2)) * hz])
        out.append(Fissure(side, tuple(point), tuple(normal)))
        if side is LungSide.RIGHT:
            horizontal = np.array([0.0, float(rng.normal(scale=0.06)), 1.0])
            horizontal /= np.linalg.norm(horizontal)
            level = centre + np.array([0.0, 0.0, float(rng.uniform(0.05, 0.25)) * hz])
            out.append(Fissure(side, tuple(level), tuple(horizontal), anterior_of=len(out) - 1))
    return out


def _clear_point(
    layout: Layout,
    rng: np.random.Generator,
    lesions: Sequence[tuple[np.ndarray, float]],
    margin: float,
    near_pleura: bool = False,
) -> tuple[np.ndarray, LungSide] | None:
    """A random point inside a lung, ``margin`` mm inside the pleura (or within 3 mm of it), clear of lesions."""
    for _ in range(200):
        side = LungSide.RIGHT if rng.random() < 0.5 else LungSide.LEFT
        low, high = lung_bounds(layout, side)
        point = rng.uniform(low, high)
        depth = -float(lung_sdf(layout, side, *point.reshape(3, 1))[0])
        if near_pleura and not 1.0 <= depth <= 4.0:
            continue
        if not near_pleura and depth < margin:
            continue
        if any(float(np.linalg.norm(point - np.asarray(c))) < r + _CLEARANCE_MM + margin for c, r in lesions):
            continue
        return point, side
    return None


def _segment_gap(p0: np.ndarray, p1: np.ndarray, centre: np.ndarray, radius: float) -> float:
    """Distance from a segment to a sphere's surface (negative when they overlap)."""
    axis = p1 - p0
    t = float(np.clip((np.asarray(centre) - p0) @ axis / max(float(axis @ axis), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p0 + t * axis - np.asarray(centre))) - radius


def random_findings(rng: np.random.Generator) -> LungFindingsSpec:
    """Findings as they come in a screening population: most scans show fissures and airways, some disease."""
    emphysema = float(rng.uniform(0.1, 1.0)) if rng.random() < 0.35 else 0.0
    fibrosis = float(rng.uniform(0.2, 1.0)) if rng.random() < 0.15 else 0.0
    return LungFindingsSpec(
        fissures=bool(rng.random() < 0.85),
        airway_tree=bool(rng.random() < 0.9),
        emphysema=emphysema,
        fibrosis=fibrosis,
        atelectasis_mm=float(rng.uniform(3.0, 20.0)) if rng.random() < 0.4 else 0.0,
        effusion_mm=float(rng.uniform(10.0, 50.0)) if rng.random() < 0.15 else 0.0,
        granulomas=int(rng.integers(1, 5)) if rng.random() < 0.5 else 0,
        scars=int(rng.integers(1, 4)) if rng.random() < 0.5 else 0,
        streaks_hu=float(rng.uniform(20.0, 120.0)) if rng.random() < 0.5 else 0.0,
    )
