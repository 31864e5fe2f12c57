"""The gateway's checks on untrusted input, without a server: the UID grammar, secret files, retrieval verification
and the boundary's handling of every UID it reads (issue 15)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pydicom
import pytest

from MedAIExtension.dicom.uids import InvalidUidError, check_uid, is_valid_uid, uid_problem
from MedAIExtension.errors import InputError
from MedAIExtension.gateway.boundary import PacsBoundary
from MedAIExtension.pacs.credentials import credentials_from_config
from MedAIExtension.pacs.errors import PacsTransferError
from MedAIExtension.pacs.records import SeriesRecord
from MedAIExtension.pacs.retrieval import retrieve_verified, transfer_damage
from MedAIExtension.secret_files import check_private_file

HOSTILE = ["/etc", "../..", "1.2.3\0/x", "1." * 100, "1.2;rm -rf /", "$(id)", "not a uid", "", "1..2", "1.02", ".1"]


@pytest.mark.parametrize("value", HOSTILE)
def test_non_uids_are_refused_without_repeating_the_value(value: str) -> None:
    assert not is_valid_uid(value)
    with pytest.raises(InvalidUidError) as caught:
        check_uid(value, "SeriesInstanceUID of a search answer")
    assert "SeriesInstanceUID of a search answer" in str(caught.value)
    if len(value) > 3:
        assert value not in str(caught.value)


def test_uids_that_follow_the_grammar_pass() -> None:
    for value in ("1.2.840.10008.5.1.4.1.1.2", "0.1.0", "2.25." + "9" * 39, "1.2.3\0", "1." * 31 + "1"):
        assert is_valid_uid(value), uid_problem(value)
    assert check_uid("1.2.3\0", "x") == "1.2.3"  # the padding byte is not part of the UID
    assert uid_problem(None) == "it is NoneType, not text"


def test_secret_files_must_be_private_and_plaintext_needs_an_opt_in(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-value\n")
    secret.chmod(0o644)
    with pytest.raises(InputError, match="chmod 600") as caught:
        credentials_from_config({"username": "u", "password_file": str(secret)})
    assert "s3cret-value" not in str(caught.value)
    secret.chmod(0o640)
    with pytest.raises(InputError, match="other users"):
        check_private_file(secret, "token_file")
    secret.chmod(0o600)
    assert credentials_from_config({"username": "u", "password_file": str(secret)}).password == "s3cret-value"
    with pytest.raises(InputError, match="allow_plaintext_password: true") as caught:
        credentials_from_config({"username": "u", "password": "s3cret-value"})
    assert "s3cret-value" not in str(caught.value)
    with pytest.raises(InputError, match="plain text"):
        credentials_from_config({"token": "tok-123"})


def _ct(sop: str, study: str = "1.2.3", series: str = "1.2.3.4") -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 16, 16, 15, 1, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(32)
    return ds


class _FakeStore:
    def __init__(self, listed: set[str], datasets: list[Any]) -> None:
        self.listed, self.datasets = listed, datasets

    def instance_uids(self, study_uid: str, series_uid: str) -> set[str]:
        return set(self.listed)

    def iter_instances(self, study_uid: str, series_uid: str) -> Any:
        yield from (copy.deepcopy(ds) for ds in self.datasets)


def test_retrieval_verifies_pixels_count_and_headers(tmp_path: Path) -> None:
    short = _ct("1.2.3.4.2")
    short.PixelData = bytes(10)
    assert "incomplete (truncated: 10 of the 32 bytes" in str(transfer_damage(short))
    with pytest.raises(PacsTransferError, match="arrived incomplete"):
        retrieve_verified(
            _FakeStore({"1.2.3.4.1", "1.2.3.4.2"}, [_ct("1.2.3.4.1"), short]), "1.2.3", "1.2.3.4", tmp_path
        )
    with pytest.raises(PacsTransferError, match="Only 1 of the 2"):
        retrieve_verified(
            _FakeStore({"1.2.3.4.1", "1.2.3.4.2"}, [_ct("1.2.3.4.1")]), "1.2.3", "1.2.3.4", tmp_path / "b"
        )

    listed = {"1.2.3.4.1", "/etc/passwd", "1.2.3.4.9"}
    parts = [_ct("1.2.3.4.1"), _ct("/etc/passwd"), _ct("1.2.3.4.9", series="1.2.3.5")]
    result = retrieve_verified(_FakeStore(listed, parts), "1.2.3", "1.2.3.4", tmp_path / "c")
    assert [path.name for path in result.files] == ["00001.dcm"]  # named by a counter, never by a UID
    assert sorted(what for what, _ in result.refused) == [
        "SOPInstanceUID of a retrieved instance",
        "retrieved instance",
    ]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["00001.dcm"]
    assert str(pydicom.dcmread(result.files[0]).SOPInstanceUID) == "1.2.3.4.1"


class _FakeOrthanc:
    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers

    def find_studies(self, patient_id: str) -> list[dict[str, Any]]:
        return self.answers


class _FakeSeriesStore:
    def search_series(self, study_uid: str) -> list[SeriesRecord]:
        return [
            SeriesRecord(study_uid, "../../x", "SEG", "", "", 1),
            SeriesRecord(study_uid, "1.2.9", "SR", "", "", 1),
            SeriesRecord("1.9.9", "1.2.10", "CT", "", "", 1),  # names another study
        ]


def test_every_uid_the_boundary_reads_is_checked() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    answers = [
        {
            "MainDicomTags": {"StudyInstanceUID": "1.2.5", "StudyDate": "20240101"},
            "PatientMainDicomTags": {"PatientID": "P (1)"},
        },
        {
            "MainDicomTags": {"StudyInstanceUID": "/tmp/x", "StudyDate": "20240102"},
            "PatientMainDicomTags": {"PatientID": "P (1)"},
        },
        {
            "MainDicomTags": {"StudyInstanceUID": "1.2.6", "StudyDate": "20240103"},
            "PatientMainDicomTags": {"PatientID": "P (12)"},
        },
    ]
    pacs = PacsBoundary(
        _FakeSeriesStore(), _FakeOrthanc(answers), lambda event, **fields: events.append((event, fields))
    )
    skipped: list[dict[str, str]] = []
    found = pacs.patient_studies("P (1)", skipped)
    assert [s.study_uid for s in found.studies] == ["1.2.5"]  # exact PatientID; the refused one makes it untrusted
    assert not found.trusted and "refused" in found.reason
    assert [s.series_uid for s in pacs.series("1.2.5", skipped)] == ["1.2.9"]
    groups = [
        {"tracking_uid": "1.2.7", "seg_sop_instance_uid": "1.2.8"},
        {"tracking_uid": "1.2.7; rm", "seg_sop_instance_uid": "1.2.8"},
        {"tracking_uid": "1.2.7", "seg_sop_instance_uid": "/x"},
    ]
    assert pacs.tracking_groups(groups, skipped) == groups[:1]
    assert pacs.study_of_change("../studies", skipped) is None
    whats = {item["what"] for item in skipped}
    assert whats == {
        "StudyInstanceUID of an earlier study of the patient",
        "SeriesInstanceUID of a SEG series",
        "series of a search answer",
        "Tracking UID of the prior report",
        "referenced SEG instance of the prior report",
        "Orthanc study identifier of a change",
    }
    assert all(event == "uid_refused" for event, _ in events) and len(events) == len(skipped)
    assert all("/tmp/x" not in str(fields) and "../../x" not in str(fields) for _, fields in events)
