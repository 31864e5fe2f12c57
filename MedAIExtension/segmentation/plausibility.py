"""Is this input something the model can answer, and is the answer anatomically possible?

Two checks around a segmentation:

* :func:`check_field_of_view` (before inference): an input far smaller than the model's window (a 16×16×5 crop,
  a single thin slab) is refused — the model would answer confidently about anatomy it cannot see.
* :func:`plausibility_warnings` (after inference): results no body can have — lungs far smaller than any
  chest's, a lesion larger than the organ it lies in — are flagged in words, for the user and the summary.

The anatomical rules are keyed on the labels' SNOMED CT property types, so any model (shipped or user-supplied)
whose labels carry those codes gets them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.labels import SegmentLabel, label_counts

__all__ = ["MIN_FIELD_OF_VIEW_FRACTION", "check_field_of_view", "plausibility_warnings"]

#: An input axis shorter than this fraction of the model window's extent on that axis is refused.
MIN_FIELD_OF_VIEW_FRACTION = 0.25

_LUNG = "39607008"  # SNOMED CT: Lung structure
#: Smallest total lung volume (mL) on a chest CT that covers the lungs: a small child's lungs exceed it.
_MIN_LUNGS_ML = 300.0
_LESION_CATEGORY = "49755003"  # SNOMED CT: Morphologically altered structure


def check_field_of_view(
    image: Image, patch_size_ijk: Sequence[int], spacing: Sequence[float] | None, name: str
) -> None:
    """Refuse an input whose physical extent is far smaller than the model's window.

    The window is ``patch_size_ijk`` voxels (i, j, k) of ``spacing`` mm (i, j, k; None: the image's own spacing).

    Raises:
        InputError: naming the axis, the input's extent and the model's, and what to do.
    """
    model_spacing = np.asarray(spacing if spacing is not None else image.spacing, dtype=float)  # i, j, k
    window_mm = np.asarray(patch_size_ijk, dtype=float) * model_spacing
    extent_mm = np.asarray(image.size_ijk, dtype=float) * image.spacing
    small = [axis for axis in range(3) if extent_mm[axis] < MIN_FIELD_OF_VIEW_FRACTION * window_mm[axis]]
    if not small:
        return
    shown = "×".join(f"{v:.0f}" for v in extent_mm)
    window = "×".join(f"{v:.0f}" for v in window_mm)
    raise InputError(
        f"The input covers only {shown} mm ({'×'.join(str(n) for n in image.size_ijk)} voxels), far smaller than "
        f"the field of view model {name} looks at ({window} mm): it would report on anatomy it cannot see. "
        "Give the whole scan (the complete series), not a crop or a few slices."
    )


def plausibility_warnings(labelmap: Image, labels: Sequence[SegmentLabel]) -> list[str]:
    """Sentences describing anatomically impossible or implausible results (empty when all is plausible)."""
    counts = label_counts(np.asarray(labelmap.array))
    voxel_ml = labelmap.voxel_volume_mm3 / 1000.0
    volumes = {label.value: counts.get(label.value, 0) * voxel_ml for label in labels}
    lungs = [label for label in labels if label.type is not None and label.type.value == _LUNG]
    warnings: list[str] = []
    if not lungs:
        return warnings
    lung_ml = sum(volumes[label.value] for label in lungs)
    if lung_ml < _MIN_LUNGS_ML:
        warnings.append(
            f"The lungs measure {lung_ml:.0f} mL, far less than any chest CT covering the lungs "
            f"(≥ {_MIN_LUNGS_ML:.0f} mL): the input may not be a chest CT or may show only part of the lungs. "
            "Check the result before using it."
        )
    for label in labels:
        if label.category.value == _LESION_CATEGORY and volumes[label.value] > 0 and volumes[label.value] >= lung_ml:
            warnings.append(
                f"'{label.name}' measures {volumes[label.value]:.1f} mL, more than the lungs ({lung_ml:.1f} mL): "
                "that is anatomically impossible, so the result is not trustworthy for this input."
            )
    return warnings
