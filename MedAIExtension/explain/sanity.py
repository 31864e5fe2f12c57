"""Sanity checks reported next to every explanation map, with a verdict in plain words.

- **Model-parameter randomisation** (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): the
  learned weights are replaced by random ones layer by layer, cascading from the output layer down to the input,
  and the map is recomputed each time. A map that reflects what the model learned must change; one that stays the
  same only shows image structure (edges), like Guided Backprop in the paper. Similarity is the Spearman rank
  correlation of the absolute maps and the SSIM of the max-scaled absolute maps, as in the paper.
- **Deletion / insertion** (Petsiuk et al., "RISE", BMVC 2018): voxels are removed from the image (set to a
  baseline) in the order of the map, most important first, and the target probability is recorded; a faithful map
  makes it drop fast (low deletion AUC). Insertion starts from the baseline image and restores voxels in the same
  order (high AUC = faithful). Only the map's ranking is used. Both are compared with a random order, so the
  report can say how much better than chance the map is.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from MedAIExtension.errors import InputError, ModelError
from MedAIExtension.explain.torch_model import type_name
from MedAIExtension.explain.types import ScoreTarget
from MedAIExtension.progress import Progress

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_RANDOMISATION_THRESHOLD",
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


@dataclass(frozen=True)
class RandomisationStep:
    """One step of the cascade: ``layer`` and every layer above it (towards the output) are randomised.

    Attributes:
        layer: name of the layer randomised at this step.
        spearman: rank correlation of ``|map|`` with the trained model's map.
        ssim: structural similarity of the max-scaled ``|map|`` with the trained model's map.
    """

    layer: str
    spearman: float
    ssim: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN → None)."""
        return {"layer": self.layer, "spearman": _finite(self.spearman), "ssim": _finite(self.ssim)}


@dataclass(frozen=True)
class RandomisationResult:
    """Outcome of the cascading model-parameter randomisation test.

    Attributes:
        steps: one entry per cascade step, from the output layer down to the input layer.
        threshold: ``passed`` needs the final rank correlation below this.
        passed: the map changes once the whole model is randomised.
        summary: the verdict in words for the report.
    """

    steps: list[RandomisationStep]
    threshold: float
    passed: bool
    summary: str
    notes: list[str] = field(default_factory=list)

    @property
    def final_spearman(self) -> float:
        """Rank correlation after the whole cascade."""
        return self.steps[-1].spearman if self.steps else 1.0

    @property
    def final_ssim(self) -> float:
        """SSIM after the whole cascade."""
        return self.steps[-1].ssim if self.steps else 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the explanation report."""
        return {
            "test": "model_parameter_randomisation",
            "reference": "Adebayo et al., NeurIPS 2018 (cascading randomisation from the output layer)",
            "metric": "Spearman rank correlation of |map| (SSIM also reported)",
            "threshold": self.threshold,
            "passed": self.passed,
            "final_spearman": _finite(self.final_spearman),
            "final_ssim": _finite(self.final_ssim),
            "steps": [step.to_dict() for step in self.steps],
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
        threshold: ``passed`` needs the rank correlation after the full cascade below this.
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
        spearman, ssim = map_similarity(reference, current)
        steps.append(RandomisationStep(lowest, spearman, ssim))
    if np.ptp(reference) == 0:
        notes.append("The trained model's map is empty (constant), so there is nothing to compare.")
        passed = False
    else:
        passed = steps[-1].spearman < threshold
    summary = _randomisation_summary(steps, threshold, passed, bool(notes), len(groups))
    report(1.0, "Randomisation test done")
    return RandomisationResult(steps, float(threshold), passed, summary, notes)


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` in ``parts`` consecutive chunks of nearly equal length (the first ones one longer)."""
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


def _randomisation_summary(
    steps: list[RandomisationStep], threshold: float, passed: bool, empty: bool, layer_count: int
) -> str:
    last = steps[-1]
    ssim = f", structural similarity {last.ssim:.2f}" if math.isfinite(last.ssim) else ""
    layers = f"all {layer_count} layers" if layer_count > 1 else "the model's layer"
    if empty:
        return (
            "Not checked: the map of the trained model is empty, so there is nothing to compare. "
            "Do not read anything into it."
        )
    if passed:
        return (
            "Passed: the map changes when the model's learned weights are scrambled "
            f"(similarity {last.spearman:.2f} after scrambling {layers}{ssim}; below {threshold:.2f} passes) "
            "→ it reflects what the model learned."
        )
    return (
        "Failed: the map stays the same with a scrambled model "
        f"(similarity {last.spearman:.2f} after scrambling {layers}{ssim}; below {threshold:.2f} would pass) "
        "— it shows image structure, not the model's reasoning; do not rely on it."
    )


# --------------------------------------------------------------------------------------- deletion/insertion


@dataclass(frozen=True)
class FaithfulnessResult:
    """Deletion and insertion curves of a map and of a random voxel order.

    Attributes:
        fractions: fraction of voxels removed (deletion) or restored (insertion) at each step, 0 … 1.
        deletion: target probability as the map's most important voxels are removed.
        insertion: target probability as they are restored into the baseline image.
        random_deletion: the same for a random order.
        random_insertion: the same for a random order.
        original: probability for the unchanged input.
        report_fraction: the fraction quoted in the summary (a curve point).
        target_name: the explained label.
        region: the score is a mean over a region (segmentation models).
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    random_deletion: np.ndarray
    random_insertion: np.ndarray
    original: float
    report_fraction: float
    target_name: str
    region: bool = False

    @property
    def summary(self) -> str:
        """The verdict in words for the report, with the probabilities at :attr:`report_fraction`."""
        return _faithfulness_summary(self)

    @property
    def deletion_auc(self) -> float:
        """Area under the deletion curve (lower = more faithful)."""
        return _auc(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> float:
        """Area under the insertion curve (higher = more faithful)."""
        return _auc(self.fractions, self.insertion)

    @property
    def random_deletion_auc(self) -> float:
        """Deletion AUC of a random order (chance level)."""
        return _auc(self.fractions, self.random_deletion)

    @property
    def random_insertion_auc(self) -> float:
        """Insertion AUC of a random order (chance level)."""
        return _auc(self.fractions, self.random_insertion)

    @property
    def faithful(self) -> bool:
        """The map beats a random order on both curves."""
        return self.deletion_auc < self.random_deletion_auc and self.insertion_auc > self.random_insertion_auc

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the explanation report."""
        return {
            "test": "deletion_insertion",
            "reference": "Petsiuk et al., RISE, BMVC 2018",
            "target": self.target_name,
            "original_probability": self.original,
            "deletion_auc": self.deletion_auc,
            "random_deletion_auc": self.random_deletion_auc,
            "insertion_auc": self.insertion_auc,
            "random_insertion_auc": self.random_insertion_auc,
            "faithful": self.faithful,
            "fractions": [float(v) for v in self.fractions],
            "deletion": [float(v) for v in self.deletion],
            "insertion": [float(v) for v in self.insertion],
            "random_deletion": [float(v) for v in self.random_deletion],
            "random_insertion": [float(v) for v in self.random_insertion],
            "summary": self.summary,
        }


def _auc(fractions: np.ndarray, values: np.ndarray) -> float:
    return float(np.sum((values[1:] + values[:-1]) * np.diff(fractions)) / 2.0)


def _baseline_image(x: np.ndarray, baseline: float | str, blur_sigma: float) -> np.ndarray:
    if isinstance(baseline, str):
        if baseline.strip().lower() not in ("blur", "blurred"):
            raise InputError(f"Unknown deletion baseline {baseline!r}; use a number (e.g. 0) or 'blur'.")
        from scipy.ndimage import gaussian_filter

        sigma = (0.0, 0.0) + (float(blur_sigma),) * (x.ndim - 2)
        return gaussian_filter(x, sigma=sigma, mode="nearest").astype(np.float32)
    return np.full_like(x, float(baseline), dtype=np.float32)


def deletion_insertion(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    saliency: np.ndarray,
    target: ScoreTarget,
    *,
    steps: int = 20,
    baseline: float | str = 0.0,
    blur_sigma: float = 3.0,
    batch_size: int = 8,
    seed: int = 0,
    report_fraction: float | None = None,
    progress: ProgressArg = None,
) -> FaithfulnessResult:
    """Deletion and insertion curves (and their AUCs) of ``saliency``, each against a random voxel order.

    Args:
        predict: maps a float32 batch ``(N, C, *S)`` to network outputs ``(N, L, ...)`` — any backend
            (``backend.predict`` of ONNX Runtime or torch).
        x: network input ``(1, C, *S)``.
        saliency: the map ``S``; only its ranking is used (highest first; ties in random, seeded order).
        target: the explained output; its probability (softmax/sigmoid, mean over the region) is tracked.
        steps: curve points after the start (the fraction changes by ``1/steps`` per point).
        baseline: value of removed voxels in network-input units (0 = air for CT scaled -1000..400 HU → 0..1),
            or ``"blur"`` for a Gaussian-blurred copy of the input (Petsiuk et al.'s insertion start).
        blur_sigma: Gaussian sigma (voxels) of the ``"blur"`` baseline.
        batch_size: images per ``predict`` call.
        seed: seed of the random order and of the tie-breaking.
        report_fraction: fraction of voxels quoted in the summary; None (default) quotes the step within the
            first half where the map's order beats a random order most (10 % when it never does).
        progress: progress callback / :class:`~MedAIExtension.progress.Progress` (checked for cancellation).

    Returns:
        A :class:`FaithfulnessResult`.
    """
    report = _progress(progress)
    x = np.asarray(x, dtype=np.float32)
    saliency = np.asarray(saliency, dtype=np.float64)
    if x.ndim < 3 or x.shape[0] != 1:
        raise InputError(f"deletion/insertion takes one input (1, C, *spatial); got shape {x.shape}.")
    if saliency.shape != x.shape[2:]:
        raise InputError(
            f"The map has shape {saliency.shape} but the input grid is {x.shape[2:]}; compute the map on the "
            "network input grid."
        )
    if steps < 2 or batch_size < 1 or (report_fraction is not None and not 0 < report_fraction <= 1):
        raise InputError("deletion/insertion needs steps ≥ 2, batch_size ≥ 1 and 0 < report_fraction ≤ 1.")
    if not np.isfinite(saliency).all():
        raise InputError("The map contains NaN or infinite values; recompute it before the faithfulness check.")

    rng = np.random.default_rng(seed)
    voxels = saliency.size
    salient_order = np.lexsort((rng.random(voxels), -saliency.ravel()))
    random_order = rng.permutation(voxels)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * voxels).astype(np.int64)
    start = _baseline_image(x, baseline, blur_sigma)[0].reshape(x.shape[1], voxels)
    image = x[0].reshape(x.shape[1], voxels)

    # Each curve point is (deletion?, order, k); the end points are shared by all four curves.
    jobs: list[tuple[bool, np.ndarray, int]] = []
    for deletion in (True, False):
        for order in (salient_order, random_order):
            jobs.extend((deletion, order, int(counts[k])) for k in range(1, steps))

    def render(job: tuple[bool, np.ndarray, int]) -> np.ndarray:
        deletion, order, count = job
        chosen = order[:count]
        if deletion:
            out = image.copy()
            out[:, chosen] = start[:, chosen]
        else:
            out = start.copy()
            out[:, chosen] = image[:, chosen]
        return out.reshape(x.shape[1:])

    inputs: list[Callable[[], np.ndarray]] = [lambda: x[0], lambda: start.reshape(x.shape[1:])]
    inputs += [functools.partial(render, job) for job in jobs]
    probabilities = np.empty(len(inputs), dtype=np.float64)
    for first in range(0, len(inputs), batch_size):
        report(first / len(inputs), "Deletion/insertion curves")
        batch = np.stack([make() for make in inputs[first : first + batch_size]]).astype(np.float32)
        scores = np.asarray(target.score(np.asarray(predict(batch)), activate=True), dtype=np.float64)
        probabilities[first : first + len(batch)] = scores.reshape(-1)
    original, empty = probabilities[0], probabilities[1]
    inner = probabilities[2:].reshape(4, steps - 1)
    deletion_curve = np.concatenate([[original], inner[0], [empty]])
    random_deletion = np.concatenate([[original], inner[1], [empty]])
    insertion_curve = np.concatenate([[empty], inner[2], [original]])
    random_insertion = np.concatenate([[empty], inner[3], [original]])

    name = target.name or f"channel {target.channel}"
    if report_fraction is None:
        # quote the step (within the first half) where the map's order and a random order differ most, so the
        # example sentence shows what the areas under the curves summarise; 10 % when the map does no better
        gaps = np.where((fractions > 0) & (fractions <= 0.5), random_deletion - deletion_curve, -np.inf)
        report_fraction = float(fractions[int(np.argmax(gaps))]) if gaps.max() > 0 else 0.1
    quoted = int(np.argmin(np.abs(fractions - report_fraction)))
    result = FaithfulnessResult(
        fractions=fractions,
        deletion=deletion_curve,
        insertion=insertion_curve,
        random_deletion=random_deletion,
        random_insertion=random_insertion,
        original=float(original),
        report_fraction=float(fractions[quoted]),
        target_name=name,
        region=target.region is not None,
    )
    report(1.0, "Deletion/insertion done")
    return result


def _faithfulness_summary(result: FaithfulnessResult) -> str:
    quoted = int(np.argmin(np.abs(result.fractions - result.report_fraction)))
    percent = f"{100 * result.fractions[quoted]:.0f} %"
    what = f"the {result.target_name} probability"
    if result.region:
        what = f"the mean {result.target_name} probability in the region"
    figures = (
        f"removing the highlighted {percent} of the image changes {what} from {result.original:.2f} to "
        f"{result.deletion[quoted]:.2f}; removing a random {percent} changes it to "
        f"{result.random_deletion[quoted]:.2f}. Deletion AUC {result.deletion_auc:.2f} vs "
        f"{result.random_deletion_auc:.2f} at random (lower is better); insertion AUC "
        f"{result.insertion_auc:.2f} vs {result.random_insertion_auc:.2f} at random (higher is better)."
    )
    if result.faithful:
        return f"Faithful: {figures} The highlighted voxels really drive the prediction."
    return (
        f"Not faithful: {figures} The highlighted voxels matter no more than random ones; "
        "do not read the map as the reason for the prediction."
    )
