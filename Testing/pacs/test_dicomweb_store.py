"""DicomWebStore against a real Orthanc 1.10 with the DICOMweb plugin: STOW, QIDO, WADO, auth and failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

from MedAIExtension.errors import InputError
from MedAIExtension.io.dicom_series import read_dicom_series
from MedAIExtension.pacs import (
    Credentials,
    DicomStore,
    DicomWebStore,
    PacsAuthError,
    PacsError,
    PacsNotFoundError,
    PacsRejectedError,
    PacsUnavailableError,
    StoreOutcome,
    credentials_from_config,
    open_store,
)
from Testing.pacs.conftest import AUTH_PASSWORD, AUTH_USER, PhantomSeries
from Testing.pacs.orthanc_server import OrthancServer


def _instance_count(server: OrthancServer) -> int:
    return int(requests.get(f"{server.url}/statistics", auth=server.auth, timeout=10).json()["CountInstances"])


def test_store_search_retrieve_round_trip(
    orthanc: OrthancServer, phantom_series: PhantomSeries, tmp_path: Path
) -> None:
    store = DicomWebStore(orthanc.dicomweb_url)
    assert isinstance(store, DicomStore)
    store.check()
    assert not store.series_exists(phantom_series.study_uid, phantom_series.series_uid)

    outcome = store.store(phantom_series.files)
    assert outcome == StoreOutcome(stored=phantom_series.sop_uids, already_present=())
    assert _instance_count(orthanc) == len(phantom_series.files)
    assert store.series_exists(phantom_series.study_uid, phantom_series.series_uid)
    assert not store.series_exists(phantom_series.study_uid, "1.2.3.4")

    [study] = store.search_studies(patient_id=phantom_series.patient_id)
    assert study.study_uid == phantom_series.study_uid
    assert (study.patient_name, study.study_date, study.modalities) == ("Pacs^MEDAI-PACS-1", "20260105", ("CT",))
    assert store.search_studies(study_uid=phantom_series.study_uid) == [study]
    assert store.search_studies(modality="CT") == [study]
    assert store.search_studies(modality="MR") == []
    assert store.search_studies(patient_id="SOMEONE-ELSE") == []
    [series] = store.search_series(phantom_series.study_uid)
    assert (series.series_uid, series.modality, series.body_part) == (phantom_series.series_uid, "CT", "CHEST")
    assert series.number_of_instances == len(phantom_series.files)
    assert store.search_series("1.2.3.999") == []

    paths = store.retrieve_series(phantom_series.study_uid, phantom_series.series_uid, tmp_path / "retrieved")
    assert sorted(p.name for p in paths) == sorted(f"{uid}.dcm" for uid in phantom_series.sop_uids)
    originals = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(f) for f in phantom_series.files)}
    for path in paths:
        got = pydicom.dcmread(path)
        want = originals[path.stem]
        assert (got.StudyInstanceUID, got.SeriesInstanceUID) == (want.StudyInstanceUID, want.SeriesInstanceUID)
        assert got.PixelData == want.PixelData
    image = read_dicom_series(tmp_path / "retrieved")
    np.testing.assert_array_equal(image.array, phantom_series.voxels)

    with pytest.raises(PacsNotFoundError, match=r"1\.2\.3\.4"):
        store.retrieve_series(phantom_series.study_uid, "1.2.3.4", tmp_path / "none")


def test_storing_twice(orthanc: OrthancServer, phantom_series: PhantomSeries) -> None:
    store = DicomWebStore(orthanc.dicomweb_url)
    first = store.store(phantom_series.files[:5])
    assert first.stored == phantom_series.sop_uids[:5]

    # With the QIDO check, instances the server holds are not sent again.
    second = store.store(phantom_series.files[:8])
    assert second == StoreOutcome(stored=phantom_series.sop_uids[5:8], already_present=phantom_series.sop_uids[:5])
    assert _instance_count(orthanc) == 8
    last_change = requests.get(f"{orthanc.url}/changes?last", timeout=10).json()["Last"]

    # Orthanc 1.10 + DICOMweb 1.7 answers a repeated STOW as success and keeps the stored copy (no new change).
    blind = DicomWebStore(orthanc.dicomweb_url, check_existing=False)
    assert blind.store(phantom_series.files[:3]).stored == phantom_series.sop_uids[:3]
    assert _instance_count(orthanc) == 8
    assert requests.get(f"{orthanc.url}/changes?last", timeout=10).json()["Last"] == last_change


def test_rejected_instances(orthanc: OrthancServer, phantom_series: PhantomSeries, tmp_path: Path) -> None:
    store = DicomWebStore(orthanc.dicomweb_url)
    # STOW to /studies/{uid} with instances of another study: Orthanc answers 409, FailureReason 0x0110.
    with pytest.raises(PacsRejectedError, match="refused to store 2 of 2") as caught:
        store.store(phantom_series.files[:2], study_uid="1.2.826.0.1.3680043.8.498.1")
    assert [uid for uid, _ in caught.value.failed] == list(phantom_series.sop_uids[:2])
    assert all("0x0110" in reason for _, reason in caught.value.failed)
    assert caught.value.stored == ()
    assert _instance_count(orthanc) == 0

    # An instance without SeriesInstanceUID beside a good one: 400, the good one is stored.
    broken = pydicom.dcmread(phantom_series.files[3])
    del broken.SeriesInstanceUID
    broken.save_as(tmp_path / "broken.dcm")
    with pytest.raises(PacsRejectedError) as caught:
        store.store([tmp_path / "broken.dcm", phantom_series.files[4]])
    assert caught.value.failed == [(phantom_series.sop_uids[3], "0xC000 cannot understand")]
    assert caught.value.stored == (phantom_series.sop_uids[4],)
    assert _instance_count(orthanc) == 1

    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputError, match=r"notes\.txt"):
        store.store([tmp_path / "notes.txt"])


def test_credentials(orthanc_auth: OrthancServer, phantom_series: PhantomSeries) -> None:
    good = DicomWebStore(orthanc_auth.dicomweb_url, Credentials(AUTH_USER, AUTH_PASSWORD))
    good.check()
    assert good.store(phantom_series.files[:2]).stored == phantom_series.sop_uids[:2]

    wrong = DicomWebStore(orthanc_auth.dicomweb_url, Credentials(AUTH_USER, "wrong-password-123"))
    with pytest.raises(PacsAuthError) as caught:
        wrong.check()
    message = str(caught.value)
    assert "wrong-password-123" not in message and AUTH_PASSWORD not in message
    assert "password_env" in message and orthanc_auth.dicomweb_url in message and "401" in message
    assert "wrong-password-123" not in repr(wrong.credentials)
    with pytest.raises(PacsAuthError):
        wrong.store(phantom_series.files[2:3])

    with pytest.raises(PacsAuthError, match="requires credentials"):
        DicomWebStore(orthanc_auth.dicomweb_url).search_studies()
    with pytest.raises(PacsAuthError, match="token_env"):
        DicomWebStore(orthanc_auth.dicomweb_url, Credentials(token="not-a-token")).check()

    section = {"type": "dicomweb", "url": orthanc_auth.dicomweb_url, "username": AUTH_USER, "password_env": "PACS_PW"}
    from_config = open_store(section, environ={"PACS_PW": AUTH_PASSWORD})
    assert [s.study_uid for s in from_config.search_studies()] == [phantom_series.study_uid]


def test_server_down_is_unavailable(orthanc: OrthancServer, phantom_series: PhantomSeries) -> None:
    store = DicomWebStore(orthanc.dicomweb_url, timeout=5)
    store.check()
    orthanc.stop()
    with pytest.raises(PacsUnavailableError, match=orthanc.dicomweb_url) as caught:
        store.check()
    assert caught.value.retryable
    with pytest.raises(PacsUnavailableError):
        store.store(phantom_series.files[:1])
    with pytest.raises(PacsUnavailableError):
        store.search_series(phantom_series.study_uid)


def test_wrong_root_is_a_clear_error(orthanc: OrthancServer) -> None:
    with pytest.raises(PacsNotFoundError, match="/dicom-web"):
        DicomWebStore(f"{orthanc.url}/not-dicom-web").check()


def test_credentials_from_config(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    secret_file.chmod(0o600)
    assert credentials_from_config({}) == Credentials()
    assert credentials_from_config({"username": "u", "password": "p", "allow_plaintext_password": True}) == Credentials(
        "u", "p"
    )
    with pytest.raises(InputError, match="allow_plaintext_password"):
        credentials_from_config({"username": "u", "password": "p"})
    assert credentials_from_config({"username": "u", "password_env": "PW"}, {"PW": "from-env"}).password == "from-env"
    assert credentials_from_config({"username": "u", "password_file": str(secret_file)}).password == "from-file"
    assert credentials_from_config({"token_env": "TOK"}, {"TOK": "abc"}) == Credentials(token="abc")
    assert "from-env" not in repr(credentials_from_config({"username": "u", "password_env": "PW"}, {"PW": "from-env"}))

    with pytest.raises(InputError, match="'MISSING_PW'"):
        credentials_from_config({"username": "u", "password_env": "MISSING_PW"}, {})
    with pytest.raises(InputError, match=r"nope\.txt"):
        credentials_from_config({"username": "u", "password_file": str(tmp_path / "nope.txt")})
    with pytest.raises(InputError, match="both basic authentication"):
        credentials_from_config({"username": "u", "password_env": "PW", "token_env": "T"}, {"PW": "p", "T": "t"})
    with pytest.raises(InputError, match="only one way"):
        credentials_from_config({"username": "u", "password": "p", "password_env": "PW"}, {"PW": "x"})
    with pytest.raises(InputError, match="no password"):
        credentials_from_config({"username": "u"})
    with pytest.raises(InputError, match="no `username`"):
        credentials_from_config({"password_env": "PW"}, {"PW": "p"})
    with pytest.raises(InputError) as caught:
        DicomWebStore("http://u:hunter2@127.0.0.1:1/dicom-web")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(InputError, match="dicomweb, folder"):
        open_store({"type": "dimse"})


def test_all_errors_are_pacs_errors() -> None:
    for error in (PacsAuthError, PacsUnavailableError, PacsRejectedError, PacsNotFoundError):
        assert issubclass(error, PacsError)
