"""The shipped model on held-out phantoms (seeds never used in training): Dice printed and checked.

Targets (issue 2): Dice ≥ 0.90 for the lungs and ≥ 0.70 for nodules of 6 mm or more, each nodule's Dice measured
in a box of twice its diameter around it and averaged over the nodules (a missed nodule counts 0). Ten held-out
phantoms with random grids (0.9–2 mm in-plane, 1–3 mm slices) give about 20 such nodules.
"""

from __future__ import annotations

from typing import Any

import pytest

from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.training.train import MODEL_NAME, evaluate_on_heldout

#: The training script's own held-out seeds plus six more (ten, to keep the suite's time: phantom-v2 is the main
#: held-out set now, test_model_quality_v2.py); training used seeds 1000..1023, 3000..3031, 5000..5031 and 5200..5239.
HELDOUT_SEEDS = [9000, 9001, 9002, 9003, 9100, 9101, 9102, 9200, 9201, 9202]


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
    assert heldout_metrics["nodules_ge_6mm"] >= 15  # enough nodules for the mean to mean something
    assert heldout_metrics["dice_nodules_ge_6mm"] >= 0.70


def test_nodule_label_has_few_false_positives(heldout_metrics: dict[str, Any]) -> None:
    """Dice of the whole nodule label (false positives anywhere in the lungs count against it)."""
    assert heldout_metrics["dice_nodule_label"] >= 0.65


def test_nodule_detection_froc(heldout_metrics: dict[str, Any]) -> None:
    """Lesion-level detection (LUNA16 CPM) on these v1 phantoms, candidates being the lesion components that
    ``medai segment`` writes (lesion filter included). 1.1.0 reached 0.849 (on raw probability regions); 2.0.0,
    trained mostly on phantom-v2 and with masses, 0.787 with 0.4 false positives per scan (2026-12-07); 2.1.0 0.795
    with 0.4 (2026-12-08). Issue 17's
    detection targets are for phantom-v2 (test_model_quality_v2.py); this guards the old look against collapse."""
    assert heldout_metrics["lesions"] >= 15
    assert heldout_metrics["froc_cpm"] >= 0.75
    assert heldout_metrics["false_positive_components_per_scan"] <= 2.0
