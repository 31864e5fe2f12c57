"""The gateway under faults, against a real Orthanc: killed mid-job, PACS restarted mid-job, a study matching
no rule, a series failing validation, STOW rejected, wrong credentials, shadow mode and DICOMweb polling.

"Exactly one set of results" is checked in the PACS itself: one SEG series and one SR series, one instance each.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pydicom
import pytest

from MedAIExtension.gateway.config import GatewayConfig
from MedAIExtension.gateway.journal import JobState, Journal
from MedAIExtension.gateway.logs import GatewayLog
from MedAIExtension.gateway.service import Gateway
from MedAIExtension.pacs.dicomweb import DicomWebStore
from MedAIExtension.phantom.followup import write_phantom_pair
from Testing.pacs.gateway_helpers import (
    PHANTOM,
    config_data,
    copy_series,
    journal_states,
    make_config,
    series_by_modality,
    start_at_feed_end,
    upload,
    wait_for,
    wait_settled,
    write_config_file,
)
from Testing.pacs.orthanc_server import OrthancServer

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gateway-faults")
    write_phantom_pair(root / "pair", baseline=PHANTOM, volume_factors=(1.5, 1.0))
    return root / "pair"


def _one_set(store: DicomWebStore, study_uid: str) -> None:
    series = series_by_modality(store, study_uid)
    assert [s.number_of_instances for s in series.get("SEG", [])] == [1], series
    assert [s.number_of_instances for s in series.get("SR", [])] == [1], series
    assert [s.number_of_instances for s in series.get("PR", [])] == [1], series


def _jobs(workdir: Path) -> list:
    journal = Journal(workdir / "journal.sqlite")
    try:
        return journal.jobs()
    finally:
        journal.close()


def _medai(*args: str) -> list[str]:
    return [sys.executable, "-m", "MedAIExtension.cli", *args]


def _run(config: GatewayConfig, max_seconds: float = 120, once: bool = True) -> None:
    gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
    try:
        gateway.run(once=once, max_seconds=max_seconds)
    finally:
        gateway.close()


def test_killed_mid_job_and_restarted_gives_exactly_one_set_of_results(
    orthanc: OrthancServer, pair: Path, tmp_path: Path
) -> None:
    store = DicomWebStore(orthanc.dicomweb_url)
    study_uid = upload(store, pair / "baseline/ct", orthanc.url)
    workdir = tmp_path / "work"
    config = write_config_file(tmp_path / "gateway.yaml", config_data(orthanc.url, workdir))
    first = subprocess.Popen(_medai("gateway", "--config", str(config), "--quiet"), cwd=REPO)
    try:
        wait_for(lambda: any(state == "running" for _, _, state in journal_states(workdir)), 60, "a running job")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert [state for _, _, state in journal_states(workdir)] == ["running"]
    assert "SEG" not in series_by_modality(store, study_uid)

    second = subprocess.run(
        _medai("gateway", "--config", str(config), "--once", "--quiet", "--max-seconds", "120"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr
    jobs = _jobs(workdir)
    assert [(job.state, job.attempts) for job in jobs] == [(JobState.DONE, 2)]
    _one_set(store, study_uid)
    log = (workdir / "gateway.log").read_text()
    assert '"recovered": 1' in log


def test_crash_between_storing_two_series_is_completed_without_duplicates(
    orthanc: OrthancServer, pair: Path, tmp_path: Path
) -> None:
    store = DicomWebStore(orthanc.dicomweb_url)
    study_uid = upload(store, pair / "baseline/ct", orthanc.url)
    config = make_config(orthanc.url, tmp_path / "work")
    gateway = Gateway(config, log=GatewayLog(None, quiet=True))
    assert gateway.discover() == 1
    job = gateway.process(gateway.journal.claim())
    assert job.state is JobState.RESULTS and len(job.results) == 3  # SEG, SR and the presentation state
    job = gateway.journal.claim()
    assert job.state is JobState.STORING
    seg = next(gateway.job_dir(job) / name for name in job.results if "seg" in name)
    store.store([seg])  # the SEG reached the PACS, then the gateway died before the SR
    gateway.close()

    _run(config)
    jobs = _jobs(config.workdir)
    assert [(j.state, j.attempts, j.store_attempts) for j in jobs] == [(JobState.DONE, 1, 2)]
    _one_set(store, study_uid)


def test_orthanc_restarted_mid_job_the_job_resumes(orthanc: OrthancServer, pair: Path, tmp_path: Path) -> None:
    store = DicomWebStore(orthanc.dicomweb_url)
    study_uid = upload(store, pair / "baseline/ct", orthanc.url)
    config = make_config(orthanc.url, tmp_path / "work")
    gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
    thread = threading.Thread(target=gateway.run, kwargs={"max_seconds": 120})
    thread.start()
    try:
        wait_for(lambda: any(s == "running" for _, _, s in journal_states(config.workdir)), 60, "a running job")
        orthanc.stop()
        log = config.workdir / "gateway.log"
        wait_for(lambda: "job_retry" in log.read_text(), 60, "the job to be put back for a retry")
        orthanc.start()
        wait_for(lambda: [s for _, _, s in journal_states(config.workdir)] == ["done"], 90, "the job to finish")
    finally:
        gateway.stop()
        thread.join(timeout=60)
        gateway.close()
    _one_set(store, study_uid)
    job = _jobs(config.workdir)[0]
    assert job.attempts + job.store_attempts >= 3  # at least one retry after the first try


def test_unmatched_study_is_ignored_and_a_bad_series_fails_while_the_gateway_keeps_running(
    orthanc: OrthancServer, pair: Path, tmp_path: Path
) -> None:
    store = DicomWebStore(orthanc.dicomweb_url)
    head = copy_series(pair / "baseline/ct", tmp_path / "head", BodyPartExamined="HEAD", PatientID="OTHER-1")
    broken = copy_series(pair / "baseline/ct", tmp_path / "broken", PatientID="OTHER-2")
    os.remove(sorted(broken.glob("*.dcm"))[40])  # a slice lost in transfer
    head_uid = upload(store, head, orthanc.url)
    broken_uid = upload(store, broken, orthanc.url)
    good_uid = upload(store, pair / "baseline/ct", orthanc.url)
    config = make_config(orthanc.url, tmp_path / "work")
    _run(config)
    jobs = {job.study_uid: job for job in _jobs(config.workdir)}
    assert jobs[head_uid].state is JobState.IGNORED and "CT/HEAD" in jobs[head_uid].detail
    assert jobs[broken_uid].state is JobState.FAILED and "missing" in jobs[broken_uid].detail.lower()
    assert jobs[good_uid].state is JobState.DONE
    _one_set(store, good_uid)
    assert set(series_by_modality(store, broken_uid)) == {"CT"}
    log = (config.workdir / "gateway.log").read_text()
    assert '"event": "study_ignored"' in log and '"event": "job_failed"' in log


def test_a_study_ignored_for_a_junk_series_is_processed_when_its_ct_arrives(
    orthanc: OrthancServer, pair: Path, tmp_path: Path
) -> None:
    """Whoever stores a non-matching series into a study first cannot hide the study's CT that arrives later."""
    store = DicomWebStore(orthanc.dicomweb_url)
    config = make_config(orthanc.url, tmp_path / "work")
    start_at_feed_end(config.workdir, orthanc.url)
    study_uid = pydicom.uid.generate_uid()
    junk = copy_series(pair / "baseline/ct", tmp_path / "junk", StudyInstanceUID=study_uid, BodyPartExamined="HEAD")
    upload(store, junk, orthanc.url)
    _run(config)
    [ignored] = _jobs(config.workdir)
    assert ignored.state is JobState.IGNORED and "CT/HEAD" in ignored.detail
    chest = copy_series(pair / "baseline/ct", tmp_path / "chest", StudyInstanceUID=study_uid)
    store.store(sorted(chest.glob("*.dcm")))
    wait_settled(orthanc.url)
    _run(config)
    [job] = _jobs(config.workdir)  # the ignore record gave way to the real job
    assert job.state is JobState.DONE and job.study_uid == study_uid, job
    _one_set(store, study_uid)
    _run(config)  # stable again after our own results were stored: nothing new
    assert len(_jobs(config.workdir)) == 1


_REJECT_SEG = """
function ReceivedInstanceFilter(dicom, origin, info)
  return dicom.Modality ~= 'SEG'
end
"""


def test_rejected_stow_stays_in_the_outbox_until_the_pacs_accepts_it(pair: Path, tmp_path: Path) -> None:
    script = tmp_path / "reject-seg.lua"
    script.write_text(_REJECT_SEG)
    server = OrthancServer(tmp_path / "orthanc", extra_config={"LuaScripts": [str(script)]}).start()
    try:
        store = DicomWebStore(server.dicomweb_url)
        study_uid = upload(store, pair / "baseline/ct", server.url)
        config = make_config(server.url, tmp_path / "work", max_attempts=2, retry_seconds=[0.2, 0.5])
        gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
        running = threading.Thread(target=gateway.run, kwargs={"max_seconds": 120})
        running.start()
        try:  # the SEG keeps being dropped: it waits in the outbox and is retried, never fails
            wait_for(lambda: any(j.store_attempts > 2 for j in _jobs(config.workdir)), 90, "a third STOW attempt")
        finally:
            gateway.stop()
            running.join()
            gateway.close()
        [job] = _jobs(config.workdir)
        assert job.state is JobState.OUTBOX and "STOW rejected" in job.detail and job.store_attempts > 2
        assert all((config.workdir / "jobs" / str(job.id) / name).is_file() for name in job.results)
        assert "SEG" not in series_by_modality(store, study_uid)

        server.stop()
        server.extra_config = {}
        server.start()
        _run(config)
        [job] = _jobs(config.workdir)
        assert job.state is JobState.DONE
        _one_set(store, study_uid)
    finally:
        server.stop()


def test_wrong_credentials_fail_at_start_up_with_one_clear_message(orthanc_auth: OrthancServer, tmp_path: Path) -> None:
    data = config_data(orthanc_auth.url, tmp_path / "work")
    data["pacs"].update(username="medai", password_env="MEDAI_TEST_PACS_PASSWORD")
    config = write_config_file(tmp_path / "gateway.yaml", data)
    env = dict(os.environ, MEDAI_TEST_PACS_PASSWORD="not-the-password")
    done = subprocess.run(
        _medai("gateway", "--config", str(config), "--once"), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "not-the-password" not in done.stderr
    assert done.stderr.startswith("error: ") and "password_env" in done.stderr

    missing = subprocess.run(
        _medai("gateway", "--config", str(config), "--once"),
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "MEDAI_TEST_PACS_PASSWORD"},
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "MEDAI_TEST_PACS_PASSWORD" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_shadow_mode_journals_results_and_stores_nothing(orthanc: OrthancServer, pair: Path, tmp_path: Path) -> None:
    store = DicomWebStore(orthanc.dicomweb_url)
    study_uid = upload(store, pair / "baseline/ct", orthanc.url)
    config = make_config(orthanc.url, tmp_path / "work", shadow=True)
    _run(config)
    [job] = _jobs(config.workdir)
    assert job.state is JobState.SHADOW and job.priority == 2 and job.summary["lung_rads"] == "4A"
    assert all((config.workdir / "jobs" / str(job.id) / name).is_file() for name in job.results)
    assert set(series_by_modality(store, study_uid)) == {"CT"}


def test_dicomweb_polling_without_the_orthanc_change_feed(orthanc: OrthancServer, pair: Path, tmp_path: Path) -> None:
    store = DicomWebStore(orthanc.dicomweb_url)
    study_uid = upload(store, pair / "baseline/ct")
    pacs = {"type": "dicomweb", "url": orthanc.dicomweb_url, "poll_seconds": 0.3}
    config = make_config(orthanc.url, tmp_path / "work", pacs=pacs)
    _run(config)
    [job] = _jobs(config.workdir)
    assert job.state is JobState.DONE
    _one_set(store, study_uid)


def test_a_second_gateway_on_the_same_work_folder_is_refused(orthanc: OrthancServer, tmp_path: Path) -> None:
    from MedAIExtension.errors import InputError

    config = make_config(orthanc.url, tmp_path / "work")
    first = Gateway(config, log=GatewayLog(None, quiet=True))
    try:
        with pytest.raises(InputError, match="Another gateway is running"):
            Gateway(config, log=GatewayLog(None, quiet=True))
    finally:
        first.close()
    shutil.rmtree(tmp_path / "work")


def test_the_research_export_is_de_identified_and_its_references_resolve(
    orthanc: OrthancServer, pair: Path, tmp_path: Path
) -> None:
    store = DicomWebStore(orthanc.dicomweb_url)
    upload(store, pair / "baseline/ct", orthanc.url)
    (tmp_path / "deid.key").write_text("0123456789abcdef" * 4)
    (tmp_path / "deid.key").chmod(0o600)
    export = {"path": str(tmp_path / "export"), "key_file": str(tmp_path / "deid.key")}
    config = make_config(orthanc.url, tmp_path / "work", export=export)
    _run(config)
    [job] = _jobs(config.workdir)
    assert job.state is JobState.DONE
    assert not (config.workdir / "jobs" / str(job.id)).exists()  # no patient data left behind in the work folder
    files = sorted((tmp_path / "export").rglob("*.dcm"))
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    assert sorted({ds.Modality for ds in headers}) == ["CT", "PR", "SEG", "SR"] and len(files) == 80 + 3
    pseudonyms = {str(ds.PatientID) for ds in headers}
    assert len(pseudonyms) == 1 and "MEDAI-PHANTOM" not in pseudonyms  # one patient, one pseudonym
    assert all(ds.PatientIdentityRemoved == "YES" and "Phantom" not in str(ds.PatientName) for ds in headers)
    assert len({ds.StudyInstanceUID for ds in headers}) == 1
    instances = {str(ds.SOPInstanceUID) for ds in headers}
    seg = next(ds for ds in headers if ds.Modality == "SEG")
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced and referenced <= instances


def test_an_export_without_a_fixed_key_is_refused_at_start_up(orthanc: OrthancServer, tmp_path: Path) -> None:
    from MedAIExtension.errors import InputError

    config = make_config(orthanc.url, tmp_path / "work", export={"path": str(tmp_path / "export")})
    with pytest.raises(InputError, match="fixed key"):
        Gateway(config, log=GatewayLog(None, quiet=True), environ={})
    Gateway(config, log=GatewayLog(None, quiet=True), environ={"MEDAI_DEID_KEY": "f" * 64}).close()  # lock released


def test_a_one_off_run_that_cannot_reach_the_pacs_fails_clearly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = config_data(f"http://127.0.0.1:{port}", tmp_path / "work", max_attempts=2, retry_seconds=[0.1])
    config = write_config_file(tmp_path / "gateway.yaml", data)
    done = subprocess.run(
        _medai("gateway", "--config", str(config), "--once", "--quiet"), cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: Cannot connect to the PACS") and f"127.0.0.1:{port}" in done.stderr
    assert '"event": "discover_failed"' in (tmp_path / "work" / "gateway.log").read_text()
