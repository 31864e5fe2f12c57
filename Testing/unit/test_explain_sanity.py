"""Sanity checks of explanation maps: cascading weight randomisation and deletion/insertion faithfulness.

Real models only: the classifier (shipped TorchScript when it is in the catalogue, else a fixed-seed
:func:`build_classifier` exported to TorchScript), the shipped lung U-Net (MONAI bundle for the map, its ONNX
export for the curves), and a one-layer torch/ONNX model whose score is, by construction, the intensity inside a
known box.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch

from MedAIExtension.errors import CancelledError, InputError, ModelError
from MedAIExtension.explain.gradcam import grad_cam
from MedAIExtension.explain.sanity import (
    DEFAULT_RANDOMISATION_THRESHOLD,
    EMPTY_STEP_VERDICT,
    deletion_insertion,
    map_similarity,
    randomisation_layers,
    randomisation_test,
)
from MedAIExtension.explain.types import ScoreTarget
from MedAIExtension.models.backends import OnnxBackend, load_bundle_module
from MedAIExtension.models.catalog import DEFAULT_CATALOG, ModelEntry, load_catalog
from MedAIExtension.models.discovery import describe_monai_bundle
from MedAIExtension.progress import CancelToken, Progress
from MedAIExtension.training.classifier_network import CLASSIFIER_ARGS, CLASSIFIER_TARGET_LAYER, build_classifier
from Testing.model_helpers import nodule_patch

MODELS = DEFAULT_CATALOG.parent
NODULE = ScoreTarget(0, name="Nodule")


@pytest.fixture(scope="module")
def classifier() -> torch.jit.ScriptModule:
    """The shipped classifier (TorchScript), or a fixed-seed one exported the same way before it is shipped."""
    catalog = load_catalog(include_user_models=False)
    if "chest-ct-nodule-classifier" in catalog:
        return torch.jit.load(str(catalog.get("chest-ct-nodule-classifier").model_file), map_location="cpu").eval()
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(build_classifier(**CLASSIFIER_ARGS).eval()), buffer)
    buffer.seek(0)
    return torch.jit.load(buffer, map_location="cpu").eval()


def edge_map(x: np.ndarray) -> np.ndarray:
    """A deliberately broken 'explainer': the input's gradient magnitude, whatever the model."""
    from scipy.ndimage import gaussian_gradient_magnitude

    return gaussian_gradient_magnitude(x[0, 0].astype(np.float64), sigma=1.0)


# ------------------------------------------------------------------------------------------- randomisation


def test_gradcam_passes_and_edge_detector_fails(classifier) -> None:
    x = nodule_patch()
    before = {k: v.clone() for k, v in classifier.state_dict().items()}

    def gradcam(module):
        return grad_cam(module, x, NODULE, CLASSIFIER_TARGET_LAYER)

    good = randomisation_test(classifier, gradcam, seed=0)
    broken = randomisation_test(classifier, lambda _module: edge_map(x), seed=0)

    # Cascade from the output layer down: head first, the first conv block last.
    assert [step.layer for step in good.steps] == [
        "head",
        "features.block4.conv",
        "features.block3.conv",
        "features.block2.conv",
        "features.block1.conv",
    ]
    deciding = good.deciding_step
    assert good.passed and good.verdict == "passed"
    assert deciding is not None and deciding.spearman < DEFAULT_RANDOMISATION_THRESHOLD
    assert good.summary.startswith("Passed: the map changes when the model's learned weights are scrambled")
    assert f"similarity {deciding.spearman:.2f} after scrambling" in good.summary
    assert f"Evidence: {len(good.usable_steps)} of 5 cascade steps gave a usable map" in good.summary

    assert not broken.passed
    assert all(step.spearman == pytest.approx(1.0) and step.ssim == pytest.approx(1.0) for step in broken.steps)
    assert broken.summary.startswith("Failed: the map stays the same with a scrambled model")
    assert "do not rely on it" in broken.summary

    # The trained model itself is untouched (the test works on a deep copy), and the test is deterministic.
    for key, value in classifier.state_dict().items():
        assert torch.equal(value, before[key]), key
    again = randomisation_test(classifier, gradcam, seed=0)
    assert [s.spearman for s in again.steps] == [s.spearman for s in good.steps]

    report = json.loads(json.dumps(good.to_dict()))
    assert report["passed"] is True and len(report["steps"]) == 5
    assert report["threshold"] == DEFAULT_RANDOMISATION_THRESHOLD
    assert report["usable_steps"] == sum(step["usable"] for step in report["steps"]) == len(good.usable_steps)
    assert report["deciding_layer"] == deciding.layer


def test_empty_randomised_maps_are_no_evidence(classifier) -> None:
    """Grad-CAM of a fully scrambled classifier is often empty (all gradients clamped): such a step is reported as
    'no evidence either way' with no similarity, and a cascade of only empty maps is inconclusive, not a pass."""
    x = nodule_patch()

    def gradcam(module):
        return grad_cam(module, x, NODULE, CLASSIFIER_TARGET_LAYER)

    cascade = randomisation_test(classifier, gradcam, seed=0)
    empty = [step for step in cascade.steps if step.empty]
    assert empty and cascade.usable_steps  # the shipped classifier's cascade has both kinds of step
    for step in empty:
        assert math.isnan(step.spearman) and step.verdict(cascade.threshold) == EMPTY_STEP_VERDICT
        assert step.to_dict()["spearman"] is None and step.to_dict()["usable"] is False
        assert step.layer in cascade.summary
    assert "the randomised model's map is empty — no evidence either way" in cascade.summary
    for step in cascade.usable_steps:
        assert f"{step.layer} {step.spearman:.2f}" in cascade.summary

    # Everything scrambled in one step: the map is empty, which used to read as "similarity 0.00 → passed".
    whole = randomisation_test(classifier, gradcam, seed=0, max_steps=1)
    assert whole.steps[0].empty and not whole.usable_steps
    assert not whole.passed and whole.verdict == "inconclusive" and whole.to_dict()["passed"] is False
    assert whole.summary.startswith("Inconclusive: at every step the randomised model's map is empty")
    assert "0 of 1 cascade steps gave a usable map" in whole.summary and "0.00" not in whole.summary


def test_randomisation_groups_norm_layers_with_their_conv(classifier) -> None:
    groups = randomisation_layers(classifier)
    assert groups[0] == ("features.block1.conv", "features.block1.norm")
    assert groups[-1] == ("head",)


def test_randomisation_with_chosen_layers_and_bad_layer(classifier) -> None:
    x = nodule_patch()
    result = randomisation_test(
        classifier, lambda m: grad_cam(m, x, NODULE, CLASSIFIER_TARGET_LAYER).map, layers=["features", "head"]
    )
    assert [s.layer for s in result.steps] == ["head", "features"]
    chunked = randomisation_test(classifier, lambda _m: edge_map(x), max_steps=2)
    assert [s.layer for s in chunked.steps] == ["features.block3.conv", "features.block1.conv"]
    assert "after scrambling all 5 layers" in chunked.summary
    with pytest.raises(ModelError, match=r"'nope' has no parameters.*features\.block1\.conv"):
        randomisation_test(classifier, lambda _m: edge_map(x), layers=["nope"])


def test_randomisation_can_be_cancelled(classifier) -> None:
    token = CancelToken()
    seen: list[str] = []

    def callback(fraction: float, message: str) -> None:
        seen.append(message)
        if fraction > 0.3:
            token.cancel()

    with pytest.raises(CancelledError):
        randomisation_test(classifier, lambda _m: edge_map(nodule_patch()), progress=Progress(callback, token))
    assert 1 < len(seen) < 6


def test_map_similarity_edge_cases() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((9, 9, 9))
    assert map_similarity(a, a) == (pytest.approx(1.0), pytest.approx(1.0))
    assert map_similarity(a, -a)[0] == pytest.approx(1.0)  # absolute maps, as in Adebayo et al.
    assert map_similarity(a, np.zeros_like(a))[0] == 0.0
    assert map_similarity(np.zeros_like(a), np.zeros_like(a))[0] == 1.0
    assert abs(map_similarity(a, rng.random((9, 9, 9)))[0]) < 0.2
    with pytest.raises(InputError, match="different shapes"):
        map_similarity(a, a[1:])


# ------------------------------------------------------------------------------------------ faithfulness

BOX = (slice(10, 18), slice(12, 20), slice(8, 16))


def box_model() -> torch.nn.Module:
    """A real one-layer 3D CNN: the Nodule logit is 12 × (mean intensity inside BOX) - 3, the Vessel logit 0."""
    conv = torch.nn.Conv3d(1, 2, kernel_size=32)
    with torch.no_grad():
        conv.weight.zero_()
        inside = torch.zeros(32, 32, 32)
        inside[BOX] = 1.0
        conv.weight[0, 0] = 12.0 * inside / inside.sum()
        conv.bias.copy_(torch.tensor([-3.0, 0.0]))
    return torch.nn.Sequential(conv, torch.nn.Flatten()).eval()


def box_onnx(path) -> OnnxBackend:
    """The same model as an ONNX file run by ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    conv = box_model()[0]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Flatten", ["c"], ["y"])],
        "box",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 32, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        [
            numpy_helper.from_array(conv.weight.detach().numpy(), "w"),
            numpy_helper.from_array(conv.bias.detach().numpy(), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return OnnxBackend(path, "cpu")


def test_deletion_insertion_rewards_the_true_evidence(tmp_path) -> None:
    x = nodule_patch()
    module = box_model()
    backend = box_onnx(tmp_path / "box.onnx")

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(batch)).numpy()

    truth = np.zeros(x.shape[2:], dtype=np.float32)
    truth[BOX] = 1.0
    calls: list[int] = []

    def counting_predict(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return backend.predict(batch)

    good = deletion_insertion(
        counting_predict, x, truth, NODULE, steps=20, batch_size=16, report_fraction=0.1, extent="the 32 mm patch"
    )
    assert max(calls) <= 16 and sum(calls) == 2 * 19 * (1 + 5) + 2  # 5 random orders; shared end points once
    wrong = deletion_insertion(predict, x, 1.0 - truth, NODULE, steps=20, batch_size=16)
    torch_good = deletion_insertion(predict, x, truth, NODULE, steps=20, batch_size=7)

    # ONNX Runtime and torch give the same curves; batching does not matter.
    np.testing.assert_allclose(good.deletion, torch_good.deletion, atol=1e-5)
    np.testing.assert_allclose(good.random_insertion, torch_good.random_insertion, atol=1e-5)

    assert good.faithful and not wrong.faithful
    assert good.deletion_auc < good.random_deletion_auc < wrong.deletion_auc
    assert good.insertion_auc > good.random_insertion_auc > wrong.insertion_auc
    # End points: the unchanged input and the all-baseline image, for every curve.
    expected = 1 / (1 + np.exp(-(12 * x[0, 0][BOX].mean() - 3)))
    assert good.original == pytest.approx(expected, rel=1e-5)
    assert good.deletion[0] == good.random_deletion[0] == good.insertion[-1] == pytest.approx(expected, rel=1e-5)
    assert good.deletion[-1] == pytest.approx(1 / (1 + np.exp(3)), rel=1e-5)
    # BOX is 512 of 32768 voxels (1.6 %): removing the top 10 % removes all of it.
    assert good.deletion[2] == pytest.approx(1 / (1 + np.exp(3)), rel=1e-5)
    assert good.report_fraction == pytest.approx(0.1)
    assert good.summary.startswith("Faithful: removing the highlighted 10 % of the 32 mm patch changes the Nodule")
    assert f"from {good.original:.2f} to {good.deletion[2]:.2f}" in good.summary
    assert f"random 10 % (mean of 5 random orders) changes it to {good.random_deletion[2]:.2f}" in good.summary
    assert wrong.summary.startswith("Not shown to be faithful:") and "of the image" in wrong.summary
    # by default the sentence quotes the step where the map beats a random order most
    quoted = torch_good.report_fraction
    step = int(np.argmin(np.abs(torch_good.fractions - quoted)))
    gaps = (torch_good.random_deletion - torch_good.deletion)[1:11]
    assert 0 < quoted <= 0.5
    assert gaps.max() == pytest.approx(torch_good.random_deletion[step] - torch_good.deletion[step])

    report = json.loads(json.dumps(good.to_dict()))
    assert report["faithful"] is True and len(report["deletion"]) == 21
    assert report["deletion_auc"] == pytest.approx(good.deletion_auc)
    assert len(report["random_deletion_aucs"]) == 5 and report["margin"] == 0.05


def test_faithful_needs_a_margin_beyond_the_random_orders() -> None:
    """The verdict compares the map's AUCs with the 95 % range of several random orders plus a stated margin:
    a map that beats chance by less than the margin, or only matches it, is 'not shown to be faithful'."""
    x = nodule_patch()
    module = box_model()

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(batch)).numpy()

    truth = np.zeros(x.shape[2:], dtype=np.float32)
    truth[BOX] = 1.0
    clear = deletion_insertion(predict, x, truth, NODULE, steps=10, batch_size=64, random_orders=6)
    aucs = clear.random_deletion_aucs
    low, high = clear.random_deletion_ci
    assert aucs.size == 6 and low < clear.random_deletion_auc < high
    assert clear.random_deletion_auc == pytest.approx(aucs.mean())
    assert clear.random_deletion_sd == pytest.approx(aucs.std(ddof=1)) and clear.random_deletion_sd > 0
    assert clear.span == pytest.approx(clear.original - clear.deletion[-1])
    # how far (as a share of the probability span) the map's AUCs lie beyond the random CI: a margin just under
    # it passes, just over it fails
    gap = min(low - clear.deletion_auc, clear.insertion_auc - clear.random_insertion_ci[1]) / clear.span
    assert gap > 0.1
    kwargs = {"steps": 10, "batch_size": 64, "random_orders": 6}
    passes = deletion_insertion(predict, x, truth, NODULE, margin=gap - 0.01, **kwargs)
    fails = deletion_insertion(predict, x, truth, NODULE, margin=gap + 0.01, **kwargs)
    assert passes.faithful and passes.summary.startswith("Faithful:")
    assert not fails.faithful and fails.summary.startswith("Not shown to be faithful:")
    assert passes.deletion_auc == fails.deletion_auc  # same curves, only the margin differs
    for number in (fails.deletion_auc, fails.random_deletion_auc, low, high, fails.deletion_limit, fails.margin_auc):
        assert f"{number:.2f}" in fails.summary

    # A map that ranks voxels at random beats chance by no margin.
    noise = np.random.default_rng(5).random(x.shape[2:])
    chance = deletion_insertion(predict, x, noise, NODULE, **kwargs)
    assert abs(chance.deletion_auc - chance.random_deletion_auc) < 0.05
    assert not chance.faithful and chance.summary.startswith("Not shown to be faithful:")
    with pytest.raises(InputError, match="random order"):
        deletion_insertion(predict, x, truth, NODULE, random_orders=0)


def test_deletion_with_blurred_baseline() -> None:
    x = nodule_patch()
    module = box_model()
    truth = np.zeros(x.shape[2:], dtype=np.float32)
    truth[BOX] = 1.0

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(batch)).numpy()

    result = deletion_insertion(predict, x, truth, NODULE, steps=10, baseline="blur", blur_sigma=2.0)
    assert result.insertion[0] != result.insertion[-1]
    assert result.insertion_auc > result.random_insertion_auc
    with pytest.raises(InputError, match="'blur'"):
        deletion_insertion(predict, x, truth, NODULE, baseline="noise")


def test_unet_gradcam_is_faithful_on_onnx() -> None:
    """Map from the shipped MONAI bundle (torch), curves from its ONNX export: the nodule region's probability."""
    bundle = MODELS / "chest-ct-lung-nodule-bundle"
    network = load_bundle_module(ModelEntry.from_dict(describe_monai_bundle(bundle), bundle))
    size = 40
    x = nodule_patch(size, center=(20.0, 18.0, 22.0))
    region = np.zeros((size,) * 3, dtype=bool)
    region[15:26, 13:24, 17:28] = True
    target = ScoreTarget(2, region, "Lung lesion")
    saliency = grad_cam(network, x, target).map
    backend = OnnxBackend(MODELS / "chest-ct-lung-nodule.onnx", "cpu")
    result = deletion_insertion(backend.predict, x, saliency, target, steps=10, batch_size=8)
    assert result.faithful, result.summary
    assert "the mean Lung lesion probability in the region" in result.summary


def test_deletion_insertion_rejects_bad_maps() -> None:
    x = nodule_patch(16)

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.zeros((len(batch), 2), dtype=np.float32)

    with pytest.raises(InputError, match="input grid"):
        deletion_insertion(predict, x, np.zeros((8, 8, 8)), NODULE)
    bad = np.zeros((16, 16, 16))
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        deletion_insertion(predict, x, bad, NODULE)
