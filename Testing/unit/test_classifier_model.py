"""The shipped nodule-vs-vessel classifier: catalogue entries, sha256, TorchScript = ONNX, accuracy on new patches."""

from __future__ import annotations

import numpy as np
import pytest

from MedAIExtension.models.backends import Backend, load_backend
from MedAIExtension.models.catalog import ModelEntry, load_catalog
from MedAIExtension.models.preprocessing import normalize_intensity
from MedAIExtension.phantom import Phantom
from MedAIExtension.phantom.patches import (
    CLASS_NODULE,
    CLASS_VESSEL,
    PATCH_SIZE,
    LabelledPatch,
    extract_patch,
    patches_from_phantom,
    phantom_for_patches,
)
from MedAIExtension.training.classifier_network import CLASSIFIER_TARGET_LAYER

TORCHSCRIPT = "chest-ct-nodule-classifier"
ONNX = "chest-ct-nodule-classifier-onnx"
#: Phantom seed of the patches checked here; the training script uses other seeds (1-3, 9001-9002).
FRESH_SEED = 4321


@pytest.fixture(scope="module")
def entries() -> dict[str, ModelEntry]:
    catalog = load_catalog(include_user_models=False)
    return {name: catalog.get(name) for name in (TORCHSCRIPT, ONNX)}


@pytest.fixture(scope="module")
def backends(entries: dict[str, ModelEntry]) -> dict[str, Backend]:
    return {name: load_backend(entry, "cpu") for name, entry in entries.items()}


@pytest.fixture(scope="module")
def fresh() -> tuple[Phantom, list[LabelledPatch], np.ndarray]:
    """A phantom the model never saw, a patch of each of its usable nodules, as many vessel patches, the input."""
    phantom = phantom_for_patches(FRESH_SEED)
    rng = np.random.default_rng(FRESH_SEED)
    nodules = patches_from_phantom(phantom, 40, 0, rng)
    patches = nodules + patches_from_phantom(phantom, 0, len(nodules), rng)
    norm = load_catalog(include_user_models=False).get(TORCHSCRIPT).input.normalization
    return phantom, patches, np.stack([normalize_intensity(p.ct.array, norm) for p in patches])[:, None]


def test_catalogue_entries(entries: dict[str, ModelEntry]) -> None:
    assert {e.backend for e in entries.values()} == {"torchscript", "onnx"}
    for entry in entries.values():
        entry.verify_files()  # present, sha256 as catalogued
        assert entry.is_classifier and entry.task == "classification"
        assert [(label.value, label.name) for label in entry.labels] == [(1, "Nodule"), (2, "Vessel")]
        assert entry.channel_of(CLASS_NODULE) == 0 and entry.channel_of(CLASS_VESSEL) == 1
        assert entry.labels[1].type is not None and entry.labels[1].type.value == "59820001"
        assert entry.input.patch_size == PATCH_SIZE and entry.input.spacing == (1.0, 1.0, 1.0)
        assert entry.input.orientation == "LPS" and entry.input.axis_order == "kji"
        assert dict(entry.input.normalization)["a_min"] == -1000.0 and dict(entry.input.normalization)["a_max"] == 400
        assert dict(entry.explain) == {"target_layer": CLASSIFIER_TARGET_LAYER, "target_label": CLASS_NODULE}
        assert entry.training["heldout"]["accuracy"] >= 0.95
    assert entries[TORCHSCRIPT].model_file.suffix == ".ts" and entries[ONNX].model_file.suffix == ".onnx"


def test_torchscript_and_onnx_agree(
    backends: dict[str, Backend], fresh: tuple[Phantom, list[LabelledPatch], np.ndarray]
) -> None:
    _, _, x = fresh
    torch_logits = backends[TORCHSCRIPT].predict(x)
    onnx_logits = np.concatenate([backends[ONNX].predict(x[:5]), backends[ONNX].predict(x[5:])])  # dynamic batch
    assert torch_logits.shape == (len(x), 2) and onnx_logits.shape == (len(x), 2)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(backends[TORCHSCRIPT].predict(x), torch_logits)  # deterministic
    assert np.ptp(torch_logits[:, 0] - torch_logits[:, 1]) > 1.0  # the scores really depend on the input


def test_accuracy_on_fresh_phantom_patches(
    backends: dict[str, Backend], fresh: tuple[Phantom, list[LabelledPatch], np.ndarray]
) -> None:
    _, patches, x = fresh
    truth = np.array([p.label for p in patches])
    assert len(patches) >= 12 and np.count_nonzero(truth == CLASS_NODULE) == np.count_nonzero(truth == CLASS_VESSEL)
    for backend in backends.values():
        predicted = np.where(backend.predict(x).argmax(axis=1) == 0, CLASS_NODULE, CLASS_VESSEL)
        assert float(np.mean(predicted == truth)) >= 0.9, list(zip(truth, predicted, [p.kind for p in patches]))


def test_onnx_runs_on_a_bigger_crop(
    backends: dict[str, Backend], entries: dict[str, ModelEntry], fresh: tuple[Phantom, list[LabelledPatch], np.ndarray]
) -> None:
    phantom = fresh[0]
    nodule = max(phantom.truth["nodules"], key=lambda n: n["diameter_mm"])
    crop = extract_patch(phantom.ct, nodule["center_ras"], size=(48, 48, 48))
    x = normalize_intensity(crop.array, entries[ONNX].input.normalization)[None, None]
    onnx_logits = backends[ONNX].predict(x)
    assert onnx_logits.shape == (1, 2)
    np.testing.assert_allclose(onnx_logits, backends[TORCHSCRIPT].predict(x), atol=1e-4, rtol=0)
    odd = backends[ONNX].predict(np.ascontiguousarray(x[:, :, :36, :44, :40]))  # spatial sizes need not be equal
    assert odd.shape == (1, 2) and np.isfinite(odd).all()
