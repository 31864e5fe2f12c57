"""``medai`` end to end with the shipped model, and every bad input: one clear message, exit ≠ 0, no output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from MedAIExtension.cli import main
from MedAIExtension.io import read_dicom_series, read_volume_file

MODEL = "chest-ct-lung-nodule"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def segmented(phantom_study: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seg")
    assert (
        main(["segment", "--input", str(phantom_study["ct"]), "--model", MODEL, "--output", str(out), "--quiet"]) == 0
    )
    return out


def test_models_lists_the_shipped_model_and_the_device(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["models", "--json"], capsys)
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)["models"]}
    assert rows[MODEL]["device"] in ("cpu", "cuda")
    assert rows[MODEL]["labels"] == ["Lung", "Lung lesion"]
    # on the CPU the ONNX model runs as its torch build (same weights, faster there); on a GPU as itself
    expected = f"{MODEL}-torch" if rows[MODEL]["device"] == "cpu" else MODEL
    assert rows[MODEL]["runs_as"] == expected


def test_segment_writes_every_format_on_the_input_grid(segmented: Path, phantom_study: dict[str, Path]) -> None:
    names = {p.name for p in _files(segmented)}
    assert names == {"segmentation.seg.nrrd", "segmentation.nii.gz", "segmentation.dcm", "summary.json"}
    ct = read_dicom_series(phantom_study["ct"])
    labels = read_volume_file(segmented / "segmentation.nii.gz")
    assert labels.same_grid(ct)
    truth = read_volume_file(phantom_study["labels"])
    lung = (
        2
        * np.count_nonzero((labels.array == 1) & (truth.array == 1))
        / (np.count_nonzero(labels.array == 1) + np.count_nonzero(truth.array == 1))
    )
    assert lung > 0.9
    summary = json.loads((segmented / "summary.json").read_text())
    assert summary["algorithm"]["name"] == MODEL
    # auto device: CUDA through ONNX Runtime when it works, else the catalogue's CPU variant in torch
    assert summary["provider"] in ("torch:cpu", "onnxruntime:CUDAExecutionProvider")
    assert {row["name"] for row in summary["statistics"]} == {"Lung", "Lung lesion"}


def test_segment_from_nifti_skips_dicom_seg_by_default(phantom_study: dict[str, Path], tmp_path: Path, capsys) -> None:
    code, _, _ = _run(
        [
            "segment",
            "--input",
            str(phantom_study["nifti"]),
            "--model",
            MODEL,
            "--output",
            str(tmp_path),
            "--quiet",
            "--format",
            "nii.gz",
        ],
        capsys,
    )
    assert code == 0
    assert (tmp_path / "segmentation.nii.gz").is_file()


def _assert_clean_failure(code: int, err: str, out_dir: Path, *needles: str) -> None:
    assert code != 0
    assert err.startswith("error: ") and err.count("error: ") == 1, err  # one message (it may list choices)
    assert "Traceback" not in err and "warning" not in err
    for needle in needles:
        assert needle in err
    assert not out_dir.exists(), "a failed run must leave no output folder behind"


@pytest.fixture()
def ct_copy(phantom_study: dict[str, Path], tmp_path: Path) -> Path:
    target = tmp_path / "ct"
    shutil.copytree(phantom_study["ct"], target)
    return target


def _segment(capsys, input_path: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return _run(
        ["segment", "--input", str(input_path), "--model", MODEL, "--output", str(out), "--quiet", *extra], capsys
    )


def test_folder_without_dicom(tmp_path: Path, capsys) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("hello")
    code, _, err = _segment(capsys, tmp_path / "in", tmp_path / "out")
    _assert_clean_failure(code, err, tmp_path / "out", "No DICOM image series")


def test_two_series_in_one_folder(ct_copy: Path, tmp_path: Path, capsys) -> None:
    for path in sorted(ct_copy.iterdir())[:3]:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.save_as(path)
    code, _, err = _segment(capsys, ct_copy, tmp_path / "out")
    _assert_clean_failure(code, err, tmp_path / "out", "--series")


def test_missing_slice(ct_copy: Path, tmp_path: Path, capsys) -> None:
    sorted(ct_copy.iterdir())[40].unlink()
    code, _, err = _segment(capsys, ct_copy, tmp_path / "out")
    _assert_clean_failure(code, err, tmp_path / "out", "missing about 1 slice")


def test_uneven_spacing(ct_copy: Path, tmp_path: Path, capsys) -> None:
    path = sorted(ct_copy.iterdir())[30]
    ds = pydicom.dcmread(path)
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, z + 1.1]
    ds.save_as(path)
    code, _, err = _segment(capsys, ct_copy, tmp_path / "out")
    _assert_clean_failure(code, err, tmp_path / "out", "uneven")


def test_2d_image(tmp_path: Path, capsys) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((64, 64), dtype=np.int16)), str(tmp_path / "slice.nrrd"))
    code, _, err = _segment(capsys, tmp_path / "slice.nrrd", tmp_path / "out")
    _assert_clean_failure(code, err, tmp_path / "out", "3D volume")


def test_nan_voxels(tmp_path: Path, capsys) -> None:
    import SimpleITK as sitk

    array = np.zeros((20, 32, 32), dtype=np.float32)
    array[5, 5, 5] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "nan.nrrd"))
    code, _, err = _segment(capsys, tmp_path / "nan.nrrd", tmp_path / "out")
    _assert_clean_failure(code, err, tmp_path / "out", "NaN")


def test_unknown_model(phantom_study: dict[str, Path], tmp_path: Path, capsys) -> None:
    code, _, err = _run(
        ["segment", "--input", str(phantom_study["nifti"]), "--model", "liver-xl", "--output", str(tmp_path / "out")],
        capsys,
    )
    _assert_clean_failure(code, err, tmp_path / "out", "Unknown model 'liver-xl'", MODEL)


def _catalog_copy(tmp_path: Path) -> Path:
    from MedAIExtension.models.catalog import DEFAULT_CATALOG

    target = tmp_path / "Models"
    shutil.copytree(DEFAULT_CATALOG.parent, target, ignore=shutil.ignore_patterns("*-bundle"))
    return target / "catalog.json"


def test_model_file_with_wrong_sha256(phantom_study: dict[str, Path], tmp_path: Path, capsys) -> None:
    catalog = _catalog_copy(tmp_path)
    model = catalog.parent / f"{MODEL}.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    code, _, err = _segment(capsys, phantom_study["nifti"], tmp_path / "out", "--catalog", str(catalog))
    _assert_clean_failure(code, err, tmp_path / "out", "sha256")


def test_cpu_variant_with_wrong_sha256(phantom_study: dict[str, Path], tmp_path: Path, capsys) -> None:
    from MedAIExtension.models.catalog import DEFAULT_CATALOG

    catalog = _catalog_copy(tmp_path)
    shutil.copytree(DEFAULT_CATALOG.parent / f"{MODEL}-bundle", catalog.parent / f"{MODEL}-bundle")
    weights = catalog.parent / f"{MODEL}-bundle" / "models" / "model.pt"
    weights.write_bytes(weights.read_bytes() + b"\0")
    code, _, err = _segment(
        capsys, phantom_study["nifti"], tmp_path / "out", "--catalog", str(catalog), "--device", "cpu"
    )
    _assert_clean_failure(code, err, tmp_path / "out", "sha256", "model.pt")


def test_catalogue_failing_its_schema(phantom_study: dict[str, Path], tmp_path: Path, capsys) -> None:
    catalog = _catalog_copy(tmp_path)
    data = json.loads(catalog.read_text())
    data["models"][0]["backend"] = "tensorflow"
    catalog.write_text(json.dumps(data))
    code, _, err = _segment(capsys, phantom_study["nifti"], tmp_path / "out", "--catalog", str(catalog))
    _assert_clean_failure(code, err, tmp_path / "out", "does not match the catalogue schema", "backend")


def test_output_directory_not_writable(phantom_study: dict[str, Path], tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    code, _, err = _segment(capsys, phantom_study["nifti"], blocker / "out")
    _assert_clean_failure(code, err, tmp_path / "nothing", "--output")
    assert blocker.read_text() == "I am a file"


def _cli_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "MedAIExtension.cli", *args], capture_output=True, text=True, check=False
    )


def test_errors_print_no_traceback_in_a_real_process(tmp_path: Path) -> None:
    segment = ["segment", "--input", str(tmp_path / "none.nii.gz"), "--model", MODEL, "--output", str(tmp_path / "out")]
    result = _cli_process(*segment)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr
    debug = _cli_process("--debug", *segment)
    assert "Traceback" in debug.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")
def test_cancel_mid_run_leaves_no_output(phantom_study: dict[str, Path], tmp_path: Path) -> None:
    from MedAIExtension.runner import WorkerProcess, segmentation_worker_args

    out = tmp_path / "out"
    proc = WorkerProcess(segmentation_worker_args(phantom_study["ct"], MODEL, out, formats="seg.nrrd,nii.gz,dicom-seg"))
    proc.start()
    deadline = time.monotonic() + 120
    seen_window = False
    while time.monotonic() < deadline and proc.running and not seen_window:
        seen_window = any(e.kind == "progress" and "window" in e.message for e in proc.poll())
        time.sleep(0.02)
    assert seen_window, "the worker never reached the sliding-window stage"
    proc.cancel()
    assert proc.returncode not in (0, None)
    assert _files(out) == []


def test_worker_result_event_names_the_labelmap(phantom_study: dict[str, Path], tmp_path: Path) -> None:
    from MedAIExtension.runner import WorkerProcess, segmentation_worker_args

    proc = WorkerProcess(
        segmentation_worker_args(phantom_study["nifti"], MODEL, tmp_path, formats="nii.gz"),
        env={**os.environ, "MEDAI_NUM_THREADS": "2"},
    )
    proc.start()
    assert proc.wait(timeout=300) == 0
    events = proc.poll()
    result = [e for e in events if e.kind == "result"]
    assert len(result) == 1 and Path(result[0].data["labelmap"]).is_file()
    fractions = [e.fraction for e in events if e.kind == "progress"]
    assert fractions == sorted(fractions)
