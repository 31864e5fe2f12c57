"""Writing an explanation: map volumes (NRRD, NIfTI), DICOM Parametric Map + Secondary Capture, PNGs, JSON.

Everything is written into a staging folder inside the output folder and moved into place at the end, so a
failure leaves no partial result. ``explanation.json`` lists the files (paths relative to the folder).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from MedAIExtension.atomic import staged_output
from MedAIExtension.dicom.parametric_map import write_parametric_map
from MedAIExtension.dicom.secondary_capture import write_secondary_capture
from MedAIExtension.explain.overlay_png import KeySlice, key_slices
from MedAIExtension.explain.types import ExplainMethod, Explanation
from MedAIExtension.io.image import Image
from MedAIExtension.io.volume_files import write_volume_file
from MedAIExtension.progress import Progress

__all__ = ["map_title", "output_stem", "write_explanation_outputs"]


def output_stem(input_label: str) -> str:
    """A short file-name stem from the input path (``/data/ct.nii.gz`` → ``ct``)."""
    name = Path(input_label.rstrip("/\\")).name or "image"
    for suffix in (".nii.gz", ".seg.nrrd", ".nrrd", ".nii", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "image"
    return stem[:60]


def map_title(explanation: Explanation) -> str:
    """The map in words for captions: "Grad-CAM of 'Nodule'", "Predictive entropy over all labels"."""
    if explanation.method == ExplainMethod.UNCERTAINTY:  # one entropy map over every label, not one label's
        return f"{explanation.method.display_name} over all labels"
    return f"{explanation.method.display_name} of '{explanation.label.name}'"


def _write_segments_csv(rows: list[dict[str, Any]], path: Path) -> None:
    if not rows:
        path.write_text("", encoding="utf-8")
        return
    keys = list(rows[0].keys())
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})


def _write_dicom(
    explanation: Explanation, image: Image, staging: Path, stem: str, pictures: list[KeySlice]
) -> dict[str, str]:
    (staging / "dicom").mkdir()
    method = explanation.method
    entry = explanation.entry
    description = f"MedAI {method.display_name} {explanation.label.name}"[:64]
    names = {"parametric_map": f"dicom/{stem}_{method.value}_pm.dcm"}
    write_parametric_map(
        explanation.map,
        image,
        staging / names["parametric_map"],
        method=method.value,
        method_title=method.display_name,
        target=explanation.label.name,
        model_name=entry.name,
        model_version=entry.version,
        series_description=description,
    )
    names["secondary_capture"] = f"dicom/{stem}_{method.value}_sc"  # a folder: one file per key slice
    write_secondary_capture(
        [picture.rgb for picture in pictures],
        image,
        staging / names["secondary_capture"],
        series_description=f"{description} (key slices)"[:64],
        frame_comments=[f"{picture.plane} slice {picture.index} through the map's peak" for picture in pictures],
        model_name=f"{entry.name} {entry.version}",
    )
    return names


def _input_path(input_label: str, image: Image) -> str | None:
    """Where the input was read from, absolute (a viewer finds the study by it): the path given when it exists,
    else the folder of the DICOM files the image came from; None when neither is known (an in-memory image)."""
    if input_label and Path(input_label).exists():
        return str(Path(input_label).resolve())
    if image.source_files:
        return str(Path(image.source_files[0]).resolve().parent)
    return None


def write_explanation_outputs(
    explanation: Explanation,
    image: Image,
    output_dir: str | os.PathLike[str],
    *,
    dicom: bool = True,
    input_label: str = "",
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Write every output of ``explanation`` (computed on ``image``) into ``output_dir``; returns the JSON document.

    DICOM objects are written when ``dicom`` is true and the input was a DICOM series (they must reference it).
    """
    from PIL import Image as PILImage

    reporter = Progress(progress)
    stem = output_stem(input_label or str(image.metadata.get("SourceFile", "image")))
    method = explanation.method.value
    files: dict[str, Any] = {}
    with staged_output(output_dir) as staged:
        staging = staged.folder
        reporter(0.0, "writing the map")
        files["map_nrrd"] = f"{stem}_{method}.nrrd"
        write_volume_file(explanation.map, staging / files["map_nrrd"])
        files["map_nifti"] = f"{stem}_{method}.nii.gz"
        write_volume_file(explanation.map, staging / files["map_nifti"])
        if explanation.labelmap is not None:
            files["labelmap"] = f"{stem}_segmentation.nrrd"
            write_volume_file(explanation.labelmap, staging / files["labelmap"])
        if explanation.uncertainty is not None:
            files["segments_csv"] = f"{stem}_uncertainty_segments.csv"
            _write_segments_csv(list(explanation.uncertainty.get("segments", [])), staging / files["segments_csv"])
        reporter(0.3, "drawing key slices")
        display = explanation.display
        pictures = key_slices(
            image,
            explanation.map,
            display["window"],
            display["threshold"],
            display["opacity"],
            title=map_title(explanation),
            unit=str(display.get("unit") or ""),
        )
        (staging / "png").mkdir()
        files["overlay_pngs"] = []
        for picture in pictures:
            name = f"png/{stem}_{method}_{picture.plane}.png"
            PILImage.fromarray(picture.rgb).save(staging / name, format="PNG")
            files["overlay_pngs"].append(name)
        if dicom and image.source_files:
            reporter(0.5, "writing DICOM Parametric Map and Secondary Capture")
            files.update(_write_dicom(explanation, image, staging, stem, pictures))
        document = {"input": input_label, "input_path": _input_path(input_label, image), **explanation.summary()}
        document["files"] = files
        (staging / "explanation.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
        reporter(0.95, "moving results into place")
        written = [v for v in files.values() if isinstance(v, str)] + list(files.get("overlay_pngs", []))
        staged.commit([*written, "explanation.json"])  # file by file: other runs' results in the folder stay
        reporter(1.0, "done")
        return document
