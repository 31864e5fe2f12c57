"""Grad-CAM / Grad-CAM++ / integrated gradients on real models, checked against independent implementations.

The reference is ``monai.visualize.GradCAM`` / ``GradCAMpp`` run on the same weights and layer (MONAI registers
forward/backward hooks, so it runs on a plain copy of the network; ours also runs on the TorchScript file, where
hooks do not exist). The classifier is the shipped one when ``chest-ct-nodule-classifier`` is in the catalogue,
else a fixed-seed :func:`build_classifier`; the U-Net is the shipped MONAI bundle.
"""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
import torch

from MedAIExtension.errors import InputError, ModelError
from MedAIExtension.explain.gradcam import grad_cam
from MedAIExtension.explain.integrated_gradients import integrated_gradients
from MedAIExtension.explain.torch_model import (
    as_torch_module,
    conv_layer_names,
    default_target_layer,
    forward_with_activation,
    layer_names,
)
from MedAIExtension.explain.types import ScoreTarget
from MedAIExtension.models.backends import OnnxBackend, load_bundle_module
from MedAIExtension.models.catalog import DEFAULT_CATALOG, ModelEntry, load_catalog
from MedAIExtension.models.discovery import describe_monai_bundle
from MedAIExtension.training.classifier_network import CLASSIFIER_ARGS, CLASSIFIER_TARGET_LAYER, build_classifier
from Testing.model_helpers import nodule_patch

MODELS = DEFAULT_CATALOG.parent
BUNDLE = MODELS / "chest-ct-lung-nodule-bundle"
NODULE = ScoreTarget(0, name="Nodule")


def _script_roundtrip(module: torch.nn.Module) -> torch.jit.ScriptModule:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    buffer.seek(0)
    return torch.jit.load(buffer, map_location="cpu")


def classifier_weights() -> tuple[dict[str, torch.Tensor], torch.jit.ScriptModule]:
    """(state dict, TorchScript module) of the shipped classifier, or of a fixed-seed one before it is shipped."""
    catalog = load_catalog(include_user_models=False)
    if "chest-ct-nodule-classifier" in catalog:
        entry = catalog.get("chest-ct-nodule-classifier")
        scripted = torch.jit.load(str(entry.model_file), map_location="cpu").eval()
        return {k: v.clone() for k, v in scripted.state_dict().items()}, scripted
    torch.manual_seed(0)
    plain = build_classifier(**CLASSIFIER_ARGS).eval()
    return {k: v.clone() for k, v in plain.state_dict().items()}, _script_roundtrip(plain).eval()


def plain_classifier(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A fresh plain ``nn.Module`` with ``state`` (MONAI's hooks stay on it, so each reference gets its own)."""
    module = build_classifier(**CLASSIFIER_ARGS)
    module.load_state_dict(state)
    return module.eval()


@pytest.fixture(scope="module")
def classifier() -> tuple[dict[str, torch.Tensor], torch.jit.ScriptModule]:
    return classifier_weights()


@pytest.fixture(scope="module")
def unet_entry() -> ModelEntry:
    return ModelEntry.from_dict(describe_monai_bundle(BUNDLE), BUNDLE)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _monai_map(module: torch.nn.Module, layer: str, x: np.ndarray, plus_plus: bool, class_idx: int = 0) -> np.ndarray:
    from monai.visualize import GradCAM, GradCAMpp

    cam_class = GradCAMpp if plus_plus else GradCAM
    cam = cam_class(module, layer, postprocessing=lambda v: v)  # raw map: MONAI's default flips it to 1..0
    return cam(torch.from_numpy(x), class_idx=class_idx)[0, 0].detach().numpy()


@pytest.mark.parametrize("plus_plus", [False, True], ids=["gradcam", "gradcampp"])
def test_classifier_gradcam_matches_monai(classifier, plus_plus: bool) -> None:
    state, scripted = classifier
    x = nodule_patch()
    ours_plain = grad_cam(plain_classifier(state), x, NODULE, CLASSIFIER_TARGET_LAYER, plus_plus=plus_plus)
    ours_script = grad_cam(scripted, x, NODULE, CLASSIFIER_TARGET_LAYER, plus_plus=plus_plus)
    reference = _monai_map(plain_classifier(state), CLASSIFIER_TARGET_LAYER, x, plus_plus)

    assert ours_script.map.shape == x.shape[2:] == reference.shape
    assert ours_script.map.dtype == np.float32
    assert ours_script.layer_shape == (8, 8, 8)  # block4 is at 1/4 resolution, up-sampled to 32³
    assert np.ptp(reference) > 0 and not ours_script.notes
    assert ours_script.map.min() == 0.0 and ours_script.map.max() == pytest.approx(1.0)
    assert _pearson(ours_script.map, reference) >= 0.99
    np.testing.assert_allclose(ours_script.map, ours_plain.map, atol=1e-5)
    # Deterministic, and the module's train flag and parameter gradients are left alone.
    again = grad_cam(scripted, x, NODULE, CLASSIFIER_TARGET_LAYER, plus_plus=plus_plus)
    np.testing.assert_array_equal(again.map, ours_script.map)
    assert all(p.grad is None for p in scripted.parameters())


def test_vessel_target_is_explained_separately(classifier) -> None:
    state, scripted = classifier
    x = nodule_patch()
    nodule = grad_cam(scripted, x, NODULE, CLASSIFIER_TARGET_LAYER)
    vessel = grad_cam(scripted, x, ScoreTarget(1, name="Vessel"), CLASSIFIER_TARGET_LAYER)
    reference = _monai_map(plain_classifier(state), CLASSIFIER_TARGET_LAYER, x, False, class_idx=1)
    assert nodule.score != vessel.score
    assert not np.allclose(nodule.map, vessel.map)
    if np.ptp(reference) == 0:  # nothing in the layer raises the Vessel logit for this nodule
        assert not vessel.map.any() and vessel.notes
    else:
        assert _pearson(vessel.map, reference) >= 0.99


def test_unet_region_score_matches_monai(unet_entry) -> None:
    """Segmentation U-Net (shipped bundle): Grad-CAM of the nodule label's logits summed inside a region."""
    size = 32
    x = nodule_patch(size, center=(16.0, 14.0, 17.0))
    region = np.zeros((size,) * 3, dtype=bool)
    region[11:22, 9:20, 12:23] = True
    target = ScoreTarget(2, region, "Lung lesion")
    network = load_bundle_module(unet_entry)
    layer = default_target_layer(network, x)
    assert layer == "model.1.submodule.2"

    class RegionScore(torch.nn.Module):
        """The region score as a one-class 'classifier' so MONAI can explain it; minus a constant offset because
        MONAI's Grad-CAM++ multiplies by exp(score) (a positive factor; exp of a sum of ~1000 logits overflows)."""

        def __init__(self, net: torch.nn.Module, offset: float) -> None:
            super().__init__()
            self.net = net
            self.offset = offset

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return (target.score(self.net(v)) - self.offset)[:, None]

    for plus_plus in (False, True):
        ours = grad_cam(network, x, target, layer, plus_plus=plus_plus)
        assert ours.layer_shape == (size // 2,) * 3
        wrapped = RegionScore(load_bundle_module(unet_entry).eval(), ours.score)
        reference = _monai_map(wrapped, f"net.{layer}", x, plus_plus)
        assert np.isfinite(reference).all() and np.ptp(reference) > 0
        assert _pearson(ours.map, reference) >= 0.99
        # The nodule drives the score: the map's peak lies inside it.
        peak = np.unravel_index(int(np.argmax(ours.map)), ours.map.shape)
        assert x[(0, 0, *peak)] > 0.5, f"peak {peak} is not on the nodule"


def test_default_layer_of_the_classifier(classifier) -> None:
    state, scripted = classifier
    x = nodule_patch()
    assert default_target_layer(plain_classifier(state), x) == CLASSIFIER_TARGET_LAYER
    assert default_target_layer(scripted, x) == CLASSIFIER_TARGET_LAYER
    result = grad_cam(scripted, x, NODULE)
    assert result.layer == CLASSIFIER_TARGET_LAYER
    assert any("chosen automatically" in note for note in result.notes)


def test_layer_listing_and_activation(classifier) -> None:
    state, scripted = classifier
    names = layer_names(scripted)
    assert names == layer_names(plain_classifier(state))
    assert "features.block4" in names and "features.block4.conv" in names and "head" in names
    assert conv_layer_names(scripted)[-2:] == ["features.block4", "features.block4.conv"]
    x = torch.from_numpy(nodule_patch())
    activation, output = forward_with_activation(scripted, x, "features.down2")
    assert tuple(activation.shape) == (1, 16, 8, 8, 8)
    np.testing.assert_allclose(output.detach().numpy(), scripted(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_unknown_layer_names_close_matches(classifier) -> None:
    _, scripted = classifier
    with pytest.raises(ModelError, match=r"no layer 'features\.blok4'.*Did you mean features\.block4"):
        grad_cam(scripted, nodule_patch(), NODULE, "features.blok4")


def test_unet_unknown_layer_lists_conv_blocks(unet_entry) -> None:
    with pytest.raises(ModelError, match=r"model\.2\.1\.conv\.unit0"):
        grad_cam(load_bundle_module(unet_entry), nodule_patch(16), ScoreTarget(2), "decoder")


def test_scriptmodule_whose_forward_is_not_a_chain_is_refused() -> None:
    class Residual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)
            self.pool = torch.nn.AdaptiveAvgPool3d(1)

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return self.pool(self.conv(v) + v).flatten(1)

    torch.manual_seed(1)
    scripted = _script_roundtrip(Residual().eval())
    with pytest.raises(ModelError, match=r"not a chain.*Occlusion sensitivity and uncertainty"):
        grad_cam(scripted, nodule_patch(8), NODULE, "conv")


def test_onnx_model_has_no_gradients() -> None:
    backend = OnnxBackend(MODELS / "chest-ct-lung-nodule.onnx", "cpu")
    with pytest.raises(ModelError, match=r"occlusion.*uncertainty"):
        as_torch_module(backend)
    with pytest.raises(ModelError, match="gradients"):
        grad_cam(backend, nodule_patch(16), ScoreTarget(2), "model.1")


def test_constant_map_is_zero_with_a_note(classifier) -> None:
    state, _ = classifier
    module = plain_classifier(state)
    with torch.no_grad():
        module.head.weight[0].zero_()  # the Nodule logit no longer depends on any feature
    result = grad_cam(module, nodule_patch(), NODULE, CLASSIFIER_TARGET_LAYER)
    assert not result.map.any()
    assert result.notes and "empty" in result.notes[0]
    json.dumps(result.to_dict())


def test_bad_input_shape(classifier) -> None:
    _, scripted = classifier
    with pytest.raises(InputError, match=r"\(1, C, \*spatial\)"):
        grad_cam(scripted, np.concatenate([nodule_patch()] * 2), NODULE, CLASSIFIER_TARGET_LAYER)
    with pytest.raises(InputError, match="channel 5 does not exist"):
        grad_cam(scripted, nodule_patch(), ScoreTarget(5), CLASSIFIER_TARGET_LAYER)


def test_integrated_gradients_completeness(classifier) -> None:
    _, scripted = classifier
    x = nodule_patch()
    result = integrated_gradients(scripted, x, NODULE, baseline=0.0, steps=16, batch_size=16)
    assert result.map.shape == x.shape[2:] and result.map.dtype == np.float32
    with torch.no_grad():
        logits = scripted(torch.from_numpy(np.concatenate([x, np.zeros_like(x)])))[:, 0].numpy()
    assert result.score == pytest.approx(float(logits[0]), rel=1e-4, abs=1e-5)
    assert result.baseline_score == pytest.approx(float(logits[1]), rel=1e-4, abs=1e-5)
    # Completeness: the attributions add up to the score change (up to the reported convergence delta).
    change = float(logits[0] - logits[1])
    assert float(result.map.sum()) == pytest.approx(change, abs=0.05 * abs(change) + 1e-3)
    assert result.delta == pytest.approx(float(result.map.sum()) - change, abs=1e-3 * abs(change) + 1e-4)
    assert json.loads(json.dumps(result.to_dict()))["convergence_delta"] == pytest.approx(result.delta)


def test_scripted_unet_is_explained_through_its_chain(unet_entry) -> None:
    """A TorchScript U-Net (no hooks): its top-level blocks are run one by one; same map as the plain module."""
    network = load_bundle_module(unet_entry)
    scripted = _script_roundtrip(copy.deepcopy(network).eval())
    size = 24
    x = nodule_patch(size, center=(12.0, 11.0, 12.5), radius=4.0)
    target = ScoreTarget(2, name="Lung lesion")
    assert default_target_layer(scripted, x) == "model.1"
    ours = grad_cam(scripted, x, target)
    plain = grad_cam(network, x, target, "model.1")
    assert ours.layer == "model.1" and ours.layer_shape == (size // 2,) * 3
    np.testing.assert_allclose(ours.map, plain.map, atol=1e-4)
