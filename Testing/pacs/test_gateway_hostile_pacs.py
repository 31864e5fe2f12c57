"""A PACS that holds hostile identifiers: nothing outside the gateway's work folder is touched, and every refusal
is recorded with its reason (issue 15).

Someone who can store into the PACS controls every "UID" the gateway reads back. Studies are stored straight into a
real Orthanc (REST, bytes as written) with UIDs that are absolute paths, ``..``, NUL, 200 characters, shell
metacharacters and plain text — in the study UID the change feed names, in series UIDs of search answers, in SOP
Instance UIDs of retrieved headers, and in a prior study's MedAI report series (the attack of the issue: a SEG whose
SeriesInstanceUID is an absolute path made the gateway delete that directory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pydicom
import pytest

from MedAIExtension.gateway.journal import JobState, Journal
from MedAIExtension.gateway.logs import GatewayLog
from MedAIExtension.gateway.service import Gateway
from MedAIExtension.pacs.dicomweb import DicomWebStore
from MedAIExtension.phantom.followup import write_phantom_pair
from Testing.pacs.gateway_helpers import (
    PHANTOM,
    copy_series,
    instance_counts,
    make_config,
    post_instances,
    start_at_feed_end,
    wait_settled,
    wait_stable,
)
from Testing.pacs.orthanc_server import OrthancServer

pytestmark = pytest.mark.slow


def _hostile(victim: Path) -> dict[str, str]:
    return {
        "absolute path": str(victim),
        "dot-dot": "../../victim",
        "NUL": "1.2.3\0/../../victim",
        "200 characters": "1." * 99 + "1",
        "shell": "1.2;rm -rf $HOME & `touch pwned` | $(id)",
        "text": "not a uid",
    }


def _tree(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, float]]:
    """Every file and folder under ``root`` (outside ``skip``) with size and modification time."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
        for name in [*dirs, *files]:
            path = Path(folder, name)
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_size, info.st_mtime)
    return found


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile-pair")
    write_phantom_pair(root / "pair", baseline=PHANTOM, volume_factors=(1.5, 1.0), patient_id="HOSTILE-1")
    return root / "pair"


def _run_once(config: Any) -> None:
    gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
    try:
        gateway.run(once=True, max_seconds=120)
    finally:
        gateway.close()


def _one_file(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    first = sorted(source.glob("*.dcm"))[0]
    (target / first.name).write_bytes(first.read_bytes())
    return target


def test_hostile_uids_are_refused_and_nothing_outside_the_work_folder_is_touched(
    shared_orthanc: OrthancServer, pair: Path, tmp_path: Path
) -> None:
    url = shared_orthanc.url
    victim = tmp_path / "victim"
    (victim / "inside").mkdir(parents=True)
    (victim / "inside" / "keep.txt").write_text("must survive")
    hostile = _hostile(victim)
    data = tmp_path / "data"
    prior_ct = pair / "baseline/ct"
    prior_uid = str(pydicom.dcmread(sorted(prior_ct.glob("*.dcm"))[0]).StudyInstanceUID)

    # the prior study: its CT, plus a "MedAI tracking report" SR and a SEG whose series UIDs are hostile
    one = _one_file(prior_ct, data / "one")
    for index, value in enumerate(hostile.values()):
        seg_value = value.replace("1", "2", 1) + "-seg"  # distinct, also after Orthanc cuts at a NUL
        for modality, description, uid in (
            ("SR", "MedAI nodule tracking", value),
            ("SEG", "MedAI nodules (baseline)", seg_value),
        ):
            copy = copy_series(
                one,
                data / f"prior-{modality}-{index}",
                StudyInstanceUID=prior_uid,
                SeriesInstanceUID=uid,
                Modality=modality,
                SeriesDescription=description,
            )
            post_instances(url, copy)
    # the follow-up, with an extra CT series whose UID is hostile (it must not be chosen or touch anything)
    followup = pair / "followup/ct"
    followup_uid = str(pydicom.dcmread(sorted(followup.glob("*.dcm"))[0]).StudyInstanceUID)
    copy_series(one, data / "bad-followup-extra", StudyInstanceUID=followup_uid, SeriesInstanceUID="../victim")
    # (stored later:) a study whose instances' SOP Instance UIDs are hostile, and studies whose Study Instance UID is
    copy_series(
        prior_ct,
        data / "bad-sops",
        PatientID="HOSTILE-2",
        SOPInstanceUID=lambda ds: f"{hostile['absolute path']}/{ds.InstanceNumber}",
    )
    for index, value in enumerate((hostile["absolute path"], hostile["shell"], hostile["200 characters"])):
        copy_series(one, data / f"bad-study-{index}", StudyInstanceUID=value, PatientID="H3")

    workdir = tmp_path / "work"
    start_at_feed_end(workdir, url)  # everything above is older than this gateway's feed position ...
    post_instances(url, prior_ct)  # ... except what follows, in the order a PACS would receive it
    wait_stable(url, prior_uid)
    config = make_config(url, workdir)
    _run_once(config)  # the prior study (baseline) is processed first
    before = _tree(tmp_path, (workdir, data))
    for folder in sorted(data.glob("bad-*")):  # then the hostile studies and the follow-up arrive
        post_instances(url, folder)
    post_instances(url, followup)
    wait_settled(url)  # every one of them is stable before the gateway looks
    _run_once(config)

    assert (victim / "inside" / "keep.txt").read_text() == "must survive"
    assert _tree(tmp_path, (workdir, data)) == before  # nothing created, changed or removed outside the work folder
    jobs_folder = workdir / "jobs"
    assert not jobs_folder.exists() or all(path.name.isdigit() for path in jobs_folder.iterdir())

    journal = Journal(workdir / "journal.sqlite")
    try:
        jobs = journal.jobs()
    finally:
        journal.close()
    by_study = {job.study_uid: job for job in jobs}
    assert by_study[prior_uid].state is JobState.DONE
    follow = by_study[followup_uid]
    assert follow.state is JobState.DONE and follow.summary["prior"] is True
    reasons = {item["what"]: item["reason"] for item in follow.skipped}
    assert any("SeriesInstanceUID of a SR series" in what for what in reasons), follow.skipped
    assert any("SeriesInstanceUID of a SEG series" in what for what in reasons), follow.skipped
    assert "contains characters other than digits and dots" in reasons.values()
    assert any("characters long" in reason for reason in reasons.values())

    bad_sops = next(job for job in jobs if job.study_uid not in (prior_uid, followup_uid) and job.rule)
    assert bad_sops.state is JobState.FAILED and "refused" in bad_sops.detail
    assert {item["what"] for item in bad_sops.skipped} == {"SOPInstanceUID of a retrieved instance"}

    refused = [job for job in jobs if job.study_uid.startswith("refused-")]
    assert len(refused) == 3 and all(job.state is JobState.IGNORED for job in refused)
    assert all(job.detail.startswith("refused: StudyInstanceUID") and job.skipped for job in refused)

    store = DicomWebStore(shared_orthanc.dicomweb_url)
    counts = instance_counts(store, followup_uid)
    assert counts["SEG"] == [1] and counts["SR"] == [1] and counts["PR"] == [1]
    log = (workdir / "gateway.log").read_text()
    assert '"event": "uid_refused"' in log
    assert str(victim) not in log and "rm -rf" not in log  # refusals name the problem, never the value
