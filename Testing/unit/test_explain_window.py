"""Where an explanation looks: window geometry on any acquisition grid, the way back, ROI and request checks."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.explain.request import ExplainRequest, Roi, add_explain_arguments
from MedAIExtension.explain.types import ExplainMethod, ScoreTarget
from MedAIExtension.explain.window import explanation_window, to_input_grid
from MedAIExtension.io.image import Image
from MedAIExtension.models.catalog import ModelEntry
from MedAIExtension.phantom.grid import AXIAL, CORONAL, SAGITTAL, make_affine

CLASSIFIER = {
    "name": "test-classifier",
    "title": "test",
    "version": "1",
    "task": "classification",
    "backend": "onnx",
    "files": [{"path": "none.onnx", "sha256": "0" * 64}],
    "input": {
        "modality": "CT",
        "spacing": [1.0, 1.0, 1.0],
        "orientation": "LPS",
        "normalization": {"type": "clip_scale", "a_min": -1000, "a_max": 400, "b_min": 0, "b_max": 1, "clip": True},
        "patch_size": [32, 32, 32],
    },
    "labels": [{"value": 1, "name": "Nodule", "color": [1, 0, 0]}, {"value": 2, "name": "Vessel", "color": [0, 0, 1]}],
}


def _entry(**changes: object) -> ModelEntry:
    data = {**CLASSIFIER, **changes}
    return ModelEntry.from_dict(data, Path("."))


def _ball_image(direction: np.ndarray, spacing: tuple[float, float, float], center_ras: np.ndarray) -> Image:
    """A CT of air with a 6 mm radius ball of soft tissue at ``center_ras`` on the given grid."""
    size = (64, 64, 48)
    affine = make_affine(size, spacing, direction, center_ras=(0.0, 0.0, 0.0))
    k, j, i = np.indices(size[::-1], dtype=float)
    ras = np.stack([i, j, k, np.ones_like(i)], axis=-1) @ affine.T
    inside = np.linalg.norm(ras[..., :3] - center_ras, axis=-1) <= 6.0
    array = np.where(inside, 40, -1000).astype(np.int16)
    return Image(array, affine, modality="CT")


@pytest.mark.parametrize("direction", [AXIAL, CORONAL, SAGITTAL], ids=["axial", "coronal", "sagittal"])
def test_classifier_window_is_centred_on_the_roi_in_every_geometry(direction: np.ndarray) -> None:
    center = np.array([8.0, -5.0, 3.0])
    image = _ball_image(direction, (0.8, 0.8, 1.5), center)
    window = explanation_window(image, _entry(), Roi(tuple(center), (20.0, 20.0, 20.0)))
    assert window.data.shape == (1, 1, 32, 32, 32)
    assert window.data.dtype == np.float32
    # the ball sits in the middle of the window: its centre of mass is the window centre
    mass = window.image.array > -500
    com_kji = np.array([idx.mean() for idx in np.nonzero(mass)])
    com_ras = window.image.ijk_to_ras @ np.array([*com_kji[::-1], 1.0])
    np.testing.assert_allclose(com_ras[:3], center, atol=0.6)
    # LPS axes at 1 mm as the catalogue says
    np.testing.assert_allclose(np.abs(window.image.ijk_to_ras[:3, :3]), np.eye(3), atol=1e-6)
    assert 0.0 <= window.data.min() and window.data.max() <= 1.0


def test_window_map_goes_back_onto_the_input_grid() -> None:
    center = np.array([0.0, 0.0, 0.0])
    image = _ball_image(CORONAL, (0.9, 0.9, 1.3), center)
    window = explanation_window(image, _entry(), Roi((0.0, 0.0, 0.0), (10.0, 10.0, 10.0)))
    # a map that is 1 inside the ball (on the window grid) must land on the ball in the input grid
    values = (window.image.array > -500).astype(np.float32)
    on_input = to_input_grid(values, window.image, image)
    assert on_input.same_grid(image)
    ball = image.array > -500
    inside = on_input.array[ball]
    assert inside.mean() > 0.85
    assert on_input.array[~ball].mean() < 0.02
    # far outside the 32 mm window nothing is painted
    assert on_input.array[:, :, :5].max() == 0.0


def test_roi_outside_the_image_is_refused() -> None:
    image = _ball_image(AXIAL, (1.0, 1.0, 1.0), np.zeros(3))
    with pytest.raises(InputError, match="outside the image"):
        explanation_window(image, _entry(), Roi((500.0, 0.0, 0.0), (10.0, 10.0, 10.0)))


def test_segmentation_window_covers_the_roi_with_context_and_marks_the_region() -> None:
    image = _ball_image(AXIAL, (1.0, 1.0, 1.0), np.zeros(3))
    entry = _entry(task="segmentation", labels=[{"value": 1, "name": "Ball", "color": [1, 0, 0]}])
    window = explanation_window(image, entry, Roi((0.0, 0.0, 0.0), (12.0, 12.0, 12.0)))
    assert all(size % 16 == 0 and size >= 12 + 32 for size in window.data.shape[2:])
    assert window.region is not None
    assert int(window.region.sum()) == pytest.approx(12**3, rel=0.3)
    # without an ROI a too-big image asks for one
    big = Image(np.full((200, 200, 200), -1000, dtype=np.int16), np.diag([1.0, 1.0, 1.0, 1.0]), modality="CT")
    big.array[20:180, 20:180, 20:180] = 0
    with pytest.raises(InputError, match="Give an ROI"):
        explanation_window(big, entry)


def test_request_round_trips_through_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    add_explain_arguments(parser)
    roi = ["--roi", "1", "2", "3", "4", "5", "6"]
    options = ["--baseline", "mean", "--target", "Nodule", "--no-dicom"]
    required = ["--input", "ct.nii.gz", "--model", "m", "--method", "occlusion", "--output", "out"]
    args = parser.parse_args([*required, *roi, *options])
    request = ExplainRequest.from_arguments(args)
    assert request.method == ExplainMethod.OCCLUSION and request.baseline == "mean" and not request.write_dicom
    assert ExplainRequest.from_arguments(parser.parse_args(request.to_arguments())) == request
    with pytest.raises(InputError, match="tta-flips"):
        ExplainRequest(Path("a"), "m", "uncertainty", Path("o"), tta_flips=9)
    with pytest.raises(InputError, match="Unknown explanation method"):
        ExplainMethod.parse("lime")
    with pytest.raises(InputError, match="positive"):
        Roi((0.0, 0.0, 0.0), (0.0, 1.0, 1.0))


def test_score_target_sums_logits_inside_the_region_and_averages_probabilities() -> None:
    outputs = np.zeros((2, 3, 4, 4, 4), dtype=np.float32)
    outputs[0, 2, :2] = 1.0
    region = np.zeros((4, 4, 4), dtype=bool)
    region[:2] = True
    target = ScoreTarget(2, region)
    np.testing.assert_allclose(target.score(outputs), [32.0, 0.0])
    probabilities = target.score(outputs, activate=True)
    expected = np.exp(1) / (np.exp(1) + 2)
    np.testing.assert_allclose(probabilities, [expected, 1 / 3], rtol=1e-6)
    with pytest.raises(InputError, match="empty"):
        ScoreTarget(1, np.zeros((4, 4, 4), dtype=bool))
    with pytest.raises(InputError, match="channel 5"):
        ScoreTarget(5).score(outputs)
