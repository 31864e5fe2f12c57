"""A catalogue model loaded for explanation: batched prediction for every backend, the torch module when there is one.

Gradient methods (Grad-CAM, Grad-CAM++, integrated gradients) and the randomisation check need the torch module
(TorchScript file or MONAI bundle); occlusion, deletion/insertion and uncertainty need only predictions, so they
also run ONNX models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from MedAIExtension.errors import InputError, ModelError
from MedAIExtension.explain.types import GRADIENT_METHODS, ExplainMethod, ScoreTarget
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.models.backends import Backend, TorchBackend, load_backend
from MedAIExtension.models.catalog import ModelEntry
from MedAIExtension.models.devices import Device

if TYPE_CHECKING:
    import torch

__all__ = ["ExplainModel", "load_explain_model", "resolve_target_label", "score_target"]


@dataclass
class ExplainModel:
    """A loaded model plus what the explanation methods need from it.

    Attributes:
        entry: the catalogue entry.
        backend: the loaded backend (``predict`` maps a float32 batch to output scores).
        module: the torch module (eval mode) for gradient methods; None for ONNX models.
    """

    entry: ModelEntry
    backend: Backend
    module: torch.nn.Module | None

    @property
    def provider(self) -> str:
        """What runs the model (e.g. ``torch:cpu``, ``onnxruntime:CPUExecutionProvider``)."""
        return self.backend.provider

    @property
    def torch_device(self) -> str:
        """The torch device of :attr:`module` (``cpu`` or ``cuda``)."""
        return getattr(getattr(self.backend, "torch_device", None), "type", "cpu")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Model outputs for a float32 batch ``(N, C, *S)``."""
        return self.backend.predict(batch)

    def require_gradients(self, method: ExplainMethod) -> torch.nn.Module:
        """The torch module, or ModelError naming the methods that work without gradients."""
        if self.module is None:
            applicable = ", ".join(
                m.value
                for m in ExplainMethod
                if m not in GRADIENT_METHODS and (m != ExplainMethod.UNCERTAINTY or not self.entry.is_classifier)
            )
            raise ModelError(
                f"{method.display_name} needs the model's gradients, but {self.entry.name} is an "
                f"{self.entry.backend.upper()} model (ONNX Runtime gives no gradients). Use --method {applicable} "
                "with this model, or a TorchScript / MONAI-bundle version of it for gradient methods."
            )
        return self.module


def load_explain_model(entry: ModelEntry, device: Device | str = Device.AUTO) -> ExplainModel:
    """Verify and load ``entry``; keep the torch module for gradient methods."""
    backend = load_backend(entry, device)
    module = backend.module if isinstance(backend, TorchBackend) else None
    return ExplainModel(entry, backend, module)


def resolve_target_label(entry: ModelEntry, target: str | int | None) -> SegmentLabel:
    """The label to explain: given by value or name, else the catalogue default, else the first label."""
    if target is None or (isinstance(target, str) and not target.strip()):
        default = entry.explain.get("target_label")
        if default is not None:
            return entry.label(int(default))
        return entry.labels[0]
    text = str(target).strip()
    for label in entry.labels:
        if text.isdigit() and label.value == int(text):
            return label
        if label.name.lower() == text.lower():
            return label
    names = ", ".join(f"{label.value} ({label.name})" for label in entry.labels)
    raise InputError(f"Model {entry.name} has no label {target!r}; choose one of {names}.")


def score_target(entry: ModelEntry, label: SegmentLabel, region: np.ndarray | None = None) -> ScoreTarget:
    """The :class:`ScoreTarget` of ``label`` (classification: its logit; segmentation: its region score)."""
    return ScoreTarget(channel=entry.channel_of(label.value), region=region, name=label.name)
