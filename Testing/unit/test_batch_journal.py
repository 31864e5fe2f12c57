"""The batch journal without Ray: recovering from an interrupted run, the retry limit, one writer at a time."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from MedAIExtension.batch.inputs import StudyInput
from MedAIExtension.batch.journal import Journal, load_records
from MedAIExtension.batch.records import RECORD_NAME, StudyRecord
from MedAIExtension.errors import InputError


def _studies(tmp_path: Path) -> list[StudyInput]:
    return [StudyInput(str(tmp_path / f"s{n}.nii.gz"), tmp_path / f"s{n}.nii.gz") for n in range(4)]


def test_recover_agrees_with_the_committed_folders(tmp_path):
    a, b, c, d = _studies(tmp_path)
    with Journal.open(tmp_path) as journal:
        assert journal.add([a, b, c, d]) == 4 and journal.add([a]) == 0
        journal.start(a.key)  # committed, then the run stopped before the journal heard of it
        committed = journal.studies_dir / a.key
        committed.mkdir(parents=True)
        record = StudyRecord(a.key, a.source, "done", output_dir=str(committed), volumes_ml={"Lung": 1.0})
        (committed / RECORD_NAME).write_text(json.dumps(record.to_dict()))
        journal.start(b.key)  # running when the run stopped: nothing committed
        journal.finish(StudyRecord(c.key, c.source, "done"))  # done, but its folder was removed since
        journal.finish(StudyRecord(d.key, d.source, "failed", error="bad"))
        assert journal.recover() == 3
        states = {row.source: (row.state, row.attempts) for row in journal.rows()}
        assert states == {
            a.source: ("done", 1),  # its committed folder is a finished attempt
            b.source: ("pending", 0),
            c.source: ("pending", 1),
            d.source: ("failed", 1),
        }
        assert [s.source for s in journal.todo(max_attempts=2)] == [b.source, c.source, d.source]
        assert [s.source for s in journal.todo(max_attempts=1)] == [b.source, c.source]
    records = load_records(tmp_path)
    assert [r.status for r in records] == ["done", "failed"] and records[0] == record  # not the pending one


def test_one_writer_at_a_time(tmp_path):
    with Journal.open(tmp_path):
        with pytest.raises(InputError, match="Another 'medai batch'"):
            Journal.open(tmp_path)
        assert load_records(tmp_path) == []  # reading needs no lock
    Journal.open(tmp_path).close()  # released


def test_load_records_needs_a_batch_folder(tmp_path):
    with pytest.raises(InputError, match=r"journal\.sqlite"):
        load_records(tmp_path)


def test_dicomweb_studies_round_trip_and_an_older_journal_is_upgraded(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / "journal.sqlite") as db:  # the schema before DICOMweb inputs (no study_uid)
        db.execute(
            "CREATE TABLE studies (key TEXT PRIMARY KEY, source TEXT NOT NULL, path TEXT NOT NULL, series TEXT, "
            "reference TEXT, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, error TEXT, record TEXT, "
            "updated REAL NOT NULL)"
        )
        db.execute("INSERT INTO studies VALUES ('k1', 'a.nii.gz', 'a.nii.gz', NULL, NULL, 'pending', 0, NULL, NULL, 0)")
    remote = StudyInput("dicomweb:1.2.3/1.2.3.4", Path(), series="1.2.3.4", study_uid="1.2.3")
    with Journal.open(old) as journal:
        assert journal.add([remote]) == 1
        todo = {s.source: s for s in journal.todo(max_attempts=2)}
    assert todo["a.nii.gz"].study_uid is None and not todo["a.nii.gz"].is_remote
    assert todo[remote.source] == remote and todo[remote.source].is_remote and todo[remote.source].is_dicom
