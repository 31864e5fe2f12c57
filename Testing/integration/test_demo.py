"""``medai demo`` end to end: its DICOM SEG is valid (dciodvfy) and reads back voxel-identical (highdicom, dcmqi)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from MedAIExtension.cli import main
from MedAIExtension.dicom import read_dicom_seg, read_dicom_seg_with_dcmqi, validate_with_dciodvfy
from MedAIExtension.io import read_dicom_series, read_volume_file


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--output", str(out), "--quiet"]) == 0
    return out


def test_demo_writes_the_promised_files(demo_dir: Path) -> None:
    for name in (
        "summary.html",
        "overlay.png",
        "segmentation/segmentation.dcm",
        "segmentation/segmentation.seg.nrrd",
        "segmentation/segmentation.nii.gz",
        "phantom/ct",
        "phantom/truth.json",
        "explanation/explanation.json",
        "explanation/phantom-ct_gradcam.nrrd",
        "explanation/dicom/phantom-ct_gradcam_pm.dcm",
        "explanation/png/phantom-ct_gradcam_axial.png",
    ):
        assert (demo_dir / name).exists(), name
    html = (demo_dir / "summary.html").read_text()
    assert "Lung lesion" in html and "Dice vs truth" in html and "Grad-CAM sanity" in html
    explanation = json.loads((demo_dir / "explanation" / "explanation.json").read_text(encoding="utf-8"))
    assert explanation["sanity"]["randomisation"]["passed"] is True and explanation["score"] > 0.5
    assert (demo_dir / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(demo_dir.rglob(".medai-staging-*"))


def test_demo_seg_is_valid_and_reads_back_voxel_identical(demo_dir: Path) -> None:
    seg = demo_dir / "segmentation" / "segmentation.dcm"
    assert validate_with_dciodvfy(seg) == []
    ct = read_dicom_series(demo_dir / "phantom" / "ct")
    labelmap = read_volume_file(demo_dir / "segmentation" / "segmentation.nii.gz")
    assert labelmap.same_grid(ct)
    assert set(np.unique(labelmap.array)) == {0, 1, 2}
    np.testing.assert_array_equal(read_dicom_seg(seg, ct).array, labelmap.array)
    np.testing.assert_array_equal(read_dicom_seg_with_dcmqi(seg, ct, demo_dir).array, labelmap.array)


def test_seg_nrrd_reads_back_with_slicerio(demo_dir: Path) -> None:
    slicerio = pytest.importorskip("slicerio")
    segmentation = slicerio.read_segmentation(str(demo_dir / "segmentation" / "segmentation.seg.nrrd"))
    names = sorted(segment["name"] for segment in segmentation["segments"])
    assert names == ["Lung", "Lung lesion"]


def test_evaluate_prints_the_metrics_table(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "evaluate",
            "--pred",
            str(demo_dir / "segmentation" / "segmentation.nii.gz"),
            "--ref",
            str(demo_dir / "phantom" / "labels.nii.gz"),
            "--model",
            "chest-ct-lung-nodule",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    lung = next(line for line in out.splitlines() if " Lung " in line and "nodule" not in line)
    assert float(lung.split()[2]) > 0.9  # Dice column
