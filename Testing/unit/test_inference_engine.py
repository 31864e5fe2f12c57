"""The inference engine with a real (pointwise) ONNX model whose right answer is known exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from MedAIExtension.errors import CancelledError, InputError
from MedAIExtension.io import Image, affine_from_parts
from MedAIExtension.models.backends import load_backend
from MedAIExtension.models.catalog import ModelEntry, sha256_of
from MedAIExtension.models.inference import InferenceOptions, postprocess_labelmap, run_inference
from MedAIExtension.progress import CancelToken, Progress
from Testing.model_helpers import tiny_onnx

OBLIQUE = Rotation.from_euler("xyz", [15, -25, 40], degrees=True).as_matrix() @ np.diag([-1.0, -1.0, 1.0])


def _entry(folder: Path, spacing=None, orientation="native", crop=None, patch=(16, 16, 16)) -> ModelEntry:
    # label 1 where the normalised intensity (HU -1000..400 -> 0..1) exceeds 0.5, i.e. HU > -300
    path = tiny_onnx(folder / "threshold.onnx", out_channels=2, weights=[0.0, 1.0], bias=[0.5, 0.0])
    data = {
        "name": "threshold",
        "title": "Threshold",
        "version": "1",
        "task": "segmentation",
        "backend": "onnx",
        "files": [{"path": path.name, "sha256": sha256_of(path)}],
        "input": {
            "modality": "CT",
            "spacing": spacing,
            "orientation": orientation,
            "normalization": {"type": "clip_scale", "a_min": -1000, "a_max": 400, "b_min": 0, "b_max": 1},
            "patch_size": list(patch),
            "crop_foreground_above": crop,
        },
        "inference": {"overlap": 0.25, "batch_size": 3},
        "labels": [{"value": 1, "name": "Dense", "color": [1, 0, 0]}],
    }
    return ModelEntry.from_dict(data, folder)


def _ct(direction=OBLIQUE, shape=(30, 40, 36)) -> Image:
    k, j, i = np.indices(shape)
    centre = np.array(shape) / 2
    r = np.sqrt(((np.stack([k, j, i], -1) - centre) ** 2 * np.array([2.0, 1.0, 1.0])).sum(-1))
    array = np.where(r < 12, 40, -1000).astype(np.int16)
    array[r < 4] = 300
    return Image(array, affine_from_parts([5.0, -3.0, 20.0], (1.1, 0.9, 2.0), direction), modality="CT")


def test_native_grid_result_is_exact_and_on_the_input_grid(tmp_path: Path) -> None:
    ct = _ct()
    entry = _entry(tmp_path)
    result = run_inference(ct, entry, load_backend(entry, "cpu"))
    assert result.labelmap.same_grid(ct)
    np.testing.assert_array_equal(result.labelmap.array, (ct.array > -300).astype(np.uint8))
    assert result.windows > 1


def test_body_crop_gives_the_same_answer(tmp_path: Path) -> None:
    ct = _ct()
    with_crop = _entry(tmp_path, crop=-500)
    backend = load_backend(with_crop, "cpu")
    cropped = run_inference(ct, with_crop, backend).labelmap.array
    full = run_inference(ct, with_crop, backend, InferenceOptions(crop_foreground=False)).labelmap.array
    np.testing.assert_array_equal(cropped, full)


def test_resampled_model_grid_maps_back_onto_an_oblique_input(tmp_path: Path) -> None:
    ct = _ct()
    entry = _entry(tmp_path, spacing=[1.5, 1.5, 1.5], orientation="LPS")
    result = run_inference(ct, entry, load_backend(entry, "cpu"))
    assert result.labelmap.same_grid(ct)
    truth = ct.array > -300
    pred = result.labelmap.array == 1
    dice = 2 * np.count_nonzero(truth & pred) / (np.count_nonzero(truth) + np.count_nonzero(pred))
    assert dice > 0.95
    # an orientation whose axes differ from the input's: the model grid is axis-aligned to LPS
    assert result.model_grid_shape != ct.shape


def test_progress_is_monotonic_and_cancel_stops_at_a_window(tmp_path: Path) -> None:
    ct = _ct()
    entry = _entry(tmp_path)
    backend = load_backend(entry, "cpu")
    seen: list[tuple[float, str]] = []
    run_inference(ct, entry, backend, progress=Progress(lambda f, m: seen.append((f, m))))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("window" in m for _, m in seen)

    token = CancelToken()

    def cancel_at_window(fraction: float, message: str) -> None:
        if "window" in message:
            token.cancel()

    with pytest.raises(CancelledError):
        run_inference(ct, entry, backend, progress=Progress(cancel_at_window, token))


def test_invalid_options_are_refused() -> None:
    with pytest.raises(InputError, match="overlap"):
        InferenceOptions(overlap=1.0)
    with pytest.raises(InputError, match="batch size"):
        InferenceOptions(batch_size=0)


def _cleanup_entry(folder: Path, keep: int, min_mm3: float) -> ModelEntry:
    entry = _entry(folder)
    data = {
        "name": "cleanup",
        "title": "Cleanup",
        "version": "1",
        "task": "segmentation",
        "backend": "onnx",
        "files": [{"path": entry.model_file.name, "sha256": sha256_of(entry.model_file)}],
        "input": {
            "modality": "CT",
            "orientation": "native",
            "normalization": {"type": "none"},
            "patch_size": [16, 16, 16],
        },
        "postprocessing": {"keep_largest_component": [{"label": 1, "components": keep}], "min_component_mm3": min_mm3},
        "labels": [
            {"value": 1, "name": "Lung", "color": [0, 1, 0]},
            {"value": 2, "name": "Nodule", "color": [1, 0, 0]},
        ],
    }
    return ModelEntry.from_dict(data, folder)


def test_postprocessing_keeps_the_largest_lungs_and_drops_small_nodules(tmp_path: Path) -> None:
    labels = np.zeros((20, 30, 40), dtype=np.uint8)
    labels[2:18, 2:28, 2:15] = 1  # left lung, 16*26*13 voxels
    labels[2:18, 2:28, 20:36] = 1  # right lung, larger
    labels[5:7, 5:7, 37:39] = 1  # a speck of "lung" outside: dropped
    labels[8:11, 8:11, 8:11] = 2  # 27 voxels * 2 mm3 = 54 mm3 nodule inside the left lung: kept
    labels[15, 25, 25] = 2  # 2 mm3: dropped, becomes background (not lung)
    labels[0, 0, 0] = 3  # a label the model does not list: untouched
    expected = labels.copy()
    expected[5:7, 5:7, 37:39] = 0
    expected[15, 25, 25] = 0
    out = postprocess_labelmap(labels, _cleanup_entry(tmp_path, keep=2, min_mm3=10.0), voxel_volume_mm3=2.0)
    assert out is labels
    np.testing.assert_array_equal(labels, expected)


def test_postprocessing_leaves_a_clean_or_empty_map_alone(tmp_path: Path) -> None:
    entry = _cleanup_entry(tmp_path, keep=1, min_mm3=1.0)
    empty = np.zeros((4, 5, 6), dtype=np.uint8)
    np.testing.assert_array_equal(postprocess_labelmap(empty.copy(), entry, 1.0), empty)
    clean = empty.copy()
    clean[1:3, 1:3, 1:3] = 1
    clean[0, 4, 5] = 2
    np.testing.assert_array_equal(postprocess_labelmap(clean.copy(), entry, 1.0), clean)
