"""`make demo` installs everything the demo imports: a runtime package installed only by `make test` once broke
the README's first command on a fresh clone (No module named 'slicer')."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower())
    return names


@pytest.fixture(scope="module")
def demo_install_commands() -> str:
    """The commands `make demo` runs to install (dry run, as on a fresh clone)."""
    done = subprocess.run(["make", "-n", "-B", "demo"], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout


def test_make_demo_installs_the_runtime_and_headless_requirements(demo_install_commands: str) -> None:
    installed_files = set(re.findall(r"-r (\S+)", demo_install_commands))
    assert {"Resources/requirements.txt", "Resources/requirements-headless.txt"} <= installed_files
    assert "requirements-dev.txt" not in demo_install_commands  # the demo must not depend on test tools


def test_modules_the_demo_imports_come_from_the_demo_install() -> None:
    runtime = _requirement_names(ROOT / "Resources" / "requirements.txt")
    headless = _requirement_names(ROOT / "Resources" / "requirements-headless.txt")
    dev = _requirement_names(ROOT / "Resources" / "requirements-dev.txt")
    assert "slicer-core" in headless and "slicer-core" not in dev  # .seg.nrrd is written through real MRML
    assert "python-gdcm" in runtime  # JPEG lossless / JPEG-LS / JPEG 2000 input is decoded at run time
    assert not (headless & runtime), "a headless-only package must not be installed into Slicer"


def test_ci_runs_make_demo_alone_before_make_test() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip() for line in script.splitlines() if line.strip().startswith("make ")]
    assert commands == ["make demo", "make test"]
