"""Shared vocabulary of the Explainability methods: which method, which score is explained, the box it is
explained in (:class:`Roi`) and the result record (:class:`Explanation`) the pipeline and the writers share.

Every method works on the network's own input: a float32 array ``(1, C, *S)`` already resampled and normalised
the way the model expects (see :mod:`MedAIExtension.explain.pipeline` for the geometry around it). A
:class:`ScoreTarget` turns the network output into the one number per sample that is explained:

- classification models (output ``(N, L)``): the logit (or probability) of channel ``channel``;
- segmentation models (output ``(N, L, *S)``): the *region score*, the sum of channel ``channel``'s logits over
  ``region`` (a boolean mask on the input grid ``S``; the whole input when None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from MedAIExtension.dicom.map_methods import ExplainMethod
from MedAIExtension.errors import InputError
from MedAIExtension.io.image import Image
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.models.catalog import ModelEntry

__all__ = ["GRADIENT_METHODS", "ExplainMethod", "Explanation", "Roi", "ScoreTarget"]


#: Methods that need the model's gradients (torch, TorchScript or MONAI bundle; not ONNX).
GRADIENT_METHODS = frozenset({ExplainMethod.GRADCAM, ExplainMethod.GRADCAMPP, ExplainMethod.IG})


@dataclass(frozen=True, eq=False)
class ScoreTarget:
    """Which output is explained: a channel, and for dense (segmentation) outputs the region it is summed over.

    Attributes:
        channel: output channel index (classification: ``labels[c]``; segmentation: 0 is background).
        region: boolean mask ``S`` on the network input grid for dense outputs; None = the whole input.
        name: the label's name, for reports.
    """

    channel: int
    region: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.channel < 0:
            raise InputError(f"The target channel must be ≥ 0, got {self.channel}.")
        if self.region is not None:
            region = np.asarray(self.region, dtype=bool)
            if not region.any():
                raise InputError(
                    "The region whose score is explained is empty (no voxel of the mask/ROI lies in the input). "
                    "Draw the ROI over the structure you want explained."
                )
            object.__setattr__(self, "region", region)

    def score(self, outputs: Any, activate: bool = False) -> Any:
        """One score per sample from network ``outputs`` (torch tensor or numpy array, ``(N, L, ...)``).

        ``activate`` applies softmax over channels first (sigmoid for a single channel) — used by occlusion and
        deletion/insertion curves, which compare probabilities; gradient methods use raw logits.
        """
        is_numpy = isinstance(outputs, np.ndarray)
        if is_numpy:
            import torch

            outputs = torch.from_numpy(outputs)
        if self.channel >= outputs.shape[1]:
            raise InputError(
                f"The model has {outputs.shape[1]} output channel(s); channel {self.channel} does not exist. "
                "Pick a target label the model predicts."
            )
        if activate:
            outputs = outputs.sigmoid() if outputs.shape[1] == 1 else outputs.softmax(1)
        values = outputs[:, self.channel]
        if values.ndim > 1:
            if self.region is not None:
                import torch

                mask = torch.as_tensor(self.region, device=values.device)
                if tuple(mask.shape) != tuple(values.shape[1:]):
                    raise InputError(
                        f"The region mask has shape {tuple(mask.shape)} but the model output is "
                        f"{tuple(values.shape[1:])}; the mask must be on the model's input grid."
                    )
                values = values[:, mask]
                values = values.mean(dim=1) if activate else values.sum(dim=1)
            else:
                values = values.flatten(1)
                values = values.mean(dim=1) if activate else values.sum(dim=1)
        return values.numpy() if is_numpy else values


@dataclass(frozen=True)
class Roi:
    """An axis-aligned box in RAS millimetres (what a Slicer ROI markup gives: centre and size)."""

    center_ras: tuple[float, float, float]
    size_mm: tuple[float, float, float]

    def __post_init__(self) -> None:
        values = (*self.center_ras, *self.size_mm)
        if len(self.center_ras) != 3 or len(self.size_mm) != 3 or not all(math.isfinite(v) for v in values):
            raise InputError("An ROI needs a centre R A S and a size in mm (six finite numbers).")
        if min(self.size_mm) <= 0:
            raise InputError(f"ROI size {list(self.size_mm)} mm must be positive along R, A and S.")
        object.__setattr__(self, "center_ras", tuple(float(v) for v in self.center_ras))
        object.__setattr__(self, "size_mm", tuple(float(v) for v in self.size_mm))

    @classmethod
    def parse(cls, values: Any) -> Roi:
        """From six numbers ``R A S sizeR sizeA sizeS`` (a list or a comma/space separated string)."""
        if isinstance(values, str):
            values = values.replace(",", " ").split()
        try:
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            raise InputError(f"--roi needs six numbers R A S sizeR sizeA sizeS (mm), got {values!r}.") from None
        if len(numbers) != 6:
            raise InputError(f"--roi needs six numbers R A S sizeR sizeA sizeS (mm), got {len(numbers)}.")
        return cls(tuple(numbers[:3]), tuple(numbers[3:]))  # type: ignore[arg-type]

    @property
    def low_ras(self) -> tuple[float, float, float]:
        """The corner with the smallest R, A, S."""
        return tuple(c - s / 2 for c, s in zip(self.center_ras, self.size_mm, strict=True))  # type: ignore[return-value]

    @property
    def high_ras(self) -> tuple[float, float, float]:
        """The corner with the largest R, A, S."""
        return tuple(c + s / 2 for c, s in zip(self.center_ras, self.size_mm, strict=True))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form."""
        return {"center_ras": list(self.center_ras), "size_mm": list(self.size_mm)}


@dataclass
class Explanation:
    """An explanation map on the input image's grid and everything reported next to it."""

    method: ExplainMethod
    entry: ModelEntry
    label: SegmentLabel
    provider: str
    map: Image
    display: dict[str, Any]
    roi: Roi | None = None
    layer: str | None = None
    score: float | None = None
    sanity: dict[str, Any] = field(default_factory=dict)
    uncertainty: dict[str, Any] | None = None
    labelmap: Image | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts (without arrays) for explanation.json and the Slicer module."""
        return {
            "method": self.method.value,
            "method_title": self.method.display_name,
            "model": {
                "name": self.entry.name,
                "version": self.entry.version,
                "backend": self.entry.backend,
                "provider": self.provider,
            },
            "target": {
                "value": self.label.value,
                "name": self.label.name,
                "channel": self.entry.channel_of(self.label.value),
            },
            "layer": self.layer,
            "score": self.score,
            "roi": self.roi.to_dict() if self.roi is not None else None,
            "display": self.display,
            "sanity": self.sanity,
            "uncertainty": self.uncertainty,
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }
