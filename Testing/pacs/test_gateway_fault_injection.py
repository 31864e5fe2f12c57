"""The gateway under injected faults that land at the same byte every time (issue 15).

A loopback proxy (:mod:`Testing.pacs.fault_proxy`) between the gateway and a real Orthanc cuts a WADO-RS retrieve
mid-transfer, cuts STOW-RS requests (before Orthanc stored them, and after), answers 503 to a burst of requests and
stalls an answer past the gateway's timeout; the gateway is SIGKILLed at each named point of a job and restarted.
Every case ends with the study processed and each result stored exactly once (instance counts in Orthanc).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from MedAIExtension.cli import main
from MedAIExtension.gateway.journal import Job, JobState, Journal
from MedAIExtension.gateway.kill_points import KILL_ENV_VAR, KILL_POINTS
from MedAIExtension.gateway.logs import GatewayLog
from MedAIExtension.gateway.service import Gateway
from MedAIExtension.pacs.dicomweb import DicomWebStore
from MedAIExtension.phantom.followup import write_phantom_pair
from Testing.pacs.fault_proxy import FaultProxy
from Testing.pacs.gateway_helpers import (
    PHANTOM,
    config_data,
    copy_series,
    instance_counts,
    journal_states,
    make_config,
    start_at_feed_end,
    upload,
    write_config_file,
)
from Testing.pacs.orthanc_server import OrthancServer

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
WADO_SERIES = r"^GET /dicom-web/studies/[\d.]+/series/[\d.]+ HTTP"
STOW = r"^POST /dicom-web/studies"


@pytest.fixture(scope="module")
def baseline_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fault-injection")
    write_phantom_pair(root / "pair", baseline=PHANTOM, volume_factors=(1.5, 1.0), patient_id="FAULTS-0")
    return root / "pair" / "baseline" / "ct"


@pytest.fixture()
def proxy(shared_orthanc: OrthancServer) -> Iterator[FaultProxy]:
    with FaultProxy(shared_orthanc.port) as fault_proxy:
        yield fault_proxy


def _new_study(orthanc: OrthancServer, source: Path, folder: Path, workdir: Path) -> str:
    """Store a copy of ``source`` as a new study of a new patient; the gateway of ``workdir`` will see only it."""
    start_at_feed_end(workdir, orthanc.url)
    copy = copy_series(source, folder, PatientID=f"FAULTS-{folder.name}")
    return upload(DicomWebStore(orthanc.dicomweb_url), copy, orthanc.url)


def _run(config: Any, max_seconds: float = 120) -> Job:
    gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
    try:
        gateway.run(once=True, max_seconds=max_seconds)
    finally:
        gateway.close()
    journal = Journal(config.workdir / "journal.sqlite")
    try:
        [job] = journal.jobs()
    finally:
        journal.close()
    return job


def _stored_once(orthanc: OrthancServer, study_uid: str) -> None:
    counts = instance_counts(DicomWebStore(orthanc.dicomweb_url), study_uid)
    assert counts.get("SEG") == [1] and counts.get("SR") == [1] and counts.get("PR") == [1], counts


def _events(workdir: Path, name: str) -> list[dict[str, Any]]:
    lines = (workdir / "gateway.log").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == name]


def test_a_retrieve_cut_mid_transfer_is_retried(
    shared_orthanc: OrthancServer, proxy: FaultProxy, baseline_ct: Path, tmp_path: Path
) -> None:
    study_uid = _new_study(shared_orthanc, baseline_ct, tmp_path / "cut-retrieve", tmp_path / "work")
    fault = proxy.cut(WADO_SERIES, after_bytes=300_000)  # inside the 2nd or 3rd slice of 80
    job = _run(make_config(proxy.url, tmp_path / "work"))
    assert fault.fired == 1
    assert job.state is JobState.DONE and job.attempts == 2
    [retry] = _events(tmp_path / "work", "job_retry")
    assert "cut" in retry["error"] or "incomplete" in retry["error"]
    _stored_once(shared_orthanc, study_uid)


def test_stow_cut_before_and_after_the_pacs_stored_gives_one_copy(
    shared_orthanc: OrthancServer, proxy: FaultProxy, baseline_ct: Path, tmp_path: Path
) -> None:
    study_uid = _new_study(shared_orthanc, baseline_ct, tmp_path / "cut-stow", tmp_path / "work")
    request_cut = proxy.cut(STOW, after_bytes=3000, direction="up")  # Orthanc never gets the whole upload
    answer_cut = proxy.cut(STOW, after_bytes=0, direction="down")  # Orthanc stored it, the answer is lost
    job = _run(make_config(proxy.url, tmp_path / "work"))
    assert (request_cut.fired, answer_cut.fired) == (1, 1)
    assert job.state is JobState.DONE and job.store_attempts == 3
    _stored_once(shared_orthanc, study_uid)


def test_a_503_storm_and_a_stall_end_with_the_study_processed(
    shared_orthanc: OrthancServer, proxy: FaultProxy, baseline_ct: Path, tmp_path: Path
) -> None:
    study_uid = _new_study(shared_orthanc, baseline_ct, tmp_path / "storm", tmp_path / "work")
    storm = proxy.unavailable(r"/dicom-web/", times=6)
    stall = proxy.stall(WADO_SERIES, after_bytes=200_000, seconds=5)
    data = config_data(proxy.url, tmp_path / "work", max_attempts=10, retry_seconds=[0.2, 0.4])
    data["pacs"]["timeout"] = 1.5
    job = _run(make_config(proxy.url, tmp_path / "work", pacs=data["pacs"], max_attempts=10, retry_seconds=[0.2, 0.4]))
    assert (storm.fired, stall.fired) == (6, 1)
    assert job.state is JobState.DONE
    errors = " ".join(
        e["error"] for e in [*_events(tmp_path / "work", "job_retry"), *_events(tmp_path / "work", "discover_failed")]
    )
    assert "HTTP 503" in errors and ("did not answer in time" in errors or "timed out" in errors)
    _stored_once(shared_orthanc, study_uid)


def test_a_job_that_failed_for_good_is_listed_and_can_be_requeued(
    shared_orthanc: OrthancServer,
    proxy: FaultProxy,
    baseline_ct: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    study_uid = _new_study(shared_orthanc, baseline_ct, tmp_path / "requeue", tmp_path / "work")
    proxy.cut(WADO_SERIES, after_bytes=100_000)
    config = write_config_file(tmp_path / "gateway.yaml", config_data(proxy.url, tmp_path / "work", max_attempts=1))
    assert main(["gateway", "--config", str(config), "--once", "--quiet", "--max-seconds", "60"]) == 0
    assert [state for _, _, state in journal_states(tmp_path / "work")] == ["failed"]
    capsys.readouterr()
    assert main(["worklist", "--config", str(config), "--offline"]) == 0
    listing = capsys.readouterr().out
    assert "Failed (1" in listing and study_uid in listing and "gave up after 1 attempts" in listing

    assert main(["gateway", "requeue", "--study", study_uid, "--config", str(config)]) == 0
    assert [state for _, _, state in journal_states(tmp_path / "work")] == ["queued"]
    assert main(["gateway", "--config", str(config), "--once", "--quiet", "--max-seconds", "60"]) == 0
    assert [state for _, _, state in journal_states(tmp_path / "work")] == ["done"]
    _stored_once(shared_orthanc, study_uid)


def test_sigkill_at_each_named_point_then_restart_gives_one_set_of_results(
    shared_orthanc: OrthancServer, baseline_ct: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    study_uid = _new_study(shared_orthanc, baseline_ct, tmp_path / "kills", workdir)
    config = write_config_file(tmp_path / "gateway.yaml", config_data(shared_orthanc.url, workdir))
    command = [sys.executable, "-m", "MedAIExtension.cli", "gateway", "--config", str(config), "--once", "--quiet"]
    store = DicomWebStore(shared_orthanc.dicomweb_url)
    expected_state = {"retrieve": "running", "run": "running", "commit": "results", "store": "storing"}
    for point in KILL_POINTS:  # each run resumes what the previous kill left, and is killed at the next point
        done = subprocess.run(
            command, cwd=REPO, env={**os.environ, KILL_ENV_VAR: point}, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == -9, (point, done.stderr[-2000:])
        assert [state for _, _, state in journal_states(workdir)] == [expected_state[point]], point
        counts = instance_counts(store, study_uid)
        stored = sum(len(counts.get(modality, [])) for modality in ("SEG", "SR", "PR"))
        assert stored == (1 if point == "store" else 0), (point, counts)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [state for _, _, state in journal_states(workdir)] == ["done"]
    _stored_once(shared_orthanc, study_uid)
