"""Render a Grayscale Softcopy Presentation State applied to one of its images as a PNG (a picture of what a
PACS viewer shows).

dcmtk's ``dcmp2pgm`` applies the presentation state's grayscale pipeline to the image (modality LUT, the VOI
window, shutters, the presentation state's overlays) and writes a PGM bitmap. It does not draw graphic
annotations (dcmtk leaves them to the viewer application), so the presentation state's graphic and text objects
that refer to this image are read back from the file with pydicom and drawn onto the bitmap with Pillow, in their
layer's recommended grayscale value (white when none), in layer order. Only presentation states that show the
whole image unrotated and unflipped (as MedAI writes them) are drawn; others are refused.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.atomic import atomic_path
from MedAIExtension.dicom.tools import MissingToolError, find_tool
from MedAIExtension.errors import InputError, OutputError

__all__ = ["GSPS_STORAGE", "render_presentation_state"]

#: SOP Class UID of the Grayscale Softcopy Presentation State Storage IOD.
GSPS_STORAGE = "1.2.840.10008.5.1.4.1.1.11.1"
_INSTALL_HINT = "Install dcmtk (Debian/Ubuntu: apt-get install dcmtk; macOS: brew install dcmtk) to render it."
_TIMEOUT_S = 120


def _read(path: Path, what: str, **kwargs: Any) -> Any:
    import pydicom

    if not path.is_file():
        raise InputError(f"The {what} {path} is not a file; give the path of the DICOM file.")
    try:
        return pydicom.dcmread(path, **kwargs)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise InputError(f"The {what} {path} cannot be read as DICOM ({exc}); give a DICOM file.") from None


def _check_pair(state: Any, image: Any, pr_path: Path, image_path: Path) -> None:
    if str(state.get("SOPClassUID", "")) != GSPS_STORAGE:
        raise InputError(
            f"{pr_path.name} is not a Grayscale Softcopy Presentation State (SOP Class {state.get('SOPClassUID')}); "
            "give the presentation state file first and the image second."
        )
    uid = str(image.get("SOPInstanceUID", ""))
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for series in state.get("ReferencedSeriesSequence") or []
        for item in series.get("ReferencedImageSequence") or []
    }
    if uid not in referenced:
        raise InputError(
            f"The presentation state {pr_path.name} does not reference the image {image_path.name} (SOP Instance "
            f"{uid}); render it with one of the {len(referenced)} images it references."
        )
    for keyword in ("ImageRotation", "ImageHorizontalFlip"):
        if state.get(keyword) not in (None, 0, "N", ""):
            raise InputError(
                f"The presentation state {pr_path.name} rotates or flips the image ({keyword}); only presentation "
                "states showing the image as stored can be rendered here. View it in a DICOM viewer instead."
            )


def _run_dcmp2pgm(pr_path: Path, image_path: Path, folder: Path) -> np.ndarray:
    """The image rendered through the presentation state's grayscale pipeline, as 8-bit rows x columns."""
    from PIL import Image as PilImage

    try:
        tool = find_tool("dcmp2pgm", _INSTALL_HINT)
    except MissingToolError as exc:
        raise InputError(f"dcmp2pgm, which renders the presentation state, is not installed. {_INSTALL_HINT}") from exc
    bitmap = folder / "render.pgm"
    try:
        result = subprocess.run(
            [str(tool), "--pstate", str(pr_path), str(image_path), str(bitmap)],
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
            timeout=_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise InputError(
            f"dcmp2pgm did not finish rendering {pr_path.name} on {image_path.name} within {_TIMEOUT_S} s; check "
            "the files with dcmpschk and dciodvfy."
        ) from None
    if result.returncode != 0 or not bitmap.is_file():
        message = " ".join((result.stderr + result.stdout).split())[-400:] or f"exit status {result.returncode}"
        raise InputError(
            f"dcmp2pgm could not render the presentation state {pr_path.name} on {image_path.name}: {message}. "
            "Check both files (dcmpschk for the presentation state, dciodvfy for both)."
        )
    with PilImage.open(bitmap) as picture:
        pixels = np.asarray(picture)
    if pixels.dtype != np.uint8:  # a 16-bit PGM: scale to 8 bits
        pixels = (pixels.astype(np.float64) * (255.0 / max(1.0, float(pixels.max())))).round().astype(np.uint8)
    return pixels


def _layer_values(state: Any) -> dict[str, tuple[int, int]]:
    """``{layer name: (order, 8-bit gray value)}``."""
    layers = {}
    for layer in state.get("GraphicLayerSequence") or []:
        value = layer.get("GraphicLayerRecommendedDisplayGrayscaleValue")
        gray = 255 if value is None else round(int(value) * 255 / 0xFFFF)
        layers[str(layer.GraphicLayer)] = (int(layer.get("GraphicLayerOrder", 0) or 0), gray)
    return layers


def _annotations_for(state: Any, uid: str) -> list[Any]:
    """The graphic annotations that apply to the image ``uid`` (those without image references apply to all)."""
    items = []
    for annotation in state.get("GraphicAnnotationSequence") or []:
        references = annotation.get("ReferencedImageSequence")
        if not references or uid in {str(item.ReferencedSOPInstanceUID) for item in references}:
            items.append(annotation)
    return items


def _points(item: Any, key: str, units_keyword: str, size: tuple[int, int]) -> np.ndarray:
    """Coordinates ``key`` of ``item`` as (column, row) PIXEL positions (DISPLAY units scaled to the image)."""
    points = np.asarray(item.get(key), dtype=float).reshape(-1, 2)
    if str(item.get(units_keyword, "PIXEL")) == "DISPLAY":
        points = points * np.asarray(size, dtype=float)
    return points


def _draw_graphic(draw: Any, item: Any, gray: int, size: tuple[int, int]) -> None:
    kind = str(item.GraphicType)
    points = _points(item, "GraphicData", "GraphicAnnotationUnits", size)
    filled = str(item.get("GraphicFilled", "N")) == "Y"
    if kind == "CIRCLE":
        (cx, cy), edge = points[0], points[1]
        radius = float(np.hypot(*(edge - points[0])))
        box = [cx - radius, cy - radius, cx + radius, cy + radius]
        draw.ellipse(box, outline=gray, fill=gray if filled else None)
    elif kind == "ELLIPSE":
        center = points[:2].mean(axis=0)
        half = np.abs(np.r_[points[:2] - center, points[2:4] - center]).max(axis=0)  # axis-aligned ellipses
        box = [*(center - half), *(center + half)]
        draw.ellipse(box, outline=gray, fill=gray if filled else None)
    elif kind == "POINT":
        draw.point([tuple(p) for p in points], fill=gray)
    else:  # POLYLINE, INTERPOLATED (drawn through its points)
        coordinates = [tuple(p) for p in points]
        if filled and len(coordinates) > 2:
            draw.polygon(coordinates, outline=gray, fill=gray)
        else:
            draw.line(coordinates, fill=gray, width=1)


def _draw_text(draw: Any, item: Any, gray: int, size: tuple[int, int]) -> None:
    from PIL import ImageFont

    text = str(item.get("UnformattedTextValue", ""))
    if "BoundingBoxTopLeftHandCorner" in item:
        top_left = _points(item, "BoundingBoxTopLeftHandCorner", "BoundingBoxAnnotationUnits", size)[0]
        bottom_right = _points(item, "BoundingBoxBottomRightHandCorner", "BoundingBoxAnnotationUnits", size)[0]
        height = max(6, int(round(bottom_right[1] - top_left[1])))
        position = (float(top_left[0]), float(top_left[1]))
    elif "AnchorPoint" in item:
        anchor = _points(item, "AnchorPoint", "AnchorPointAnnotationUnits", size)[0]
        height = max(8, round(size[1] / 40))
        position = (float(anchor[0]) + 2.0, float(anchor[1]) - height / 2)
    else:
        return
    try:
        font: Any = ImageFont.load_default(size=height)
    except (OSError, TypeError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    draw.text(position, text, fill=gray, font=font)


def render_presentation_state(
    pr_path: str | os.PathLike[str], image_path: str | os.PathLike[str], png_path: str | os.PathLike[str]
) -> Path:
    """Render the presentation state ``pr_path`` applied to the image ``image_path`` as an 8-bit PNG.

    The image is windowed by ``dcmp2pgm`` (dcmtk) through the presentation state; its graphic and text objects
    for this image are drawn on top (see the module docstring). The PNG has the image's rows and columns and is
    written atomically.

    Returns:
        ``png_path``.

    Raises:
        InputError: dcmp2pgm is not installed ("install dcmtk") or fails, a file is missing or not DICOM, the
            presentation state does not reference the image, or it rotates, flips or zooms the image.
        OutputError: the PNG cannot be written.
    """
    from PIL import Image as PilImage
    from PIL import ImageDraw

    pr_file, image_file, target = Path(pr_path), Path(image_path), Path(png_path)
    state = _read(pr_file, "presentation state")
    image = _read(image_file, "image", stop_before_pixels=True)
    _check_pair(state, image, pr_file, image_file)
    if not target.parent.is_dir():
        raise OutputError(f"The folder {target.parent} does not exist; create it or choose another output path.")
    with tempfile.TemporaryDirectory(prefix="medai-pr-render-") as folder:
        pixels = _run_dcmp2pgm(pr_file, image_file, Path(folder))
    rows, columns = int(image.Rows), int(image.Columns)
    if pixels.shape != (rows, columns):
        raise InputError(
            f"dcmp2pgm rendered {pr_file.name} as {pixels.shape[1]}x{pixels.shape[0]} pixels, but the image has "
            f"{columns}x{rows}: the presentation state zooms or crops the image (Displayed Area), which is not "
            "drawn here. View it in a DICOM viewer instead."
        )
    picture = PilImage.fromarray(pixels)
    draw = ImageDraw.Draw(picture)
    layers = _layer_values(state)
    annotations = _annotations_for(state, str(image.SOPInstanceUID))
    annotations.sort(key=lambda a: layers.get(str(a.GraphicLayer), (0, 255))[0])
    for annotation in annotations:
        gray = layers.get(str(annotation.GraphicLayer), (0, 255))[1]
        for item in annotation.get("GraphicObjectSequence") or []:
            _draw_graphic(draw, item, gray, (columns, rows))
        for item in annotation.get("TextObjectSequence") or []:
            _draw_text(draw, item, gray, (columns, rows))
    try:
        with atomic_path(target) as tmp:
            picture.save(tmp, format="PNG")
    except OSError as exc:
        raise OutputError(
            f"Cannot write the rendering {target} ({exc.strerror or exc}). Choose a writable folder."
        ) from None
    return target
