"""``keep_freed_memory``: job processes reuse freed memory instead of faulting it in again (checked in children,
so the test process itself is left as it is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = """
import json, resource, sys
import numpy as np
from MedAIExtension.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):  # the first round warms up: its block is freed
    block = np.empty(50_000_000, dtype=np.float32)  # 200 MB, well above glibc's default mmap threshold
    before = faults()
    block.fill(1.0)
    touched = faults() - before
    del block
print(json.dumps({"applied": applied, "faults": touched}))
"""


def _run(mode: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is a Linux matter")
def test_freed_memory_is_reused_without_new_page_faults() -> None:
    default = _run("default")
    kept = _run("keep")
    assert kept["applied"] is True
    # 200 MB is ~50,000 pages of 4 KiB (or ~100 huge pages): the default process faults them in again,
    # the tuned one refills memory it already has
    assert kept["faults"] < 0.1 * default["faults"], (default, kept)


def test_it_can_be_switched_off() -> None:
    assert _run("keep", MEDAI_KEEP_FREED_MEMORY="0")["applied"] is False


_CLI_SCRIPT = """
import sys
import MedAIExtension.allocator as allocator
calls = []
allocator.keep_freed_memory = lambda: calls.append(1) or True
from MedAIExtension.cli import main
sys.argv = ["medai", *sys.argv[1:]]
code = main()
print("applied" if calls else "not applied", code)
"""


@pytest.mark.parametrize(
    ("argv", "applied"),
    [
        (["models", "--json"], False),
        (["segment", "--input", "/nonexistent", "--model", "x", "--output", "{tmp}/out"], True),
    ],
    ids=["models", "segment"],
)
def test_the_medai_program_keeps_freed_memory_for_jobs_only(argv: list[str], applied: bool, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CLI_SCRIPT, *(arg.format(tmp=tmp_path) for arg in argv)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.stdout.strip().splitlines()[-1].startswith("applied" if applied else "not applied"), out
