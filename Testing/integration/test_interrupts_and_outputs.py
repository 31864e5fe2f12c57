"""Interrupts, full disks and absurd inputs: a job leaves either all of its results or nothing at all.

Real signals are sent to real processes (the ``medai`` program, and this test process inside a write), a real
full file system is a small tmpfs mounted for the test, and the inputs are the phantom's DICOM series.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from MedAIExtension.atomic import staged_output
from MedAIExtension.cli import main
from MedAIExtension.errors import InputError, OutputError
from MedAIExtension.interrupts import Interrupted, deferred_interrupts
from MedAIExtension.io import read_dicom_series
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.segmentation.outputs import write_outputs
from MedAIExtension.segmentation.plausibility import check_field_of_view, plausibility_warnings
from Testing.signals import job_signal_handlers

MODEL = "chest-ct-lung-nodule"


def _everything(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


@pytest.fixture(scope="module")
def labelled(phantom_study: dict[str, Path]) -> tuple:
    """The phantom CT and its truth label map on the same grid, with the model's labels."""
    from MedAIExtension.io import read_volume_file

    ct = read_dicom_series(phantom_study["ct"])
    truth = read_volume_file(phantom_study["labels"])
    labels = load_catalog().get(MODEL).labels
    return ct, ct.with_array(np.asarray(truth.array).astype(np.uint8)), labels


@pytest.mark.parametrize("stage", ["writing seg.nrrd", "writing dicom-seg", "moving results into place"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_results_are_written_leaves_nothing(
    labelled: tuple, tmp_path: Path, stage: str, sig: signal.Signals
) -> None:
    """SIGTERM / SIGHUP arriving at each stage of writing: Interrupted is raised and the output folder is gone."""
    ct, labelmap, labels = labelled
    out = tmp_path / "out"

    def progress(_fraction: float, message: str) -> None:
        if message == stage:
            os.kill(os.getpid(), sig)

    with job_signal_handlers(), pytest.raises(Interrupted) as caught:
        write_outputs(labelmap, labels, out, source=ct, algorithm_name=MODEL, algorithm_version="1", progress=progress)
    assert caught.value.signum == sig
    assert not out.exists(), _everything(out)


def test_signals_wait_while_results_move_into_place(tmp_path: Path) -> None:
    """A signal inside the commit is held back until every result is in place, then raised."""
    with job_signal_handlers(), pytest.raises(Interrupted), staged_output(tmp_path / "out") as staged:
        for name in ("a.txt", "b.txt"):
            (staged.folder / name).write_text(name)
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            staged.commit(["a.txt", "b.txt"])
            assert (tmp_path / "out" / "b.txt").read_text() == "b.txt"  # still running: the signal waited
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "b.txt"]


def test_a_failed_commit_puts_the_previous_results_back(tmp_path: Path) -> None:
    """When one result cannot be moved, those already moved are taken out and what they replaced returns."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old a")
    with pytest.raises(OutputError), staged_output(out) as staged:
        (staged.folder / "a.txt").write_text("new a")
        staged.commit(["a.txt", "missing.txt"])  # the second move fails
    assert (out / "a.txt").read_text() == "old a"
    assert [p.name for p in out.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_medai_segment_stopped_by_a_signal_leaves_nothing(
    phantom_study: dict[str, Path], tmp_path: Path, sig: signal.Signals
) -> None:
    """The real program, stopped mid-run (as systemd, docker stop, timeout or a closed terminal do)."""
    out = tmp_path / "out"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "MedAIExtension.cli",
            "segment",
            "--input",
            str(phantom_study["ct"]),
            "--model",
            MODEL,
            "--output",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr.read(1)  # the progress bar appears once inference starts: the signal lands mid-run
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: interrupted; no output was written."
    assert not out.exists(), _everything(out)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 160 KiB file system (tmpfs), mounted for the test (needs root, as CI and this machine run)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_gives_one_line_and_no_output(
    labelled: tuple, tiny_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Results larger than the free space: one OutputError line naming the full disk; nothing is left behind."""
    ct, labelmap, labels = labelled
    out = tiny_disk / "results"
    with pytest.raises(OutputError) as caught:
        write_outputs(labelmap, labels, out, source=ct, algorithm_name=MODEL, algorithm_version="1")
    message = str(caught.value)
    assert "full" in message and "\n" not in message and "Traceback" not in message
    assert not out.exists(), _everything(out)
    assert list(tiny_disk.iterdir()) == []


def test_medai_segment_on_a_full_disk(
    phantom_study: dict[str, Path], tiny_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI on a full disk: exit 2, one error line, no output folder."""
    code = main(
        ["segment", "--input", str(phantom_study["ct"]), "--model", MODEL, "--output", str(tiny_disk / "o"), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "full" in errors[0], err
    assert list(tiny_disk.iterdir()) == []


def _write_series_without(phantom_ct: Path, folder: Path, keyword: str) -> Path:
    folder.mkdir()
    for path in sorted(phantom_ct.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        delattr(ds, keyword)
        ds.save_as(folder / path.name)
    return folder


def test_no_frame_of_reference_refuses_an_asked_for_seg_before_inference(
    phantom_study: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format dicom-seg on a series without FrameOfReferenceUID: refused up front, before the model runs."""
    series = _write_series_without(phantom_study["ct"], tmp_path / "ct", "FrameOfReferenceUID")
    out = tmp_path / "out"
    start = time.perf_counter()
    code = main(
        ["segment", "--input", str(series), "--model", MODEL, "--output", str(out), "--format", "dicom-seg", "--quiet"]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert "FrameOfReferenceUID" in captured.err and "ran on" not in captured.out
    assert time.perf_counter() - start < 5.0  # reading the series only; the model never ran
    assert not out.exists()


def test_field_of_view_check_refuses_a_crop_and_accepts_the_scan(phantom_study: dict[str, Path]) -> None:
    """A 16×16×5 crop is far smaller than the chest model's window; the whole phantom scan is not."""
    ct = read_dicom_series(phantom_study["ct"])
    entry = load_catalog().get(MODEL)
    window = entry.input.patch_size[::-1]
    check_field_of_view(ct, window, entry.input.spacing, MODEL)  # no error
    crop = type(ct)(array=np.asarray(ct.array)[40:45, 60:76, 60:76], ijk_to_ras=ct.ijk_to_ras)
    with pytest.raises(InputError, match="field of view"):
        check_field_of_view(crop, window, entry.input.spacing, MODEL)


def test_plausibility_flags_tiny_lungs_and_a_nodule_larger_than_the_lungs(labelled: tuple) -> None:
    """Impossible anatomy is named in words; the phantom's true labels raise nothing."""
    _, labelmap, labels = labelled
    assert plausibility_warnings(labelmap, labels) == []
    impossible = np.zeros(labelmap.shape, dtype=np.uint8)
    impossible[10:12, 10:20, 10:20] = 1  # 0.2 mL of "lung"
    impossible[20:30, 20:60, 20:60] = 2  # a "nodule" far larger
    warnings = plausibility_warnings(labelmap.with_array(impossible), labels)
    assert len(warnings) == 2
    assert "lungs measure" in warnings[0] and "anatomically impossible" in warnings[1]
    unrelated = [SegmentLabel(1, "Liver", (1.0, 0.0, 0.0))]
    assert plausibility_warnings(labelmap.with_array(impossible), unrelated) == []
