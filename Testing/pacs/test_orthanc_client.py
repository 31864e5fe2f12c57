"""OrthancClient against a real Orthanc 1.10: changes feed, StableStudy, lookup, user metadata, restart."""

from __future__ import annotations

import time

import pytest

from MedAIExtension.pacs import (
    Change,
    Credentials,
    DicomWebStore,
    OrthancClient,
    PacsAuthError,
    PacsError,
    PacsNotFoundError,
    PacsUnavailableError,
)
from Testing.pacs.conftest import AUTH_PASSWORD, AUTH_USER, PhantomSeries
from Testing.pacs.orthanc_server import USER_METADATA, OrthancServer


def _wait_for_change(client: OrthancClient, change_type: str, since: int = 0, timeout: float = 15.0) -> Change:
    """Follow the changes feed (in pages of 10) until ``change_type`` appears."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        changes, last, done = client.changes(since=since, limit=10)
        for change in changes:
            if change.change_type == change_type:
                return change
        since = last
        if done:
            time.sleep(0.2)
    raise AssertionError(f"no {change_type} change within {timeout} s")


def test_stable_study_lookup_and_tags(orthanc: OrthancServer, phantom_series: PhantomSeries) -> None:
    client = OrthancClient(orthanc.url)
    system = client.system()
    assert system["Version"].startswith("1.")
    assert client.last_change() == 0
    assert client.study_id(phantom_series.study_uid) is None

    DicomWebStore(orthanc.dicomweb_url).store(phantom_series.files)
    uploaded = time.monotonic()
    stable = _wait_for_change(client, "StableStudy")
    assert time.monotonic() - uploaded >= 0.5  # StableAge 1 s: not before the study went quiet
    assert stable.resource_type == "Study"
    assert len(stable.date) == 15 and stable.date[8] == "T"

    changes, last, done = client.changes(since=0, limit=5)
    assert [c.seq for c in changes] == sorted(c.seq for c in changes) and len(changes) == 5 and not done
    assert last == changes[-1].seq
    assert client.last_change() >= stable.seq

    assert client.study_id(phantom_series.study_uid) == stable.resource_id
    assert client.studies() == [stable.resource_id]
    assert client.study_uid(stable.resource_id) == phantom_series.study_uid
    tags = client.study_tags(stable.resource_id)
    assert tags["PatientID"] == phantom_series.patient_id and tags["StudyDate"] == "20260105"
    assert tags["StudyInstanceUID"] == phantom_series.study_uid
    [series] = client.series_of_study(stable.resource_id)
    assert series["SeriesInstanceUID"] == phantom_series.series_uid
    assert (series["Modality"], series["BodyPartExamined"]) == ("CT", "CHEST")
    assert series["NumberOfInstances"] == len(phantom_series.files)
    assert series["SeriesDescription"].startswith("MedAI PACS test CT")

    with pytest.raises(PacsNotFoundError):
        client.study_uid("00000000-00000000-00000000-00000000-00000000")


def test_metadata_and_restart(orthanc: OrthancServer, phantom_series: PhantomSeries) -> None:
    client = OrthancClient(orthanc.url)
    DicomWebStore(orthanc.dicomweb_url).store(phantom_series.files[:4])
    study = client.study_id(phantom_series.study_uid)
    assert study is not None

    assert client.get_metadata(study, "MedAIPriority") is None
    client.set_metadata(study, "MedAIPriority", "urgent")
    client.set_metadata(study, "MedAIPriorityReason", "nodule ≥ 8 mm")  # non-ASCII survives
    assert client.get_metadata(study, "MedAIPriority") == "urgent"
    assert client.get_metadata(study, "MedAIPriorityReason") == "nodule ≥ 8 mm"
    client.set_metadata(study, "MedAIPriority", "routine")
    metadata = client.study_metadata(study)
    # Orthanc 1.10's /metadata?expand: the system items (LastUpdate) plus the user items that are set.
    assert metadata["MedAIPriority"] == "routine"
    assert metadata["MedAIPriorityReason"] == "nodule ≥ 8 mm"
    assert "LastUpdate" in metadata and "MedAIStatus" not in metadata
    assert set(USER_METADATA) >= {k for k in metadata if k.startswith("MedAI")}

    with pytest.raises(PacsError, match="UserMetadata") as caught:
        client.set_metadata(study, "MedAINotDeclared", "x")
    assert not isinstance(caught.value, PacsNotFoundError)
    with pytest.raises(PacsError, match="UserMetadata"):
        client.get_metadata(study, "MedAINotDeclared")
    with pytest.raises(PacsNotFoundError, match="no study"):
        client.set_metadata("00000000-00000000-00000000-00000000-00000000", "MedAIStatus", "x")

    last = client.last_change()
    port = orthanc.port
    orthanc.restart()
    assert orthanc.port == port
    assert client.study_id(phantom_series.study_uid) == study
    assert client.get_metadata(study, "MedAIPriority") == "routine"
    assert client.series_of_study(study)[0]["NumberOfInstances"] == 4
    assert client.last_change() >= last


def test_auth_and_unavailable(orthanc_auth: OrthancServer) -> None:
    assert OrthancClient(orthanc_auth.url, Credentials(AUTH_USER, AUTH_PASSWORD)).system()["Version"]
    with pytest.raises(PacsAuthError) as caught:
        OrthancClient(orthanc_auth.url, Credentials(AUTH_USER, "bad-secret-42")).system()
    assert "bad-secret-42" not in str(caught.value) and "password_file" in str(caught.value)
    with pytest.raises(PacsAuthError, match="requires credentials"):
        OrthancClient(orthanc_auth.url).studies()

    orthanc_auth.stop()
    with pytest.raises(PacsUnavailableError, match=orthanc_auth.url):
        OrthancClient(orthanc_auth.url, Credentials(AUTH_USER, AUTH_PASSWORD), timeout=5).system()
