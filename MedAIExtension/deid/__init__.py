"""De-identification of DICOM studies and their derived objects (PS3.15 Basic Application Level Confidentiality
Profile): the profile table, the keyed UID map and pseudonyms, and the ``medai deidentify`` command.

The names below are loaded on first use (:mod:`MedAIExtension.lazy_exports`), so ``medai --help`` loads none of
the de-identification code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from MedAIExtension.lazy_exports import lazy_exports

if TYPE_CHECKING:  # the same names as _EXPORTS, for type checkers and readers
    from MedAIExtension.deid.deidentify import (
        DeidOptions,
        DeidReport,
        burned_in_reason,
        deidentify_dataset,
        deidentify_files,
        pixel_data_problem,
    )
    from MedAIExtension.deid.uids import (
        KEY_ENV_VAR,
        is_standard_uid,
        load_key,
        pseudonym,
        remap_uid,
    )

#: Exported name -> the module of this package that defines it.
_EXPORTS = {
    "DeidOptions": "deidentify",
    "DeidReport": "deidentify",
    "burned_in_reason": "deidentify",
    "deidentify_dataset": "deidentify",
    "deidentify_files": "deidentify",
    "pixel_data_problem": "deidentify",
    "KEY_ENV_VAR": "uids",
    "is_standard_uid": "uids",
    "load_key": "uids",
    "pseudonym": "uids",
    "remap_uid": "uids",
}

__all__ = [
    "KEY_ENV_VAR",
    "DeidOptions",
    "DeidReport",
    "burned_in_reason",
    "deidentify_dataset",
    "deidentify_files",
    "is_standard_uid",
    "load_key",
    "pixel_data_problem",
    "pseudonym",
    "remap_uid",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
