"""explain_image's own behaviour: memory fallbacks of the gradient methods, modality check, default layer.

The networks are real torch modules; one of them refuses big batches with a MemoryError (fault injection standing
in for a GPU that is too small — the only part that is not real here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from MedAIExtension.errors import InputError, ModelError
from MedAIExtension.explain.models import ExplainModel
from MedAIExtension.explain.pipeline import explain_image
from MedAIExtension.explain.request import ExplainSettings, Roi
from MedAIExtension.io.image import Image
from MedAIExtension.models.backends import TorchBackend
from MedAIExtension.models.catalog import ModelEntry
from MedAIExtension.training.classifier_network import build_classifier

ENTRY = {
    "name": "small-classifier",
    "title": "test",
    "version": "1",
    "task": "classification",
    "backend": "torchscript",
    "files": [{"path": "unused.ts", "sha256": "0" * 64}],
    "input": {
        "modality": "CT",
        "spacing": [1.0, 1.0, 1.0],
        "orientation": "LPS",
        "normalization": {"type": "clip_scale", "a_min": -1000, "a_max": 400, "b_min": 0, "b_max": 1, "clip": True},
        "patch_size": [16, 16, 16],
    },
    "labels": [{"value": 1, "name": "Nodule", "color": [1, 0, 0]}, {"value": 2, "name": "Vessel", "color": [0, 0, 1]}],
}


class SmallBatchesOnly(torch.nn.Module):
    """A real classifier that raises MemoryError for batches above ``limit`` (fault injection).

    With ``gradients_fail`` it also fails whenever autograd records (a backward pass needs the most memory).
    """

    def __init__(self, limit: int, gradients_fail: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = build_classifier(widths=[4, 4, 8, 8])
        self.limit = limit
        self.gradients_fail = gradients_fail
        self.batches: list[int] = []

    def forward(self, x: Any) -> Any:
        self.batches.append(int(x.shape[0]))
        if x.shape[0] > self.limit or (self.gradients_fail and torch.is_grad_enabled()):
            raise MemoryError("simulated: not enough memory for this batch")
        return self.net(x)


ROI = Roi((12.0, 12.0, 12.0), (8.0, 8.0, 8.0))
LAYER = "net.features.block4"


def _model(module: torch.nn.Module, **changes: Any) -> ExplainModel:
    entry = ModelEntry.from_dict({**ENTRY, **changes}, Path("."))
    return ExplainModel(entry, TorchBackend(module, "cpu"), module.eval())


def _image(modality: str = "CT") -> Image:
    array = np.full((24, 24, 24), -900, dtype=np.int16)
    array[9:15, 9:15, 9:15] = 50
    return Image(array, np.diag([1.0, 1.0, 1.0, 1.0]), modality=modality)


def test_integrated_gradients_halves_its_batch_when_memory_runs_out() -> None:
    module = SmallBatchesOnly(limit=2)
    settings = ExplainSettings(sanity=False, ig_steps=8, batch_size=8)
    result = explain_image(
        _image(), _model(module), "ig", roi=Roi((12.0, 12.0, 12.0), (8.0, 8.0, 8.0)), settings=settings
    )
    assert any("continued with 2 image(s)" in note for note in result.notes)
    assert max(b for b in module.batches if b <= 2) == 2
    assert np.isfinite(result.map.array).all() and np.abs(result.map.array).max() > 0


def test_grad_cam_out_of_memory_says_how_to_need_less() -> None:
    module = SmallBatchesOnly(limit=64, gradients_fail=True)
    with pytest.raises(ModelError, match="smaller ROI"):
        explain_image(
            _image(),
            _model(module),
            "gradcam",
            roi=ROI,
            settings=ExplainSettings(sanity=False, layer="net.features.block4"),
        )


def test_modality_mismatch_is_refused() -> None:
    with pytest.raises(InputError, match="expects CT images but the input is MR"):
        explain_image(_image("MR"), _model(SmallBatchesOnly(limit=64)), "gradcam")


def test_default_layer_is_found_when_the_catalogue_names_none() -> None:
    module = SmallBatchesOnly(limit=64)
    result = explain_image(_image(), _model(module), "gradcam", roi=ROI, settings=ExplainSettings(sanity=False))
    assert result.layer and result.layer.startswith("net.features")
    assert any("uses" in note for note in result.notes)
    assert result.map.same_grid(_image())


def test_a_classifier_needs_an_roi_on_an_image_larger_than_its_patch() -> None:
    """Without an ROI the 16 mm patch would sit at the centre of the 24 mm image: refused, saying how to give one;
    an image no larger than the patch is explained as a whole."""
    module = SmallBatchesOnly(limit=64)
    with pytest.raises(InputError, match=r"16x16x16 mm patch, but the image is 24x24x24 mm.*--roi R A S SIZE_R"):
        explain_image(_image(), _model(module), "occlusion", settings=ExplainSettings(sanity=False))
    assert module.batches == []  # refused before any work
    small = Image(_image().array[4:20, 4:20, 4:20], np.diag([1.0, 1.0, 1.0, 1.0]), modality="CT")
    result = explain_image(small, _model(module), "gradcam", settings=ExplainSettings(sanity=False))
    assert result.map.same_grid(small) and result.score is not None


def test_faithfulness_summary_names_the_patch_it_deletes_from() -> None:
    """The deletion sentence says '% of the 16 mm patch' (the classifier's input), not '% of the image'."""
    result = explain_image(
        _image(), _model(SmallBatchesOnly(limit=64)), "gradcam", roi=ROI, settings=ExplainSettings(layer=LAYER)
    )
    summary = result.sanity["faithfulness"]["summary"]
    assert " % of the 16 mm patch changes the Nodule probability" in summary and "of the image" not in summary
    assert result.sanity["faithfulness"]["random_orders"] == 5
    assert result.sanity["randomisation"]["verdict"] in ("passed", "failed", "inconclusive")
