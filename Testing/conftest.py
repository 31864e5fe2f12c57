"""Shared fixtures: small phantom studies written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def phantom_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small phantom chest CT study on disk (DICOM series, NIfTI, truth labels, truth JSON)."""
    from MedAIExtension.phantom.study import write_phantom_study

    return write_phantom_study(
        tmp_path_factory.mktemp("phantom"), size_ijk=(160, 160, 96), spacing=(2.2, 2.2, 3.2), seed=5
    )
