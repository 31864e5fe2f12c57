"""``medai deidentify`` end to end on a real CT series and its DICOM SEG, in a real process.

The key travels in ``MEDAI_DEID_KEY`` or a key file, never on the command line. Good input: exit 0, the
``<study>/<series>/<instance>.dcm`` layout, the summary line, the same UIDs on a second run with the same key.
Bad input (missing folder, a named non-DICOM file, output inside the input, burned-in annotation): non-zero
exit, one ``error:`` line naming the fix, no traceback, no output folder left.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from MedAIExtension.cli import set_handler
from MedAIExtension.deid import remap_uid
from MedAIExtension.deid.commands import add_deidentify_parser
from MedAIExtension.dicom.seg import write_dicom_seg
from MedAIExtension.errors import InputError
from MedAIExtension.io.dicom_series import read_dicom_series, write_dicom_series
from MedAIExtension.io.geometry import LPS_TO_RAS, affine_from_parts
from MedAIExtension.io.image import Image
from MedAIExtension.labels import CodedTerm, SegmentLabel

KEY_TEXT = "cli-test-key-0123456789abcdef0123"
PATIENT_ID = "CLI-PATIENT-0815"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a 6-slice CT series (with a site name) and a SEG of it."""
    root = tmp_path_factory.mktemp("cli-deid") / "study"
    lps = affine_from_parts(np.array([0.0, 0.0, 0.0]), np.array((1.0, 1.0, 2.0)), np.eye(3))
    voxels = np.random.default_rng(3).integers(-1000, 200, (6, 16, 20)).astype(np.int16)
    paths = write_dicom_series(
        Image(voxels, LPS_TO_RAS @ lps, modality="CT"), root / "ct", patient_id=PATIENT_ID, uid_seed="cli-deid"
    )
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.InstitutionName = "Clinic Secret Site"
        ds.save_as(path, enforce_file_format=True)
    ct = read_dicom_series(root / "ct")
    labels = np.zeros(ct.shape, dtype=np.uint8)
    labels[1:4, 4:10, 5:12] = 1
    label = SegmentLabel(1, "Lung", (0.5, 0.7, 0.9), type=CodedTerm("39607008", "SCT", "Lung"))
    (root / "seg").mkdir()
    write_dicom_seg(ct.with_array(labels, source_files=(), modality=""), ct, [label], root / "seg" / "seg.dcm",
                    algorithm_name="T", algorithm_version="1")  # fmt: skip
    return root


def _medai(*args: object, key: str | None = KEY_TEXT) -> subprocess.CompletedProcess[str]:
    """Run the installed ``medai`` (or ``python -m MedAIExtension.cli``) with the key in the environment."""
    env = {k: v for k, v in os.environ.items() if k != "MEDAI_DEID_KEY"}
    if key is not None:
        env["MEDAI_DEID_KEY"] = key
    script = Path(sys.executable).parent / "medai"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "MedAIExtension.cli"]
    return subprocess.run(
        [*command, "deidentify", *[str(a) for a in args]], capture_output=True, text=True, env=env, check=False
    )


def _assert_clean_failure(result: subprocess.CompletedProcess[str], output: Path, *words: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not output.exists()


def test_deidentify_a_study_end_to_end(study: Path, tmp_path: Path) -> None:
    """Exit 0, one study folder with the CT and SEG series, no identifier left; same key → same files."""
    out = tmp_path / "anon"
    result = _medai(study, "--output", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "random key" not in result.stderr
    assert "7 file(s) of 1 study(ies) de-identified" in result.stdout, result.stdout
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == 7
    key = KEY_TEXT.encode()
    original_study = pydicom.dcmread(next((study / "ct").iterdir())).StudyInstanceUID
    assert [p.name for p in out.iterdir()] == [remap_uid(original_study, key)]
    for path in files:
        ds = pydicom.dcmread(path)
        assert path.name == f"{ds.SOPInstanceUID}.dcm"
        assert path.parent.name == ds.SeriesInstanceUID and path.parent.parent.name == ds.StudyInstanceUID
        assert ds.PatientIdentityRemoved == "YES"
        text = str(ds)
        assert PATIENT_ID not in text and "Clinic Secret Site" not in text
    again = tmp_path / "again"
    assert _medai(study, "--output", again, "--quiet").returncode == 0
    assert sorted(p.relative_to(again) for p in again.rglob("*.dcm")) == [p.relative_to(out) for p in files]


def test_key_file_date_shift_and_random_key_warning(study: Path, tmp_path: Path) -> None:
    """--key-file gives the same UIDs as the same key in the environment; without a key a warning says the
    UIDs will not match a later run; --date-shift-days shifts the study date."""
    key_file = tmp_path / "deid.key"
    key_file.write_text(KEY_TEXT + "\n")
    key_file.chmod(0o600)
    shifted = tmp_path / "shifted"
    result = _medai(study / "seg", "--output", shifted, "--key-file", key_file, "--date-shift-days", "10", key=None)
    assert result.returncode == 0, result.stderr
    (seg_file,) = shifted.rglob("*.dcm")
    seg = pydicom.dcmread(seg_file)
    original = pydicom.dcmread(study / "seg" / "seg.dcm")
    assert seg.SOPInstanceUID == remap_uid(original.SOPInstanceUID, KEY_TEXT.encode())
    assert seg.StudyDate == "20260115"  # write_dicom_series' default 2026-01-05 + 10 days
    random = _medai(study / "seg", "--output", tmp_path / "random", key=None)
    assert random.returncode == 0
    assert "random key" in random.stderr and KEY_TEXT not in random.stderr


def test_bad_input_fails_cleanly(study: Path, tmp_path: Path) -> None:
    """Missing folder, non-DICOM file, output inside the input, burned-in image: one clear error, no output.
    (Errors found before any work print no progress bar; the others run with --quiet to get one line.)"""
    out = tmp_path / "out"
    _assert_clean_failure(_medai(tmp_path / "missing", "--output", out), out, "does not exist")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    _assert_clean_failure(_medai(text, "--output", out, "--quiet"), out, "notes.txt", "not a DICOM file")
    _assert_clean_failure(_medai(study, "--output", study / "anon"), study / "anon", "inside the input")
    burned = tmp_path / "burned"
    burned.mkdir()
    ds = pydicom.dcmread(next((study / "ct").iterdir()))
    ds.BurnedInAnnotation = "YES"
    ds.save_as(burned / "image.dcm", enforce_file_format=True)
    _assert_clean_failure(_medai(burned, "--output", out, "--quiet"), out, "--skip-burned-in")
    skipped = _medai(burned, study / "seg", "--output", out, "--skip-burned-in", "--quiet")
    assert skipped.returncode == 0 and "skipped" in skipped.stderr and "image.dcm" in skipped.stderr
    short = tmp_path / "short.key"
    short.write_text("abc")
    short.chmod(0o600)
    _assert_clean_failure(
        _medai(study, "--output", tmp_path / "o2", "--key-file", short), tmp_path / "o2", "at least 16"
    )
    short.chmod(0o644)
    _assert_clean_failure(_medai(study, "--output", tmp_path / "o2", "--key-file", short), tmp_path / "o2", "chmod 600")


def test_handler_through_its_own_parser(study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """add_deidentify_parser registers the options; its handler returns 0 or raises InputError."""
    parser = argparse.ArgumentParser(prog="medai")
    add_deidentify_parser(parser.add_subparsers(dest="command", required=True), set_handler)
    monkeypatch.setenv("MEDAI_DEID_KEY", KEY_TEXT)
    args = parser.parse_args(["deidentify", str(study / "seg"), "--output", str(tmp_path / "o"), "--quiet",
                              "--keep-series-descriptions"])  # fmt: skip
    assert args.func(args) == 0
    (written,) = (tmp_path / "o").rglob("*.dcm")
    assert pydicom.dcmread(written).SeriesDescription == "MedAI segmentation"
    args = parser.parse_args(["deidentify", str(tmp_path / "missing"), "--output", str(tmp_path / "p")])
    with pytest.raises(InputError, match="does not exist"):
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["deidentify", str(study), "--output", "x", "--date-shift-days", "soon"])


# ---- damaged pixel data (issue 14, item 10) --------------------------------------------------------------------
def _copy_series(study: Path, target: Path) -> list[Path]:
    """A copy of the study's CT series in ``target`` (the tests damage files in it)."""
    target.mkdir(parents=True)
    for path in sorted((study / "ct").iterdir()):
        (target / path.name).write_bytes(path.read_bytes())
    return sorted(target.iterdir())


def _with_cut_codestream(source: str, target: Path, sop_instance_uid: str) -> Path:
    """A copy of one of pydicom's compressed test files with each frame's codestream cut to half its length."""
    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(get_testdata_file(source))
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    ds.PixelData = encapsulate([frame[: len(frame) // 2] for frame in frames])
    ds.SOPInstanceUID = sop_instance_uid
    ds.save_as(target, enforce_file_format=True)
    return target


def _assert_one_error_line(result: subprocess.CompletedProcess[str], output: Path, *words: str) -> None:
    """Exit 2, one ``error:`` line (the last line; a decoder library may print its own complaint before it),
    no traceback, no output folder."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[-1], lines[-1]
    assert not output.exists()


def test_truncated_pixel_data_is_skipped_or_refused_with_strict(study: Path, tmp_path: Path) -> None:
    """A series with one file whose PixelData is shorter than Rows × Columns × … declares: exported without it,
    '1 file(s) skipped' with the reason; with --strict exit 2 and nothing written."""
    files = _copy_series(study, tmp_path / "series")
    damaged = pydicom.dcmread(files[2])
    damaged.PixelData = damaged.PixelData[: len(damaged.PixelData) // 2]
    damaged.save_as(files[2], enforce_file_format=True)
    out = tmp_path / "out"
    result = _medai(tmp_path / "series", "--output", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"{len(files) - 1} file(s) of 1 study(ies) de-identified" in result.stdout, result.stdout
    assert "1 file(s) skipped" in result.stdout
    reason = "damaged image: its pixel data (PixelData) is incomplete (truncated: 320 of the 640 bytes"
    assert f"skipped {files[2]}: {reason}" in result.stderr
    exported = {str(pydicom.dcmread(p).SOPInstanceUID) for p in out.rglob("*.dcm")}
    key = KEY_TEXT.encode()
    assert remap_uid(str(damaged.SOPInstanceUID), key) not in exported and len(exported) == len(files) - 1
    strict_out = tmp_path / "strict"
    _assert_one_error_line(
        _medai(tmp_path / "series", "--output", strict_out, "--quiet", "--strict"),
        strict_out,
        "1 file(s) are damaged",
        files[2].name,
        "truncated",
        "without --strict",
    )


def test_corrupt_compressed_file_is_skipped_or_refused_with_strict(study: Path, tmp_path: Path) -> None:
    """A JPEG 2000 file (pydicom's test data) with its codestream cut is skipped or refused; intact JPEG 2000
    (a 10-frame enhanced MR), RLE and JPEG Lossless files beside it decode and are exported."""
    from pydicom.data import get_testdata_file

    folder = tmp_path / "mixed"
    _copy_series(study, folder)
    for name in ("emri_small_jpeg_2k_lossless.dcm", "MR_small_RLE.dcm", "JPEG-LL.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.BurnedInAnnotation = "NO"  # JPEG-LL.dcm is a Secondary Capture; it shows no text
        ds.save_as(folder / name, enforce_file_format=True)
    cut = _with_cut_codestream("MR_small_jp2klossless.dcm", folder / "cut-j2k.dcm", "1.2.826.0.1.3680043.8.498.1")
    out = tmp_path / "out"
    result = _medai(folder, "--output", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "1 file(s) skipped" in result.stdout, result.stdout
    assert f"skipped {cut}: damaged image: its JPEG 2000 Image Compression (Lossless Only) pixel data does not " \
        "decode" in result.stderr  # fmt: skip
    assert len(list(out.rglob("*.dcm"))) == 6 + 3
    strict_out = tmp_path / "strict"
    _assert_one_error_line(
        _medai(folder, "--output", strict_out, "--quiet", "--strict"), strict_out, "cut-j2k.dcm", "does not decode"
    )


def test_pixel_data_problem_names_each_kind_of_damage(study: Path, tmp_path: Path) -> None:
    """In process: a file cut in half on disk, a frame missing from a multi-frame JPEG 2000 file, missing Rows;
    no false alarm on the CT slices, the bit-packed SEG or intact compressed files; the run with only damaged
    files says what was left out."""
    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate, generate_frames

    from MedAIExtension.deid import DeidOptions, deidentify_files, pixel_data_problem

    for path in [*sorted((study / "ct").iterdir()), study / "seg" / "seg.dcm"]:
        assert pixel_data_problem(pydicom.dcmread(path)) is None, path
    for name in ("emri_small_jpeg_2k_lossless.dcm", "MR_small_RLE.dcm", "JPEG-LL.dcm", "MR_small.dcm"):
        assert pixel_data_problem(pydicom.dcmread(get_testdata_file(name))) is None, name
    (tmp_path / "bad").mkdir()
    halved = tmp_path / "bad" / "halved.dcm"
    raw = next((study / "ct").iterdir()).read_bytes()
    halved.write_bytes(raw[: len(raw) - 400])
    assert "truncated: 240 of the 640 bytes" in str(pixel_data_problem(pydicom.dcmread(halved)))
    multi = pydicom.dcmread(get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))
    frames = list(generate_frames(multi.PixelData, number_of_frames=int(multi.NumberOfFrames)))
    multi.PixelData = encapsulate(frames[:-1])
    assert "holds 9 of the 10 frames" in str(pixel_data_problem(multi))
    no_rows = pydicom.dcmread(next((study / "ct").iterdir()))
    del no_rows.Rows
    assert "Rows is missing" in str(pixel_data_problem(no_rows))
    with pytest.raises(InputError, match=r"left out, e\.g\. .*halved\.dcm: damaged image"):
        deidentify_files([halved.parent], tmp_path / "out", KEY_TEXT.encode(), DeidOptions())
    assert not (tmp_path / "out").exists()
