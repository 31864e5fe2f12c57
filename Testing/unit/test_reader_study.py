"""Reader-study statistics checked against statsmodels, scipy and hand-computed values on worked examples."""

from __future__ import annotations

import json
import math
from itertools import groupby

import numpy as np
import pytest
from scipy import stats

from MedAIExtension.errors import InputError
from MedAIExtension.review.reader_study import (
    ReaderAnswer,
    agreement,
    balanced_sequence,
    per_reader_statistics,
    rating_score,
    reader_statistics,
)

statsmodels = pytest.importorskip("statsmodels")
from statsmodels.stats.inter_rater import aggregate_raters, cohens_kappa, fleiss_kappa  # noqa: E402
from statsmodels.stats.proportion import binom_test, proportion_confint  # noqa: E402

# A worked example: 24 images (12 synthetic), one reader; (truth, answer, confidence).
# Right on 16/24 (accuracy 2/3): 9 of 12 synthetic called synthetic, 7 of 12 real called real.
WORKED = [
    (True, True, 5), (True, True, 4), (True, True, 4), (True, True, 3), (True, True, 3), (True, True, 2),
    (True, True, 2), (True, True, 1), (True, True, 1), (True, False, 1), (True, False, 2), (True, False, 4),
    (False, False, 5), (False, False, 4), (False, False, 3), (False, False, 3), (False, False, 2),
    (False, False, 1), (False, False, 1), (False, True, 1), (False, True, 2), (False, True, 3),
    (False, True, 3), (False, True, 5),
]  # fmt: skip


def _answers(rows, first_id=1):
    return [ReaderAnswer(first_id + n, t, s, c) for n, (t, s, c) in enumerate(rows)]


def _auc_reference(answers):
    """AUC from sklearn if installed, else the Mann-Whitney U identity AUC = U / (n1 n0)."""
    scores = np.array([rating_score(a) for a in answers])
    truth = np.array([a.is_synthetic for a in answers])
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        u = stats.mannwhitneyu(scores[truth], scores[~truth], alternative="two-sided").statistic
        return float(u) / (truth.sum() * (~truth).sum())
    return float(roc_auc_score(truth, scores))


def test_worked_example_matches_statsmodels_and_hand_values():
    answers = _answers(WORKED)
    result = reader_statistics(answers)
    assert (result.n, result.n_synthetic, result.n_real, result.n_correct) == (24, 12, 12, 16)
    assert result.accuracy == pytest.approx(16 / 24)
    assert result.sensitivity == pytest.approx(9 / 12)
    assert result.specificity == pytest.approx(7 / 12)
    # Binomial test against 50 %: statsmodels and the exact tail sum by hand.
    assert result.p_two_sided == pytest.approx(binom_test(16, 24, 0.5, "two-sided"), rel=1e-9)
    assert result.p_greater == pytest.approx(binom_test(16, 24, 0.5, "larger"), rel=1e-9)
    tail = math.fsum(math.comb(24, k) for k in range(16, 25)) / 2**24
    assert result.p_greater == pytest.approx(tail, rel=1e-12)
    assert result.p_two_sided == pytest.approx(2 * tail, rel=1e-12)  # symmetric at p = 0.5
    # Wilson interval (default) and Clopper-Pearson against statsmodels.
    assert result.ci_method == "wilson"
    low, high = proportion_confint(16, 24, alpha=0.05, method="wilson")
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), rel=1e-9)
    exact = reader_statistics(answers, ci_method="clopper-pearson")
    low, high = proportion_confint(16, 24, alpha=0.05, method="beta")
    assert (exact.ci_low, exact.ci_high) == pytest.approx((low, high), rel=1e-7)
    assert exact.ci_high - exact.ci_low > result.ci_high - result.ci_low  # exact interval is the wider one
    # AUC against an independent computation, and the curve itself.
    assert result.auc == pytest.approx(_auc_reference(answers), rel=1e-12)
    assert result.roc_fpr[0] == result.roc_tpr[0] == 0.0
    assert result.roc_fpr[-1] == result.roc_tpr[-1] == 1.0
    assert all(np.diff(result.roc_fpr) >= 0) and all(np.diff(result.roc_tpr) >= 0)
    assert len(result.roc_thresholds) == len(result.roc_fpr) - 1
    # The operating point "rating >= 6" is the reader's binary answer.
    point = result.roc_thresholds.index(6) + 1
    assert result.roc_tpr[point] == pytest.approx(result.sensitivity)
    assert result.roc_fpr[point] == pytest.approx(1 - result.specificity)
    # 16/24: one-sided p ~ 0.076 -> not significant at 5 %.
    assert result.indistinguishable and result.verdict.startswith("Indistinguishable")
    json.dumps(result.to_dict())


def test_rating_scale_has_ten_ordered_levels():
    levels = [rating_score(ReaderAnswer(1, True, False, c)) for c in (5, 4, 3, 2, 1)]
    levels += [rating_score(ReaderAnswer(1, True, True, c)) for c in (1, 2, 3, 4, 5)]
    assert levels == list(range(1, 11))


def test_a_perfect_reader_distinguishes():
    rows = [(True, True, 5)] * 10 + [(False, False, 4)] * 10
    result = reader_statistics(_answers(rows))
    assert result.accuracy == 1.0 and result.auc == 1.0
    assert result.p_greater == pytest.approx(0.5**20)
    assert not result.indistinguishable and result.verdict.startswith("Distinguishable")


def test_one_class_gives_no_roc_and_empty_input_is_refused():
    result = reader_statistics(_answers([(True, True, 3), (True, False, 2)]))
    assert result.specificity is None and result.auc is None and result.roc_fpr == ()
    with pytest.raises(InputError, match="No answers"):
        reader_statistics([])
    with pytest.raises(InputError, match="ci_method"):
        reader_statistics(_answers(WORKED), ci_method="normal")


@pytest.mark.parametrize(
    ("args", "match"),
    [((1, True, True, 6), "Confidence"), ((1, True, True, 0), "Confidence"), ((1, "yes", True, 3), "True or False")],
)
def test_answers_are_validated(args, match):
    with pytest.raises(InputError, match=match):
        ReaderAnswer(*args)


def _readers_from_table(table):
    """Two readers' answers on 50 images from a 2x2 table [[yes-yes, yes-no], [no-yes, no-no]]."""
    pairs = [(True, True)] * table[0][0] + [(True, False)] * table[0][1]
    pairs += [(False, True)] * table[1][0] + [(False, False)] * table[1][1]
    truth = [n % 2 == 0 for n in range(len(pairs))]
    a = [ReaderAnswer(n, truth[n], p[0], 3) for n, p in enumerate(pairs)]
    b = [ReaderAnswer(n, truth[n], p[1], 3) for n, p in enumerate(pairs)]
    return a, b


def test_cohen_kappa_textbook_example():
    # The classic example: 20 yes-yes, 5 yes-no, 10 no-yes, 15 no-no -> po = 0.7, pe = 0.5, kappa = 0.4.
    table = [[20, 5], [10, 15]]
    a, b = _readers_from_table(table)
    result = agreement({"A": a, "B": b})
    (pair,) = result.pairs
    assert pair.n_common == 50 and pair.observed_agreement == pytest.approx(0.7)
    assert pair.kappa == pytest.approx(0.4, abs=1e-12)
    assert pair.kappa == pytest.approx(cohens_kappa(np.array(table)).kappa, rel=1e-9)
    # With two readers Fleiss' kappa is defined too (it differs slightly from Cohen's).
    data = np.array([[x.said_synthetic, y.said_synthetic] for x, y in zip(a, b)], dtype=int)
    assert result.fleiss_kappa == pytest.approx(fleiss_kappa(aggregate_raters(data)[0]), rel=1e-9)


def test_ten_readers_agree_with_statsmodels_and_overlaps_are_reported():
    """Park et al.-like study: 10 readers, accuracy near 60 %, weak agreement; some readers skip images."""
    rng = np.random.default_rng(7)
    n_images = 60
    truth = rng.permutation([True] * 30 + [False] * 30)
    hint = rng.random(n_images) < 0.25  # images with a visible artefact most readers notice
    by_reader = {}
    for r in range(10):
        answers = []
        for i in range(n_images):
            if r >= 8 and i % 7 == r % 7:  # two readers quit some trials
                continue
            right = rng.random() < (0.85 if hint[i] else 0.55)
            answers.append(ReaderAnswer(i, bool(truth[i]), bool(truth[i]) == right, int(rng.integers(1, 6))))
        by_reader[f"reader{r:02d}"] = answers
    result = agreement(by_reader)
    assert result.n_readers == 10 and len(result.pairs) == 45
    said = {r: {a.image_id: a.said_synthetic for a in ans} for r, ans in by_reader.items()}
    for pair in result.pairs:
        common = sorted(set(said[pair.reader_a]) & set(said[pair.reader_b]))
        x = np.array([said[pair.reader_a][i] for i in common])
        y = np.array([said[pair.reader_b][i] for i in common])
        table = np.array([[np.sum(x & y), np.sum(x & ~y)], [np.sum(~x & y), np.sum(~x & ~y)]])
        assert pair.n_common == len(common)
        assert pair.kappa == pytest.approx(cohens_kappa(table).kappa, rel=1e-9, abs=1e-12)
    everyone = sorted(set.intersection(*(set(s) for s in said.values())))
    assert result.fleiss_n_images == len(everyone) < n_images
    data = np.array([[int(said[r][i]) for r in sorted(said)] for i in everyone])
    assert result.fleiss_kappa == pytest.approx(fleiss_kappa(aggregate_raters(data)[0]), rel=1e-9)
    assert any("left out" in note for note in result.notes)
    assert result.mean_cohen_kappa == pytest.approx(np.mean([p.kappa for p in result.pairs]))
    json.dumps(result.to_dict())
    stats_by_reader = per_reader_statistics(by_reader)
    for name, answers in by_reader.items():
        assert stats_by_reader[name].auc == pytest.approx(_auc_reference(answers), rel=1e-12)


def test_agreement_edge_cases():
    a = [ReaderAnswer(1, True, True, 3), ReaderAnswer(2, False, True, 3)]
    b = [ReaderAnswer(3, True, True, 3), ReaderAnswer(4, False, False, 3)]
    result = agreement({"A": a, "B": b})
    assert result.pairs[0].kappa is None and result.fleiss_kappa is None
    assert any("no image in common" in note for note in result.notes)
    same = agreement({"A": a, "C": a})  # both say "synthetic" to everything -> chance agreement 1
    assert same.pairs[0].kappa is None and any("undefined" in note for note in same.notes)
    with pytest.raises(InputError, match="two readers"):
        agreement({"A": a})
    with pytest.raises(InputError, match="twice"):
        agreement({"A": a + a[:1], "B": b})
    with pytest.raises(InputError, match="different projects"):
        agreement({"A": a, "B": [ReaderAnswer(1, False, True, 3)]})


def test_balanced_sequence_is_balanced_reproducible_and_random():
    real, synthetic = list(range(100, 140)), list(range(500, 530))
    sequence = balanced_sequence(real, synthetic, seed=11)
    assert len(sequence) == 60 and sum(s for _, s in sequence) == 30
    assert {i for i, s in sequence if s} == set(synthetic)
    assert {i for i, s in sequence if not s} <= set(real) and len({i for i, _ in sequence}) == 60
    assert balanced_sequence(real, synthetic, seed=11) == sequence
    assert balanced_sequence(real, synthetic, seed=12) != sequence
    small = balanced_sequence(real, synthetic, 5, seed=1)
    assert len(small) == 10 and sum(s for _, s in small) == 5
    # Runs of one class are as long as chance makes them: over many seeds the longest run of 60 trials
    # averages about log2(60) ~ 5.9; never a block design (longest run = n) and not alternating (longest = 1).
    longest = [max(len(list(g)) for _, g in groupby(s for _, s in balanced_sequence(real, synthetic, seed=k)))
               for k in range(200)]  # fmt: skip
    assert 4.5 < np.mean(longest) < 7.5 and max(longest) < 30 and min(longest) > 1


@pytest.mark.parametrize(
    ("real", "synthetic", "n", "match"),
    [
        ([], [1, 2], None, "real set is empty"),
        ([1, 2], [], None, "synthetic set is empty"),
        ([1, 2, 3], [4, 5], 3, "exceeds the images available: 3 real and 2 synthetic"),
        ([1, 2], [2, 3], None, "both real and synthetic"),
        ([1, 1], [2, 3], None, "duplicates"),
        ([1, 2], [3, 4], 0, "positive integer"),
    ],
)
def test_balanced_sequence_refuses_bad_input(real, synthetic, n, match):
    with pytest.raises(InputError, match=match):
        balanced_sequence(real, synthetic, n, seed=0)
