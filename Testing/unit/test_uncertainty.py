"""Segmentation uncertainty (test-time flips, MC dropout) with real models: a pointwise ONNX model whose answer is
known exactly, small torch models with and without dropout, and the shipped lung/nodule model on a phantom CT."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage, special, stats

from MedAIExtension.errors import CancelledError, InputError, ModelError
from MedAIExtension.explain.uncertainty import FLIP_COMBINATIONS, segmentation_uncertainty
from MedAIExtension.io import Image, affine_from_parts
from MedAIExtension.models.backends import TorchBackend, load_backend
from MedAIExtension.models.catalog import ModelEntry, load_catalog, sha256_of
from MedAIExtension.models.inference import InferenceOptions, predict_scores, prepare_input, run_inference
from MedAIExtension.models.preprocessing import crop_image, resample_to_grid
from MedAIExtension.progress import CancelToken, Progress
from Testing.model_helpers import tiny_onnx

WEIGHTS = [0.0, 3.0, 6.0]
BIAS = [1.5, 0.0, -2.5]
NORMALIZATION = {"type": "clip_scale", "a_min": -1000, "a_max": 400, "b_min": 0, "b_max": 1}


def _entry(folder: Path, backend: str = "onnx", axis_order: str = "kji", path: Path | None = None) -> ModelEntry:
    """A native-grid, three-class entry (background, "Soft", "Dense") for a pointwise model."""
    path = path or tiny_onnx(folder / "pointwise.onnx", out_channels=3, weights=WEIGHTS, bias=BIAS)
    data = {
        "name": "pointwise",
        "title": "Pointwise",
        "version": "1",
        "task": "segmentation",
        "backend": backend,
        "files": [{"path": path.name, "sha256": sha256_of(path)}],
        "input": {
            "modality": "CT",
            "orientation": "native",
            "axis_order": axis_order,
            "normalization": NORMALIZATION,
            "patch_size": [16, 16, 16],
        },
        "inference": {"overlap": 0.25, "batch_size": 4},
        "labels": [{"value": 1, "name": "Soft", "color": [0, 1, 0]}, {"value": 2, "name": "Dense", "color": [1, 0, 0]}],
    }
    return ModelEntry.from_dict(data, folder)


def _asymmetric_ct(shape: tuple[int, int, int] = (20, 26, 30)) -> Image:
    """A smooth ramp plus an off-centre ball: no flip of any axis maps it onto itself."""
    k, j, i = np.indices(shape, dtype=float)
    hu = -1000.0 + 35.0 * i + 20.0 * j + 12.0 * k
    hu[(k - 6) ** 2 + (j - 18) ** 2 + (i - 8) ** 2 < 20] = 350.0
    return Image(
        hu.astype(np.int16),
        affine_from_parts([3.0, -7.0, 11.0], (0.8, 0.9, 1.5), np.diag([-1.0, -1.0, 1.0])),
        modality="CT",
    )


def _expected_entropy(ct: Image) -> np.ndarray:
    """The pointwise model's normalised predictive entropy, computed independently (scipy)."""
    x = np.clip((ct.array.astype(np.float64) + 1000.0) / 1400.0, 0.0, 1.0)
    logits = np.stack([w * x + b for w, b in zip(WEIGHTS, BIAS, strict=True)])
    return stats.entropy(special.softmax(logits, axis=0), axis=0) / math.log(3)


@pytest.mark.parametrize("axis_order", ["kji", "ijk"])
def test_flips_are_undone_on_the_model_grid(tmp_path: Path, axis_order: str) -> None:
    # a pointwise model is flip-equivariant: every flipped sample, mirrored back, equals the unflipped one
    ct = _asymmetric_ct()
    entry = _entry(tmp_path, axis_order=axis_order)
    backend = load_backend(entry, "cpu")
    single = segmentation_uncertainty(ct, entry, backend, tta_flips=1)
    every = segmentation_uncertainty(ct, entry, backend, tta_flips=8)
    expected = _expected_entropy(ct)
    assert single.entropy.same_grid(ct) and every.entropy.same_grid(ct)
    np.testing.assert_allclose(single.entropy.array, expected, atol=2e-5)
    np.testing.assert_allclose(every.entropy.array, expected, atol=2e-5)
    assert single.mutual_information is None and single.samples == 1
    assert every.samples == 8 and every.flips == FLIP_COMBINATIONS
    assert float(every.mutual_information.array.max()) < 1e-4  # all samples agree
    assert 0.3 < float(expected.max()) <= 1.0  # the test image really has uncertain voxels
    logits = np.stack([w * np.clip((ct.array + 1000.0) / 1400.0, 0, 1) + b for w, b in zip(WEIGHTS, BIAS)])
    np.testing.assert_array_equal(every.labelmap.array, np.argmax(logits, axis=0))


@pytest.mark.parametrize(("axis_order", "flips", "disagree"), [("kji", 2, False), ("kji", 4, True), ("ijk", 2, True)])
def test_flip_axes_are_the_model_grids(tmp_path: Path, axis_order: str, flips: int, disagree: bool) -> None:
    # a convolution along the network input's first axis (k for "kji", i for "ijk") changes under a flip of that
    # axis only; the second flip combination mirrors the model grid's i axis, the fourth its k axis
    import torch

    torch.manual_seed(0)
    module = torch.nn.Conv3d(1, 3, (3, 1, 1), padding=(1, 0, 0))
    entry = _entry(tmp_path, axis_order=axis_order)
    result = segmentation_uncertainty(_asymmetric_ct(), entry, TorchBackend(module, "cpu"), tta_flips=flips)
    assert (float(result.mutual_information.array.max()) > 1e-3) is disagree


def test_segment_table_and_json_summary(tmp_path: Path) -> None:
    ct = _asymmetric_ct()
    entry = _entry(tmp_path)
    result = segmentation_uncertainty(ct, entry, load_backend(entry, "cpu"), tta_flips=2, threshold=0.4)
    labels, entropy = result.labelmap.array, result.entropy.array
    assert [row.value for row in result.segments] != [] and {row.value for row in result.segments} == set(
        np.unique(labels[labels > 0]).tolist()
    )
    for row in result.segments:
        mask = labels == row.value
        assert row.name == entry.label(row.value).name
        assert row.voxels == np.count_nonzero(mask)
        assert row.volume_ml == pytest.approx(row.voxels * ct.voxel_volume_mm3 / 1000.0)
        assert row.mean_entropy == pytest.approx(float(entropy[mask].mean()), rel=1e-5)
        assert row.p95_entropy == pytest.approx(float(np.percentile(entropy[mask], 95)), rel=1e-5)
        assert row.uncertain_fraction == pytest.approx(np.count_nonzero(entropy[mask] > 0.4) / row.voxels)
    means = [row.mean_entropy for row in result.segments]
    assert means == sorted(means, reverse=True)
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["unit"] == "1" and summary["samples"] == 2 and summary["flips"] == [[], ["i"]]
    assert summary["max_entropy_nats"] == pytest.approx(math.log(3))
    assert [row["value"] for row in summary["segments"]] == [row.value for row in result.segments]


def test_bad_arguments_name_the_fix(tmp_path: Path) -> None:
    ct = _asymmetric_ct()
    entry = _entry(tmp_path)
    backend = load_backend(entry, "cpu")
    for flips in (0, 9):
        with pytest.raises(InputError, match=r"tta_flips must be 1..8"):
            segmentation_uncertainty(ct, entry, backend, tta_flips=flips)
    with pytest.raises(InputError, match="mc_dropout"):
        segmentation_uncertainty(ct, entry, backend, mc_dropout=-1)
    with pytest.raises(InputError, match="threshold"):
        segmentation_uncertainty(ct, entry, backend, threshold=1.5)
    with pytest.raises(ModelError, match=r"MC dropout needs a torch model.*mc_dropout=0"):
        segmentation_uncertainty(ct, entry, backend, tta_flips=2, mc_dropout=4)
    classifier = replace(entry, task="classification")
    with pytest.raises(ModelError, match=r"classification model.*gradcam"):
        segmentation_uncertainty(ct, classifier, backend)


def _torch_entry(folder: Path, dropout: float) -> tuple[ModelEntry, TorchBackend]:
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Dropout3d(dropout),
        torch.nn.Conv3d(8, 3, 1),
    )
    weights = folder / "small.pt"
    torch.save(module.state_dict(), weights)
    return _entry(folder, backend="torchscript", path=weights), TorchBackend(module, "cpu")


def test_mc_dropout_on_a_torch_model(tmp_path: Path) -> None:
    ct = _asymmetric_ct()
    entry, backend = _torch_entry(tmp_path, dropout=0.3)
    first = segmentation_uncertainty(ct, entry, backend, tta_flips=1, mc_dropout=4, seed=7)
    again = segmentation_uncertainty(ct, entry, backend, tta_flips=1, mc_dropout=4, seed=7)
    other = segmentation_uncertainty(ct, entry, backend, tta_flips=1, mc_dropout=4, seed=8)
    assert first.samples == 4 and first.mc_dropout == 4 and not first.notes
    np.testing.assert_array_equal(first.entropy.array, again.entropy.array)
    assert not np.array_equal(first.entropy.array, other.entropy.array)
    assert float(first.mutual_information.array.max()) > 1e-3  # the dropout passes disagree
    assert all(not layer.training for layer in backend.module.modules())  # dropout is switched off again
    combined = segmentation_uncertainty(ct, entry, backend, tta_flips=2, mc_dropout=2)
    assert combined.samples == 4


def test_mc_dropout_without_dropout_layers(tmp_path: Path) -> None:
    ct = _asymmetric_ct()
    entry, backend = _torch_entry(tmp_path, dropout=0.0)  # like MONAI's UNet: Dropout(p=0) drops nothing
    with pytest.raises(ModelError, match=r"no active dropout layers.*tta_flips 2..8"):
        segmentation_uncertainty(ct, entry, backend, tta_flips=1, mc_dropout=4)
    result = segmentation_uncertainty(ct, entry, backend, tta_flips=2, mc_dropout=4)
    assert result.samples == 2 and result.mc_dropout == 0
    assert any("no active dropout layers" in note for note in result.notes)


class _SmallMemory:
    """A real backend on a machine that "runs out of memory" above one window per call (fault injection)."""

    def __init__(self, backend) -> None:
        self.backend, self.provider, self.batches = backend, backend.provider, []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.shape[0])
        if batch.shape[0] > 1:
            raise MemoryError("out of memory")
        return self.backend.predict(batch)


def test_out_of_memory_halves_the_window_batch(tmp_path: Path) -> None:
    ct = _asymmetric_ct()
    entry = _entry(tmp_path)
    backend = load_backend(entry, "cpu")
    small = _SmallMemory(backend)
    result = segmentation_uncertainty(ct, entry, small, tta_flips=2)
    reference = segmentation_uncertainty(ct, entry, backend, tta_flips=2)
    np.testing.assert_allclose(result.entropy.array, reference.entropy.array, atol=1e-6)
    assert small.batches[-1] == 1 and any("memory" in note for note in result.notes)


def test_progress_and_cancel(tmp_path: Path) -> None:
    ct = _asymmetric_ct()
    entry = _entry(tmp_path)
    backend = load_backend(entry, "cpu")
    seen: list[tuple[float, str]] = []
    segmentation_uncertainty(ct, entry, backend, tta_flips=3, progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("sample 3/3" in m for _, m in seen)

    token = CancelToken()

    def cancel_in_second_sample(fraction: float, message: str) -> None:
        if message.startswith("sample 2/"):
            token.cancel()

    with pytest.raises(CancelledError):
        segmentation_uncertainty(ct, entry, backend, tta_flips=3, progress=Progress(cancel_in_second_sample, token))


def test_empty_image_gives_zero_uncertainty(tmp_path: Path) -> None:
    entry = replace(_entry(tmp_path), input=replace(_entry(tmp_path).input, crop_foreground_above=-500.0))
    air = _asymmetric_ct().with_array(np.full((20, 26, 30), -1000, dtype=np.int16))
    result = segmentation_uncertainty(air, entry, load_backend(entry, "cpu"), tta_flips=2)
    assert not result.entropy.array.any() and not result.labelmap.array.any() and result.segments == []
    assert result.notes


# ---- the shipped lung/nodule model on a phantom chest CT ---------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> dict:
    """One phantom slab (patient off-centre, body cut by the field of view: no flip maps it onto itself), the
    engine's label map, and the uncertainty with two flips."""
    from MedAIExtension.phantom import LungSide, NoduleKind, NoduleSpec, PhantomSpec, generate_chest_phantom

    pose = np.eye(4)
    pose[0, 3] = 40.0
    spec = PhantomSpec(
        size_ijk=(124, 92, 20),
        spacing=(2.5, 2.5, 2.5),
        center_ras=(0.0, 0.0, 20.0),
        seed=3,
        pose_ras=tuple(tuple(row) for row in pose),
        nodules=(NoduleSpec(12.0, NoduleKind.SOLID, lung=LungSide.RIGHT, position=(0.4, 0.0, 0.1)),),
    )
    phantom = generate_chest_phantom(spec)
    entry = load_catalog().get("chest-ct-lung-nodule")
    backend = load_backend(entry, "cpu")
    options = InferenceOptions(roi_size=(96, 96, 48), overlap=0.0)  # a 39-slice slab; fewer windows
    return {
        "phantom": phantom,
        "entry": entry,
        "backend": backend,
        "options": options,
        "engine": run_inference(phantom.ct, entry, backend, options).labelmap.array,
        "result": segmentation_uncertainty(phantom.ct, entry, backend, tta_flips=2, options=options),
    }


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_shipped_model_entropy_is_high_at_boundaries(shipped: dict) -> None:
    result, phantom = shipped["result"], shipped["phantom"]
    entropy = result.entropy.array
    assert result.entropy.same_grid(phantom.ct) and entropy.dtype == np.float32
    assert float(entropy.min()) >= 0.0 and float(entropy.max()) <= 1.0
    assert float(entropy.max()) > 0.5
    lung, nodule = phantom.labels.array == 1, phantom.labels.array == 2
    lung_edge = ndimage.binary_dilation(lung) & ~ndimage.binary_erosion(lung)
    nodule_edge = ndimage.binary_dilation(nodule) & ~ndimage.binary_erosion(nodule)
    deep_lung = ndimage.binary_erosion(lung, iterations=3)
    assert float(entropy[lung_edge].mean()) > 5 * float(entropy[deep_lung].mean())
    assert float(entropy[nodule_edge].mean()) > 2 * float(entropy[deep_lung].mean())
    assert result.samples == 2 and result.provider.startswith("onnxruntime:")


def test_shipped_model_flipped_back_label_map_matches_the_engine(shipped: dict) -> None:
    result = shipped["result"]
    assert result.labelmap.same_grid(shipped["phantom"].ct)
    assert _dice(result.labelmap.array == 1, shipped["engine"] == 1) >= 0.98
    rows = {row.value: row for row in result.segments}
    assert rows[1].name == "Lung" and rows[1].voxels == np.count_nonzero(result.labelmap.array == 1)
    assert rows[1].mean_entropy == pytest.approx(float(result.entropy.array[result.labelmap.array == 1].mean()))


def test_shipped_model_identity_entropy_equals_the_engines_probabilities(shipped: dict) -> None:
    entry, backend, options = (shipped[k] for k in ("entry", "backend", "options"))
    ct = shipped["phantom"].ct
    ct = crop_image(ct, (slice(None), slice(None), slice(0, ct.shape[2] // 2)))  # one lung is enough here
    result = segmentation_uncertainty(ct, entry, backend, tta_flips=1, options=options)
    prepared = prepare_input(ct, entry, options)
    scores, _ = predict_scores(prepared, backend)
    model_entropy = stats.entropy(special.softmax(scores.astype(np.float64), axis=0), axis=0) / math.log(3)
    expected = resample_to_grid(
        Image(model_entropy.astype(np.float32), prepared.model_ijk_to_ras),
        prepared.region.ijk_to_ras,
        prepared.region.shape,
        linear=True,
        fill=0.0,
    ).array
    np.testing.assert_allclose(result.entropy.array[prepared.box], expected, atol=1e-4)
    outside = np.ones(ct.shape, dtype=bool)
    outside[prepared.box] = False
    assert not result.entropy.array[outside].any()
    assert result.mutual_information is None
