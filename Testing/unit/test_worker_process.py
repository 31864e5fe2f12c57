"""The child-process runner: progress lines stream while it runs, cancel kills the whole process tree."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from MedAIExtension.errors import InputError
from MedAIExtension.runner import WorkerEvent, WorkerProcess, apply_result_events, format_event, parse_event

CHILD = r"""
import subprocess, sys, time
from MedAIExtension.runner import WorkerEvent, format_event
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(format_event(WorkerEvent("log", message=f"grandchild {grandchild.pid}")), flush=True)
for i in range(1000):
    print(format_event(WorkerEvent("progress", i / 1000, f"step {i}")), flush=True)
    time.sleep(0.05)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_event_lines_round_trip_and_plain_lines_become_logs() -> None:
    event = WorkerEvent("progress", 0.25, "window 3/12", {"a": 1})
    assert parse_event(format_event(event)) == event
    assert parse_event("some library printed this\n") == WorkerEvent("log", message="some library printed this")


@pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")
def test_cancel_kills_the_process_tree_and_poll_never_blocks() -> None:
    proc = WorkerProcess([sys.executable, "-c", CHILD])
    proc.start()
    events: list[WorkerEvent] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(e.kind == "progress" for e in events) < 3:
        started = time.monotonic()
        events += proc.poll()
        assert time.monotonic() - started < 0.1
        time.sleep(0.05)
    assert proc.running
    grandchild = int(next(e.message.split()[1] for e in events if e.message.startswith("grandchild")))
    assert _alive(grandchild)
    fractions = [e.fraction for e in events if e.kind == "progress"]
    assert fractions == sorted(fractions) and len(fractions) >= 3
    proc.cancel(grace_seconds=2)
    assert proc.returncode is not None and proc.returncode != 0
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the grandchild survived the cancel"
    assert proc.cancelled


def test_worker_reports_a_clear_error_event_and_exit_code(tmp_path: Path) -> None:
    from MedAIExtension.runner import segmentation_worker_args

    proc = WorkerProcess(
        segmentation_worker_args(tmp_path / "missing.nii.gz", "chest-ct-lung-nodule", tmp_path / "out")
    )
    proc.start()
    code = proc.wait(timeout=120)
    events = proc.poll()
    errors = [e for e in events if e.kind == "error"]
    assert code == 2
    assert len(errors) == 1 and "does not exist" in errors[0].message
    assert not (tmp_path / "out").exists()


# ---- the track job -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two DICOM studies of one phantom patient, 120 days apart, moved between the scans: nodule 1 doubles its
    volume, nodule 2 is stable, nodule 3 is new at follow-up."""
    from MedAIExtension.phantom import NoduleSpec, PhantomSpec
    from MedAIExtension.phantom.followup import write_phantom_pair

    nodules = (
        NoduleSpec(12.0, lung="right", position=(0.3, 0.2, 0.3)),
        NoduleSpec(10.0, lung="left", position=(0.35, -0.2, -0.3)),
    )
    return write_phantom_pair(
        tmp_path_factory.mktemp("pair"),
        baseline=PhantomSpec(size_ijk=(192, 192, 128), spacing=(1.8, 1.8, 2.5), seed=11, nodules=nodules),
        volume_factors=(2.0, 1.0),
        new_nodules=(NoduleSpec(9.0, lung="right", position=(0.3, -0.3, -0.45)),),
        rotation_deg=(0.0, 0.0, 3.0),
        translation_mm=(5.0, -3.0, 0.0),
        interval_days=120,
    )


def _run(args: list[str], timeout: float = 300) -> tuple[int, list[WorkerEvent], float]:
    proc = WorkerProcess(args)
    started = time.monotonic()
    proc.start()
    code = proc.wait(timeout=timeout)
    return code, proc.poll(), time.monotonic() - started


def _nearest(rows: list[dict], key: str, point: list[float]) -> tuple[dict, float]:
    placed = [row for row in rows if row[key] is not None]
    distances = [float(np.linalg.norm(np.subtract(row[key], point))) for row in placed]
    return placed[int(np.argmin(distances))], min(distances)


def test_track_job_follows_the_nodules_of_two_dicom_studies(tmp_path: Path, phantom_pair: dict[str, Path]) -> None:
    from MedAIExtension.runner import tracking_worker_args

    out = tmp_path / "out"
    args = tracking_worker_args(phantom_pair["baseline_ct"], phantom_pair["followup_ct"], out, None, "cpu")
    code, events, seconds = _run(args)
    errors = [e for e in events if e.kind == "error"]
    assert code == 0 and not errors, [e.message for e in errors] or [e.message for e in events[-5:]]
    fractions = [e.fraction for e in events if e.kind == "progress"]
    assert len(fractions) > 5 and fractions == sorted(fractions) and fractions[0] < 0.05 and fractions[-1] >= 0.9
    result = events[-1]
    assert result.kind == "result"
    for key in ("table_json", "table_csv", "baseline_labels", "followup_labels", "report", "transform"):
        assert Path(result.data[key]).is_file(), key
    for key in ("baseline_seg", "baseline_sr", "followup_seg", "followup_sr"):  # both inputs are DICOM
        assert Path(result.data[key]).is_file(), key
    assert not list(out.glob(".medai-staging-*")), "the staging folder was left behind"

    truth = json.loads(phantom_pair["truth"].read_text(encoding="utf-8"))
    document = json.loads(Path(result.data["table_json"]).read_text(encoding="utf-8"))
    rows = document["nodules"]
    assert document["summary"]["interval_days"] == truth["interval_days"] == result.data["interval_days"]
    assert result.data["nodules"] == len(rows)
    print(f"\ntrack job: {len(rows)} rows for {len(truth['nodules'])} nodules in {seconds:.1f} s, "
          f"registered={result.data['registered']}")  # fmt: skip
    found = []
    for nodule in truth["nodules"]:
        where = "baseline" if nodule["baseline"] else "followup"
        row, distance = _nearest(rows, f"{where}_center_ras", nodule[where]["center_ras"])
        found.append((nodule, row, distance))
        print(
            f"  truth {nodule['id']} {nodule['status']:<10} -> {row['tracking_id']} {row['status']:<10} "
            f"centre off by {distance:.1f} mm, volume change {row['volume_change_percent']} % "
            f"(truth {nodule['volume_change_percent']}), VDT {row['vdt_days']} d (truth {nodule['vdt_days']})"
        )
    for nodule, row, distance in found:
        assert distance < 4.0 and row["status"] == nodule["status"], (nodule["id"], row["tracking_id"])
        if nodule["status"] == "persistent":
            assert abs(row["volume_change_percent"] - nodule["volume_change_percent"]) < 35.0
        if nodule["vdt_days"] is not None:
            assert abs(row["vdt_days"] - nodule["vdt_days"]) < 0.35 * nodule["vdt_days"]
    extra = sorted({row["tracking_id"] for row in rows} - {row["tracking_id"] for _, row, _ in found})
    assert not extra, f"rows without a nodule in the phantom (false positives): {extra}"
    assert result.data["registered"], "a 3 degree, 6 mm repositioning must register"


def test_track_job_refuses_two_patients_before_any_work(tmp_path: Path) -> None:
    import datetime as dt

    from MedAIExtension.phantom.study import write_phantom_study
    from MedAIExtension.runner import tracking_worker_args

    studies = {}
    for name, patient, date in (("a", "PATIENT-A", dt.date(2024, 1, 5)), ("b", "PATIENT-B", dt.date(2024, 7, 5))):
        studies[name] = write_phantom_study(
            tmp_path / name, size_ijk=(48, 48, 24), spacing=(7.0, 7.0, 12.0), study_date=date, patient_id=patient
        )["ct"]
    out = tmp_path / "out"
    code, events, _ = _run(tracking_worker_args(studies["a"], studies["b"], out, None, "cpu"))
    errors = [e for e in events if e.kind == "error"]
    assert code == 2 and len(errors) == 1, [e.message for e in events]
    assert "different patients" in errors[0].message and "--force" in errors[0].message
    assert errors[0].data["type"] == "InputError"
    assert not out.exists() and not [e for e in events if e.kind == "result"]


def test_result_events_are_loaded_and_errors_recorded_unless_cancelled() -> None:
    job, loaded = SimpleNamespace(cancelled=False, error=None), []
    apply_result_events([WorkerEvent("progress", 0.5), WorkerEvent("result", data={"n": 1})], job, loaded.append, "x")
    assert loaded == [{"n": 1}] and job.error is None

    def refuse(data: dict) -> None:
        raise InputError("The volume is gone; load it again.")

    def crash(data: dict) -> None:
        raise ValueError("boom")

    apply_result_events([WorkerEvent("result")], job, refuse, "tracking")
    assert job.error == "The volume is gone; load it again."
    apply_result_events([WorkerEvent("result")], job, crash, "tracking")
    assert job.error == "The tracking result could not be loaded into Slicer: boom"
    apply_result_events([WorkerEvent("error", message="no lungs")], job, loaded.append, "tracking")
    assert job.error == "no lungs"
    cancelled = SimpleNamespace(cancelled=True, error=None)
    apply_result_events([WorkerEvent("result"), WorkerEvent("error", message="late")], cancelled, loaded.append, "x")
    assert cancelled.error is None and len(loaded) == 1
