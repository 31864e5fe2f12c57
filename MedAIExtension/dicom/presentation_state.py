"""Grayscale Softcopy Presentation State (GSPS): AI findings drawn over the source CT in any PACS viewer.

Many PACS viewers show neither DICOM SEG nor Parametric Maps, but nearly all apply a presentation state: a small
object that references the images of a series and says how to show them. The one written here

- references every image of the source series and gives each the lung window (width 1500 HU, level -600 HU by
  default) through its Softcopy VOI LUT;
- puts each finding, as graphic annotations in PIXEL units on one graphic layer (``MEDAI``), on the image of the
  slice through the finding's centre: a circle of the finding's diameter plus :data:`RING_MARGIN_MM` on each
  side (an ellipse when the pixels are not square, a polyline when the circle would leave the image), or the
  finding's outline when one is given, and a text object (e.g. ``"N1 8.2 mm"``) in a box next to it.

The graphics are drawn white (the layer's recommended grayscale value). The object is written with highdicom
(``GrayscaleSoftcopyPresentationState``) atomically, in the source's study, as a new series. It cannot reference
a multi-frame (enhanced) source yet.

highdicom and pydicom are imported lazily inside the functions that need them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from MedAIExtension import __version__
from MedAIExtension.atomic import save_dataset
from MedAIExtension.dicom.source import copy_anatomy, load_source_datasets, require_single_frame_source
from MedAIExtension.dicom.values import long_string
from MedAIExtension.errors import InputError, OutputError
from MedAIExtension.io.image import Image

__all__ = [
    "LUNG_WINDOW",
    "PRESENTATION_LAYER",
    "PrAnnotation",
    "write_presentation_state",
]

#: The lung window (centre, width) in HU that the presentation state applies by default.
LUNG_WINDOW = (-600.0, 1500.0)
#: Name of the graphic layer holding MedAI's annotations.
PRESENTATION_LAYER = "MEDAI"
#: The circle is written as a polyline of this many segments when it does not fit inside the image.
_POLYLINE_SEGMENTS = 64
_WHITE = 0xFFFF  # Recommended Display Grayscale Value of the layer (P-values, 16 bits)
#: The circle runs this far outside the finding (mm), so that it lies on the darker tissue around a solid nodule
#: instead of on its bright edge (where a white line would not show).
RING_MARGIN_MM = 2.0
#: Recommended display colour of the layer on colour displays (yellow, as most viewers draw annotations).
_YELLOW_RGB = (255, 220, 0)
_WHAT = "presentation state"


@dataclass(frozen=True)
class PrAnnotation:
    """One finding to draw on the source image.

    Attributes:
        center_ras: the finding's centre (R, A, S) in mm; the annotation goes on the slice through it.
        diameter_mm: the diameter of the circle drawn around the centre (e.g. the long-axis diameter).
        text: the label written next to it, e.g. ``"N1 8.2 mm"`` (clipped to 64 characters).
        outline_ras: optional outline of the finding, an ``(n, 3)`` array of RAS points (mm) on that slice,
            drawn as a closed polyline instead of the circle.
    """

    center_ras: tuple[float, float, float]
    diameter_mm: float
    text: str
    outline_ras: np.ndarray | None = None


@dataclass(frozen=True)
class _Placed:
    """An annotation in the pixel coordinates of one source slice (column, row; PIXEL units)."""

    slice_index: int
    graphic_type: str
    graphic_data: np.ndarray
    text: str
    text_box: tuple[float, float, float, float]


def _to_index(source: Image, points_ras: np.ndarray) -> np.ndarray:
    """``(n, 3)`` RAS points as continuous ``(i, j, k)`` voxel indices of ``source``."""
    inverse = np.linalg.inv(source.ijk_to_ras)
    homogeneous = np.c_[points_ras, np.ones(len(points_ras))]
    return (homogeneous @ inverse.T)[:, :3]


def _check_annotation(annotation: PrAnnotation, number: int) -> tuple[np.ndarray, float]:
    center = np.asarray(annotation.center_ras, dtype=float)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise InputError(
            f"Annotation {number} ({annotation.text!r}) has centre {annotation.center_ras!r}; give the centre as "
            "three finite RAS coordinates in mm."
        )
    diameter = float(annotation.diameter_mm)
    if not np.isfinite(diameter) or diameter <= 0:
        raise InputError(
            f"Annotation {number} ({annotation.text!r}) has diameter {annotation.diameter_mm!r} mm; give a "
            "positive diameter in mm."
        )
    if not str(annotation.text).strip():
        raise InputError(f"Annotation {number} has no text; give its label, e.g. 'N1 8.2 mm'.")
    return center, diameter


def _circle(center: np.ndarray, radius: np.ndarray, columns: int, rows: int) -> tuple[str, np.ndarray]:
    """CIRCLE, ELLIPSE (non-square pixels) or, when it leaves the image, a POLYLINE clipped to the image."""
    rx, ry = float(radius[0]), float(radius[1])
    cx, cy = float(center[0]), float(center[1])
    fits = cx - rx >= 0 and cy - ry >= 0 and cx + rx <= columns and cy + ry <= rows
    if not fits:
        angles = np.linspace(0.0, 2 * np.pi, _POLYLINE_SEGMENTS + 1)
        points = np.c_[cx + rx * np.cos(angles), cy + ry * np.sin(angles)]
        return "POLYLINE", np.clip(points, [0.0, 0.0], [columns, rows])
    if np.isclose(rx, ry, rtol=0.01):
        return "CIRCLE", np.array([[cx, cy], [cx + rx, cy]])
    horizontal = np.array([[cx - rx, cy], [cx + rx, cy]])
    vertical = np.array([[cx, cy - ry], [cx, cy + ry]])
    major, minor = (horizontal, vertical) if rx >= ry else (vertical, horizontal)  # major axis end points first
    return "ELLIPSE", np.r_[major, minor]


def _text_box(
    text: str, center: np.ndarray, radius: np.ndarray, columns: int, rows: int
) -> tuple[float, float, float, float]:
    """A box (left, top, right, bottom) for ``text`` beside the circle: right of it, or left when it does not fit."""
    height = float(max(8, round(rows / 40)))
    width = min(float(columns), height * 0.6 * len(text))
    gap = 2.0
    cx, cy = float(center[0]), float(center[1])
    left = cx + radius[0] + gap
    if left + width > columns:
        left = cx - radius[0] - gap - width
    left = float(np.clip(left, 0.0, columns - width))
    top = float(np.clip(cy - height / 2, 0.0, max(0.0, rows - height)))
    return left, top, left + width, min(float(rows), top + height)


def _place(source: Image, annotation: PrAnnotation, number: int) -> _Placed:
    """Where ``annotation`` goes: its slice and its graphic and text in PIXEL units (TLHC of the image = 0, 0)."""
    center_ras, diameter = _check_annotation(annotation, number)
    k_size, rows, columns = source.shape
    i, j, k = _to_index(source, center_ras[None])[0]
    slice_index = int(np.floor(k + 0.5))
    if not (0 <= slice_index < k_size and 0 <= i + 0.5 < columns and 0 <= j + 0.5 < rows):
        raise InputError(
            f"Annotation {number} ({annotation.text!r}) at RAS {np.round(center_ras, 1).tolist()} mm lies outside "
            f"the source image (voxel {np.round([i, j, k], 1).tolist()} of a {columns}x{rows}x{k_size} image). "
            "Give findings measured on this series (the image they were found in)."
        )
    center = np.array([i + 0.5, j + 0.5])  # the voxel centre in PIXEL units
    spacing = source.spacing[:2]
    radius = (diameter / 2.0 + RING_MARGIN_MM) / spacing
    text = long_string(str(annotation.text).strip())
    if annotation.outline_ras is not None:
        outline = np.asarray(annotation.outline_ras, dtype=float)
        if outline.ndim != 2 or outline.shape[1] != 3 or len(outline) < 3 or not np.all(np.isfinite(outline)):
            raise InputError(
                f"The outline of annotation {number} ({annotation.text!r}) has shape {outline.shape}; give at "
                "least three finite RAS points (mm) as an (n, 3) array, or no outline to draw a circle."
            )
        index = _to_index(source, outline)
        points = np.clip(index[:, :2] + 0.5, [0.0, 0.0], [columns, rows])
        graphic_type, graphic_data = "POLYLINE", np.r_[points, points[:1]]  # closed
        extent = np.maximum(np.abs(points - center).max(axis=0), 1.0)
        box = _text_box(text, center, extent, columns, rows)
    else:
        graphic_type, graphic_data = _circle(center, radius, columns, rows)
        box = _text_box(text, center, radius, columns, rows)
    return _Placed(slice_index, graphic_type, graphic_data, text, box)


def _content_label(label: str) -> str:
    """``label`` as a Content Label (CS: upper case, digits, underscore; at most 16 characters)."""
    return re.sub(r"[^A-Z0-9_]", "_", label.upper())[:16] or PRESENTATION_LAYER


def write_presentation_state(
    source: Image,
    annotations: Sequence[PrAnnotation],
    path: str | os.PathLike[str],
    *,
    window_center: float = LUNG_WINDOW[0],
    window_width: float = LUNG_WINDOW[1],
    series_description: str = "MedAI findings (presentation state)",
    series_number: int = 320,
    content_label: str = "MEDAI_FINDINGS",
    content_description: str = "MedAI AI findings, preliminary, not verified",
    manufacturer: str = "MedAI",
    model_name: str = "MedAI",
) -> Path:
    """Write a Grayscale Softcopy Presentation State that shows ``annotations`` over the source series.

    Every image of ``source`` is referenced and gets the window ``window_center`` / ``window_width`` (HU; the
    lung window by default). Each annotation is drawn on the image of the slice through its centre (see
    :class:`PrAnnotation`); an empty ``annotations`` gives a presentation state with the window only. The file
    is written atomically: on any error no file is left at ``path``.

    Args:
        source: the series the findings were measured on, read with
            :func:`~MedAIExtension.io.dicom_series.read_dicom_series` (its files are referenced).
        annotations: the findings to draw.
        path: output file (``.dcm``).
        window_center: Window Center of the VOI LUT (HU).
        window_width: Window Width of the VOI LUT (HU, > 0).
        series_description: Series Description of the presentation state's series.
        series_number: Series Number.
        content_label: Content Label (shown by viewers as the presentation's name; made a code string).
        content_description: Content Description.
        manufacturer: Manufacturer of the software that made it.
        model_name: Manufacturer's Model Name (e.g. the algorithm's name).

    Returns:
        The written path.

    Raises:
        InputError: the source was not read from DICOM (or from one multi-frame object), an annotation lies
            outside the image or is malformed, or the window is not a positive width.
        GeometryError: the source files do not match the image.
        OutputError: the file cannot be written.
    """
    import highdicom as hd

    target = Path(path)
    if not target.parent.is_dir():
        raise OutputError(f"The folder {target.parent} does not exist; create it or choose another output path.")
    if not (np.isfinite(window_center) and np.isfinite(window_width) and window_width > 0):
        raise InputError(
            f"The window (centre {window_center!r}, width {window_width!r}) is not a finite centre with a "
            "positive width; the lung window is centre -600, width 1500."
        )
    if not source.source_files:
        load_source_datasets(source, _WHAT)  # raises the InputError that says how to read a DICOM source
    require_single_frame_source(source, _WHAT)
    placed = [_place(source, annotation, number) for number, annotation in enumerate(annotations, start=1)]
    datasets = load_source_datasets(source, _WHAT)

    layer = hd.pr.GraphicLayer(
        layer_name=PRESENTATION_LAYER,
        order=1,
        description=long_string("MedAI findings (AI, not verified)"),
        display_color=hd.color.CIELabColor.from_rgb(*_YELLOW_RGB),
    )
    graphic_annotations = []
    for item in placed:
        graphic = hd.pr.GraphicObject(graphic_type=item.graphic_type, graphic_data=item.graphic_data, units="PIXEL")
        text = hd.pr.TextObject(
            text_value=item.text, units="PIXEL", bounding_box=item.text_box, text_justification="LEFT"
        )
        graphic_annotations.append(
            hd.pr.GraphicAnnotation(
                referenced_images=[datasets[item.slice_index]],
                graphic_layer=layer,
                graphic_objects=[graphic],
                text_objects=[text],
            )
        )
    voi = hd.pr.SoftcopyVOILUTTransformation(
        window_center=float(window_center),
        window_width=float(window_width),
        window_explanation="LUNG" if (window_center, window_width) == LUNG_WINDOW else "MEDAI",
    )
    state = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=datasets,
        series_instance_uid=hd.UID(),
        series_number=int(series_number),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=long_string(manufacturer),
        manufacturer_model_name=long_string(model_name),
        software_versions=long_string(f"MedAI {__version__}"),
        device_serial_number="0",
        content_label=_content_label(content_label),
        content_description=long_string(content_description),
        graphic_annotations=graphic_annotations or None,
        graphic_layers=[layer] if graphic_annotations else None,
        voi_lut_transformations=[voi],
    )
    if graphic_annotations:
        state.GraphicLayerSequence[0].GraphicLayerRecommendedDisplayGrayscaleValue = _WHITE
    state.SeriesDescription = long_string(series_description)
    copy_anatomy(state, datasets[0])
    return save_dataset(state, target, "DICOM presentation state")
