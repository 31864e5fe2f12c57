"""``medai explain`` end to end on a phantom chest CT with a known nodule, and its bad inputs.

The shipped classifier explains the nodule (Grad-CAM from TorchScript, occlusion from ONNX), the shipped U-Net
gives an uncertainty map; outputs are a map on the input grid (NRRD/NIfTI), PNG key slices, a Parametric Map that
passes dciodvfy and reads back to the same values, a Secondary Capture, and explanation.json with the sanity checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from MedAIExtension.cli import main
from MedAIExtension.errors import CancelledError
from MedAIExtension.io.loader import load_image
from MedAIExtension.io.volume_files import read_volume_file
from MedAIExtension.phantom import AnatomySpec, NoduleSpec, PhantomSpec

#: A slim patient on a fine grid with two solid nodules (one per lung).
SPEC = PhantomSpec(
    size_ijk=(200, 150, 80),
    spacing=(1.0, 1.0, 1.6),
    seed=11,
    anatomy=AnatomySpec(body_semi_axes_mm=(105.0, 75.0), fat_mm=6.0, lung_height_mm=110.0),
    nodules=(
        NoduleSpec(10.0, "solid", lung="right", position=(0.4, 0.1, 0.0)),
        NoduleSpec(8.0, "solid", lung="left", position=(0.4, -0.2, 0.2)),
    ),
)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from MedAIExtension.phantom.study import write_phantom_study

    paths = write_phantom_study(tmp_path_factory.mktemp("explain-study"), spec=SPEC)
    truth = json.loads(Path(paths["truth"]).read_text(encoding="utf-8"))
    return {**paths, "truth": truth}


def _roi(nodule: dict[str, Any], size: float = 20.0) -> list[str]:
    return [repr(float(v)) for v in nodule["center_ras"]] + [repr(size)] * 3


def _run(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = main(["explain", *[str(a) for a in args], "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _peak_in_nodule(map_path: Path, study: dict[str, Any], nodule_id: int, slack_mm: float = 2.0) -> float:
    """Distance (mm) from the map's peak to the nodule's surface (≤ 0 inside)."""
    values = read_volume_file(map_path)
    peak = np.unravel_index(int(np.argmax(values.array)), values.shape)
    ras = values.ijk_to_ras @ np.array([peak[2], peak[1], peak[0], 1.0])
    nodule = study["truth"]["nodules"][nodule_id - 1]
    distance = float(np.linalg.norm(ras[:3] - np.array(nodule["center_ras"])) - nodule["diameter_mm"] / 2)
    assert distance <= slack_mm, f"the map's peak is {distance:.1f} mm outside nodule {nodule_id}"
    return distance


def test_gradcam_on_a_dicom_series_writes_every_output(
    study: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from MedAIExtension.dicom import read_parametric_map, read_parametric_map_info, run_dciodvfy

    nodule = study["truth"]["nodules"][0]
    out = tmp_path / "gradcam"
    code, stdout, stderr = _run(
        capsys, "--input", study["ct"], "--model", "chest-ct-nodule-classifier", "--method", "gradcam",
        "--roi", *_roi(nodule), "--output", out,
    )  # fmt: skip
    assert code == 0, stderr
    document = json.loads((out / "explanation.json").read_text(encoding="utf-8"))
    assert document["target"]["name"] == "Nodule" and document["score"] > 0.5
    assert document["sanity"]["randomisation"]["passed"] is True
    assert "Evidence: " in document["sanity"]["randomisation"]["summary"]
    faithfulness = document["sanity"]["faithfulness"]
    assert " % of the 32 mm patch changes the Nodule probability" in faithfulness["summary"]
    assert faithfulness["random_orders"] == 5 and len(faithfulness["random_deletion_aucs"]) == 5
    files = document["files"]
    ct = load_image(study["ct"])
    values = read_volume_file(out / files["map_nrrd"])
    assert values.shape == ct.shape and np.allclose(values.ijk_to_ras, ct.ijk_to_ras, atol=1e-4)
    assert 0.0 <= values.array.min() and values.array.max() <= 1.0 + 1e-6
    _peak_in_nodule(out / files["map_nrrd"], study, 1)
    from PIL import Image as PILImage

    for name in files["overlay_pngs"]:
        with PILImage.open(out / name) as picture:  # the panel (384 px on its longer side) + colour bar + caption
            assert picture.width > 384 and picture.height > 200
    report = run_dciodvfy(out / files["parametric_map"])
    assert not report.errors, report.errors
    back = read_parametric_map(out / files["parametric_map"], reference=ct)
    np.testing.assert_allclose(back.array, values.array, atol=1e-6)
    info = read_parametric_map_info(out / files["parametric_map"])
    assert info.model_name == "chest-ct-nodule-classifier" and info.target == "Nodule"
    captures = sorted((out / files["secondary_capture"]).glob("*.dcm"))
    assert len(captures) == 3
    assert "Grad-CAM of 'Nodule'" in stdout


def test_occlusion_runs_the_onnx_classifier_on_a_nifti(
    study: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodule = study["truth"]["nodules"][1]
    out = tmp_path / "occlusion"
    code, _, stderr = _run(
        capsys, "--input", study["nifti"], "--model", "chest-ct-nodule-classifier-onnx", "--method", "occlusion",
        "--roi", *_roi(nodule), "--output", out,
    )  # fmt: skip
    assert code == 0, stderr
    document = json.loads((out / "explanation.json").read_text(encoding="utf-8"))
    assert "parametric_map" not in document["files"]  # a NIfTI input has no DICOM series to reference
    assert document["sanity"]["faithfulness"]["summary"]
    _peak_in_nodule(out / document["files"]["map_nrrd"], study, 2)


def test_gradcam_of_a_segmentation_region_score_from_the_monai_bundle(
    study: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The U-Net's nodule score summed over an ROI, explained from its MONAI bundle: the map finds the nodule."""
    nodule = study["truth"]["nodules"][0]
    out = tmp_path / "segmentation-gradcam"
    code, _, stderr = _run(
        capsys, "--input", study["nifti"], "--model", "chest-ct-lung-nodule-torch", "--method", "gradcampp",
        "--target", "Lung lesion", "--roi", *_roi(nodule, 16.0), "--output", out,
    )  # fmt: skip
    assert code == 0, stderr
    document = json.loads((out / "explanation.json").read_text(encoding="utf-8"))
    assert document["layer"] == "model.1.submodule.2" and document["target"]["channel"] == 2
    assert document["sanity"]["randomisation"]["passed"] is True
    _peak_in_nodule(out / document["files"]["map_nrrd"], study, 1)


def test_uncertainty_gives_a_map_and_a_segment_table(
    study: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "uncertainty"
    code, stdout, stderr = _run(
        capsys, "--input", study["nifti"], "--model", "chest-ct-lung-nodule", "--method", "uncertainty",
        "--tta-flips", "2", "--output", out,
    )  # fmt: skip
    assert code == 0, stderr
    # one map over every label (not "of 'Lung'"); informational notes are notes, not warnings
    assert stdout.startswith("Predictive entropy over all labels of chest-ct-lung-nodule")
    assert "note: No sanity checks for an uncertainty map" in stderr and "warning: No sanity" not in stderr
    document = json.loads((out / "explanation.json").read_text(encoding="utf-8"))
    segments = document["uncertainty"]["segments"]
    assert {row["name"] for row in segments} >= {"Lung"}
    labelmap = read_volume_file(out / document["files"]["labelmap"])
    entropy = read_volume_file(out / document["files"]["map_nrrd"])
    assert labelmap.shape == entropy.shape
    lung = labelmap.array == 1
    # the model is surest deep inside the lungs and far outside the body: uncertainty concentrates on borders
    assert float(np.median(entropy.array[lung])) < float(np.percentile(entropy.array, 99.5))
    assert (out / document["files"]["segments_csv"]).read_text(encoding="utf-8").startswith(",".join(segments[0]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "chest-ct-nodule-classifier-onnx", "--method", "gradcam"], "occlusion"),
        (["--model", "chest-ct-nodule-classifier", "--method", "gradcam", "--layer", "features.blok4"], "block4"),
        (["--model", "chest-ct-nodule-classifier", "--method", "ig", "--target", "Tumour"], "Nodule"),
        (["--model", "chest-ct-nodule-classifier", "--method", "uncertainty"], "segmentation models"),
        (["--model", "no-such-model", "--method", "occlusion"], "no-such-model"),
    ],
    ids=["gradients-of-onnx", "unknown-layer", "unknown-target", "uncertainty-of-classifier", "unknown-model"],
)
def test_bad_requests_fail_clearly_and_write_nothing(
    study: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    nodule = study["truth"]["nodules"][0]
    out = tmp_path / "out"
    code, _, stderr = _run(capsys, "--input", study["nifti"], *args, "--roi", *_roi(nodule), "--output", out)
    assert code == 2
    assert message in stderr and "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())


def test_classifier_without_roi_is_refused_with_the_syntax(
    study: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The classifier sees a 32 mm patch; on a whole CT without --roi it would explain the mediastinum."""
    out = tmp_path / "out"
    code, stdout, stderr = _run(
        capsys, "--input", study["nifti"], "--model", "chest-ct-nodule-classifier", "--method", "gradcam",
        "--output", out,
    )  # fmt: skip
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and "Traceback" not in stderr
    assert "--roi R A S SIZE_R SIZE_A SIZE_S" in stderr and "32x32x32 mm patch" in stderr
    assert not out.exists() or not any(out.iterdir())


def test_roi_outside_the_image_is_refused(
    study: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, _, stderr = _run(
        capsys, "--input", study["nifti"], "--model", "chest-ct-nodule-classifier", "--method", "gradcam",
        "--roi", "900", "0", "0", "20", "20", "20", "--output", out,
    )  # fmt: skip
    assert code == 2 and "outside the image" in stderr
    assert not out.exists() or not any(out.iterdir())


def test_cancel_mid_run_leaves_nothing(study: dict[str, Any], tmp_path: Path) -> None:
    from MedAIExtension.explain.pipeline import explain_to_folder
    from MedAIExtension.explain.request import ExplainRequest, Roi
    from MedAIExtension.progress import CancelToken

    nodule = study["truth"]["nodules"][0]
    token = CancelToken()
    seen: list[float] = []

    def progress(fraction: float, message: str) -> None:
        seen.append(fraction)
        if fraction > 0.1:
            token.cancel()

    request = ExplainRequest(
        study["nifti"], "chest-ct-nodule-classifier-onnx", "occlusion", tmp_path / "out",
        roi=Roi(tuple(nodule["center_ras"]), (20.0, 20.0, 20.0)),
    )  # fmt: skip
    with pytest.raises(CancelledError):
        explain_to_folder(request, progress=progress, token=token)
    assert seen and max(seen) < 0.9
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
