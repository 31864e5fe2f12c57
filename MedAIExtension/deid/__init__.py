"""De-identification of DICOM studies and their derived objects (PS3.15 Basic Application Level Confidentiality
Profile): the profile table, the keyed UID map and pseudonyms, and the ``medai deidentify`` command.

pydicom, dicom-anonymizer and highdicom are imported lazily inside the functions that need them.
"""

from __future__ import annotations

from MedAIExtension.deid.deidentify import (
    DeidOptions,
    DeidReport,
    burned_in_reason,
    deidentify_dataset,
    deidentify_files,
    pixel_data_problem,
)
from MedAIExtension.deid.uids import KEY_ENV_VAR, is_standard_uid, load_key, pseudonym, remap_uid

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
