"""Locating the external DICOM tools used to check our objects: dicom3tools' dciodvfy and dcmqi's converters."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from MedAIExtension.errors import MedAIError

__all__ = ["MissingToolError", "find_dcmqi_tool", "find_tool"]


class MissingToolError(MedAIError):
    """An external command-line tool needed for this step is not installed."""


def find_tool(name: str, install_hint: str) -> Path:
    """Find the executable ``name`` on PATH or beside this Python interpreter (a virtualenv's ``bin``).

    Args:
        name: executable name, e.g. ``"dciodvfy"``.
        install_hint: how to install it, quoted in the error message.

    Raises:
        MissingToolError: the tool is not installed.
    """
    for candidate in (shutil.which(name), Path(sys.executable).parent / name):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise MissingToolError(f"The command-line tool {name!r} was not found. {install_hint}")


def find_dcmqi_tool(name: str = "segimage2itkimage") -> Path:
    """Find a dcmqi converter (PATH, this Python's ``bin`` folder, or the ``dcmqi`` package's ``bin`` folder).

    Raises:
        MissingToolError: dcmqi is not installed.
    """
    hint = f"Install dcmqi (pip install dcmqi) or put its {name} on PATH."
    try:
        return find_tool(name, hint)
    except MissingToolError:
        try:
            import dcmqi
        except ImportError:
            raise MissingToolError(f"dcmqi's {name} was not found. {hint}") from None
        candidate = Path(dcmqi.__file__).parent / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
        raise MissingToolError(f"dcmqi's {name} was not found. {hint}") from None
