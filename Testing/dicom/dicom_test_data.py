"""Test data of the DICOM conformance tests: small CT series in every acquisition direction and label maps.

A module with a unique name (not ``conftest``), so test files can import it beside other suites' conftests.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from MedAIExtension.io.dicom_series import read_dicom_series, write_dicom_series
from MedAIExtension.io.geometry import LPS_TO_RAS, affine_from_parts
from MedAIExtension.io.image import Image
from MedAIExtension.labels import CodedTerm, SegmentLabel

SHAPE_KJI = (20, 48, 64)
SPACING_IJK = (0.8, 0.7, 2.5)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    ax, ay, az = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


#: LPS direction matrices (columns: unit vectors of i, j, k) written with write_dicom_series.
GEOMETRIES: dict[str, np.ndarray] = {
    # Standard axial: rows run to the patient's left, columns posterior, k towards the head.
    "axial_ascending": np.eye(3),
    # Axial with k pointing inferior (image flipped top-bottom, so row x column points to the feet).
    "axial_descending": np.array([[1, 0, 0], [0, -1, 0], [0, 0, -1]], dtype=float).T,
    # Left-handed stack: files are written head to feet, read back feet to head (file order != k order).
    "axial_reversed_files": np.array([[1, 0, 0], [0, 1, 0], [0, 0, -1]], dtype=float).T,
    "sagittal": np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]], dtype=float).T,
    "coronal": np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float).T,
    "oblique": _rotation(20.0, -35.0, 50.0),
}

LABELS: tuple[SegmentLabel, ...] = (
    SegmentLabel(1, "Lung", (0.5, 0.7, 0.9), type=CodedTerm("39607008", "SCT", "Lung")),
    SegmentLabel(2, "Airway", (0.9, 0.9, 0.9), type=CodedTerm("89187006", "SCT", "Airway structure")),
    SegmentLabel(
        3,
        "Nodule",
        (1.0, 0.8, 0.0),
        category=CodedTerm("49755003", "SCT", "Morphologically Altered Structure"),
        type=CodedTerm("27925004", "SCT", "Nodule"),
    ),
)
#: The values drawn by make_labelmap (label 2 is in the catalogue but absent from the map).
DRAWN_VALUES = (1, 3)


def make_labelmap(source: Image) -> Image:
    """Two labels at known, asymmetric voxel positions (a flip or shift of any axis changes the map)."""
    k_size, j_size, i_size = source.shape
    labels = np.zeros(source.shape, dtype=np.uint8)
    labels[2:7, 5:15, 8:20] = 1  # a box near the first slices
    labels[0, 0, 0] = 1  # the first voxel
    kk, jj, ii = np.ogrid[:k_size, :j_size, :i_size]
    labels[((kk - 14) / 3.0) ** 2 + ((jj - 32) / 6.0) ** 2 + ((ii - 45) / 7.0) ** 2 <= 1.0] = 3
    labels[k_size - 1, j_size - 1, i_size - 2] = 3  # near the last voxel
    return source.with_array(labels, source_files=(), modality="")


@dataclass(frozen=True)
class SegCase:
    """One written SEG and what it was made from."""

    name: str
    source: Image
    labelmap: Image
    seg_path: Path
    folder: Path


def make_source(folder: Path, direction_lps: np.ndarray, seed: int = 0) -> Image:
    """Write a 64x48x20 int16 CT series with ``direction_lps`` and read it back (the way users load it)."""
    lps = affine_from_parts(np.array([-25.0, 40.0, -110.0]), np.array(SPACING_IJK), direction_lps)
    voxels = np.random.default_rng(seed).integers(-1000, 400, SHAPE_KJI).astype(np.int16)
    write_dicom_series(Image(voxels, LPS_TO_RAS @ lps, modality="CT"), folder, uid_seed=f"medai-test-{folder.name}")
    return read_dicom_series(folder)


def dcmqi_missing_reason() -> str | None:
    """Why the dcmqi tests cannot run, or ``None`` when segimage2itkimage is installed."""
    from MedAIExtension.dicom import MissingToolError, find_dcmqi_tool

    try:
        find_dcmqi_tool("segimage2itkimage")
    except MissingToolError as exc:
        return str(exc)
    return None


def dciodvfy_missing_reason() -> str | None:
    """Why the dciodvfy tests cannot run, or ``None`` when it is installed."""
    if shutil.which("dciodvfy") is None:
        return "dciodvfy (Debian package dicom3tools) is not installed"
    return None
