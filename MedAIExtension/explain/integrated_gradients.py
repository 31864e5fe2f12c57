"""Integrated gradients (Sundararajan et al., ICML 2017) of a score, with captum.

The attribution of voxel ``i`` is ``(x_i - b_i) ∫₀¹ ∂S(b + a (x - b)) / ∂x_i da``, integrated numerically
(Gauss-Legendre, ``steps`` points) by ``captum.attr.IntegratedGradients``. Attributions add up to
``S(x) - S(b)`` (completeness); the *convergence delta* is how far the numerical integral misses that sum, and is
reported so a too-small ``steps`` is visible. Unlike Grad-CAM the map is signed: positive voxels raise the score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.explain.torch_model import as_torch_module, prepared_module, to_input_tensor
from MedAIExtension.explain.types import ScoreTarget
from MedAIExtension.models.devices import Device
from MedAIExtension.progress import Progress

if TYPE_CHECKING:
    import torch

__all__ = ["IntegratedGradientsResult", "integrated_gradients"]

#: Relative convergence error above which a note suggests more steps.
DELTA_WARNING = 0.05


@dataclass(frozen=True, eq=False)
class IntegratedGradientsResult:
    """Integrated-gradients map on the network input grid.

    Attributes:
        map: float32 array ``S``, attribution summed over input channels (signed, in score units).
        delta: convergence delta, ``Σ map - (S(x) - S(baseline))``.
        score: ``S(x)``, the explained score of the input.
        baseline_score: ``S(baseline)``.
        baseline: the constant baseline intensity (network input units).
        steps: number of integration points.
        notes: plain-language remarks for the report.
    """

    map: np.ndarray
    delta: float
    score: float
    baseline_score: float
    baseline: float
    steps: int
    notes: list[str] = field(default_factory=list)

    @property
    def relative_delta(self) -> float:
        """``|delta|`` relative to the score difference it should explain."""
        return abs(self.delta) / max(abs(self.score - self.baseline_score), 1e-8)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (without the map itself)."""
        return {
            "method": "ig",
            "baseline": self.baseline,
            "steps": self.steps,
            "score": self.score,
            "baseline_score": self.baseline_score,
            "convergence_delta": self.delta,
            "relative_convergence_delta": self.relative_delta,
            "notes": list(self.notes),
        }


def integrated_gradients(
    module: torch.nn.Module,
    x: np.ndarray,
    target: ScoreTarget,
    baseline: float = 0.0,
    steps: int = 32,
    batch_size: int = 8,
    device: str | Device | None = None,
    progress: Progress | Callable[[float, str], None] | None = None,
) -> IntegratedGradientsResult:
    """Integrated gradients of ``target``'s score from a constant ``baseline`` image to ``x``.

    Args:
        module: torch model (``nn.Module``, ScriptModule or TorchBackend); any TorchScript forward works.
        x: network input ``(1, C, *S)`` float32, normalised the way the model expects.
        target: the explained score.
        baseline: constant input value of the reference image (0 = air for CT scaled -1000..400 HU → 0..1).
        steps: integration points (more = smaller convergence delta, slower).
        batch_size: inputs per forward/backward pass (lower it when memory is short).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (the module is moved there); None keeps it where it is.
        progress: progress callback / :class:`~MedAIExtension.progress.Progress` (checked for cancellation).

    Returns:
        An :class:`IntegratedGradientsResult` whose ``map`` has shape ``S``.
    """
    import torch
    from captum.attr import IntegratedGradients

    if steps < 2 or batch_size < 1:
        raise InputError(f"Integrated gradients needs steps ≥ 2 and batch_size ≥ 1 (got {steps}, {batch_size}).")
    report = Progress.of(progress)
    module = as_torch_module(module)
    report(0.0, "Integrated gradients")
    with prepared_module(module, device) as torch_dev:
        tensor = to_input_tensor(x, torch_dev)

        def forward(inputs: Any) -> Any:
            report.check()
            output = module(inputs)
            if isinstance(output, (tuple, list)):
                output = output[0]
            return target.score(output)

        method = IntegratedGradients(forward)
        attribution, delta = method.attribute(
            tensor,
            baselines=float(baseline),
            n_steps=int(steps),
            internal_batch_size=int(batch_size),
            return_convergence_delta=True,
        )
        with torch.no_grad():
            scores = forward(torch.cat([tensor, torch.full_like(tensor, float(baseline))]))
        values = attribution.detach()[0].sum(dim=0).float().cpu().numpy()
    result = IntegratedGradientsResult(
        map=values.astype(np.float32),
        delta=float(delta.detach().sum()),
        score=float(scores[0]),
        baseline_score=float(scores[1]),
        baseline=float(baseline),
        steps=int(steps),
    )
    if result.relative_delta > DELTA_WARNING:
        result.notes.append(
            f"The attributions miss the score change by {100 * result.relative_delta:.0f} % (convergence delta "
            f"{result.delta:.3g}); run again with more steps (now {steps}) for a more exact map."
        )
    if not np.any(values):
        result.notes.append("The map is all zeros: the score does not change between the baseline and this input.")
    report(1.0, "Integrated gradients done")
    return result
