"""Writing a segmentation result: .seg.nrrd (via real MRML), NIfTI label map, DICOM SEG, summary JSON.

All files are first written into a hidden staging folder inside the output folder and moved into place only
when every requested format succeeded (:func:`~MedAIExtension.atomic.staged_output`), so an error, a cancel or
an interrupt leaves no partial output.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from MedAIExtension.atomic import staged_output
from MedAIExtension.dicom import write_dicom_seg
from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.labels import SegmentLabel, label_statistics
from MedAIExtension.mrml import close_scene, create_scene, labelmap_to_segmentation_node, write_seg_nrrd
from MedAIExtension.progress import Progress

__all__ = ["OUTPUT_FORMATS", "parse_formats", "write_outputs"]

#: Output formats ``medai segment --format`` accepts.
OUTPUT_FORMATS: tuple[str, ...] = ("seg.nrrd", "nii.gz", "dicom-seg")


def parse_formats(formats: str | Iterable[str]) -> list[str]:
    """Parse ``"seg.nrrd,nii.gz"`` (or a list) into validated format names."""
    items = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    unknown = [f for f in items if f not in OUTPUT_FORMATS]
    if unknown or not items:
        raise InputError(
            f"Unknown output format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(OUTPUT_FORMATS)}."
        )
    return list(dict.fromkeys(items))


def _write_seg_nrrd(labelmap: Image, labels: Sequence[SegmentLabel], path: Path, name: str) -> None:
    scene = create_scene()
    try:
        write_seg_nrrd(labelmap_to_segmentation_node(scene, labelmap, labels, name), path)
    finally:
        close_scene(scene)  # the registered logics hold the scene; detach them so it is freed


def write_outputs(
    labelmap: Image,
    labels: Sequence[SegmentLabel],
    output_dir: str | os.PathLike[str],
    formats: str | Iterable[str] = OUTPUT_FORMATS,
    *,
    source: Image | None = None,
    stem: str = "segmentation",
    algorithm_name: str = "MedAI",
    algorithm_version: str = "0",
    extra_summary: dict[str, object] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Path]:
    """Write ``labelmap`` in the requested formats into ``output_dir``; returns ``{format: path}``.

    ``dicom-seg`` needs ``source``: the DICOM series the label map was computed on (same grid).
    A ``summary.json`` with per-label statistics is always written.
    """
    formats = parse_formats(formats)
    reporter = Progress(progress)
    if "dicom-seg" in formats and (source is None or not source.source_files):
        raise InputError(
            "DICOM SEG output needs a DICOM series as input (it references the source images). "
            "Use --format seg.nrrd,nii.gz for NIfTI/NRRD input, or give the DICOM folder."
        )
    with staged_output(output_dir) as staged:
        staging = staged.folder
        written: dict[str, str] = {}
        names = {"seg.nrrd": f"{stem}.seg.nrrd", "nii.gz": f"{stem}.nii.gz", "dicom-seg": f"{stem}.dcm"}
        for index, fmt in enumerate(formats):
            reporter(index / (len(formats) + 1), f"writing {fmt}")
            target = staging / names[fmt]
            if fmt == "seg.nrrd":
                _write_seg_nrrd(labelmap, labels, target, stem)
            elif fmt == "nii.gz":
                write_volume_file(labelmap.with_array(labelmap.array.astype(np.uint8)), target)
            else:
                assert source is not None  # checked above: dicom-seg needs the DICOM source
                write_dicom_seg(
                    labelmap, source, labels, target, algorithm_name=algorithm_name, algorithm_version=algorithm_version
                )
            written[fmt] = names[fmt]
        summary = {
            "algorithm": {"name": algorithm_name, "version": algorithm_version},
            "statistics": [
                {**row, "volume_ml": round(row["volume_ml"], 4)} for row in label_statistics(labelmap, labels)
            ],
            "files": dict(written),
            **(extra_summary or {}),
        }
        (staging / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        written["summary"] = "summary.json"
        reporter(1.0, "moving results into place")
        final = staged.commit(written.values())
        return {fmt: final[name] for fmt, name in written.items()}
