"""Sanity checks reported next to every explanation map, with a verdict in plain words.

- **Model-parameter randomisation** (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): the
  learned weights are replaced by random ones layer by layer, cascading from the output layer down to the input,
  and the map is recomputed each time. A map that reflects what the model learned must change; one that stays the
  same only shows image structure (edges), like Guided Backprop in the paper. Similarity is the Spearman rank
  correlation of the absolute maps and the SSIM of the max-scaled absolute maps, as in the paper.
  A step whose randomised map is empty (constant) gives no evidence either way: it is reported as such and
  never counts towards a pass; the verdict rests on the deepest step with a usable map and names how many steps
  gave one.
- **Deletion / insertion** (Petsiuk et al., "RISE", BMVC 2018): see
  :mod:`MedAIExtension.explain.sanity_faithfulness` (re-exported here).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.errors import InputError, ModelError
from MedAIExtension.explain.sanity_faithfulness import FaithfulnessResult, deletion_insertion
from MedAIExtension.explain.torch_model import type_name
from MedAIExtension.progress import Progress

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_RANDOMISATION_THRESHOLD",
    "EMPTY_STEP_VERDICT",
    "FaithfulnessResult",
    "RandomisationResult",
    "RandomisationStep",
    "deletion_insertion",
    "map_similarity",
    "randomisation_layers",
    "randomisation_test",
]

#: A map passes the randomisation test when the Spearman rank correlation of ``|map|`` between the trained and the
#: fully randomised model is below this. In Adebayo et al.'s cascading test the rank correlation of gradients and
#: Grad-CAM falls towards 0 once the top layers are randomised, while Guided Backprop and Guided Grad-CAM stay high
#: to the end because they mostly reproduce the input's edges; 0.5 lies between the two groups (an edge map that
#: ignores the model scores 1.0; Grad-CAM of the classifier and of the lung U-Net stays well below 0.5 in the tests).
DEFAULT_RANDOMISATION_THRESHOLD = 0.5

#: Layers randomised together with the parameterised layer before them (normalisation and learned activations).
_FOLLOWER_TYPES = frozenset(
    {
        "BatchNorm1d",
        "BatchNorm2d",
        "BatchNorm3d",
        "InstanceNorm1d",
        "InstanceNorm2d",
        "InstanceNorm3d",
        "GroupNorm",
        "LayerNorm",
        "PReLU",
    }
)

ProgressArg = Progress | Callable[[float, str], None] | None


def _progress(progress: ProgressArg) -> Progress:
    return Progress.of(progress)


def _as_map(value: Any) -> np.ndarray:
    """The map of an explainer's return value (an array, or a result object with ``.map``)."""
    return np.asarray(getattr(value, "map", value), dtype=np.float64)


# ------------------------------------------------------------------------------------------------ similarity


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    a_const = bool(np.ptp(a) == 0)
    b_const = bool(np.ptp(b) == 0)
    if a_const or b_const:
        # No ranking to compare: identical constant maps count as the same map, otherwise nothing is shared.
        return 1.0 if a_const and b_const and np.array_equal(a, b) else 0.0
    value = float(spearmanr(a.ravel(), b.ravel()).statistic)
    return 0.0 if math.isnan(value) else value


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    smallest = min(a.shape) if a.ndim else 0
    window = min(7, smallest if smallest % 2 else smallest - 1)
    if window < 3:
        return float("nan")

    def scaled(values: np.ndarray) -> np.ndarray:
        peak = float(values.max())
        return values / peak if peak > 0 else values

    return float(structural_similarity(scaled(a), scaled(b), data_range=1.0, win_size=window))


def map_similarity(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """``(Spearman rank correlation, SSIM)`` of the absolute maps, as in Adebayo et al. (SSIM on max-scaled maps).

    Spearman is 1 for two identical constant maps and 0 when only one of them is constant; SSIM is NaN for maps
    with an axis shorter than 3 voxels.
    """
    a = np.abs(np.asarray(reference, dtype=np.float64))
    b = np.abs(np.asarray(other, dtype=np.float64))
    if a.shape != b.shape:
        raise InputError(f"Maps of different shapes cannot be compared: {a.shape} vs {b.shape}.")
    return _spearman(a, b), _ssim(a, b)


# ------------------------------------------------------------------------------------------- randomisation


#: What a step whose randomised map is empty says (it counts neither for nor against the map).
EMPTY_STEP_VERDICT = "the randomised model's map is empty — no evidence either way"


@dataclass(frozen=True)
class RandomisationStep:
    """One step of the cascade: ``layer`` and every layer above it (towards the output) are randomised.

    Attributes:
        layer: name of the layer randomised at this step.
        spearman: rank correlation of ``|map|`` with the trained model's map (NaN when the map is empty).
        ssim: structural similarity of the max-scaled ``|map|`` with the trained model's map (NaN when empty).
        empty: the randomised model's map is empty (constant), so the step says nothing about the map.
    """

    layer: str
    spearman: float
    ssim: float
    empty: bool = False

    def verdict(self, threshold: float) -> str:
        """What this step shows, in words."""
        if self.empty:
            return EMPTY_STEP_VERDICT
        if self.spearman < threshold:
            return f"the map changes (similarity {self.spearman:.2f})"
        return f"the map stays similar (similarity {self.spearman:.2f})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN → None)."""
        return {
            "layer": self.layer,
            "spearman": _finite(self.spearman),
            "ssim": _finite(self.ssim),
            "usable": not self.empty,
        }


@dataclass(frozen=True)
class RandomisationResult:
    """Outcome of the cascading model-parameter randomisation test.

    Attributes:
        steps: one entry per cascade step, from the output layer down to the input layer.
        threshold: ``passed`` needs the deciding step's rank correlation below this.
        passed: the map changes once the model is randomised, judged on the deepest step with a usable
            (non-empty) map; never true when no step gave one.
        summary: the verdict in words for the report, with its evidence.
        notes: what else the user should know.
        verdict: ``passed``, ``failed``, ``inconclusive`` (no randomised map was usable) or ``not checked``
            (the trained model's map is empty).
    """

    steps: list[RandomisationStep]
    threshold: float
    passed: bool
    summary: str
    notes: list[str] = field(default_factory=list)
    verdict: str = ""

    @property
    def usable_steps(self) -> list[RandomisationStep]:
        """The steps whose randomised map is not empty (the evidence)."""
        return [step for step in self.steps if not step.empty]

    @property
    def deciding_step(self) -> RandomisationStep | None:
        """The deepest step with a usable map (the verdict rests on it); None when there is none."""
        usable = self.usable_steps
        return usable[-1] if usable else None

    @property
    def final_spearman(self) -> float:
        """Rank correlation after the whole cascade (NaN when that map is empty)."""
        return self.steps[-1].spearman if self.steps else 1.0

    @property
    def final_ssim(self) -> float:
        """SSIM after the whole cascade (NaN when that map is empty)."""
        return self.steps[-1].ssim if self.steps else 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the explanation report."""
        deciding = self.deciding_step
        return {
            "test": "model_parameter_randomisation",
            "reference": "Adebayo et al., NeurIPS 2018 (cascading randomisation from the output layer)",
            "metric": "Spearman rank correlation of |map| (SSIM also reported)",
            "threshold": self.threshold,
            "passed": self.passed,
            "verdict": self.verdict,
            "usable_steps": len(self.usable_steps),
            "deciding_layer": deciding.layer if deciding is not None else None,
            "deciding_spearman": _finite(deciding.spearman) if deciding is not None else None,
            "final_spearman": _finite(self.final_spearman),
            "final_ssim": _finite(self.final_ssim),
            "steps": [{**step.to_dict(), "verdict": step.verdict(self.threshold)} for step in self.steps],
            "summary": self.summary,
            "notes": list(self.notes),
        }


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def randomisation_layers(module: Any) -> list[tuple[str, ...]]:
    """The cascade's layer groups in definition (≈ forward) order: each layer with parameters of its own, with
    normalisation layers and learned activations (BatchNorm, PReLU, …) grouped with the layer before them."""
    groups: list[list[str]] = []
    for name, sub in module.named_modules():
        if not name or not any(True for _ in sub.parameters(recurse=False)):
            continue
        if groups and type_name(sub) in _FOLLOWER_TYPES:
            groups[-1].append(name)
        else:
            groups.append([name])
    return [tuple(group) for group in groups]


def _randomise(module: Any, names: Sequence[str], generator: Any) -> int:
    """Re-initialise every parameter under ``names`` in place; returns how many tensors were changed.

    Weights (≥ 2 axes) are drawn like a fresh PyTorch layer, uniform in ±1/√fan_in; vectors (biases, norm scales)
    from a normal distribution with the trained values' mean and spread, so the scale stays plausible while the
    learned values are gone.
    """
    import torch

    changed = 0
    prefixes = tuple(names)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if not any(name == p or name.startswith(f"{p}.") for p in prefixes):
                continue
            if param.ndim >= 2:
                fan_in = max(1, param[0].numel())
                bound = 1.0 / math.sqrt(fan_in)
                values = (torch.rand(param.shape, generator=generator) * 2 - 1) * bound
            else:
                mean = float(param.mean())
                std = float(param.std()) if param.numel() > 1 else 0.0
                std = std if std > 1e-6 else 0.1 * max(abs(mean), 0.1)
                values = mean + std * torch.randn(param.shape, generator=generator)
            param.copy_(values.to(dtype=param.dtype, device=param.device))
            changed += 1
    return changed


def randomisation_test(
    module: torch.nn.Module,
    explain: Callable[[torch.nn.Module], Any],
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    threshold: float = DEFAULT_RANDOMISATION_THRESHOLD,
    max_steps: int | None = None,
    progress: ProgressArg = None,
) -> RandomisationResult:
    """Cascading model-parameter randomisation test of an explanation method.

    Args:
        module: the trained torch model (``nn.Module`` or ScriptModule); it is deep-copied, never changed.
        explain: computes the map for a given model, e.g. ``lambda m: grad_cam(m, x, target, layer).map``
            (a result object with ``.map`` is accepted too).
        layers: layer names (dotted prefixes; all parameters under each are randomised together) in forward
            order; default :func:`randomisation_layers`. The cascade runs from the last to the first.
        seed: seed of the random weights (the test is deterministic).
        threshold: ``passed`` needs the rank correlation of the deepest step with a usable (non-empty) map
            below this; steps whose randomised map is empty count neither way.
        max_steps: at most this many maps are recomputed: consecutive layers are then randomised together in
            (nearly) equal chunks, still from the output down to the input (each step is named after the lowest
            layer it reaches). None = one step per layer (group).
        progress: progress callback / :class:`~MedAIExtension.progress.Progress` (checked for cancellation).

    Returns:
        A :class:`RandomisationResult` with per-step similarities and a plain-language summary.
    """
    import torch

    report = _progress(progress)
    groups = [(name,) for name in layers] if layers is not None else randomisation_layers(module)
    if not groups:
        raise ModelError(
            "The model has no learned parameters to randomise, so the randomisation test cannot run. "
            "Check that the right model was loaded."
        )
    cascade = [[group] for group in reversed(groups)]
    if max_steps is not None:
        if max_steps < 1:
            raise InputError(f"max_steps must be at least 1, got {max_steps}.")
        if len(cascade) > max_steps:
            cascade = [[g for chunk in part for g in chunk] for part in _split(cascade, max_steps)]
    report(0.0, "Randomisation test: map of the trained model")
    reference = _as_map(explain(module))
    scrambled = copy.deepcopy(module)
    steps: list[RandomisationStep] = []
    notes: list[str] = []
    for index, chunk in enumerate(cascade):
        lowest = chunk[-1][0]
        report(index / (len(cascade) + 1), f"Randomisation test: scrambling {lowest} and the layers above it")
        for offset, group in enumerate(chunk):
            generator = torch.Generator().manual_seed(int(seed) * 100_003 + index * 1_000 + offset)
            if _randomise(scrambled, group, generator) == 0:
                raise ModelError(
                    f"Layer {group[0]!r} has no parameters to randomise (or does not exist). "
                    f"Choose layers from: {', '.join(g[0] for g in randomisation_layers(module))}."
                )
        current = _as_map(explain(scrambled))
        if np.ptp(current) == 0:  # no ranking to compare: neither evidence of change nor of sameness
            steps.append(RandomisationStep(lowest, math.nan, math.nan, empty=True))
        else:
            spearman, ssim = map_similarity(reference, current)
            steps.append(RandomisationStep(lowest, spearman, ssim))
    usable = [step for step in steps if not step.empty]
    if np.ptp(reference) == 0:
        notes.append("The trained model's map is empty (constant), so there is nothing to compare.")
        verdict = "not checked"
    elif not usable:
        verdict = "inconclusive"
    else:
        verdict = "passed" if usable[-1].spearman < threshold else "failed"
    summary = _randomisation_summary(steps, threshold, verdict, _layer_counts(cascade))
    report(1.0, "Randomisation test done")
    return RandomisationResult(steps, float(threshold), verdict == "passed", summary, notes, verdict)


def _layer_counts(cascade: list[list[tuple[str, ...]]]) -> list[int]:
    """How many layer groups are scrambled after each step (cumulative)."""
    counts, total = [], 0
    for chunk in cascade:
        total += len(chunk)
        counts.append(total)
    return counts


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` in ``parts`` consecutive chunks of nearly equal length (the first ones one longer)."""
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


def _evidence(steps: list[RandomisationStep]) -> str:
    """Which steps gave a usable map and their similarities, e.g. "3 of 5 steps gave a usable map (...)"."""
    usable = [step for step in steps if not step.empty]
    text = f"Evidence: {len(usable)} of {len(steps)} cascade steps gave a usable map"
    if usable:
        text += " (similarity " + ", ".join(f"{step.layer} {step.spearman:.2f}" for step in usable) + ")"
    empty = [step.layer for step in steps if step.empty]
    if empty:
        text += f"; at {', '.join(empty)} {EMPTY_STEP_VERDICT}"
    return text + "."


def _randomisation_summary(steps: list[RandomisationStep], threshold: float, verdict: str, counts: list[int]) -> str:
    if verdict == "not checked":
        return (
            "Not checked: the map of the trained model is empty, so there is nothing to compare. "
            "Do not read anything into it."
        )
    evidence = _evidence(steps)
    if verdict == "inconclusive":
        return (
            "Inconclusive: at every step the randomised model's map is empty — no evidence either way, so the test "
            f"cannot tell whether the map depends on the learned weights; this is not a pass. {evidence}"
        )
    index = max(i for i, step in enumerate(steps) if not step.empty)
    deciding = steps[index]
    scrambled = counts[index]
    if index == len(steps) - 1:
        layers = f"all {scrambled} layers" if scrambled > 1 else "the model's layer"
    else:
        layers = f"{scrambled} of {counts[-1]} layers, down to {deciding.layer}"
    ssim = f", structural similarity {deciding.ssim:.2f}" if math.isfinite(deciding.ssim) else ""
    figures = f"similarity {deciding.spearman:.2f} after scrambling {layers}{ssim}"
    if verdict == "passed":
        return (
            "Passed: the map changes when the model's learned weights are scrambled "
            f"({figures}; below {threshold:.2f} passes) → it reflects what the model learned. {evidence}"
        )
    return (
        "Failed: the map stays the same with a scrambled model "
        f"({figures}; below {threshold:.2f} would pass) "
        f"— it shows image structure, not the model's reasoning; do not rely on it. {evidence}"
    )
