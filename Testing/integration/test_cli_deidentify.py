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
    _assert_clean_failure(
        _medai(study, "--output", tmp_path / "o2", "--key-file", short), tmp_path / "o2", "at least 16"
    )


def test_handler_through_its_own_parser(study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """add_deidentify_parser registers the options; its handler returns 0 or raises InputError."""
    parser = argparse.ArgumentParser(prog="medai")
    add_deidentify_parser(parser.add_subparsers(dest="command", required=True))
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
