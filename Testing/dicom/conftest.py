"""Fixtures of the DICOM conformance tests: a SEG written from a CT series in every acquisition direction."""

from __future__ import annotations

from pathlib import Path

import pytest
from dicom_test_data import GEOMETRIES, LABELS, SegCase, make_labelmap, make_source

from MedAIExtension.io.image import Image


@pytest.fixture(scope="session", params=sorted(GEOMETRIES))
def seg_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SegCase:
    """A source series in one geometry, a label map on it and the SEG written from them."""
    from MedAIExtension.dicom import write_dicom_seg

    name = request.param
    folder = tmp_path_factory.mktemp(f"seg-{name}")
    source = make_source(folder / "source", GEOMETRIES[name])
    labelmap = make_labelmap(source)
    seg_path = write_dicom_seg(
        labelmap,
        source,
        LABELS,
        folder / "seg.dcm",
        algorithm_name="MedAI-TestNet",
        algorithm_version="1.2.3",
    )
    return SegCase(name, source, labelmap, seg_path, folder)


@pytest.fixture()
def axial_source(tmp_path: Path) -> Image:
    """A fresh axial source series in a test's own folder."""
    return make_source(tmp_path / "source", GEOMETRIES["axial_ascending"])
