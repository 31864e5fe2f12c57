"""3D Grad-CAM and Grad-CAM++ for torch, TorchScript and MONAI-bundle models.

Grad-CAM (Selvaraju et al., ICCV 2017) weights each feature map ``A_k`` of a layer by the spatial mean of the
score's gradient, ``w_k = mean(dS/dA_k)``, and keeps ``ReLU(Σ_k w_k A_k)``. Grad-CAM++ (Chattopadhay et al., WACV
2018) uses pixel-wise weights ``α = g² / (2 g² + Σ A g³)`` (the closed form for an exponential score, ``g = dS/dA``)
and ``w_k = Σ α ReLU(g)``, as in pytorch-grad-cam and ``monai.visualize.GradCAMpp``. MONAI also multiplies the
gradient inside the ReLU by ``exp(S)``; that is one positive factor per map, which the final [0, 1] scaling removes,
and it overflows for region scores of segmentation models (a sum over thousands of voxels), so it is left out.

The map is up-sampled to the input grid (trilinear, ``align_corners=False``, MONAI's default) and scaled to
[0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.errors import ModelError
from MedAIExtension.explain.torch_model import (
    as_torch_module,
    default_target_layer,
    forward_with_activation,
    prepared_module,
    to_input_tensor,
)
from MedAIExtension.explain.types import ScoreTarget
from MedAIExtension.models.devices import Device

if TYPE_CHECKING:
    import torch

__all__ = ["GradCamResult", "grad_cam", "grad_cam_map", "normalise_map"]


@dataclass(frozen=True, eq=False)
class GradCamResult:
    """A Grad-CAM / Grad-CAM++ map on the network input grid and how it was made.

    Attributes:
        map: float32 array ``S`` in [0, 1] (all zeros when nothing in the layer raises the score).
        layer: the layer whose activations were used.
        plus_plus: True for Grad-CAM++.
        score: the explained score (logit or region score) of the input.
        layer_shape: spatial shape of the layer's feature maps (the map's native resolution).
        notes: plain-language remarks for the report (e.g. why a map is empty).
    """

    map: np.ndarray
    layer: str
    plus_plus: bool
    score: float
    layer_shape: tuple[int, ...]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (without the map itself)."""
        return {
            "method": "gradcampp" if self.plus_plus else "gradcam",
            "layer": self.layer,
            "layer_shape": list(self.layer_shape),
            "score": self.score,
            "notes": list(self.notes),
        }


def normalise_map(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """Scale ``values`` linearly to [0, 1]; returns ``(map, constant)`` — a constant map becomes all zeros."""
    values = np.asarray(values, dtype=np.float32)
    low = float(values.min()) if values.size else 0.0
    high = float(values.max()) if values.size else 0.0
    if not np.isfinite(low) or not np.isfinite(high) or high - low <= 1e-12 * max(1.0, abs(high)):
        return np.zeros_like(values, dtype=np.float32), True
    return ((values - low) / (high - low)).astype(np.float32), False


def grad_cam(
    module: torch.nn.Module,
    x: np.ndarray,
    target: ScoreTarget,
    layer: str | None = None,
    plus_plus: bool = False,
    device: str | Device | None = None,
) -> GradCamResult:
    """Grad-CAM (or Grad-CAM++) of ``target``'s score at ``layer``, on the input grid, scaled to [0, 1].

    Args:
        module: torch model (``nn.Module``, ScriptModule whose forward is a chain of layers, or a TorchBackend).
        x: network input ``(1, C, *S)`` float32, already normalised the way the model expects.
        target: the explained score (classification channel, or a label's logits summed over a region).
        layer: target layer (dotted name); None picks :func:`~MedAIExtension.explain.torch_model.
            default_target_layer`.
        plus_plus: Grad-CAM++ weights instead of mean gradients.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (the module is moved there); None keeps it where it is.

    Returns:
        A :class:`GradCamResult` whose ``map`` has shape ``S``.

    Raises:
        ModelError: not a torch model, unknown layer, or a TorchScript forward that is not a chain.
        InputError: wrong input shape or a target channel the model does not have.
    """
    import torch
    import torch.nn.functional as F

    module = as_torch_module(module)
    notes: list[str] = []
    with prepared_module(module, device) as torch_dev:
        tensor = to_input_tensor(x, torch_dev)
        if layer is None:
            layer = default_target_layer(module, tensor)
            notes.append(f"Target layer {layer} chosen automatically (the catalogue names none).")
        activation, output = forward_with_activation(module, tensor.requires_grad_(True), layer)
        score = target.score(output)
        (grad,) = torch.autograd.grad(score.sum(), activation, allow_unused=True)
        if grad is None:  # the score does not depend on this layer (e.g. a side branch)
            grad = torch.zeros_like(activation)
        cam = grad_cam_map(activation.detach(), grad.detach(), plus_plus)
        spatial = tuple(tensor.shape[2:])
        layer_shape = tuple(cam.shape[2:])
        if len(layer_shape) != len(spatial):
            raise _not_spatial(layer, activation.shape)
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
        cam = F.interpolate(cam, size=spatial, mode=mode, align_corners=False)
        values = cam[0, 0].float().cpu().numpy()
        score_value = float(score.detach().sum())
    heat, constant = normalise_map(values)
    if constant:
        notes.append(
            "The map is empty: no feature of layer "
            f"{layer} raises the {target.name or f'channel {target.channel}'} score here, so Grad-CAM highlights "
            "nothing. Try an earlier layer or occlusion sensitivity."
        )
    return GradCamResult(heat, layer, plus_plus, score_value, layer_shape, notes)


def grad_cam_map(activation: Any, grad: Any, plus_plus: bool = False) -> Any:
    """``ReLU(Σ_k w_k A_k)`` at the layer's resolution, ``(N, 1, *s)``, from activations and score gradients."""
    import torch
    import torch.nn.functional as F

    if activation.ndim < 3:
        raise _not_spatial("the target layer", activation.shape)
    reduce_dims = tuple(range(2, activation.ndim))
    if plus_plus:
        grad2 = grad.pow(2)
        denominator = 2 * grad2 + (activation * grad.pow(3)).sum(dim=reduce_dims, keepdim=True)
        denominator = torch.where(denominator != 0.0, denominator, torch.ones_like(denominator))
        alpha = grad2 / (denominator + 1e-7)
        weights = (alpha * F.relu(grad)).sum(dim=reduce_dims, keepdim=True)
    else:
        weights = grad.mean(dim=reduce_dims, keepdim=True)
    return F.relu((weights * activation).sum(dim=1, keepdim=True))


def _not_spatial(layer: str, shape: Any) -> Exception:
    return ModelError(
        f"Layer {layer} outputs shape {tuple(shape)}, which has no spatial axes matching the input; Grad-CAM needs a "
        "convolution layer before global pooling. Pick the last convolution block as the target layer."
    )
