"""What a synthetic chest CT looks like: validated, immutable descriptions of the anatomy, nodules and grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.phantom.ct_noise import KERNELS
from MedAIExtension.phantom.findings_spec import LungFindingsSpec
from MedAIExtension.phantom.grid import AXIAL, make_affine, normalized_direction
from MedAIExtension.tracking.types import LungSide, NoduleKind

__all__ = [
    "DEFAULT_NODULES",
    "AnatomySpec",
    "LungSide",
    "NoduleKind",
    "NoduleSpec",
    "PhantomSpec",
    "rigid_matrix",
]

_MAX_DIAMETER_MM = 80.0  # masses up to 70 mm (issue 17)
_MAX_VOXELS = 2048**3 // 8


_E = TypeVar("_E", bound=Enum)


def _enum(cls: type[_E], value: object, what: str) -> _E:
    try:
        return cls(value.value if isinstance(value, Enum) else value)
    except ValueError:
        options = ", ".join(repr(m.value) for m in cls)
        raise InputError(f"{what} {value!r} is not one of {options}.") from None


def _triple(value: Any, what: str) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be three numbers, got {value!r}") from None
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise InputError(f"{what} must be three finite numbers, got {value!r}")
    x, y, z = out
    return x, y, z


def _size_triple(value: Any) -> tuple[int, int, int]:
    """``size_ijk`` as three integers >= 2 within the voxel limit; InputError otherwise."""
    try:
        size = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"size_ijk must be three integers, got {value!r}") from None
    if len(size) != 3 or min(size) < 2 or math.prod(size) > _MAX_VOXELS:
        raise InputError(f"size_ijk must be three integers >= 2 (at most {_MAX_VOXELS} voxels), got {size}.")
    i, j, k = size
    return i, j, k


@dataclass(frozen=True)
class NoduleSpec:
    """One lung nodule: a sphere, placed absolutely (``center_ras``) or relative to a lung.

    Attributes:
        diameter_mm: diameter of the whole nodule (for part-solid: ground-glass shell included).
        kind: ``"solid"``, ``"part-solid"`` or ``"ground-glass"`` (str or :class:`NoduleKind`).
        solid_fraction: diameter of the solid core / total diameter; for part-solid in (0, 1), default 0.5.
            Normalised to 1 for solid and 0 for ground-glass nodules.
        center_ras: absolute centre in RAS mm; or None to place it with ``lung`` and ``position``.
        lung: ``"right"`` or ``"left"`` (str or :class:`LungSide`) for relative placement.
        position: (lateral, anterior, superior) in units of the lung's semi-axes, inside the unit ball;
            lateral is positive away from the midline on both sides.
        juxta_pleural: push the nodule outward along ``position`` until it abuts the pleura.
        lobulation: 0 for a sphere; up to 0.5 for a lobulated outline of the same volume
            (:mod:`MedAIExtension.phantom.lesion_shape`), ``diameter_mm`` being the volume-equivalent diameter.
        shape_seed: which lobulated outline.
        spiculation: 0 for a smooth outline; up to 1 for spikes up to that fraction of the radius long.
        necrosis: 0 for a homogeneous lesion; up to 0.7 for a solid lesion (a mass) with a necrotic centre of
            that fraction of its radius.
    """

    diameter_mm: float
    kind: NoduleKind | str = NoduleKind.SOLID
    solid_fraction: float | None = None
    center_ras: tuple[float, float, float] | None = None
    lung: LungSide | str | None = None
    position: tuple[float, float, float] | None = None
    juxta_pleural: bool = False
    lobulation: float = 0.0
    shape_seed: int = 0
    spiculation: float = 0.0
    necrosis: float = 0.0

    def __post_init__(self) -> None:
        kind = _enum(NoduleKind, self.kind, "Nodule kind")
        spiculation, necrosis = float(self.spiculation), float(self.necrosis)
        if not 0.0 <= spiculation <= 1.0:
            raise InputError(f"spiculation must be in [0, 1] (0 = smooth), got {self.spiculation!r}.")
        if not 0.0 <= necrosis <= 0.7 or (necrosis > 0.0 and kind is not NoduleKind.SOLID):
            raise InputError(
                f"necrosis must be in [0, 0.7] and applies to solid lesions only, got {self.necrosis!r} for a "
                f"{kind.value} lesion."
            )
        object.__setattr__(self, "spiculation", spiculation)
        object.__setattr__(self, "necrosis", necrosis)
        lobulation = float(self.lobulation)
        if not 0.0 <= lobulation <= 0.5:
            raise InputError(f"lobulation must be in [0, 0.5] (0 = a sphere), got {self.lobulation!r}.")
        object.__setattr__(self, "lobulation", lobulation)
        object.__setattr__(self, "kind", kind)
        diameter = float(self.diameter_mm)
        if not math.isfinite(diameter) or not 0.0 < diameter <= _MAX_DIAMETER_MM:
            raise InputError(f"Nodule diameter must be in (0, {_MAX_DIAMETER_MM:g}] mm, got {self.diameter_mm!r}.")
        object.__setattr__(self, "diameter_mm", diameter)
        object.__setattr__(self, "solid_fraction", self._checked_fraction(kind))
        object.__setattr__(self, "juxta_pleural", bool(self.juxta_pleural))
        if self.center_ras is not None:
            if self.lung is not None or self.position is not None or self.juxta_pleural:
                raise InputError("Give a nodule either center_ras or (lung, position[, juxta_pleural]), not both.")
            object.__setattr__(self, "center_ras", _triple(self.center_ras, "Nodule center_ras"))
            return
        if self.lung is None or self.position is None:
            raise InputError("Place each nodule with center_ras=(R, A, S) or with lung='right'|'left' and position.")
        object.__setattr__(self, "lung", _enum(LungSide, self.lung, "Lung"))
        position = _triple(self.position, "Nodule position")
        if math.fsum(v * v for v in position) >= 1.0:
            raise InputError(
                f"Nodule position {position} lies outside the lung ellipsoid; use (lateral, anterior, superior) "
                "with a length below 1 (units of the lung's semi-axes)."
            )
        object.__setattr__(self, "position", position)

    def _checked_fraction(self, kind: NoduleKind) -> float:
        fraction = self.solid_fraction
        if kind is NoduleKind.PART_SOLID:
            value = 0.5 if fraction is None else float(fraction)
            if not 0.0 < value < 1.0:
                raise InputError(f"A part-solid nodule needs 0 < solid_fraction < 1, got {fraction!r}.")
            return value
        expected = 1.0 if kind is NoduleKind.SOLID else 0.0
        if fraction is not None and float(fraction) != expected:
            raise InputError(
                f"solid_fraction applies to part-solid nodules only; a {kind.value} nodule has {expected:g}. "
                "Use kind='part-solid' for a nodule with a solid core."
            )
        return expected

    @property
    def radius_mm(self) -> float:
        """Radius of the whole nodule."""
        return self.diameter_mm / 2.0

    @property
    def solid_diameter_mm(self) -> float:
        """Diameter of the solid component (the whole nodule if solid, 0 if ground-glass)."""
        return self.diameter_mm * float(self.solid_fraction)  # type: ignore[arg-type]

    @property
    def volume_mm3(self) -> float:
        """Analytic volume of the whole nodule (4/3 π r³)."""
        return 4.0 / 3.0 * math.pi * self.radius_mm**3

    @property
    def solid_volume_mm3(self) -> float:
        """Analytic volume of the solid component."""
        return 4.0 / 3.0 * math.pi * (self.solid_diameter_mm / 2.0) ** 3


DEFAULT_NODULES: tuple[NoduleSpec, ...] = (
    NoduleSpec(8.0, NoduleKind.SOLID, lung=LungSide.RIGHT, position=(0.35, 0.25, 0.35)),
    NoduleSpec(12.0, NoduleKind.PART_SOLID, solid_fraction=0.5, lung=LungSide.LEFT, position=(0.35, -0.35, -0.3)),
    NoduleSpec(10.0, NoduleKind.GROUND_GLASS, lung=LungSide.RIGHT, position=(0.2, -0.45, -0.45)),
    NoduleSpec(5.0, NoduleKind.SOLID, lung=LungSide.LEFT, position=(0.6, 0.0, 0.2), juxta_pleural=True),
)


@dataclass(frozen=True)
class AnatomySpec:
    """Body habitus of the phantom; everything else scales from it.

    Attributes:
        center_ras: RAS position of the anatomical centre: the body axis at the lungs' mid-height.
        body_semi_axes_mm: half width (left-right) and half depth (antero-posterior) of the body.
        fat_mm: thickness of the subcutaneous fat layer.
        lung_height_mm: cranio-caudal extent of the lungs.
        heart_scale: size of the heart relative to the default.
        lung_hu: mean attenuation of the lung parenchyma.
    """

    center_ras: tuple[float, float, float] = (0.0, 0.0, 0.0)
    body_semi_axes_mm: tuple[float, float] = (165.0, 118.0)
    fat_mm: float = 14.0
    lung_height_mm: float = 250.0
    heart_scale: float = 1.0
    lung_hu: float = -860.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "center_ras", _triple(self.center_ras, "Anatomy center_ras"))
        axes = tuple(float(v) for v in self.body_semi_axes_mm)
        if len(axes) != 2 or not (100.0 <= axes[0] <= 250.0 and 70.0 <= axes[1] <= 200.0):
            raise InputError(
                f"body_semi_axes_mm must be (left-right 100..250, antero-posterior 70..200) mm, got {axes}."
            )
        object.__setattr__(self, "body_semi_axes_mm", axes)
        checks = (
            ("fat_mm", 0.0, 40.0),
            ("lung_height_mm", 100.0, 350.0),
            ("heart_scale", 0.6, 1.5),
            ("lung_hu", -980.0, -600.0),
        )
        for name, low, high in checks:
            value = float(getattr(self, name))
            if not low <= value <= high:
                raise InputError(f"Anatomy {name} must be in [{low:g}, {high:g}], got {getattr(self, name)!r}.")
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class PhantomSpec:
    """Everything that determines a phantom: grid, anatomy, nodules, noise and the random seed.

    The anatomy is defined in RAS millimetres and sampled on the grid, so the same spec with another grid
    (sagittal, coronal, oblique, reversed slice order) shows the same anatomy at the same physical place.

    Attributes:
        size_ijk: voxels along i, j, k (columns, rows, slices).
        spacing: voxel spacing along i, j, k in mm.
        direction_ras: 3x3 matrix (rows of numbers), columns = RAS unit vectors of i, j, k; default axial.
        center_ras: RAS position of the centre of the field of view.
        seed: seed of the vessel tree, the lung texture and the noise.
        nodules: the nodules, numbered 1.. in this order.
        noise_hu: standard deviation of the image noise in HU.
        anatomy: body habitus.
        pose_ras: optional rigid 4x4 matrix (rows) that moves the patient: it maps a point of the body, as the
            anatomy and the nodules place it, to scanner RAS. The grid stays where it is, so the anatomy (vessels
            and nodules included) appears rotated and shifted in the image, as when a patient lies differently
            on the table at a follow-up scan. None: the body frame is the scanner frame.
        noise_seed: seed of the image noise only (default: ``seed``); a follow-up study of the same patient
            keeps ``seed`` (same vessels and texture) and takes a new noise realisation.
        noise_kernel: None for the original in-plane smoothed noise; or the name of a reconstruction kernel of
            :data:`MedAIExtension.phantom.ct_noise.KERNELS` (``"soft"`` … ``"lung"``) for noise with that kernel's
            noise power spectrum, the texture of real filtered back-projection CT.
        slice_thickness_mm: with ``noise_kernel``, the reconstructed slice thickness (default: the slice spacing);
            thicker than the spacing correlates the noise of neighbouring slices as overlapping reconstructions do.
        findings: what else the lungs show (fissures, airways, emphysema, fibrosis, atelectasis, effusion,
            granulomas, scars, streaks; :mod:`MedAIExtension.phantom.lung_findings`); none by default.
    """

    size_ijk: tuple[int, int, int] = (512, 512, 300)
    spacing: tuple[float, float, float] = (0.7, 0.7, 1.25)
    direction_ras: tuple[tuple[float, float, float], ...] = field(default_factory=lambda: _rows(AXIAL))
    center_ras: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seed: int = 0
    nodules: tuple[NoduleSpec, ...] = DEFAULT_NODULES
    noise_hu: float = 20.0
    anatomy: AnatomySpec = field(default_factory=AnatomySpec)
    pose_ras: tuple[tuple[float, float, float, float], ...] | None = None
    noise_seed: int | None = None
    noise_kernel: str | None = None
    slice_thickness_mm: float | None = None
    findings: LungFindingsSpec = field(default_factory=LungFindingsSpec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size_ijk", _size_triple(self.size_ijk))
        if not isinstance(self.findings, LungFindingsSpec):
            raise InputError("findings must be a LungFindingsSpec.")
        spacing = _triple(self.spacing, "spacing")
        if min(spacing) <= 0.0:
            raise InputError(f"spacing must be positive (mm), got {spacing}.")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "direction_ras", _rows(normalized_direction(self.direction_ras)))
        object.__setattr__(self, "center_ras", _triple(self.center_ras, "center_ras"))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}.")
        object.__setattr__(self, "seed", int(self.seed))
        nodules = tuple(self.nodules)
        if not all(isinstance(n, NoduleSpec) for n in nodules):
            raise InputError("nodules must be NoduleSpec objects.")
        if len(nodules) > 255:
            raise InputError(f"At most 255 nodules fit the uint8 nodule-id map, got {len(nodules)}.")
        object.__setattr__(self, "nodules", nodules)
        noise = float(self.noise_hu)
        if not 0.0 <= noise <= 500.0:
            raise InputError(f"noise_hu must be in [0, 500], got {self.noise_hu!r}.")
        object.__setattr__(self, "noise_hu", noise)
        if not isinstance(self.anatomy, AnatomySpec):
            raise InputError("anatomy must be an AnatomySpec.")
        if self.pose_ras is not None:
            object.__setattr__(self, "pose_ras", _rows(rigid_matrix(self.pose_ras, "pose_ras")))
        if self.noise_seed is not None:
            if isinstance(self.noise_seed, bool) or not isinstance(self.noise_seed, int | np.integer):
                raise InputError(f"noise_seed must be a non-negative integer or None, got {self.noise_seed!r}.")
            if self.noise_seed < 0:
                raise InputError(f"noise_seed must be a non-negative integer or None, got {self.noise_seed!r}.")
            object.__setattr__(self, "noise_seed", int(self.noise_seed))
        if self.noise_kernel is not None and self.noise_kernel not in KERNELS:
            raise InputError(f"noise_kernel must be None or one of {sorted(KERNELS)}, got {self.noise_kernel!r}.")
        if self.slice_thickness_mm is not None:
            thickness = float(self.slice_thickness_mm)
            if not 0.0 < thickness <= 20.0:
                raise InputError(f"slice_thickness_mm must be in (0, 20] mm, got {self.slice_thickness_mm!r}.")
            object.__setattr__(self, "slice_thickness_mm", thickness)

    @property
    def pose(self) -> np.ndarray:
        """The patient pose as a 4x4 array (identity when ``pose_ras`` is None)."""
        return np.eye(4) if self.pose_ras is None else np.array(self.pose_ras, dtype=float)

    @property
    def effective_noise_seed(self) -> int:
        """The seed of the image noise: ``noise_seed``, or ``seed`` when that is None."""
        return self.seed if self.noise_seed is None else int(self.noise_seed)

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """The grid's 4x4 IJK-to-RAS affine."""
        return make_affine(self.size_ijk, self.spacing, np.array(self.direction_ras), self.center_ras)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(K, J, I)``."""
        i, j, k = self.size_ijk
        return k, j, i


def rigid_matrix(matrix: Any, what: str = "transform", tolerance: float = 1e-6) -> np.ndarray:
    """Validate a 4x4 rigid transform (rotation + translation, no reflection or scaling) and return it.

    Args:
        matrix: 4x4 numbers (rows); the last row must be ``0 0 0 1``.
        what: the name used in error messages.
        tolerance: how far the 3x3 part may be from a rotation (orthonormal, determinant +1).

    Returns:
        The matrix as a float64 array, its rotation re-orthonormalised.

    Raises:
        InputError: if it is not a finite rigid 4x4 matrix.
    """
    try:
        out = np.array(matrix, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a 4x4 matrix of numbers, got {matrix!r}") from None
    if out.shape != (4, 4) or not np.isfinite(out).all():
        raise InputError(f"{what} must be a finite 4x4 matrix (rows), got shape {out.shape}.")
    if not np.allclose(out[3], (0.0, 0.0, 0.0, 1.0), atol=tolerance):
        raise InputError(f"{what} must have the last row 0 0 0 1 (an affine transform), got {out[3].tolist()}.")
    rotation = out[:3, :3]
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=tolerance) or np.linalg.det(rotation) <= 0.0:
        raise InputError(
            f"{what} must be rigid: its 3x3 part must be a rotation (orthonormal, determinant +1), without "
            "scaling, shear or mirroring."
        )
    u, _, vt = np.linalg.svd(rotation)
    out[:3, :3] = u @ vt
    out[3] = (0.0, 0.0, 0.0, 1.0)
    return out


def _rows(matrix: np.ndarray | Sequence[Sequence[float]]) -> tuple[tuple[float, float, float], ...]:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(matrix, dtype=float))  # type: ignore[misc]
