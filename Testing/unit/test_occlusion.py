"""Occlusion sensitivity: identical maps to MONAI's OcclusionSensitivity and to a brute-force loop, on real torch,
TorchScript and ONNX Runtime models; the exact incremental path; ROI, skipping, out-of-memory, cancel, bad input."""

from __future__ import annotations

import io
import json
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from MedAIExtension.errors import CancelledError, InputError, ModelError  # noqa: E402
from MedAIExtension.explain.occlusion import occlusion_sensitivity, occlusion_windows  # noqa: E402
from MedAIExtension.explain.occlusion_incremental import (  # noqa: E402
    IncrementalOcclusion,
    NotAChainError,
    decompose_chain,
)
from MedAIExtension.explain.types import ScoreTarget  # noqa: E402
from MedAIExtension.progress import CancelToken, Progress  # noqa: E402
from MedAIExtension.training.classifier_network import build_classifier  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Many tiny torch operations: one intra-op thread is fastest (and immune to a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise(module: nn.Module, seed: int, head_gain: float = 20.0) -> nn.Module:
    """Seeded weights with non-trivial batch-norm statistics and a strong head, so occlusion changes the score."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Conv3d, nn.Linear)):
                fan_in = layer.weight[0].numel()
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if layer.bias is not None:
                    layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.1)
            if isinstance(layer, nn.BatchNorm3d):
                layer.running_mean.copy_(torch.randn(layer.num_features, generator=generator) * 0.1)
                layer.running_var.copy_(torch.rand(layer.num_features, generator=generator) + 0.5)
                layer.weight.copy_(torch.rand(layer.num_features, generator=generator) + 0.5)
                layer.bias.copy_(torch.randn(layer.num_features, generator=generator) * 0.1)
        last = [m for m in module.modules() if isinstance(m, (nn.Conv3d, nn.Linear))][-1]
        last.weight.mul_(head_gain)
    return module.eval()


def _centred(module: nn.Module, x: np.ndarray) -> nn.Module:
    """Shift the last layer's bias so every class has the same logit for ``x`` (no saturated softmax)."""
    last = [m for m in module.modules() if isinstance(m, (nn.Conv3d, nn.Linear))][-1]
    with torch.inference_mode():
        logits = module(torch.from_numpy(x))
    with torch.no_grad():
        last.bias.sub_(logits.flatten(2).mean(2)[0] if logits.ndim > 2 else logits[0])
    return module


def _classifier(seed: int = 0) -> nn.Module:
    return _randomise(build_classifier(widths=[4, 8, 8, 8]), seed)


def _odd_chain(seed: int = 1) -> nn.Module:
    """A chain with every local layer kind: strided, dilated and grouped convs, padded max/avg pooling."""
    layers = OrderedDict(
        conv1=nn.Conv3d(2, 6, kernel_size=(3, 5, 3), padding=(1, 2, 1)),
        bn1=nn.BatchNorm3d(6),
        act1=nn.LeakyReLU(0.1),
        pool1=nn.MaxPool3d(3, stride=2, padding=1),
        conv2=nn.Conv3d(6, 6, kernel_size=3, padding=2, dilation=2, groups=2),
        act2=nn.GELU(),
        drop=nn.Dropout3d(0.3),
        conv3=nn.Conv3d(6, 8, kernel_size=3, stride=(2, 1, 2), padding=1),
        pool2=nn.AvgPool3d(3, stride=1, padding=1),
        act3=nn.Tanh(),
        gap=nn.AdaptiveAvgPool3d(1),
        flatten=nn.Flatten(),
        fc1=nn.Linear(8, 8),
        act4=nn.ReLU(),
        fc2=nn.Linear(8, 3),
    )
    return _randomise(nn.Sequential(layers), seed, head_gain=10.0)


def _predictor(module: nn.Module):
    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).numpy()

    return predict


def _image(shape: tuple[int, ...], channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 0.2, size=(1, channels, *shape)).astype(np.float32)
    centre = tuple(s // 3 for s in shape)
    x[(0, slice(None), *(slice(c, c + 3) for c in centre))] += 2.0  # a bright "object" drives the score
    return x


def _monai_map(module: nn.Module, x: np.ndarray, mask, stride, mode, channel: int) -> np.ndarray:
    """MONAI's OcclusionSensitivity with the same window scan (stride → overlap) and the same softmax."""
    from monai.visualize import OcclusionSensitivity

    n = x.ndim - 2
    masks = (mask,) * n if isinstance(mask, int) else tuple(mask)
    strides = (stride,) * n if isinstance(stride, int) else tuple(stride)
    overlap = [max(0.0, 1.0 - (s + 0.5) / m) for s, m in zip(strides, masks, strict=True)]
    occ = OcclusionSensitivity(
        module, mask_size=masks, n_batch=7, verbose=False, mode=mode, overlap=overlap, activate=lambda o: o.softmax(1)
    )
    with torch.inference_mode():
        result, _ = occ(torch.from_numpy(x))
    return result[0, channel].numpy()


def _brute_force(predict, x: np.ndarray, target: ScoreTarget, mask, stride, fill: float) -> np.ndarray:
    """One forward pass per window (windows from MONAI's dense_patch_slices), plain average of the scores."""
    from monai.data.utils import dense_patch_slices

    shape = x.shape[2:]
    total, count = np.zeros(shape), np.zeros(shape)
    for window in dense_patch_slices(shape, mask, stride):
        occluded = x.copy()
        occluded[(0, slice(None), *window)] = fill
        score = float(np.asarray(target.score(predict(occluded), activate=True))[0])
        total[window] += score
        count[window] += 1
    return total / count


@pytest.mark.parametrize(
    ("shape", "mask", "stride"),
    [((10, 7, 9), 4, 3), ((12, 9, 11), (5, 3, 4), (2, 3, 4)), ((6, 8, 5), (6, 4, 5), (6, 2, 1)), ((9,), 3, 2)],
)
def test_windows_are_monais_scan(shape, mask, stride):
    from monai.data.utils import dense_patch_slices

    n = len(shape)
    masks = (mask,) * n if isinstance(mask, int) else mask
    strides = (stride,) * n if isinstance(stride, int) else stride
    intervals = [m if m == s else t for m, s, t in zip(masks, shape, strides, strict=True)]
    expected = [[[int(s.start), int(s.stop)] for s in w] for w in dense_patch_slices(shape, masks, intervals)]
    assert occlusion_windows(shape, mask, stride).tolist() == expected


@pytest.mark.parametrize(("mode", "baseline"), [(0.0, 0.0), ("mean_img", "mean"), ("gaussian", "gaussian")])
def test_generic_path_equals_monai(mode, baseline):
    x = _image((12, 10, 14))
    model = _centred(_classifier(), x)
    target = ScoreTarget(1)
    result = occlusion_sensitivity(
        _predictor(model), x, target, mask_size=(4, 3, 5), stride=(2, 3, 4), baseline=baseline, batch_size=5
    )
    assert result.engine == "generic"
    assert result.windows_evaluated == result.windows_total == len(occlusion_windows(x.shape[2:], (4, 3, 5), (2, 3, 4)))
    assert np.ptp(result.raw) > 0.05, "the model must react to occlusion for the comparison to mean anything"
    reference = _monai_map(model, x, (4, 3, 5), (2, 3, 4), mode, 1)
    np.testing.assert_allclose(result.raw, reference, atol=1e-4)
    np.testing.assert_allclose(result.sensitivity, result.base_score - reference, atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "mask", "stride"),
    [((20, 17, 23), 5, 3), ((16, 11, 13), (6, 4, 3), (4, 3, 2)), ((9, 12, 10), (9, 5, 4), (4, 3, 3))],
)
def test_incremental_path_is_exact_on_the_classifier(shape, mask, stride):
    """Receptive fields reach the borders; non-cubic shapes; strides not dividing the size; clamped last windows."""
    x = _image(shape, seed=1)
    model = _centred(_classifier(seed=3), x)
    target = ScoreTarget(0)
    predict = _predictor(model)
    fast = occlusion_sensitivity(predict, x, target, mask_size=mask, stride=stride, module=model, batch_size=6)
    slow = occlusion_sensitivity(predict, x, target, mask_size=mask, stride=stride, batch_size=6)
    assert fast.engine == "incremental", fast.notes
    assert fast.batch_size >= 6 and slow.batch_size == 6  # the incremental path batches more windows
    assert np.ptp(slow.raw) > 0.05
    np.testing.assert_allclose(fast.raw, slow.raw, atol=1e-5)
    np.testing.assert_allclose(fast.raw, _monai_map(model, x, mask, stride, 0.0, 0), atol=1e-4)


def test_gaussian_occlusion_on_the_incremental_path_equals_monai():
    x = _image((13, 16, 11), seed=6)
    model = _centred(_classifier(seed=8), x)
    result = occlusion_sensitivity(
        _predictor(model), x, ScoreTarget(0), mask_size=(5, 6, 4), stride=(3, 2, 3), baseline="gaussian", module=model
    )
    assert result.engine == "incremental", result.notes
    reference = _monai_map(model, x, (5, 6, 4), (3, 2, 3), "gaussian", 0)
    assert np.ptp(reference) > 0.01
    np.testing.assert_allclose(result.raw, reference, atol=1e-4)


def test_incremental_path_handles_every_local_layer_kind():
    x = _image((15, 13, 18), channels=2, seed=2)
    model = _centred(_odd_chain(), x)
    target = ScoreTarget(2)
    predict = _predictor(model)
    fast = occlusion_sensitivity(predict, x, target, mask_size=(4, 5, 3), stride=(3, 2, 3), module=model, baseline=-0.5)
    assert fast.engine == "incremental", fast.notes
    reference = _brute_force(predict, x, target, (4, 5, 3), (3, 2, 3), -0.5)
    assert np.ptp(reference) > 0.01
    np.testing.assert_allclose(fast.raw, reference, atol=1e-5)


def test_incremental_batches_group_windows_and_keep_their_order():
    """Windows of many box-size classes (strided, padded layers; borders), shuffled: every window is run once, in
    batches of at most the asked size, and each output equals the module's own forward pass on the occluded image."""
    x = _image((15, 13, 18), channels=2, seed=4)
    model = _centred(_odd_chain(seed=5), x)
    layers, tail = decompose_chain(model, 3)
    engine = IncrementalOcclusion(layers, tail, torch.from_numpy(x))
    windows = occlusion_windows(x.shape[2:], (4, 5, 3), (2, 3, 2))
    windows = windows[np.random.default_rng(0).permutation(len(windows))]
    sizes = engine._sizes(engine._exact_boxes(windows))
    assert len(np.unique(sizes.reshape(len(windows), -1), axis=0)) > 10  # many classes to group
    batches = engine.plan(sizes, 16)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(windows)))
    assert max(len(b) for b in batches) <= 16 and len(batches) < len(windows) / 2
    fill = torch.tensor(-0.5)
    outputs = engine.outputs(windows, fill)
    occluded = np.repeat(x, len(windows), axis=0)
    for i, w in enumerate(windows):
        occluded[(i, slice(None), *(slice(a, b) for a, b in w))] = -0.5
    with torch.inference_mode():
        reference = model(torch.from_numpy(occluded))
    assert torch.allclose(outputs.softmax(1), reference.softmax(1), atol=1e-5, rtol=0.0)
    assert float((reference.softmax(1)[:, 2] - reference.softmax(1)[:, 2].mean()).abs().max()) > 0.01


def test_torchscript_export_uses_the_incremental_path():
    x = _image((14, 12, 16), seed=3)
    model = _centred(_classifier(seed=5), x)
    scripted = torch.jit.script(model)
    target = ScoreTarget(1)
    fast = occlusion_sensitivity(_predictor(scripted), x, target, mask_size=4, stride=3, module=scripted)
    assert fast.engine == "incremental", fast.notes
    np.testing.assert_allclose(fast.raw, _monai_map(model, x, 4, 3, 0.0, 1), atol=1e-4)


def test_shipped_classifier_uses_the_exact_incremental_path():
    from MedAIExtension.models.backends import load_backend
    from MedAIExtension.models.catalog import load_catalog

    catalog = load_catalog(include_user_models=False)
    if "chest-ct-nodule-classifier" not in catalog:
        pytest.skip("the shipped classifier is not in Resources/Models yet")
    backend = load_backend(catalog.get("chest-ct-nodule-classifier"), "cpu")
    torch.set_num_threads(1)  # the backend sets its own thread count
    x = np.clip(_image((32, 32, 32), seed=9) * 0.5, 0.0, 1.0)
    fast = occlusion_sensitivity(backend.predict, x, ScoreTarget(0), mask_size=8, stride=8, module=backend.module)
    slow = occlusion_sensitivity(backend.predict, x, ScoreTarget(0), mask_size=8, stride=8)
    assert fast.engine == "incremental", fast.notes
    np.testing.assert_allclose(fast.raw, slow.raw, atol=1e-5)


def test_onnx_runtime_model_gives_the_same_map():
    ort = pytest.importorskip("onnxruntime")
    x = _image((12, 12, 12), seed=4)
    model = _centred(_classifier(seed=7), x)
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        torch.zeros(1, 1, 12, 12, 12),
        buffer,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
        dynamo=False,
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    target = ScoreTarget(0)
    onnx_map = occlusion_sensitivity(lambda b: session.run(None, {"x": b})[0], x, target, mask_size=4, stride=2)
    torch_map = occlusion_sensitivity(_predictor(model), x, target, mask_size=4, stride=2, module=model)
    assert onnx_map.engine == "generic" and torch_map.engine == "incremental"
    np.testing.assert_allclose(onnx_map.raw, torch_map.raw, atol=1e-4)


def test_non_chain_modules_fall_back_to_the_generic_path():
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv3d(1, 4, 3, padding=1)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            y = self.conv(x) + x
            return self.head(y.mean(dim=(2, 3, 4)))

    instance_norm = _randomise(
        nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.AdaptiveAvgPool3d(1), nn.Flatten()), 2
    )
    torch.manual_seed(4)  # batch normalisation without running statistics uses each batch's own statistics
    batch_statistics = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1),
        nn.BatchNorm3d(4, track_running_stats=False),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
    ).eval()
    x = _image((8, 8, 8))
    for module in (_randomise(Residual(), 1), instance_norm, batch_statistics):
        with pytest.raises(NotAChainError):
            decompose_chain(module, 3)
        result = occlusion_sensitivity(_predictor(module), x, ScoreTarget(1), mask_size=4, stride=2, module=module)
        assert result.engine == "generic"
        assert any("not a simple chain" in note for note in result.notes), result.notes
    # a chain in training mode (dropout, batch statistics) is not run incrementally
    trained = _classifier().train()
    result = occlusion_sensitivity(_predictor(trained), x, ScoreTarget(1), mask_size=4, stride=2, module=trained)
    assert result.engine == "generic" and "training mode" in result.notes[0]
    # a module that is not what predict runs: the base scores differ, so the fast path is refused
    other = _centred(_classifier(seed=11), x)
    with torch.no_grad():
        other.head.bias[1] += 1.0
    result = occlusion_sensitivity(
        _predictor(_centred(_classifier(), x)), x, ScoreTarget(1), mask_size=4, stride=2, module=other
    )
    assert result.engine == "generic" and "predict() scores" in result.notes[0]


def test_dense_outputs_with_a_region_score():
    """A segmentation-like model (N, L, *S): the region score of a label, checked against a brute-force loop."""
    x = _image((9, 8, 10))
    model = _randomise(nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv3d(3, 2, 3, padding=1)), 4, 1)
    region = np.zeros((9, 8, 10), bool)
    region[2:6, 2:5, 3:7] = True
    target = ScoreTarget(1, region=region)
    predict = _predictor(model)
    result = occlusion_sensitivity(predict, x, target, mask_size=3, stride=2, module=model)
    assert result.engine == "generic"
    np.testing.assert_allclose(result.raw, _brute_force(predict, x, target, (3, 3, 3), (2, 2, 2), 0.0), atol=1e-6)


def test_roi_gives_the_full_scan_values_inside_and_zero_outside():
    x = _image((16, 14, 12))
    model = _centred(_classifier(seed=2), x)
    target = ScoreTarget(0)
    roi = (slice(5, 11), slice(3, 8), slice(None))
    full = occlusion_sensitivity(_predictor(model), x, target, mask_size=4, stride=2, module=model)
    part = occlusion_sensitivity(_predictor(model), x, target, mask_size=4, stride=2, module=model, roi=roi)
    assert part.windows_evaluated < full.windows_evaluated == full.windows_total == part.windows_total
    assert json.loads(json.dumps(part.to_dict()))["windows_evaluated"] == part.windows_evaluated
    np.testing.assert_allclose(part.raw[roi], full.raw[roi], atol=1e-6)
    outside = np.ones(x.shape[2:], bool)
    outside[roi] = False
    assert np.all(part.sensitivity[outside] == 0) and np.all(np.isfinite(part.raw))
    assert np.all(part.raw[outside] == np.float32(part.base_score))


def test_windows_that_change_nothing_are_skipped_exactly():
    x = _image((14, 12, 12), seed=5)
    x[0, 0, :, :6, :] = 0.0  # half the image already equals the baseline
    model = _centred(_classifier(seed=4), x)
    predict = _predictor(model)
    result = occlusion_sensitivity(predict, x, ScoreTarget(1), mask_size=4, stride=2, module=model)
    assert result.windows_skipped > 0
    assert result.windows_skipped + result.windows_evaluated == result.windows_total
    np.testing.assert_allclose(result.raw, _monai_map(model, x, 4, 2, 0.0, 1), atol=1e-4)


def test_out_of_memory_halves_the_batch_and_reports_it():
    model = _classifier()
    inner = _predictor(model)
    calls: list[int] = []

    def small_memory(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if len(batch) > 3:
            raise MemoryError("simulated: cannot allocate the batch")
        return inner(batch)

    x = _image((10, 10, 10))
    result = occlusion_sensitivity(small_memory, x, ScoreTarget(0), mask_size=4, stride=3, batch_size=16)
    assert result.batch_size == 2 and calls[1:4] == [16, 8, 4]
    assert any("Out of memory" in note for note in result.notes)
    plain = occlusion_sensitivity(inner, x, ScoreTarget(0), mask_size=4, stride=3, batch_size=16)
    np.testing.assert_allclose(result.raw, plain.raw, atol=1e-7)

    def no_memory(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for 1 MB")

    with pytest.raises(ModelError, match="Out of memory"):
        occlusion_sensitivity(no_memory, x, ScoreTarget(0), mask_size=4, stride=3, batch_size=4)


def test_model_failures_are_model_errors():
    model = _classifier()
    inner = _predictor(model)
    x = _image((8, 8, 8))
    with pytest.raises(ModelError, match="one row per input"):
        occlusion_sensitivity(lambda b: inner(b)[:1], x, ScoreTarget(0), mask_size=4, stride=2, batch_size=4)

    def wrong_shape(batch: np.ndarray) -> np.ndarray:
        if len(batch) > 1:
            raise ValueError("expected input of shape (1, 1, 8, 8, 8)")
        return inner(batch)

    with pytest.raises(ModelError, match="expected input of shape"):
        occlusion_sensitivity(wrong_shape, x, ScoreTarget(0), mask_size=4, stride=2, batch_size=4)


def test_cancel_stops_the_run():
    model = _classifier()
    token = CancelToken()
    seen: list[float] = []

    def callback(fraction: float, message: str) -> None:
        seen.append(fraction)
        if fraction > 0.1:
            token.cancel()

    with pytest.raises(CancelledError):
        occlusion_sensitivity(
            _predictor(model), _image((10, 10, 10)), ScoreTarget(0), mask_size=4, stride=2, batch_size=4,
            progress=Progress(callback, token),
        )  # fmt: skip
    assert seen and max(seen) < 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask_size": 11}, "larger than the image"),
        ({"stride": 0}, "stride must be ≥ 1"),
        ({"mask_size": 3, "stride": 4}, "at most the mask size"),
        ({"roi": (slice(20, 30), slice(None), slice(None))}, "outside the image"),
        ({"roi": (slice(0, 4),)}, "3 slices"),
        ({"baseline": "blur"}, "'mean'"),
        ({"batch_size": 0}, "batch size"),
    ],
)
def test_bad_input_is_explained(kwargs, message):
    model = _classifier()
    with pytest.raises(InputError, match=message):
        occlusion_sensitivity(_predictor(model), _image((10, 9, 8)), ScoreTarget(0), **kwargs)


def test_bad_input_shape_is_explained():
    model = _classifier()
    with pytest.raises(InputError, match="one image"):
        occlusion_sensitivity(_predictor(model), np.zeros((2, 1, 8, 8, 8), np.float32), ScoreTarget(0))
