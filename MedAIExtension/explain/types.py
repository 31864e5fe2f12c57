"""Shared vocabulary of the Explainability methods: which method, and which score is explained.

Every method works on the network's own input: a float32 array ``(1, C, *S)`` already resampled and normalised
the way the model expects (see :mod:`MedAIExtension.explain.pipeline` for the geometry around it). A
:class:`ScoreTarget` turns the network output into the one number per sample that is explained:

- classification models (output ``(N, L)``): the logit (or probability) of channel ``channel``;
- segmentation models (output ``(N, L, *S)``): the *region score*, the sum of channel ``channel``'s logits over
  ``region`` (a boolean mask on the input grid ``S``; the whole input when None).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError

__all__ = ["GRADIENT_METHODS", "ExplainMethod", "ScoreTarget"]


class ExplainMethod(StrEnum):
    """The explanation methods ``medai explain --method`` offers."""

    GRADCAM = "gradcam"
    GRADCAMPP = "gradcampp"
    OCCLUSION = "occlusion"
    IG = "ig"
    UNCERTAINTY = "uncertainty"

    @classmethod
    def parse(cls, value: str | ExplainMethod) -> ExplainMethod:
        """The method named ``value`` (case-insensitive); InputError listing the choices otherwise."""
        if isinstance(value, ExplainMethod):
            return value
        try:
            return cls(str(value).strip().lower().replace("-", "").replace("_", ""))
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise InputError(f"Unknown explanation method {value!r}; choose one of {choices}.") from None

    @property
    def title(self) -> str:
        """A human-readable name for reports and node names."""
        return {
            ExplainMethod.GRADCAM: "Grad-CAM",
            ExplainMethod.GRADCAMPP: "Grad-CAM++",
            ExplainMethod.OCCLUSION: "Occlusion sensitivity",
            ExplainMethod.IG: "Integrated gradients",
            ExplainMethod.UNCERTAINTY: "Predictive entropy",
        }[self]


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
