"""Typed errors of MedAIExtension.

Every error carries a message that names the problem *and* the fix. The CLI prints ``str(error)``
(no traceback unless ``--debug``); the Slicer modules show it in a message box.
"""

from __future__ import annotations

__all__ = [
    "CancelledError",
    "CatalogError",
    "ChecksumError",
    "GeometryError",
    "InputError",
    "MedAIError",
    "ModelError",
    "OutputError",
]


class MedAIError(Exception):
    """Base class of all errors raised on purpose by MedAIExtension."""

    #: Process exit status used by the CLI and the worker for this kind of error.
    exit_code: int = 2


class InputError(MedAIError):
    """The input data (files, folders, volumes) cannot be used as given."""


class GeometryError(InputError):
    """The input image geometry is inconsistent (missing slices, uneven spacing, mixed orientation)."""


class ModelError(MedAIError):
    """A model cannot be found, loaded or run."""


class CatalogError(ModelError):
    """The model catalogue or a model description is invalid."""


class ChecksumError(ModelError):
    """A model file's sha256 differs from the catalogue."""


class OutputError(MedAIError):
    """Results cannot be written where the user asked."""


class CancelledError(MedAIError):
    """The user cancelled the running job."""

    exit_code = 130
