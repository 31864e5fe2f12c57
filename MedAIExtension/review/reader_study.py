"""Blinded reader study (visual Turing test) of synthetic images: trial order, per-reader statistics, agreement.

Pure logic on plain values; sessions and answers are stored elsewhere. A trial is ``(image_id, is_synthetic)``.

Statistics of one reader (:func:`reader_statistics`):

- accuracy, sensitivity (synthetic images called synthetic) and specificity (real images called real);
- an exact binomial test of the accuracy against 50 % (:func:`scipy.stats.binomtest`), two-sided and one-sided
  "greater"; the verdict "indistinguishable" means the one-sided test does not reject 50 % at ``alpha``;
- a 95 % confidence interval of the accuracy: Wilson score interval by default (no continuity correction), or
  the exact Clopper-Pearson interval;
- an ROC curve from a 10-level "synthetic-ness" rating that combines the answer with its confidence
  (answer real with confidence c -> ``6 - c`` in 1..5; answer synthetic with confidence c -> ``5 + c`` in
  6..10), and its area by the trapezoidal rule (with ties this equals the Mann-Whitney U statistic / (n1 n0)).

Answers pooled over several readers are not independent; use :func:`per_reader_statistics` for the per-reader
tests and :func:`agreement` for Cohen's (pairwise) and Fleiss' (all readers) kappa.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

from MedAIExtension.errors import InputError

__all__ = [
    "RATING_LEVELS",
    "AgreementStats",
    "CIMethod",
    "PairAgreement",
    "ReaderAnswer",
    "ReaderStats",
    "agreement",
    "balanced_sequence",
    "per_reader_statistics",
    "rating_score",
    "reader_statistics",
]

#: Number of levels of the combined answer-and-confidence rating.
RATING_LEVELS = 10


class CIMethod(StrEnum):
    """Confidence interval of a binomial proportion."""

    WILSON = "wilson"
    CLOPPER_PEARSON = "clopper-pearson"


# ---- trial order ----------------------------------------------------------------------------------------------
def _ids(values: Iterable[int], what: str) -> list[int]:
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise InputError(f"{what} image ids must be integers, got {value!r}; pass the database ids of the images.")
        out.append(int(value))
    if len(set(out)) != len(out):
        raise InputError(f"{what} image ids contain duplicates; list each image once.")
    return out


def balanced_sequence(
    real_ids: Iterable[int],
    synthetic_ids: Iterable[int],
    n_per_class: int | None = None,
    *,
    seed: int,
) -> list[tuple[int, bool]]:
    """A randomised, balanced sequence of trials for a blinded reader study.

    ``n_per_class`` images are drawn without replacement from each class and the ``2 n`` trials are put in a
    uniformly random order (every arrangement of the classes equally likely). Runs of one class are therefore
    exactly as long as chance makes them, with no pattern a reader could learn: the longest run in a sequence of
    ``2 n`` trials is typically about ``log2(2 n)`` (e.g. 5-7 for 100 trials). Runs are deliberately not capped:
    a cap would make the next answer predictable after a long run.

    Args:
        real_ids: ids of the real images.
        synthetic_ids: ids of the synthetic images (disjoint from ``real_ids``).
        n_per_class: trials per class; default the size of the smaller class.
        seed: seed of the draw and of the order; the same inputs and seed give the same sequence.

    Returns:
        ``[(image_id, is_synthetic), ...]`` with ``n_per_class`` trials of each class.

    Raises:
        InputError: if a class is empty, ids repeat or appear in both classes, or ``n_per_class`` exceeds what
            a class holds.
    """
    real = _ids(real_ids, "Real")
    synthetic = _ids(synthetic_ids, "Synthetic")
    if not real or not synthetic:
        empty = "real" if not real else "synthetic"
        raise InputError(
            f"A reader study needs both real and synthetic images, but the {empty} set is empty; "
            f"import {empty} images into the project first."
        )
    both = sorted(set(real) & set(synthetic))
    if both:
        raise InputError(f"Image ids {both[:5]} are listed as both real and synthetic; give each image one class.")
    available = min(len(real), len(synthetic))
    if n_per_class is None:
        n_per_class = available
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int | np.integer) or n_per_class < 1:
        raise InputError(f"n_per_class must be a positive integer, got {n_per_class!r}.")
    if n_per_class > available:
        raise InputError(
            f"n_per_class={n_per_class} exceeds the images available: {len(real)} real and {len(synthetic)} "
            f"synthetic; use at most {available} per class or import more images."
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InputError(f"seed must be an integer, got {seed!r}.")
    rng = np.random.default_rng(int(seed))
    picked_real = rng.choice(np.array(real), size=int(n_per_class), replace=False)
    picked_synthetic = rng.choice(np.array(synthetic), size=int(n_per_class), replace=False)
    trials = [(int(i), False) for i in picked_real] + [(int(i), True) for i in picked_synthetic]
    order = rng.permutation(len(trials))
    return [trials[n] for n in order]


# ---- one reader ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReaderAnswer:
    """One answer of a reader in a blinded session.

    Attributes:
        image_id: the image shown.
        is_synthetic: the truth (hidden from the reader).
        said_synthetic: the reader's answer.
        confidence: 1 (guess) .. 5 (certain).
    """

    image_id: int
    is_synthetic: bool
    said_synthetic: bool
    confidence: int

    def __post_init__(self) -> None:
        if isinstance(self.image_id, bool) or not isinstance(self.image_id, int | np.integer):
            raise InputError(f"ReaderAnswer image_id must be an integer, got {self.image_id!r}.")
        object.__setattr__(self, "image_id", int(self.image_id))
        for name in ("is_synthetic", "said_synthetic"):
            value = getattr(self, name)
            if not isinstance(value, bool | np.bool_):
                raise InputError(f"ReaderAnswer {name} must be True or False, got {value!r}.")
            object.__setattr__(self, name, bool(value))
        confidence = self.confidence
        if isinstance(confidence, bool) or not isinstance(confidence, int | np.integer) or not 1 <= confidence <= 5:
            raise InputError(f"Confidence must be an integer from 1 (guess) to 5 (certain), got {confidence!r}.")
        object.__setattr__(self, "confidence", int(confidence))

    @property
    def correct(self) -> bool:
        """Whether the answer matches the truth."""
        return self.is_synthetic == self.said_synthetic


def rating_score(answer: ReaderAnswer) -> int:
    """The 10-level synthetic-ness rating: 1 = certainly real ... 5, 6 ... 10 = certainly synthetic."""
    return 5 + answer.confidence if answer.said_synthetic else 6 - answer.confidence


@dataclass(frozen=True)
class ReaderStats:
    """Statistics of a set of answers (one reader, or answers pooled over readers).

    Attributes:
        n: number of answers; ``n_synthetic`` and ``n_real`` per class; ``n_correct`` right answers.
        accuracy: fraction of right answers.
        sensitivity: synthetic images called synthetic / synthetic images (None without synthetic answers).
        specificity: real images called real / real images (None without real answers).
        p_two_sided: exact binomial test of accuracy = 50 %, two-sided.
        p_greater: the same test, one-sided (accuracy > 50 %).
        ci_low, ci_high: confidence interval of the accuracy; ``ci_method`` says which, ``confidence`` its level.
        roc_fpr, roc_tpr: the ROC curve of the rating (synthetic = positive), from (0, 0) to (1, 1).
        roc_thresholds: rating thresholds of the inner points (a point counts ratings >= threshold as synthetic).
        auc: trapezoidal area under the ROC curve (None unless both classes were answered).
        alpha: significance level of the verdict.
        indistinguishable: accuracy not significantly above 50 % (one-sided test, ``p_greater >= alpha``).
        verdict: the conclusion in words.
    """

    n: int
    n_synthetic: int
    n_real: int
    n_correct: int
    accuracy: float
    sensitivity: float | None
    specificity: float | None
    p_two_sided: float
    p_greater: float
    ci_low: float
    ci_high: float
    ci_method: str
    confidence: float
    roc_fpr: tuple[float, ...]
    roc_tpr: tuple[float, ...]
    roc_thresholds: tuple[int, ...]
    auc: float | None
    alpha: float
    indistinguishable: bool
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _roc(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical ROC: one point per distinct score (descending), with (0, 0) first and (1, 1) last."""
    thresholds = np.unique(scores)[::-1]
    n_pos = int(positive.sum())
    n_neg = int(positive.size - n_pos)
    tpr = [0.0] + [float(np.count_nonzero(positive & (scores >= t))) / n_pos for t in thresholds]
    fpr = [0.0] + [float(np.count_nonzero(~positive & (scores >= t))) / n_neg for t in thresholds]
    return np.array(fpr), np.array(tpr), thresholds


def reader_statistics(
    answers: Sequence[ReaderAnswer],
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    ci_method: CIMethod | str = CIMethod.WILSON,
) -> ReaderStats:
    """Accuracy, sensitivity, specificity, binomial test against 50 %, CI and ROC of a set of answers.

    Args:
        answers: the answers (normally one reader's).
        alpha: significance level of the verdict.
        confidence: level of the accuracy interval.
        ci_method: ``"wilson"`` (score interval, default) or ``"clopper-pearson"`` (exact).

    Returns:
        The statistics; see :class:`ReaderStats`.

    Raises:
        InputError: without answers, with an object that is not a :class:`ReaderAnswer`, or a bad option.
    """
    answers = list(answers)
    if not answers:
        raise InputError("No answers to analyse; let the reader finish at least one trial of the session.")
    if not all(isinstance(a, ReaderAnswer) for a in answers):
        raise InputError("reader_statistics takes ReaderAnswer objects; convert stored rows with ReaderAnswer(...).")
    if not 0.0 < alpha < 1.0 or not 0.0 < confidence < 1.0:
        raise InputError(f"alpha and confidence must lie in (0, 1), got {alpha!r} and {confidence!r}.")
    try:
        method = CIMethod(ci_method)
    except ValueError:
        raise InputError(f"ci_method {ci_method!r} is not 'wilson' or 'clopper-pearson'.") from None
    truth = np.array([a.is_synthetic for a in answers])
    said = np.array([a.said_synthetic for a in answers])
    n = len(answers)
    n_syn = int(truth.sum())
    n_real = n - n_syn
    n_correct = int(np.count_nonzero(truth == said))
    two_sided = stats.binomtest(n_correct, n, 0.5, alternative="two-sided")
    greater = stats.binomtest(n_correct, n, 0.5, alternative="greater")
    interval = two_sided.proportion_ci(confidence, method="wilson" if method is CIMethod.WILSON else "exact")
    sensitivity = float(np.count_nonzero(truth & said)) / n_syn if n_syn else None
    specificity = float(np.count_nonzero(~truth & ~said)) / n_real if n_real else None
    fpr = tpr = np.zeros(0)
    thresholds = np.zeros(0, dtype=int)
    auc = None
    if n_syn and n_real:
        scores = np.array([rating_score(a) for a in answers])
        fpr, tpr, thresholds = _roc(scores, truth)
        auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    accuracy = n_correct / n
    indistinguishable = bool(greater.pvalue >= alpha)
    if indistinguishable:
        verdict = (
            f"Indistinguishable: accuracy {accuracy:.1%} ({n_correct}/{n}) is not significantly above 50 % "
            f"(one-sided binomial p = {greater.pvalue:.3g} >= {alpha:g})."
        )
    else:
        verdict = (
            f"Distinguishable: accuracy {accuracy:.1%} ({n_correct}/{n}) is significantly above 50 % "
            f"(one-sided binomial p = {greater.pvalue:.3g} < {alpha:g}); readers can tell synthetic from real."
        )
    return ReaderStats(
        n=n,
        n_synthetic=n_syn,
        n_real=n_real,
        n_correct=n_correct,
        accuracy=accuracy,
        sensitivity=sensitivity,
        specificity=specificity,
        p_two_sided=float(two_sided.pvalue),
        p_greater=float(greater.pvalue),
        ci_low=float(interval.low),
        ci_high=float(interval.high),
        ci_method=method.value,
        confidence=float(confidence),
        roc_fpr=tuple(float(v) for v in fpr),
        roc_tpr=tuple(float(v) for v in tpr),
        roc_thresholds=tuple(int(v) for v in thresholds),
        auc=auc,
        alpha=float(alpha),
        indistinguishable=indistinguishable,
        verdict=verdict,
    )


def per_reader_statistics(
    answers_by_reader: Mapping[str, Sequence[ReaderAnswer]], **options: Any
) -> dict[str, ReaderStats]:
    """:func:`reader_statistics` of each reader (same options for all)."""
    return {reader: reader_statistics(answers, **options) for reader, answers in answers_by_reader.items()}


# ---- agreement between readers ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairAgreement:
    """Cohen's kappa of two readers on the images both read.

    Attributes:
        reader_a, reader_b: the readers.
        n_common: images both read.
        observed_agreement: fraction of those images with the same answer (None without common images).
        kappa: Cohen's kappa of the real/synthetic answers; None when undefined (no common image, or both
            readers gave one and the same answer to every image, so chance agreement is 1).
    """

    reader_a: str
    reader_b: str
    n_common: int
    observed_agreement: float | None
    kappa: float | None


@dataclass(frozen=True)
class AgreementStats:
    """Inter-reader agreement on the real/synthetic answers.

    Attributes:
        pairs: Cohen's kappa for every pair of readers.
        mean_cohen_kappa: mean of the defined pairwise kappas (None if none is defined).
        fleiss_kappa: Fleiss' kappa over all readers on the images every reader read (None when undefined).
        fleiss_n_images: how many images that is.
        n_readers: readers analysed.
        notes: what was left out and why, in words.
    """

    pairs: tuple[PairAgreement, ...]
    mean_cohen_kappa: float | None
    fleiss_kappa: float | None
    fleiss_n_images: int
    n_readers: int
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        out = asdict(self)
        out["pairs"] = [asdict(p) for p in self.pairs]
        out["notes"] = list(self.notes)
        return out


def _answers_by_image(reader: str, answers: Sequence[ReaderAnswer]) -> dict[int, bool]:
    out: dict[int, bool] = {}
    for answer in answers:
        if not isinstance(answer, ReaderAnswer):
            raise InputError(f"Reader {reader!r}: answers must be ReaderAnswer objects, got {type(answer).__name__}.")
        if answer.image_id in out:
            raise InputError(
                f"Reader {reader!r} answered image {answer.image_id} twice; keep one answer per image and reader "
                "(the first answer of a blinded session)."
            )
        out[answer.image_id] = answer.said_synthetic
    return out


def _cohen(a: np.ndarray, b: np.ndarray) -> tuple[float, float | None]:
    observed = float(np.mean(a == b))
    p_a, p_b = float(a.mean()), float(b.mean())
    expected = p_a * p_b + (1.0 - p_a) * (1.0 - p_b)
    if math.isclose(expected, 1.0):
        return observed, None
    return observed, (observed - expected) / (1.0 - expected)


def _fleiss(counts: np.ndarray) -> float | None:
    """Fleiss' kappa of an N x categories table of rater counts (same number of raters per row)."""
    raters = counts.sum(axis=1)[0]
    p_j = counts.sum(axis=0) / counts.sum()
    p_i = (np.sum(counts * counts, axis=1) - raters) / (raters * (raters - 1))
    expected = float(np.sum(p_j * p_j))
    if math.isclose(expected, 1.0):
        return None
    return (float(p_i.mean()) - expected) / (1.0 - expected)


def agreement(answers_by_reader: Mapping[str, Sequence[ReaderAnswer]]) -> AgreementStats:
    """Cohen's kappa for each pair of readers and Fleiss' kappa over all readers.

    Each pair is compared on the images both read; Fleiss' kappa uses the images every reader read. Images
    read by only some readers, pairs without common images and undefined kappas are reported in ``notes``.

    Args:
        answers_by_reader: each reader's answers (reader name -> answers, one per image).

    Returns:
        The agreement statistics.

    Raises:
        InputError: with fewer than two readers, a reader who answered an image twice, or readers who disagree
            on the truth of an image (the answers come from different projects).
    """
    if len(answers_by_reader) < 2:
        raise InputError(
            f"Agreement needs at least two readers, got {len(answers_by_reader)}; let a second reader take the "
            "blinded session."
        )
    readers = sorted(answers_by_reader)
    said = {r: _answers_by_image(r, answers_by_reader[r]) for r in readers}
    truth: dict[int, bool] = {}
    for reader in readers:
        for answer in answers_by_reader[reader]:
            if truth.setdefault(answer.image_id, answer.is_synthetic) != answer.is_synthetic:
                raise InputError(
                    f"Image {answer.image_id} is synthetic for one reader and real for another; the answers "
                    "come from different projects. Analyse one project's answers at a time."
                )
    notes: list[str] = []
    pairs = []
    for a, b in combinations(readers, 2):
        common = sorted(set(said[a]) & set(said[b]))
        if not common:
            notes.append(f"Readers {a!r} and {b!r} read no image in common; no Cohen's kappa for them.")
            pairs.append(PairAgreement(a, b, 0, None, None))
            continue
        observed, kappa = _cohen(np.array([said[a][i] for i in common]), np.array([said[b][i] for i in common]))
        if kappa is None:
            notes.append(
                f"Readers {a!r} and {b!r} gave the same single answer to all {len(common)} common images; "
                "Cohen's kappa is undefined (chance agreement is 1)."
            )
        pairs.append(PairAgreement(a, b, len(common), observed, kappa))
    kappas = [p.kappa for p in pairs if p.kappa is not None]
    all_read = sorted(set.intersection(*(set(said[r]) for r in readers)))
    any_read = set().union(*(set(said[r]) for r in readers))
    fleiss = None
    if not all_read:
        notes.append(f"No image was read by all {len(readers)} readers; no Fleiss' kappa.")
    else:
        if len(any_read) > len(all_read):
            notes.append(
                f"Fleiss' kappa uses the {len(all_read)} images all {len(readers)} readers read; "
                f"{len(any_read) - len(all_read)} images read by only some readers were left out."
            )
        synthetic_votes = np.array([sum(said[r][i] for r in readers) for i in all_read], dtype=float)
        counts = np.stack([len(readers) - synthetic_votes, synthetic_votes], axis=1)
        fleiss = _fleiss(counts)
        if fleiss is None:
            notes.append("All readers gave the same answer to every common image; Fleiss' kappa is undefined.")
    return AgreementStats(
        pairs=tuple(pairs),
        mean_cohen_kappa=float(np.mean(kappas)) if kappas else None,
        fleiss_kappa=fleiss,
        fleiss_n_images=len(all_read),
        n_readers=len(readers),
        notes=tuple(notes),
    )
