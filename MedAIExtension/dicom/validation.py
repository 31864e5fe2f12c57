"""Conformance checks of written DICOM objects with dicom3tools' ``dciodvfy``."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from MedAIExtension.dicom.tools import find_tool
from MedAIExtension.errors import InputError

__all__ = ["DciodvfyReport", "run_dciodvfy", "validate_with_dciodvfy"]

_INSTALL_HINT = "Install dicom3tools (Debian/Ubuntu: apt-get install dicom3tools), which provides dciodvfy."


@dataclass(frozen=True)
class DciodvfyReport:
    """What dciodvfy said about one file.

    Attributes:
        iod: the information object dciodvfy recognised (first output line, e.g. ``"Segmentation"``).
        errors: the ``Error - ...`` lines (standard violations).
        warnings: the ``Warning - ...`` lines (advice, e.g. attributes a DICOMDIR would need).
        output: dciodvfy's complete output.
    """

    iod: str
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    output: str

    @property
    def ok(self) -> bool:
        """Whether dciodvfy reported no error."""
        return not self.errors


def run_dciodvfy(path: str | os.PathLike[str]) -> DciodvfyReport:
    """Run ``dciodvfy`` on one DICOM file and sort its messages into errors and warnings.

    Args:
        path: the DICOM file to check.

    Raises:
        MissingToolError: dciodvfy is not installed.
        InputError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is not a file; give the DICOM file to validate.")
    tool = find_tool("dciodvfy", _INSTALL_HINT)
    result = subprocess.run([str(tool), str(path)], capture_output=True, text=True, errors="replace", check=False)
    output = (result.stdout + result.stderr).strip()
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = tuple(line for line in lines if line.startswith("Error"))
    warnings = tuple(line for line in lines if line.startswith("Warning"))
    iod = next((line for line in lines if not line.startswith(("Error", "Warning"))), "")
    return DciodvfyReport(iod=iod, errors=errors, warnings=warnings, output=output)


def validate_with_dciodvfy(path: str | os.PathLike[str]) -> list[str]:
    """The error lines dciodvfy reports for a DICOM file (empty when it conforms).

    Warnings are left out; :func:`run_dciodvfy` returns them too.

    Args:
        path: the DICOM file to check.

    Raises:
        MissingToolError: dciodvfy is not installed (the message says how to install it).
        InputError: the file does not exist.
    """
    return list(run_dciodvfy(path).errors)
