"""The one image type of MedAIExtension: a voxel array plus its IJK-to-RAS affine and metadata."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.errors import GeometryError, InputError
from MedAIExtension.io.geometry import LPS_TO_RAS, affine_from_parts, affine_parts

__all__ = ["Image"]

_ORTHOGONALITY_TOLERANCE = 1e-3


@dataclass(frozen=True, eq=False)
class Image:
    """A 3D scalar image.

    Attributes:
        array: voxels indexed ``[k, j, i]`` (slice, row, column).
        ijk_to_ras: 4x4 affine mapping ``(i, j, k, 1)`` to RAS millimetres.
        modality: DICOM modality when known (``"CT"``, ``"MR"``), else ``""``.
        source_files: for images read from DICOM, the file of each slice ``k`` (``source_files[k]``).
        metadata: free-form extra facts (patient, study, series UIDs, description).
        source_frames: for images read from one multi-frame (enhanced) DICOM object, the 1-based frame number in
            ``source_files[k]`` of each slice ``k`` (``source_files`` then repeats the one file); empty otherwise.

    The constructor validates shape, affine and voxel values so an ``Image`` is never half-valid.
    """

    array: np.ndarray
    ijk_to_ras: np.ndarray
    modality: str = ""
    source_files: tuple[Path, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    source_frames: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise InputError(
                f"Expected a 3D volume but got an array of shape {array.shape}. "
                "MedAI segments 3D CT/MR volumes; load a whole series, not a single 2D image."
            )
        if min(array.shape) < 2:
            raise InputError(
                f"The volume has shape {array.shape} (k, j, i): a single slice is a 2D image. "
                "Load the whole 3D series (all slices) instead."
            )
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise InputError(f"Voxel type {array.dtype} is not numeric; convert the image to a scalar type.")
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise InputError(
                f"The volume contains {bad} NaN or infinite voxel(s). Fix or mask them "
                "(e.g. replace with the background value) before running a model."
            )
        affine = np.asarray(self.ijk_to_ras, dtype=float)
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise GeometryError("The image affine must be a finite 4x4 matrix; the file's geometry is broken.")
        if np.any(np.linalg.norm(affine[:3, :3], axis=0) <= 0):
            raise GeometryError("The image has a zero voxel spacing; fix the spacing in the file header.")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "ijk_to_ras", affine)
        object.__setattr__(self, "source_files", tuple(Path(p) for p in self.source_files))
        self._check_source_frames(array.shape[0])

    def _check_source_frames(self, slices: int) -> None:
        """Validate ``source_frames``: empty, or one positive frame number per slice of a file per slice."""
        frames = tuple(self.source_frames)
        if frames and (len(frames) != slices or len(self.source_files) != slices):
            raise InputError(
                f"The image has {slices} slices but {len(frames)} source frame number(s) for "
                f"{len(self.source_files)} source file(s); give one frame number per slice (or none)."
            )
        if any(isinstance(f, bool) or not isinstance(f, (int, np.integer)) or int(f) < 1 for f in frames):
            raise InputError("Source frame numbers are 1-based whole numbers (DICOM frame numbers start at 1).")
        if len(set(frames)) != len(frames):
            raise InputError("Each slice must come from its own source frame; the frame numbers repeat.")
        object.__setattr__(self, "source_frames", tuple(int(f) for f in frames))

    # ---- geometry -------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(K, J, I)``."""
        k, j, i = self.array.shape  # 3D: checked on construction
        return int(k), int(j), int(i)

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Number of voxels along i, j, k (ITK/Slicer order)."""
        k, j, i = self.shape
        return i, j, k

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 affine mapping ``(i, j, k, 1)`` to LPS millimetres (DICOM/ITK)."""
        return LPS_TO_RAS @ self.ijk_to_ras

    @property
    def spacing(self) -> np.ndarray:
        """Voxel spacing along i, j, k in millimetres."""
        return affine_parts(self.ijk_to_ras)[1]

    @property
    def origin_ras(self) -> np.ndarray:
        """RAS position of voxel (0, 0, 0)."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def direction_ras(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS directions of i, j, k."""
        return affine_parts(self.ijk_to_ras)[2]

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³."""
        return float(abs(np.linalg.det(self.ijk_to_ras[:3, :3])))

    def is_orthogonal(self) -> bool:
        """Whether the voxel axes are mutually perpendicular (no shear, e.g. from gantry tilt)."""
        d = self.direction_ras
        return bool(np.allclose(d.T @ d, np.eye(3), atol=_ORTHOGONALITY_TOLERANCE))

    def same_grid(self, other: Image, atol: float = 1e-4) -> bool:
        """Whether ``other`` has the same shape and affine (voxel-for-voxel comparable)."""
        return self.shape == other.shape and bool(np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=atol))

    def with_array(self, array: np.ndarray, **changes: Any) -> Image:
        """A new image on the same grid with other voxels (e.g. a label map); keeps metadata.

        Changing ``source_files`` without giving ``source_frames`` drops the frame numbers (they belong to the
        old files).
        """
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from the image grid {self.array.shape}")
        if "source_files" in changes and "source_frames" not in changes:
            changes["source_frames"] = ()
        return replace(self, array=array, **changes)

    # ---- SimpleITK ------------------------------------------------------------------------------------------
    def to_sitk(self) -> Any:
        """Convert to a ``SimpleITK.Image`` (LPS geometry). Requires orthogonal axes."""
        import SimpleITK as sitk

        if not self.is_orthogonal():
            raise GeometryError(
                "The image axes are not perpendicular (sheared, e.g. gantry tilt). "
                "Resample the series to a regular grid before using it."
            )
        origin, spacing, direction = affine_parts(self.ijk_to_lps)
        array = self.array.astype(np.uint8) if self.array.dtype == bool else self.array
        sitk_image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        sitk_image.SetOrigin(tuple(float(v) for v in origin))
        sitk_image.SetSpacing(tuple(float(v) for v in spacing))
        sitk_image.SetDirection(tuple(float(v) for v in direction.flatten()))
        return sitk_image

    @classmethod
    def from_sitk(cls, sitk_image: Any, **kwargs: Any) -> Image:
        """Build an image from a 3D ``SimpleITK.Image`` (LPS geometry)."""
        import SimpleITK as sitk

        if sitk_image.GetDimension() != 3:
            raise InputError(
                f"Expected a 3D volume but the file holds a {sitk_image.GetDimension()}D image. "
                "Load a 3D CT/MR volume (a whole series)."
            )
        if sitk_image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError("The image has several components per voxel (RGB or vector); use a scalar volume.")
        direction = np.array(sitk_image.GetDirection(), dtype=float).reshape(3, 3)
        lps = affine_from_parts(np.array(sitk_image.GetOrigin()), np.array(sitk_image.GetSpacing()), direction)
        return cls(array=sitk.GetArrayFromImage(sitk_image), ijk_to_ras=LPS_TO_RAS @ lps, **kwargs)
