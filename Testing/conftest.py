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


#: The slowest test files and folders (a minute or more each on 2 cores), handed out first: pytest-xdist gives
#: whole files to the workers in collection order, so starting with the longest lets the workers end together.
_LONGEST_FIRST = (
    "Testing/integration/test_no_change_pairs_v2.py",
    "Testing/integration/test_model_quality.py",
    "Testing/integration/test_batch_ray.py",
    "Testing/integration/test_model_quality_v2.py",
    "Testing/integration/test_batch_known_differences.py",
    "Testing/integration/test_cli_track.py",
    "Testing/integration/test_training_script.py",
    "Testing/pacs/test_gateway_fault_injection.py",
    "Testing/browser/",
    "Testing/pacs/",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the longest files first (a stable sort: the order within and between the others is kept)."""

    def rank(item: pytest.Item) -> int:
        return next(
            (i for i, prefix in enumerate(_LONGEST_FIRST) if item.nodeid.startswith(prefix)), len(_LONGEST_FIRST)
        )

    items.sort(key=rank)


@pytest.fixture(scope="session")
def phantom_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small phantom chest CT study on disk (DICOM series, NIfTI, truth labels, truth JSON)."""
    from MedAIExtension.phantom.study import write_phantom_study

    return write_phantom_study(
        tmp_path_factory.mktemp("phantom"), size_ijk=(160, 160, 96), spacing=(2.2, 2.2, 3.2), seed=5
    )
