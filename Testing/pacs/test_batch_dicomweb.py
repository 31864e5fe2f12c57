"""``medai batch --input dicomweb:<query>``: a cohort found on a real Orthanc (basic auth) by QIDO-RS, retrieved by
the Ray workers, segmented, and skipped on a re-run; the password never reaches the outputs or the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from MedAIExtension.batch.annotation_queue import read_annotation_queue
from MedAIExtension.batch.dicomweb_input import parse_query
from MedAIExtension.batch.journal import Journal
from MedAIExtension.batch.records import RECORD_NAME, RETRIEVED_INPUT_DIR
from MedAIExtension.cli import main
from MedAIExtension.errors import InputError
from MedAIExtension.pacs.credentials import Credentials
from MedAIExtension.pacs.dicomweb import DicomWebStore
from MedAIExtension.phantom.study import write_phantom_study
from Testing.pacs.conftest import AUTH_PASSWORD, AUTH_USER
from Testing.pacs.gateway_helpers import config_data, upload, write_config_file
from Testing.pacs.orthanc_server import OrthancServer

pytest.importorskip("ray")

MODEL = "chest-ct-lung-nodule"
PASSWORD_VARIABLE = "MEDAI_TEST_BATCH_PACS_PASSWORD"


def _config(orthanc: OrthancServer, tmp_path: Path) -> Path:
    data = config_data(orthanc.url, tmp_path / "gateway-work")
    data["pacs"].update({"username": AUTH_USER, "password_env": PASSWORD_VARIABLE})
    return write_config_file(tmp_path / "gateway.yaml", data)


def _all_text(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_batch_over_a_dicomweb_query_retrieves_segments_and_resumes(
    orthanc_auth: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = DicomWebStore(orthanc_auth.dicomweb_url, Credentials(AUTH_USER, AUTH_PASSWORD))
    uids = {}
    for seed, patient in ((0, "BATCH-1"), (1, "BATCH-2"), (2, "OTHER-1")):
        written = write_phantom_study(
            tmp_path / f"p{seed}", size_ijk=(64, 64, 40), spacing=(2.0, 2.0, 3.0), seed=seed, patient_id=patient
        )
        uids[patient] = upload(store, written["ct"])
    mr = tmp_path / "mr"  # an MR series of a BATCH patient: not a CT, so not a study for the default query
    mr.mkdir()
    for source in sorted((tmp_path / "p0" / "ct").glob("*.dcm"))[:3]:
        ds = pydicom.dcmread(source)
        ds.Modality = "MR"
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["mr-series"])
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(mr / source.name)
    upload(store, mr)
    config = _config(orthanc_auth, tmp_path)
    monkeypatch.setenv(PASSWORD_VARIABLE, AUTH_PASSWORD)
    output = tmp_path / "batch"
    argv = ["batch", "--input", "dicomweb:PatientID=BATCH*", "--gateway-config", str(config)]
    argv += ["--model", MODEL, "--output", str(output), "--workers", "2", "--device", "cpu", "--quiet"]
    argv += ["--annotation-queue"]  # keeps each retrieved series in the study folder, for the annotator

    assert main(argv) == 0
    with Journal.open(output) as journal:
        rows = journal.rows()
    assert sorted((r.state, r.attempts) for r in rows) == [("done", 1), ("done", 1)]
    assert sorted(r.source for r in rows) == sorted(
        f"dicomweb:{uids[p]}/{s.series_uid}"
        for p in ("BATCH-1", "BATCH-2")
        for s in store.search_series(uids[p])
        if s.modality == "CT"
    )
    folders = sorted((output / "studies").iterdir())
    assert [f.name for f in folders] == sorted(r.key for r in rows)  # no retrieval or staging folder left behind
    for folder in folders:
        record = json.loads((folder / RECORD_NAME).read_text())
        assert record["status"] == "done" and record["volumes_ml"]["Lung"] > 300
        assert "segmentation.dcm" in {p.name for p in folder.iterdir()}  # a DICOM SEG: the input was DICOM
        seg = pydicom.dcmread(folder / "segmentation.dcm", stop_before_pixels=True)
        assert str(seg.StudyInstanceUID) in (uids["BATCH-1"], uids["BATCH-2"])
        kept = sorted((folder / RETRIEVED_INPUT_DIR).iterdir())
        assert [p.name for p in kept] == [f"{n:05d}.dcm" for n in range(1, 41)]  # named by arrival, not by UIDs
    queue = read_annotation_queue(output / "queue.csv")
    assert sorted(row["source"] for row in queue) == sorted(r.source for r in rows)
    seen = capsys.readouterr()
    assert AUTH_PASSWORD not in seen.out + seen.err
    assert AUTH_PASSWORD not in _all_text(output)

    before = {f.name: (f / RECORD_NAME).stat().st_mtime_ns for f in folders}
    assert main(argv) == 0  # the re-run finds the same series and runs nothing again
    with Journal.open(output) as journal:
        assert sorted((r.state, r.attempts) for r in journal.rows()) == [("done", 1), ("done", 1)]
    assert {f.name: (f / RECORD_NAME).stat().st_mtime_ns for f in (output / "studies").iterdir()} == before


def test_dicomweb_problems_exit_2_with_one_line_and_write_nothing(
    orthanc_auth: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(orthanc_auth, tmp_path)
    output = tmp_path / "batch"
    cases = [
        ("dicomweb:PatientID=NOBODY", AUTH_PASSWORD, "No series on"),
        ("dicomweb:PatientID=BATCH*", "wrong-password", "rejected user 'medai'"),
        ("dicomweb:PatientID=BATCH*", None, PASSWORD_VARIABLE),
    ]
    for given, variable, expected in cases:
        if variable is None:
            monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
        else:
            monkeypatch.setenv(PASSWORD_VARIABLE, variable)
        argv = ["batch", "--input", given, "--gateway-config", str(config), "--model", MODEL, "--output", str(output)]
        assert main([*argv, "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
        assert AUTH_PASSWORD not in err[0] and "wrong-password" not in err[0]
        assert not output.exists()


def test_dicomweb_input_without_gateway_config_or_with_a_bad_query_is_refused(tmp_path, capsys):
    base = ["batch", "--model", MODEL, "--output", str(tmp_path / "out"), "--quiet"]
    assert main([*base, "--input", "dicomweb:Modality=CT"]) == 2
    assert "--gateway-config" in capsys.readouterr().err
    for bad in ("dicomweb:limit=5", "dicomweb:Modality=CT&Modality=MR", "dicomweb:Patient ID=1", "dicomweb:x"):
        with pytest.raises(InputError):
            parse_query(bad)
    assert parse_query("dicomweb:StudyDate=20240101-20241231") == {"StudyDate": "20240101-20241231", "Modality": "CT"}
    assert parse_query("dicomweb:?Modality=MR") == {"Modality": "MR"}
    assert not (tmp_path / "out").exists()
