"""Fixtures of the input corpus: one small phantom study and its reference segmentation, shared by all cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from Testing.corpus.builders import PHANTOM_SEED, PHANTOM_SIZE_IJK, PHANTOM_SPACING, label_volume, run_segment


@pytest.fixture(scope="session")
def corpus_phantom(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The corpus phantom (96×96×40 voxels at 2.5 mm): ``ct`` DICOM folder, ``nifti``, ``labels``…"""
    from MedAIExtension.phantom.study import write_phantom_study

    return write_phantom_study(
        tmp_path_factory.mktemp("corpus-phantom"), size_ijk=PHANTOM_SIZE_IJK, spacing=PHANTOM_SPACING, seed=PHANTOM_SEED
    )


@pytest.fixture(scope="session")
def corpus_reference(
    corpus_phantom: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Labels (and grid) of the uncompressed phantom series, segmented once for every case to compare with."""
    out = tmp_path_factory.mktemp("corpus-reference") / "out"
    run = run_segment(corpus_phantom["ct"], out)
    assert run.code == 0, run.text
    labels = label_volume(out / "segmentation.nii.gz")
    assert np.count_nonzero(labels[0] == 1) > 10_000, "the reference run found no lung: the corpus would prove nothing"
    return labels
