"""Deletion / insertion faithfulness of an explanation map (Petsiuk et al., "RISE", BMVC 2018), against several
random voxel orders.

Voxels are removed from the image (set to a baseline) in the order of the map, most important first, and the
target probability is recorded; a faithful map makes it drop fast (low deletion AUC). Insertion starts from the
baseline image and restores voxels in the same order (high AUC = faithful). Only the map's ranking is used.

Chance level comes from :data:`DEFAULT_RANDOM_ORDERS` random orders, not one: their AUCs give a mean, a spread
(standard deviation) and a 95 % confidence interval of the mean (mean ± t·sd/√n). The map is called faithful only
when its deletion AUC lies below the interval's lower end, and its insertion AUC above its upper end, by at least
the margin: :data:`DEFAULT_FAITHFULNESS_MARGIN` of the probability the curves span (the unchanged input's minus
the all-baseline input's; an AUC difference is the mean vertical gap between two curves, so the map's order must
keep the probability, on average, that much of its span below the random orders'). Otherwise the verdict is "not
shown to be faithful", with the figures.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.explain.types import ScoreTarget
from MedAIExtension.progress import Progress

__all__ = [
    "DEFAULT_FAITHFULNESS_MARGIN",
    "DEFAULT_RANDOM_ORDERS",
    "FaithfulnessResult",
    "deletion_insertion",
]

#: Random voxel orders that set chance level (each costs ``2 (steps - 1)`` forward passes).
DEFAULT_RANDOM_ORDERS = 5
#: How far the map's AUC must lie beyond the random orders' 95 % confidence interval, as a fraction of the probability
#: span of the curves (|unchanged - all baseline|): 0.05 = on average 5 % of that span better than chance.
DEFAULT_FAITHFULNESS_MARGIN = 0.05


def _auc(fractions: np.ndarray, values: np.ndarray) -> float:
    return float(np.sum((values[1:] + values[:-1]) * np.diff(fractions)) / 2.0)


def _interval(aucs: np.ndarray) -> tuple[float, float]:
    """95 % confidence interval of the mean AUC: mean ± t(0.975, n-1)·sd/√n (the single value for n = 1)."""
    mean = float(np.mean(aucs))
    if aucs.size < 2:
        return mean, mean
    from scipy.stats import t

    half = float(t.ppf(0.975, aucs.size - 1)) * float(np.std(aucs, ddof=1)) / math.sqrt(aucs.size)
    return mean - half, mean + half


@dataclass(frozen=True)
class FaithfulnessResult:
    """Deletion and insertion curves of a map and of several random voxel orders.

    Attributes:
        fractions: fraction of voxels removed (deletion) or restored (insertion) at each step, 0 … 1.
        deletion: target probability as the map's most important voxels are removed.
        insertion: target probability as they are restored into the baseline image.
        random_deletion_curves: the deletion curve of each random order, ``(orders, steps + 1)``.
        random_insertion_curves: the insertion curve of each random order.
        original: probability for the unchanged input.
        report_fraction: the fraction quoted in the summary (a curve point).
        target_name: the explained label.
        region: the score is a mean over a region (segmentation models).
        margin: the map's AUCs must lie this far beyond the random orders' 95 % confidence interval to count as
            faithful, as a fraction of the curves' probability span (:attr:`margin_auc`).
        extent: what the voxels are removed from, for the summary (e.g. "the 32 mm patch").
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    random_deletion_curves: np.ndarray
    random_insertion_curves: np.ndarray
    original: float
    report_fraction: float
    target_name: str
    region: bool = False
    margin: float = DEFAULT_FAITHFULNESS_MARGIN
    extent: str = "the image"

    @property
    def random_orders(self) -> int:
        """How many random orders set chance level."""
        return int(self.random_deletion_curves.shape[0])

    @property
    def random_deletion(self) -> np.ndarray:
        """Mean deletion curve of the random orders."""
        return np.asarray(self.random_deletion_curves.mean(axis=0))

    @property
    def random_insertion(self) -> np.ndarray:
        """Mean insertion curve of the random orders."""
        return np.asarray(self.random_insertion_curves.mean(axis=0))

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
    def random_deletion_aucs(self) -> np.ndarray:
        """Deletion AUC of each random order."""
        return np.array([_auc(self.fractions, curve) for curve in self.random_deletion_curves])

    @property
    def random_insertion_aucs(self) -> np.ndarray:
        """Insertion AUC of each random order."""
        return np.array([_auc(self.fractions, curve) for curve in self.random_insertion_curves])

    @property
    def random_deletion_auc(self) -> float:
        """Mean deletion AUC of the random orders (chance level)."""
        return float(np.mean(self.random_deletion_aucs))

    @property
    def random_insertion_auc(self) -> float:
        """Mean insertion AUC of the random orders (chance level)."""
        return float(np.mean(self.random_insertion_aucs))

    @property
    def random_deletion_sd(self) -> float:
        """Spread (standard deviation) of the random orders' deletion AUCs (0 for one order)."""
        aucs = self.random_deletion_aucs
        return float(np.std(aucs, ddof=1)) if aucs.size > 1 else 0.0

    @property
    def random_deletion_ci(self) -> tuple[float, float]:
        """95 % confidence interval of the random orders' mean deletion AUC."""
        return _interval(self.random_deletion_aucs)

    @property
    def random_insertion_ci(self) -> tuple[float, float]:
        """95 % confidence interval of the random orders' mean insertion AUC."""
        return _interval(self.random_insertion_aucs)

    @property
    def span(self) -> float:
        """Probability span of the curves: unchanged input minus all-baseline input (absolute)."""
        return float(abs(self.deletion[0] - self.deletion[-1]))

    @property
    def margin_auc(self) -> float:
        """The margin in AUC units: :attr:`margin` × :attr:`span`."""
        return self.margin * self.span

    @property
    def deletion_limit(self) -> float:
        """A faithful map's deletion AUC is at most this: the random CI's lower end minus the margin."""
        return self.random_deletion_ci[0] - self.margin_auc

    @property
    def insertion_limit(self) -> float:
        """A faithful map's insertion AUC is at least this: the random CI's upper end plus the margin."""
        return self.random_insertion_ci[1] + self.margin_auc

    @property
    def faithful(self) -> bool:
        """The map beats the random orders' confidence interval by the margin, on both curves (never when the
        curves span no probability at all)."""
        if self.span <= 0:
            return False
        return self.deletion_auc <= self.deletion_limit and self.insertion_auc >= self.insertion_limit

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the explanation report."""
        return {
            "test": "deletion_insertion",
            "reference": "Petsiuk et al., RISE, BMVC 2018",
            "target": self.target_name,
            "extent": self.extent,
            "original_probability": self.original,
            "deletion_auc": self.deletion_auc,
            "random_deletion_auc": self.random_deletion_auc,
            "random_deletion_aucs": [float(v) for v in self.random_deletion_aucs],
            "random_deletion_sd": self.random_deletion_sd,
            "random_deletion_ci95": list(self.random_deletion_ci),
            "insertion_auc": self.insertion_auc,
            "random_insertion_auc": self.random_insertion_auc,
            "random_insertion_aucs": [float(v) for v in self.random_insertion_aucs],
            "random_insertion_ci95": list(self.random_insertion_ci),
            "random_orders": self.random_orders,
            "margin": self.margin,
            "margin_auc": self.margin_auc,
            "deletion_limit": self.deletion_limit,
            "insertion_limit": self.insertion_limit,
            "faithful": self.faithful,
            "fractions": [float(v) for v in self.fractions],
            "deletion": [float(v) for v in self.deletion],
            "insertion": [float(v) for v in self.insertion],
            "random_deletion": [float(v) for v in self.random_deletion],
            "random_insertion": [float(v) for v in self.random_insertion],
            "summary": self.summary,
        }


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
    random_orders: int = DEFAULT_RANDOM_ORDERS,
    margin: float = DEFAULT_FAITHFULNESS_MARGIN,
    extent: str = "the image",
    progress: Progress | Callable[[float, str], None] | None = None,
) -> FaithfulnessResult:
    """Deletion and insertion curves (and their AUCs) of ``saliency``, each against ``random_orders`` random orders.

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
        seed: seed of the random orders and of the tie-breaking.
        report_fraction: fraction of voxels quoted in the summary; None (default) quotes the step within the
            first half where the map's order beats the random orders most (10 % when it never does).
        random_orders: random orders that set chance level (≥ 1; 2 or more give a range).
        margin: how far beyond the random orders' 95 % confidence interval the map's AUCs must lie to be called
            faithful, as a fraction of the curves' probability span.
        extent: what the voxels are removed from, as the summary names it (e.g. ``"the 32 mm patch"``).
        progress: progress callback / :class:`~MedAIExtension.progress.Progress` (checked for cancellation).

    Returns:
        A :class:`FaithfulnessResult`.
    """
    report = Progress.of(progress)
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
    if random_orders < 1 or not math.isfinite(margin) or margin < 0:
        raise InputError(
            f"deletion/insertion needs at least 1 random order and a margin ≥ 0 (got {random_orders}, {margin})."
        )
    if not np.isfinite(saliency).all():
        raise InputError("The map contains NaN or infinite values; recompute it before the faithfulness check.")

    rng = np.random.default_rng(seed)
    voxels = saliency.size
    salient_order = np.lexsort((rng.random(voxels), -saliency.ravel()))
    orders = [salient_order] + [rng.permutation(voxels) for _ in range(random_orders)]
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * voxels).astype(np.int64)
    start = _baseline_image(x, baseline, blur_sigma)[0].reshape(x.shape[1], voxels)
    image = x[0].reshape(x.shape[1], voxels)

    # Each curve point is (deletion?, order, k); the end points are shared by all curves.
    jobs: list[tuple[bool, np.ndarray, int]] = []
    for deletion in (True, False):
        for order in orders:
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
    inner = probabilities[2:].reshape(2, len(orders), steps - 1)
    ends = len(orders)
    deletions = np.concatenate([np.full((ends, 1), original), inner[0], np.full((ends, 1), empty)], axis=1)
    insertions = np.concatenate([np.full((ends, 1), empty), inner[1], np.full((ends, 1), original)], axis=1)

    name = target.name or f"channel {target.channel}"
    if report_fraction is None:
        # quote the step (within the first half) where the map's order and the random orders differ most, so the
        # example sentence shows what the areas under the curves summarise; 10 % when the map does no better
        gaps = np.where((fractions > 0) & (fractions <= 0.5), deletions[1:].mean(axis=0) - deletions[0], -np.inf)
        report_fraction = float(fractions[int(np.argmax(gaps))]) if gaps.max() > 0 else 0.1
    quoted = int(np.argmin(np.abs(fractions - report_fraction)))
    result = FaithfulnessResult(
        fractions=fractions,
        deletion=deletions[0],
        insertion=insertions[0],
        random_deletion_curves=deletions[1:],
        random_insertion_curves=insertions[1:],
        original=float(original),
        report_fraction=float(fractions[quoted]),
        target_name=name,
        region=target.region is not None,
        margin=float(margin),
        extent=extent,
    )
    report(1.0, "Deletion/insertion done")
    return result


def _faithfulness_summary(result: FaithfulnessResult) -> str:
    quoted = int(np.argmin(np.abs(result.fractions - result.report_fraction)))
    percent = f"{100 * result.fractions[quoted]:.0f} %"
    what = f"the {result.target_name} probability"
    if result.region:
        what = f"the mean {result.target_name} probability in the region"
    orders = result.random_orders
    random_words = f"a random {percent} (mean of {orders} random orders)" if orders > 1 else f"a random {percent}"
    del_low, del_high = result.random_deletion_ci
    ins_low, ins_high = result.random_insertion_ci
    spread = f"sd {result.random_deletion_sd:.2f}, 95 % CI {del_low:.2f}–{del_high:.2f}" if orders > 1 else "one order"
    figures = (
        f"removing the highlighted {percent} of {result.extent} changes {what} from {result.original:.2f} to "
        f"{result.deletion[quoted]:.2f}; removing {random_words} changes it to "
        f"{result.random_deletion[quoted]:.2f}. Deletion AUC {result.deletion_auc:.2f} vs "
        f"{result.random_deletion_auc:.2f} at random ({spread}; faithful needs ≤ {result.deletion_limit:.2f}: the "
        f"CI's lower end minus the margin {result.margin_auc:.2f}, {100 * result.margin:.0f} % of the probability "
        f"span {result.span:.2f}); insertion AUC {result.insertion_auc:.2f} vs {result.random_insertion_auc:.2f} at "
        f"random (CI {ins_low:.2f}–{ins_high:.2f}; faithful needs ≥ {result.insertion_limit:.2f})."
    )
    if result.faithful:
        return f"Faithful: {figures} The highlighted voxels drive the prediction more than random ones."
    return (
        f"Not shown to be faithful: {figures} The map's order does not beat random orders by the margin; "
        "do not read the map as the reason for the prediction."
    )
