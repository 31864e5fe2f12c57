"""Fixtures of the MRML bridge tests: a real headless scene (``slicer-core`` wheel) and acquisition geometries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("slicer", reason="the MRML tests need the slicer-core wheel (pip install slicer-core)")

from MedAIExtension.io.geometry import LPS_TO_RAS
from MedAIExtension.io.image import Image
from MedAIExtension.labels import CodedTerm, SegmentLabel
from MedAIExtension.mrml import close_scene, create_scene

#: Array shape (K, J, I): all three different so a swapped axis cannot go unnoticed.
SHAPE = (6, 7, 9)


def _rotation(angles_deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _from_lps(columns: np.ndarray, spacing: tuple[float, float, float], origin_lps: tuple[float, float, float]):
    """IJK-to-RAS affine from LPS direction columns (as in DICOM), spacing and LPS origin."""
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.asarray(columns, dtype=float) @ np.diag(spacing)
    ijk_to_lps[:3, 3] = origin_lps
    return LPS_TO_RAS @ ijk_to_lps


#: IJK-to-RAS affines of the acquisition directions every orientation test must pass.
GEOMETRIES: dict[str, np.ndarray] = {
    # DICOM axial: rows go left, columns go posterior, slices go superior
    "axial": _from_lps(np.eye(3), (0.7, 0.8, 2.5), (-120.0, -95.5, 30.0)),
    # the same with slices stored head to feet
    "reversed-slices": _from_lps(np.diag([1.0, 1.0, -1.0]), (0.7, 0.8, 2.5), (-120.0, -95.5, 330.0)),
    # sagittal: i posterior, j inferior, k left
    "sagittal": _from_lps(np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]]), (1.1, 1.2, 3.0), (-40.0, -100.0, 80.0)),
    # coronal: i left, j inferior, k posterior
    "coronal": _from_lps(np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]]), (0.9, 1.3, 4.0), (-150.0, -20.0, 60.0)),
    # oblique: rotated about all three axes, anisotropic voxels
    "oblique": _from_lps(_rotation((20.0, -35.0, 50.0)), (0.6, 0.9, 1.7), (12.5, -33.3, 7.1)),
}

LABELS = (
    SegmentLabel(1, "Liver", (0.87, 0.51, 0.39), type=CodedTerm("10200004", "SCT", "Liver")),
    SegmentLabel(2, "Spleen", (0.62, 0.27, 0.31), type=CodedTerm("78961009", "SCT", "Spleen")),
    SegmentLabel(
        5,
        "Nodule",
        (1.0, 1.0, 0.0),
        category=CodedTerm("49755003", "SCT", "Morphologically Altered Structure"),
        type=CodedTerm("27925004", "SCT", "Nodule"),
    ),
    SegmentLabel(7, "Empty structure", (0.0, 0.5, 1.0)),
)


@pytest.fixture
def scene() -> Iterator[Any]:
    """A fresh headless MRML scene with the Segmentations logic registered, closed after the test."""
    scene = create_scene()
    yield scene
    close_scene(scene)


@pytest.fixture(params=sorted(GEOMETRIES), ids=sorted(GEOMETRIES))
def geometry(request: pytest.FixtureRequest) -> np.ndarray:
    """Each acquisition geometry in turn."""
    return GEOMETRIES[request.param]


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator."""
    return np.random.default_rng(20240611)


@pytest.fixture
def labels() -> tuple[SegmentLabel, ...]:
    """Labels 1, 2, 5 (present in :func:`labelmap`) and 7 (never present)."""
    return LABELS


@pytest.fixture
def ct(rng: np.random.Generator, geometry: np.ndarray) -> Image:
    """A random int16 "CT" on each geometry."""
    return Image(array=rng.integers(-1024, 3000, size=SHAPE, dtype=np.int16), ijk_to_ras=geometry, modality="CT")


@pytest.fixture
def labelmap(rng: np.random.Generator, ct: Image) -> Image:
    """A random label map of values 0, 1, 2, 5 (7 never occurs) on the grid of :func:`ct`."""
    array = rng.choice(np.array([0, 1, 2, 5], dtype=np.uint8), size=SHAPE, p=[0.55, 0.2, 0.15, 0.1])
    array[0, 0, 0] = 5  # the first voxel: an off-by-one in origin or axis order moves it
    array[-1, 0, 0] = 2
    return ct.with_array(array)
