"""MedAI over classic DICOM networking (DIMSE) against a real archive on loopback (pynetdicom's qrscp, SQLite index).

The store: C-ECHO, C-STORE (and not twice), C-FIND at study / series / image level with the attributes the archive
does not return completed from an instance, C-GET verified like every retrieval, a patient id holding C-FIND
wildcards matched exactly, a refused connection and a cut transfer as retryable errors. The gateway: the nodule
tracking pipeline end to end over DIMSE (``pacs.type: dimse``), a transfer cut mid-way retried, results stored
exactly once, ``medai gateway --check`` answering with C-ECHO.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from MedAIExtension.cli import main
from MedAIExtension.gateway.config import load_config
from MedAIExtension.gateway.journal import JobState, Journal
from MedAIExtension.gateway.logs import GatewayLog
from MedAIExtension.gateway.service import Gateway
from MedAIExtension.pacs.dimse import DimseSettings, DimseStore
from MedAIExtension.pacs.errors import PacsTransferError, PacsUnavailableError
from MedAIExtension.pacs.retrieval import retrieve_verified
from MedAIExtension.phantom.study import write_phantom_study
from Testing.pacs.dimse_archive import CutProxy, DimseArchive, free_port
from Testing.pacs.gateway_helpers import PHANTOM, RULE_LUNG, write_config_file

pytest.importorskip("sqlalchemy")  # qrscp's index; make test installs it

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DimseArchive]:
    running = DimseArchive(tmp_path_factory.mktemp("dimse-archive"))
    try:
        yield running
    finally:
        running.stop()


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def test_store_find_and_get_round_trip(archive: DimseArchive, series_factory, tmp_path: Path) -> None:
    series = series_factory("dimse-round-trip", patient_id="MEDAI-DIMSE-1", modality="CT", seed=3)
    store = archive.store()
    store.check()  # C-ECHO
    first = store.store(list(series.files))
    assert sorted(first.stored) == sorted(series.sop_uids) and not first.already_present
    again = store.store(list(series.files))  # nothing is sent twice
    assert not again.stored and sorted(again.already_present) == sorted(series.sop_uids)

    (study,) = store.find_patient_studies("MEDAI-DIMSE-1")
    assert study.study_uid == series.study_uid
    (found,) = store.search_series(series.study_uid)
    header = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    # qrscp returns neither SeriesDescription nor BodyPartExamined: completed from one instance's header.
    assert (found.series_uid, found.modality) == (series.series_uid, "CT")
    assert (found.description, found.body_part) == (str(header.SeriesDescription), str(header.BodyPartExamined))
    assert found.number_of_instances == len(series.files)

    got = retrieve_verified(store, series.study_uid, series.series_uid, tmp_path / "got")
    assert not got.refused and len(got.files) == len(series.files)
    originals = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f).pixel_array for f in series.files}
    for path in got.files:
        ds = pydicom.dcmread(path)
        assert np.array_equal(ds.pixel_array, originals[str(ds.SOPInstanceUID)])


def test_a_patient_id_with_wildcards_is_matched_exactly(archive: DimseArchive, series_factory) -> None:
    store = archive.store()
    odd = series_factory("dimse-odd-id", patient_id="PAT*?7", modality="CT", seed=4)
    plain = series_factory("dimse-plain-id", patient_id="PATXY7", modality="CT", seed=5)
    store.store([*odd.files, *plain.files])
    assert [s.study_uid for s in store.find_patient_studies("PAT*?7")] == [odd.study_uid]
    assert [s.study_uid for s in store.find_patient_studies("PATXY7")] == [plain.study_uid]


def test_no_archive_and_a_cut_transfer_are_retryable(archive: DimseArchive, series_factory, tmp_path: Path) -> None:
    nobody = DimseStore(DimseSettings("127.0.0.1", free_port(), "ARCHIVE", "MEDAI", timeout=3))
    with pytest.raises(PacsUnavailableError, match="cannot be reached") as raised:
        nobody.check()
    assert raised.value.retryable

    series = series_factory("dimse-cut", patient_id="MEDAI-DIMSE-2", modality="CT", seed=6)
    archive.store().store(list(series.files))
    with CutProxy(archive.port) as proxy:
        proxy.arm(after_bytes=40_000)
        with pytest.raises(PacsTransferError) as cut:
            retrieve_verified(archive.store(proxy.port), series.study_uid, series.series_uid, tmp_path / "cut")
        assert proxy.cuts == 1 and cut.value.retryable
        again = retrieve_verified(archive.store(proxy.port), series.study_uid, series.series_uid, tmp_path / "again")
        assert len(again.files) == len(series.files)


def _gateway_config(tmp_path: Path, port: int) -> Path:
    data = {
        "pacs": {
            "type": "dimse",
            "host": "127.0.0.1",
            "port": port,
            "called_ae": "ARCHIVE",
            "calling_ae": "MEDAI",
            "poll_seconds": 0.3,
            "timeout": 10,
        },
        "workdir": str(tmp_path / "work"),
        "max_attempts": 4,
        "retry_seconds": [0.5, 1, 2],
        "rules": [dict(RULE_LUNG)],
    }
    return write_config_file(tmp_path / "gateway.yaml", data)


def test_the_gateway_tracks_a_study_over_dimse_retrying_a_cut_transfer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = DimseArchive(tmp_path / "archive")  # its own: the module's archive holds other CT studies
    try:
        _track_over_dimse(archive, tmp_path, capsys)
    finally:
        archive.stop()


def _track_over_dimse(archive: DimseArchive, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = write_phantom_study(tmp_path / "study", spec=PHANTOM)
    store = archive.store()
    store.store(_files(Path(study["ct"])))
    study_uid = str(pydicom.dcmread(_files(Path(study["ct"]))[0], stop_before_pixels=True).StudyInstanceUID)

    with CutProxy(archive.port) as proxy:
        config_file = _gateway_config(tmp_path, proxy.port)
        capsys.readouterr()
        assert main(["gateway", "--check", "--config", str(config_file)]) == 0
        assert "C-ECHO succeeded" in capsys.readouterr().out

        proxy.arm(after_bytes=200_000)  # the series' C-GET breaks off once
        config = load_config(config_file)
        for _ in range(2):  # a second run finds nothing new to do: nothing is stored twice
            gateway = Gateway(config, log=GatewayLog(config.workdir / "gateway.log", quiet=True))
            try:
                gateway.run(once=True, max_seconds=240)
            finally:
                gateway.close()
        assert proxy.cuts == 1
    journal = Journal(config.workdir / "journal.sqlite")
    try:
        jobs = [job for job in journal.jobs() if job.study_uid == study_uid]
    finally:
        journal.close()
    assert [job.state for job in jobs] == [JobState.DONE], [job.detail for job in jobs]
    assert jobs[0].attempts == 2, "the cut transfer was not retried"
    assert '"job_retry"' in (config.workdir / "gateway.log").read_text(encoding="utf-8")

    series = {s.modality: s for s in store.search_series(study_uid)}
    assert set(series) == {"CT", "SEG", "SR", "PR"}
    assert series["SEG"].number_of_instances == 1 and series["SR"].number_of_instances == 1
    assert jobs[0].priority == 2  # the phantom's 4A nodule
