"""Writing a phantom study to disk: the CT as a DICOM series and NIfTI, the ground-truth masks and a truth JSON."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from MedAIExtension.atomic import ensure_writable_directory
from MedAIExtension.io.dicom_series import write_dicom_series
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.phantom.chest import generate_chest_phantom
from MedAIExtension.phantom.spec import PhantomSpec, _size_triple, _triple

__all__ = ["write_phantom_study"]


def write_phantom_study(
    output_dir: str | os.PathLike[str],
    size_ijk: Sequence[int] = (256, 256, 160),
    spacing: Sequence[float] = (1.4, 1.4, 2.0),
    seed: int = 0,
    spec: PhantomSpec | None = None,
    study_date: dt.date | None = None,
    patient_id: str = "MEDAI-PHANTOM",
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Path]:
    """Generate a phantom and write it into ``output_dir``.

    Layout: ``ct/`` (DICOM CT series), ``ct.nii.gz``, ``labels.nii.gz`` (0 background, 1 lung, 2 nodule),
    ``nodules.nii.gz`` (one id per nodule), ``truth.json``. Everything is staged and moved into place at the end.
    ``progress`` (optional ``callback(fraction, message)``) follows the rendering, as in ``generate_chest_phantom``.

    Returns:
        ``{"ct": folder, "nifti": ..., "labels": ..., "nodules": ..., "truth": ...}``.
    """
    spec = spec or PhantomSpec(size_ijk=_size_triple(size_ijk), spacing=_triple(spacing, "spacing"), seed=seed)
    phantom = generate_chest_phantom(spec, progress)
    out = ensure_writable_directory(output_dir)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".medai-staging-"))
    names = {
        "ct": "ct",
        "nifti": "ct.nii.gz",
        "labels": "labels.nii.gz",
        "nodules": "nodules.nii.gz",
        "truth": "truth.json",
    }
    try:
        write_dicom_series(
            phantom.ct,
            staging / names["ct"],
            uid_seed=f"medai-phantom-{patient_id}-{spec.seed}-{study_date}",
            study_date=study_date,
            patient_id=patient_id,
        )
        write_volume_file(phantom.ct, staging / names["nifti"])
        write_volume_file(phantom.labels, staging / names["labels"])
        write_volume_file(phantom.nodule_ids, staging / names["nodules"])
        (staging / names["truth"]).write_text(phantom.truth_json(), encoding="utf-8")
        result = {}
        for key, name in names.items():
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(staging / name, target)
            result[key] = target
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)
