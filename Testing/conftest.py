"""Shared fixtures: small phantom studies written once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, share the CPUs between the workers: each worker's inference (and the ``medai`` commands it
    starts, which inherit the environment) uses its share of the threads instead of every CPU, so two workers do
    not oversubscribe the machine. A value set by the caller is kept."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if workers.isdigit() and int(workers) > 1:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        share = str(max(1, cpus // int(workers)))
        os.environ.setdefault("MEDAI_NUM_THREADS", share)
        os.environ.setdefault("OMP_NUM_THREADS", share)


@pytest.fixture(scope="session")
def phantom_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small phantom chest CT study on disk (DICOM series, NIfTI, truth labels, truth JSON)."""
    from MedAIExtension.phantom.study import write_phantom_study

    return write_phantom_study(
        tmp_path_factory.mktemp("phantom"), size_ijk=(160, 160, 96), spacing=(2.2, 2.2, 3.2), seed=5
    )
