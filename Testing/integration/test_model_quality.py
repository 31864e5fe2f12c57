"""The shipped model on held-out phantoms (seeds never used in training): Dice printed and checked.

Targets (issue 2): Dice ≥ 0.90 for the lungs and ≥ 0.70 for nodules of 6 mm or more, each nodule's Dice measured
in a box of twice its diameter around it and averaged over the nodules (a missed nodule counts 0). Fifteen
held-out phantoms with random grids (0.9–2 mm in-plane, 1–3 mm slices) give about 36 such nodules.
"""

from __future__ import annotations

from typing import Any

import pytest

from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.training.train import MODEL_NAME, evaluate_on_heldout

#: The training script's own held-out seeds plus eleven more; training used seeds 1000..1023 and 3000..3031.
HELDOUT_SEEDS = [9000, 9001, 9002, 9003, 9100, 9101, 9102, *range(9200, 9208)]


@pytest.fixture(scope="module")
def heldout_metrics() -> dict[str, Any]:
    entry = load_catalog(include_user_models=False).get(MODEL_NAME)
    lines: list[str] = []
    metrics = evaluate_on_heldout(entry, HELDOUT_SEEDS, log=lines.append)
    print()
    for line in lines:
        print(line)
    print(
        f"  {MODEL_NAME}: Dice lungs {metrics['dice_lung']:.3f} (target ≥ 0.90), nodules ≥ 6 mm "
        f"{metrics['dice_nodules_ge_6mm']:.3f} over {metrics['nodules_ge_6mm']} nodules (target ≥ 0.70)"
    )
    print(
        f"  detection: CPM {metrics['froc_cpm']:.3f}, sensitivity at 1/8..8 FP per scan "
        f"{metrics['froc_sensitivity_at_fp_per_scan']}, {metrics['lesions_detected']} of {metrics['lesions']} "
        f"nodules hit, {metrics['false_positive_components_per_scan']} false-positive components per scan"
    )
    return metrics


def test_lung_dice_on_heldout_phantoms(heldout_metrics: dict[str, Any]) -> None:
    assert heldout_metrics["dice_lung"] >= 0.90


def test_nodule_dice_reaches_the_target(heldout_metrics: dict[str, Any]) -> None:
    assert heldout_metrics["nodules_ge_6mm"] >= 30  # enough nodules for the mean to mean something
    assert heldout_metrics["dice_nodules_ge_6mm"] >= 0.70


def test_nodule_label_has_few_false_positives(heldout_metrics: dict[str, Any]) -> None:
    """Dice of the whole nodule label (false positives anywhere in the lungs count against it)."""
    assert heldout_metrics["dice_nodule_label"] >= 0.65


def test_nodule_detection_froc(heldout_metrics: dict[str, Any]) -> None:
    """Lesion-level detection (LUNA16 CPM) of the shipped model on these v1 phantoms: 0.849 when measured
    (2026-12-07); issue 17's targets (CPM ≥ 0.85, ≤ 2 false positives ≥ 3 mm per scan) are for phantom-v2."""
    assert heldout_metrics["lesions"] >= 30
    assert heldout_metrics["froc_cpm"] >= 0.80
