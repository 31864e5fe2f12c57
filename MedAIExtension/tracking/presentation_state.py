"""A presentation state (GSPS) of one study of a nodule tracking result: each nodule circled, with its tracking
ID and long-axis diameter, on the lung-windowed source CT (see :mod:`MedAIExtension.dicom.presentation_state`).

Here rather than in :mod:`MedAIExtension.dicom`, which must not depend on the tracking package.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from MedAIExtension.dicom.presentation_state import PrAnnotation, write_presentation_state
from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.tracking.results import StudyResult, TrackedNodule, TrackingResult
from MedAIExtension.tracking.types import Finding, NoduleStatus, NoduleTrend

__all__ = ["nodule_annotations", "nodule_label", "write_tracking_presentation_state"]

_TIMEPOINTS = ("baseline", "followup")


def nodule_label(nodule: TrackedNodule, which: str) -> str:
    """The text shown beside a nodule, e.g. ``"N1 8.2 mm"``, ``"N3 6.0 mm new"``, ``"N2 9.1 mm growing"``.

    The long-axis diameter of the nodule in study ``which``, to one decimal; at follow-up a new nodule says
    ``new`` and one whose growth exceeds its measurement uncertainty says ``growing``.
    """
    finding = nodule.baseline if which == "baseline" else nodule.followup
    if finding is None:
        raise ValueError(f"nodule {nodule.tracking_id} is not seen in the {which} study")
    text = f"{nodule.tracking_id} {float(finding.measurement.long_axis_mm):.1f} mm"
    if which == "followup" and nodule.status is NoduleStatus.NEW:
        text += " new"
    elif which == "followup" and nodule.trend is NoduleTrend.GROWING:
        text += " growing"
    return text


def _outline(image: Image, finding: Finding) -> np.ndarray | None:
    """The finding's outline (RAS points, mm) on the slice through its centre; None when it has none there."""
    from skimage.measure import find_contours

    center = np.r_[np.asarray(finding.measurement.center_ras, dtype=float), 1.0]
    k = int(np.floor((np.linalg.inv(image.ijk_to_ras) @ center)[2] + 0.5))
    box_k, box_j, box_i = finding.mask.box
    if not (box_k.start or 0) <= k < (box_k.stop if box_k.stop is not None else image.shape[0]):
        return None
    plane = np.pad(finding.mask.mask[k - (box_k.start or 0)], 1).astype(float)
    contours = find_contours(plane, 0.5)
    if not contours:
        return None
    rows_cols = max(contours, key=len) - 1.0 + [box_j.start or 0, box_i.start or 0]
    ijk = np.c_[rows_cols[:, 1], rows_cols[:, 0], np.full(len(rows_cols), k), np.ones(len(rows_cols))]
    return (ijk @ image.ijk_to_ras.T)[:, :3]


def nodule_annotations(
    result: TrackingResult | StudyResult, which: str = "baseline", *, outlines: bool = False
) -> list[PrAnnotation]:
    """One annotation per nodule seen in study ``which``: centre, long-axis diameter and :func:`nodule_label`.

    ``outlines``: draw each nodule's segmented outline on its centre slice instead of a circle.
    """
    image = _image(result, which)
    annotations = []
    for nodule in result.nodules:
        finding = nodule.baseline if which == "baseline" else nodule.followup
        if finding is None:
            continue
        m = finding.measurement
        annotations.append(
            PrAnnotation(
                center_ras=(float(m.center_ras[0]), float(m.center_ras[1]), float(m.center_ras[2])),
                diameter_mm=float(m.long_axis_mm),
                text=nodule_label(nodule, which),
                outline_ras=_outline(image, finding) if outlines else None,
            )
        )
    return annotations


def _image(result: TrackingResult | StudyResult, which: str) -> Image:
    if which not in _TIMEPOINTS or (isinstance(result, StudyResult) and which != "baseline"):
        raise InputError(
            f"which={which!r}: choose 'baseline' or 'followup' (a single-study result has only 'baseline')."
        )
    if which == "baseline":
        return result.baseline.image
    assert isinstance(result, TrackingResult)
    return result.followup.image


def write_tracking_presentation_state(
    result: TrackingResult | StudyResult,
    which: str,
    path: str | os.PathLike[str],
    *,
    outlines: bool = False,
    series_number: int = 320,
) -> Path:
    """Write the presentation state of study ``which`` (``"baseline"`` or ``"followup"``) of ``result``.

    Every nodule seen in that study is circled (or outlined, with ``outlines``) on the source image of the slice
    through its centre, labelled with :func:`nodule_label`; every image of the series gets the lung window. A
    study without nodules gets a presentation state with the lung window only. Written atomically.

    Raises:
        InputError: ``which`` is not a study of ``result``, or that study was not read from a DICOM series.
        OutputError: the file cannot be written.
    """
    image = _image(result, which)
    return write_presentation_state(
        image,
        nodule_annotations(result, which, outlines=outlines),
        path,
        series_description=f"MedAI nodules ({which}) presentation state",
        series_number=series_number,
        content_label=f"MEDAI_{which.upper()}",
        model_name="MedAI nodule tracking",
    )
