"""Segmentation metrics per label (Dice, IoU, HD95, normalised surface Dice) in physical space, via MONAI.

Empty-vs-empty is defined (Dice 1, distances 0); empty-vs-non-empty gives Dice 0 and infinite distances.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.io.resample import resample_to_grid

__all__ = ["LabelMetrics", "compare_labelmaps", "dice", "format_metrics_table"]


@dataclass(frozen=True)
class LabelMetrics:
    """Agreement of one label between a prediction and a reference."""

    label: int
    name: str
    dice: float
    iou: float
    hd95_mm: float
    surface_dice: float
    pred_ml: float
    ref_ml: float

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (infinite distances become None)."""
        data = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def _surface_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing_kji: Sequence[float] | np.ndarray, tolerance: float
) -> tuple[float, float]:
    import torch

    if not pred.any() and not ref.any():
        return 0.0, 1.0
    if not pred.any() or not ref.any():
        return math.inf, 0.0
    # crop to the union's bounding box (+1 voxel) so MONAI works on a small array
    idx = np.nonzero(pred | ref)
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
    p = torch.from_numpy(np.ascontiguousarray(pred[box]))[None, None]
    r = torch.from_numpy(np.ascontiguousarray(ref[box]))[None, None]
    spacing = [float(s) for s in spacing_kji]
    with warnings.catch_warnings():  # MONAI's own deprecation notices are not the user's business
        warnings.simplefilter("ignore", FutureWarning)
        return _monai_surface_metrics(p, r, spacing, tolerance)


def _monai_surface_metrics(p: Any, r: Any, spacing: list[float], tolerance: float) -> tuple[float, float]:
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    hd = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=spacing)[0, 0])
    sd = float(compute_surface_dice(p, r, class_thresholds=[tolerance], include_background=True, spacing=spacing)[0, 0])
    return hd, sd


def compare_labelmaps(
    pred: Image,
    ref: Image,
    labels: Iterable[tuple[int, str]] | None = None,
    tolerance_mm: float = 1.0,
) -> list[LabelMetrics]:
    """Metrics per label between ``pred`` and ``ref``.

    If the grids differ, ``pred`` is resampled onto ``ref``'s grid (nearest neighbour, physical space).
    ``labels`` defaults to every non-zero value in either map.
    """
    if not pred.same_grid(ref):
        overlap_probe = resample_to_grid(pred, ref.ijk_to_ras, ref.shape, linear=False, fill=0)
        pred = overlap_probe
    pa = np.asarray(pred.array)
    ra = np.asarray(ref.array)
    for name, arr in (("prediction", pa), ("reference", ra)):
        if not np.issubdtype(arr.dtype, np.integer) and not np.array_equal(arr, np.round(arr)):
            raise InputError(f"The {name} is not a label map (non-integer voxels); give a segmentation label map.")
    if labels is None:
        values = sorted(set(np.unique(pa).tolist()) | set(np.unique(ra).tolist()) - {0})
        labels = [(int(v), f"Label {int(v)}") for v in values if v != 0]
    spacing_kji = ref.spacing[::-1]
    voxel_ml = ref.voxel_volume_mm3 / 1000.0
    results = []
    for value, name in labels:
        p, r = pa == value, ra == value
        inter = int(np.count_nonzero(p & r))
        union = int(np.count_nonzero(p | r))
        hd, sd = _surface_metrics(p, r, spacing_kji, tolerance_mm)
        results.append(
            LabelMetrics(
                label=int(value),
                name=name,
                dice=dice(p, r),
                iou=1.0 if union == 0 else inter / union,
                hd95_mm=hd,
                surface_dice=sd,
                pred_ml=int(np.count_nonzero(p)) * voxel_ml,
                ref_ml=int(np.count_nonzero(r)) * voxel_ml,
            )
        )
    return results


def format_metrics_table(rows: Sequence[LabelMetrics], tolerance_mm: float = 1.0) -> str:
    """A plain-text table for the terminal."""
    nsd = f"NSD@{tolerance_mm:g}mm"
    header = f"{'label':>5}  {'name':<16} {'Dice':>7} {'IoU':>7} {'HD95 mm':>8} {nsd:>10} {'pred mL':>9} {'ref mL':>9}"
    lines = [header, "-" * len(header)]
    for m in rows:
        hd = f"{m.hd95_mm:8.2f}" if math.isfinite(m.hd95_mm) else f"{'inf':>8}"
        lines.append(
            f"{m.label:>5}  {m.name[:16]:<16} {m.dice:7.4f} {m.iou:7.4f} {hd} {m.surface_dice:10.4f} "
            f"{m.pred_ml:9.2f} {m.ref_ml:9.2f}"
        )
    return "\n".join(lines)
