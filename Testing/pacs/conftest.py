"""Fixtures of the PACS tests: real Orthanc servers (with and without authentication) and small CT series."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from MedAIExtension.io.dicom_series import write_dicom_series
from MedAIExtension.io.geometry import LPS_TO_RAS
from MedAIExtension.io.image import Image
from Testing.pacs.orthanc_server import OrthancServer, orthanc_missing_reason

#: The basic-auth user of the ``orthanc_auth`` server.
AUTH_USER = "medai"
AUTH_PASSWORD = "secret-pw"

SHAPE_KJI = (24, 64, 64)


@dataclass(frozen=True)
class PhantomSeries:
    """A small synthetic series written with :func:`write_dicom_series`."""

    folder: Path
    files: tuple[Path, ...]
    voxels: np.ndarray
    patient_id: str
    modality: str
    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]


def write_phantom_series(
    folder: Path,
    *,
    patient_id: str = "MEDAI-PACS-1",
    modality: str = "CT",
    seed: int = 0,
    study_uid: str | None = None,
    series_number: int = 1,
) -> PhantomSeries:
    """Write a 64x64x24 series of random int16 voxels (every slice differs) and describe it."""
    import pydicom

    voxels = np.random.default_rng(seed).integers(-1000, 1000, SHAPE_KJI).astype(np.int16)
    affine = LPS_TO_RAS @ np.diag([0.7, 0.7, 2.5, 1.0])
    files = write_dicom_series(
        Image(voxels, affine, modality=modality),
        folder,
        patient_id=patient_id,
        patient_name=f"Pacs^{patient_id}",
        study_uid=study_uid,
        series_description=f"MedAI PACS test {modality} {seed}",
        series_number=series_number,
        uid_seed=f"medai-pacs-test-{folder.name}-{seed}",
    )
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    sops = tuple(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)
    return PhantomSeries(
        folder=folder,
        files=tuple(files),
        voxels=voxels,
        patient_id=patient_id,
        modality=modality,
        study_uid=str(first.StudyInstanceUID),
        series_uid=str(first.SeriesInstanceUID),
        sop_uids=sops,
    )


@pytest.fixture(scope="session")
def series_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., PhantomSeries]:
    """Write (once per name) a phantom series: ``series_factory(name, patient_id=…, modality=…, seed=…)``."""
    cache: dict[str, PhantomSeries] = {}

    def make(name: str, **kwargs: object) -> PhantomSeries:
        if name not in cache:
            cache[name] = write_phantom_series(tmp_path_factory.mktemp(f"series-{name}"), **kwargs)  # type: ignore[arg-type]
        return cache[name]

    return make


@pytest.fixture(scope="session")
def phantom_series(series_factory: Callable[..., PhantomSeries]) -> PhantomSeries:
    """A 64x64x24 CT series of patient ``MEDAI-PACS-1``."""
    return series_factory("phantom", patient_id="MEDAI-PACS-1", modality="CT", seed=1)


def _server(folder: Path, **kwargs: object) -> Iterator[OrthancServer]:
    reason = orthanc_missing_reason()
    if reason:
        pytest.skip(reason)
    server = OrthancServer(folder, **kwargs)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    """A fresh Orthanc (no authentication, StableAge 1 s) stopped at the end of the test."""
    yield from _server(tmp_path / "orthanc", stable_age=1)


@pytest.fixture()
def orthanc_auth(tmp_path: Path) -> Iterator[OrthancServer]:
    """A fresh Orthanc that requires basic auth as ``medai`` / ``secret-pw``."""
    yield from _server(tmp_path / "orthanc-auth", stable_age=1, users={AUTH_USER: AUTH_PASSWORD})


@pytest.fixture(scope="module")
def shared_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """One Orthanc for all tests of a module (each test uses its own studies and starts its gateway at the current
    end of the change feed: :func:`Testing.pacs.gateway_helpers.start_at_feed_end`)."""
    yield from _server(tmp_path_factory.mktemp("orthanc-shared"), stable_age=1)
