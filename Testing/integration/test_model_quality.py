"""The shipped model on held-out phantoms (seeds never used in training): Dice printed and checked."""

from __future__ import annotations

import pytest

from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.training.train import MODEL_NAME, evaluate_on_heldout

HELDOUT_SEEDS = [9100, 9101, 9102]


def test_shipped_model_dice_on_heldout_phantoms(capsys: pytest.CaptureFixture[str]) -> None:
    entry = load_catalog(include_user_models=False).get(MODEL_NAME)
    lines: list[str] = []
    metrics = evaluate_on_heldout(entry, HELDOUT_SEEDS, log=lines.append)
    with capsys.disabled():
        print()
        for line in lines:
            print(line)
        print(
            f"  {MODEL_NAME}: Dice lungs {metrics['dice_lung']:.3f} (target ≥ 0.90), nodules ≥ 6 mm "
            f"{metrics['dice_nodules_ge_6mm']:.3f} over {metrics['nodules_ge_6mm']} nodules (target ≥ 0.70)"
        )
    assert metrics["nodules_ge_6mm"] >= 3
    assert metrics["dice_lung"] >= 0.90
    assert metrics["dice_nodules_ge_6mm"] >= 0.70
