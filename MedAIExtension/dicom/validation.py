"""Conformance checks of written DICOM objects: dicom3tools' ``dciodvfy`` and dcmtk's SR parser ``dsr2xml``."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from MedAIExtension.dicom.tools import find_tool
from MedAIExtension.errors import InputError

__all__ = ["DciodvfyReport", "Dsr2xmlReport", "run_dciodvfy", "run_dsr2xml", "validate_with_dciodvfy"]

_INSTALL_HINT = "Install dicom3tools (Debian/Ubuntu: apt-get install dicom3tools), which provides dciodvfy."
_DCMTK_HINT = "Install dcmtk (Debian/Ubuntu: apt-get install dcmtk), which provides dsr2xml."


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


@dataclass(frozen=True)
class Dsr2xmlReport:
    """What dcmtk's ``dsr2xml`` made of one Structured Report.

    Attributes:
        returncode: the exit status (0 when the SR was parsed and converted).
        xml: the XML document written to standard output.
        errors: the ``E: ...`` lines (content the parser rejected).
        warnings: the ``W: ...`` lines.
    """

    returncode: int
    xml: str
    errors: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether dsr2xml converted the SR without an error."""
        return self.returncode == 0 and not self.errors and bool(self.xml.strip())


def run_dsr2xml(path: str | os.PathLike[str]) -> Dsr2xmlReport:
    """Parse a DICOM Structured Report with dcmtk's ``dsr2xml`` (strict: content item errors abort).

    Args:
        path: the SR file.

    Raises:
        MissingToolError: dsr2xml is not installed.
        InputError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is not a file; give the DICOM SR file to parse.")
    tool = find_tool("dsr2xml", _DCMTK_HINT)
    result = subprocess.run([str(tool), str(path)], capture_output=True, text=True, errors="replace", check=False)
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return Dsr2xmlReport(
        returncode=result.returncode,
        xml=result.stdout,
        errors=tuple(line for line in lines if line.startswith(("E:", "F:"))),
        warnings=tuple(line for line in lines if line.startswith("W:")),
    )
