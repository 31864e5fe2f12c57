"""Putting an explanation result into a Slicer scene: the map as a heat overlay, and for uncertainty the label map
as a segmentation plus a per-segment uncertainty table.

Works from the folder :func:`MedAIExtension.explain.pipeline.explain_to_folder` wrote (``explanation.json`` and
the files it lists, relative to the folder), so the Slicer module runs the explanation in a worker process and
loads the result on the main thread. Everything is read and checked before the first node is made; an error while
making nodes removes those made so far, so a failed load leaves the scene as it was.
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MedAIExtension.errors import CatalogError, InputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.mrml.overlays import show_map_overlay
from MedAIExtension.mrml.segmentations import labelmap_to_segmentation_node
from MedAIExtension.mrml.tables import rows_to_table_node

__all__ = [
    "DOCUMENT_NAME",
    "FOLDER_ATTRIBUTE",
    "UNCERTAINTY_COLUMNS",
    "ExplanationNodes",
    "load_explanation_into_scene",
    "read_explanation_document",
    "sanity_summary",
]

#: The file that describes an explanation output folder.
DOCUMENT_NAME = "explanation.json"
#: Attribute of the map node holding the output folder it was loaded from.
FOLDER_ATTRIBUTE = "MedAI.ExplanationFolder"
#: Table column title -> (segment key in explanation.json, type) of the per-segment uncertainty table.
UNCERTAINTY_COLUMNS: dict[str, tuple[str, str]] = {
    "Segment": ("name", "string"),
    "Label": ("value", "int"),
    "Voxels": ("voxels", "int"),
    "Volume [mL]": ("volume_ml", "double"),
    "Mean uncertainty": ("mean_entropy", "double"),
    "95th percentile uncertainty": ("p95_entropy", "double"),
}


@dataclass
class ExplanationNodes:
    """The MRML nodes made for one explanation result.

    Attributes:
        map: the scalar volume node of the map (heat overlay).
        table: per-segment uncertainty table (uncertainty results only), else None.
        segmentation: the model's segmentation the uncertainty belongs to (uncertainty results only), else None.
        sanity_summary: the sanity checks in plain words ("" never: says when none were run).
        document: the explanation.json content.
        folder: the output folder.
    """

    map: Any
    table: Any = None
    segmentation: Any = None
    sanity_summary: str = ""
    document: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    def nodes(self) -> list[Any]:
        """Every node, for removing them together."""
        return [node for node in (self.map, self.table, self.segmentation) if node is not None]


def read_explanation_document(folder: str | Path) -> dict[str, Any]:
    """``explanation.json`` of an explanation output folder, checked for the keys the scene needs.

    Raises:
        InputError: the file is missing, not JSON, or not an explanation result.
    """
    path = Path(folder) / DOCUMENT_NAME
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read {path} ({exc}); give a folder written by 'medai explain'.") from None
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, dict) or not isinstance(document.get("method"), str):
        raise InputError(f"{path} is not a MedAI explanation result; give a folder written by 'medai explain'.")
    if not (files.get("map_nrrd") or files.get("map_nifti")):
        raise InputError(f"{path} lists no map file (map_nrrd or map_nifti); run 'medai explain' again.")
    return document


def sanity_summary(document: dict[str, Any]) -> str:
    """The sanity checks of an explanation in plain words, one line per check."""
    sanity = document.get("sanity") or {}
    lines = []
    randomisation = sanity.get("randomisation")
    if isinstance(randomisation, dict):
        verdict = str(randomisation.get("verdict") or ("passed" if randomisation.get("passed") else "failed")).upper()
        text = randomisation.get("summary") or ""
        lines.append(f"Model randomisation test {verdict}: {text}".rstrip(": "))
    faithfulness = sanity.get("faithfulness")
    if isinstance(faithfulness, dict):
        lines.append(f"Faithfulness (deletion/insertion): {faithfulness.get('summary') or 'no summary'}")
    if not lines:
        lines.append("No sanity checks were run for this map.")
    return "\n".join(lines)


def _label_of(segment: dict[str, Any], index: int, catalogue_labels: dict[int, SegmentLabel]) -> SegmentLabel:
    value = int(segment["value"])
    known = catalogue_labels.get(value)
    name = str(segment.get("name") or (known.name if known else f"Label {value}"))
    color: tuple[float, float, float]
    if segment.get("color") is not None:
        red, green, blue = (float(c) for c in segment["color"])  # ValueError unless three numbers
        color = (red, green, blue)
    elif known is not None:
        color = known.color
    else:
        color = colorsys.hsv_to_rgb((index * 0.61803) % 1.0, 0.65, 0.95)
    if known is not None:
        return SegmentLabel(value, name, color, known.category, known.type)
    return SegmentLabel(value, name, color)


def _catalogue_labels(model_name: str) -> dict[int, SegmentLabel]:
    """Labels (colours, terminology) of the catalogue model, or none when it is not in the catalogue."""
    if not model_name:
        return {}
    try:
        catalog = load_catalog()
        return {label.value: label for label in catalog.get(model_name).labels} if model_name in catalog else {}
    except (CatalogError, ImportError, OSError):
        return {}


def _file(folder: Path, files: dict[str, Any], key: str) -> Path | None:
    name = files.get(key)
    if not name:
        return None
    path = folder / str(name)
    if not path.is_file():
        raise InputError(
            f"The explanation result in {folder} lists {name} as {key!r} but the file is missing; "
            "run 'medai explain' again into an empty folder."
        )
    return path


def _display(document: dict[str, Any]) -> dict[str, Any]:
    display = document.get("display") or {}
    window = display.get("window")
    threshold = display.get("threshold")
    return {
        "window": [float(v) for v in window] if window is not None else None,
        "threshold": float(threshold) if threshold is not None and math.isfinite(float(threshold)) else None,
        "colormap": str(display.get("colormap") or "heat"),
        "opacity": float(display.get("opacity", 0.5)),
    }


def _map_name(document: dict[str, Any], background_node: Any | None) -> str:
    title = str(document.get("method_title") or document["method"])
    target = (document.get("target") or {}).get("name")
    if document.get("method") == "uncertainty":
        target = "all labels"  # one entropy map over every label, not the target's
    prefix = f"{background_node.GetName()} " if background_node is not None else ""
    return f"{prefix}{title}" + (f" ({target})" if target else "")


def load_explanation_into_scene(scene: Any, folder: str | Path, background_node: Any | None = None) -> ExplanationNodes:
    """Create the nodes of an explanation result in ``scene``.

    The map is shown as a heat overlay (foreground layer of the slice views) over ``background_node`` with the
    window, threshold, colour map and opacity of the result's ``display`` settings. Uncertainty results also get
    the model's segmentation (segments named and coloured as in the result, or the catalogue) and a table with
    each segment's size and mean/95th-percentile uncertainty.

    Args:
        scene: the ``vtkMRMLScene``.
        folder: the output folder of an explanation run.
        background_node: the volume the explanation was computed on (shown under the map; the segmentation's
            reference geometry).

    Returns:
        The nodes made.

    Raises:
        InputError: explanation.json is missing or damaged, a listed file is missing, or the files do not fit
            (a label map value without a segment). The scene is unchanged then.
    """
    folder = Path(folder)
    document = read_explanation_document(folder)
    files = document["files"]
    try:
        map_path = _file(folder, files, "map_nrrd") or _file(folder, files, "map_nifti")
        if map_path is None:
            raise KeyError("map_nrrd")  # neither map file is listed: reported as a damaged result below
        map_image: Image = read_volume_file(map_path)
        display = _display(document)
        uncertainty = document.get("uncertainty") or None
        labelmap_path = _file(folder, files, "labelmap") if uncertainty else None
        labelmap = read_volume_file(labelmap_path) if labelmap_path is not None else None
        segments = [dict(segment) for segment in (uncertainty or {}).get("segments", [])]
        labels_by_value = _catalogue_labels(str((document.get("model") or {}).get("name") or ""))
        labels = [_label_of(segment, index, labels_by_value) for index, segment in enumerate(segments)]
        for segment in segments:  # the table's integer columns need a value in every row
            segment["value"], segment["voxels"] = int(segment["value"]), int(segment["voxels"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"The explanation result in {folder} is incomplete or damaged ({type(exc).__name__}: {exc}); "
            "run 'medai explain' again into an empty folder."
        ) from None
    if labelmap is not None and labelmap.shape != map_image.shape:
        raise InputError(
            f"The uncertainty label map {labelmap.shape} and the map {map_image.shape} of {folder} are on different "
            "grids; run 'medai explain' again into an empty folder."
        )

    name = _map_name(document, background_node)
    made: list[Any] = []
    try:
        segmentation = table = None
        if labelmap is not None:
            segmentation = labelmap_to_segmentation_node(
                scene, labelmap, labels, f"{name} segmentation", background_node
            )
            made.append(segmentation)
        if segments:
            unit = str((uncertainty or {}).get("unit") or "")
            units = {"Volume [mL]": "mL"} | (
                {column: unit for column in list(UNCERTAINTY_COLUMNS)[-2:]} if unit else {}
            )
            table = rows_to_table_node(scene, segments, UNCERTAINTY_COLUMNS, f"{name} uncertainty", units=units)
            made.append(table)
        map_node = show_map_overlay(
            scene,
            map_image,
            name,
            background_node=background_node,
            window=display["window"],
            threshold=display["threshold"],
            colormap=display["colormap"],
            opacity=display["opacity"],
        )
        made.append(map_node)
        map_node.SetAttribute(FOLDER_ATTRIBUTE, str(folder))
        map_node.SetAttribute("MedAI.ExplanationMethod", str(document["method"]))
        if (document.get("display") or {}).get("unit"):
            map_node.SetAttribute("MedAI.Unit", str(document["display"]["unit"]))
    except BaseException:
        for node in made:
            if node is not None and scene.IsNodePresent(node):
                scene.RemoveNode(node)
        raise
    return ExplanationNodes(map_node, table, segmentation, sanity_summary(document), document, folder)
