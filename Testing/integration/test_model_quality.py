"""The shipped model on held-out phantoms (seeds never used in training): Dice printed and checked.

Targets (issue 2): Dice ≥ 0.90 for the lungs and ≥ 0.70 for nodules of 6 mm or more. The lung target is met.
The nodule target is not met yet by the shipped model (about 0.58 to 0.76 depending on the held-out set, because
nodules of about 6 mm are often missed); that check is marked as an expected failure, strict, so the marker has
to be removed as soon as a better model reaches the target.
"""

from __future__ import annotations

from typing import Any

import pytest

from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.training.train import MODEL_NAME, evaluate_on_heldout

#: The training script's own held-out seeds plus three more; training uses seeds 1000..1023.
HELDOUT_SEEDS = [9000, 9001, 9002, 9003, 9100, 9101, 9102]


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
    return metrics


def test_lung_dice_on_heldout_phantoms(heldout_metrics: dict[str, Any]) -> None:
    assert heldout_metrics["dice_lung"] >= 0.90


def test_nodule_dice_does_not_regress(heldout_metrics: dict[str, Any]) -> None:
    assert heldout_metrics["nodules_ge_6mm"] >= 10
    assert heldout_metrics["dice_nodule_label"] >= 0.55
    assert heldout_metrics["dice_nodules_ge_6mm"] >= 0.60


@pytest.mark.xfail(strict=True, reason="shipped model misses many ~6 mm nodules; issue 2 target not met yet")
def test_nodule_dice_reaches_the_target(heldout_metrics: dict[str, Any]) -> None:
    assert heldout_metrics["dice_nodules_ge_6mm"] >= 0.70
