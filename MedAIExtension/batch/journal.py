"""The results journal of a batch: one SQLite row per study, in the output folder, so a re-run resumes.

Each row holds a study's key, source, reference, state (``pending``, ``running``, ``done``, ``failed``), the
number of finished attempts, the last error and the :class:`~MedAIExtension.batch.records.StudyRecord` as JSON.
Only the driver process writes the journal. A study is marked ``done`` only after its output folder was committed
(renamed into place); a re-run skips done studies, retries failed ones up to a limit, and takes back studies left
``running`` by an interrupted run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from MedAIExtension.batch.inputs import StudyInput
from MedAIExtension.batch.records import RECORD_NAME, StudyRecord
from MedAIExtension.errors import InputError

__all__ = ["JOURNAL_NAME", "STATES", "STUDIES_DIR", "Journal", "JournalRow", "load_records"]

JOURNAL_NAME = "journal.sqlite"
"""File name of the journal inside the batch's output folder."""

LOCK_NAME = ".batch.lock"
"""Lock file (inside the output folder) held by the run writing it."""

STUDIES_DIR = "studies"
"""Folder (inside the output folder) holding one committed folder per done study."""

STATES = ("pending", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    key TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    series TEXT,
    reference TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    record TEXT,
    updated REAL NOT NULL,
    study_uid TEXT
)
"""


@dataclass(frozen=True)
class JournalRow:
    """One study's row."""

    key: str
    source: str
    state: str
    attempts: int
    error: str | None
    record: StudyRecord | None


class Journal:
    """The journal of the batch writing into ``output_dir`` (created by :meth:`open`)."""

    def __init__(self, connection: sqlite3.Connection, output_dir: Path, lock: IO[bytes] | None = None) -> None:
        self._db = connection
        self._lock = lock
        self.output_dir = output_dir

    @classmethod
    def open(cls, output_dir: str | Path, exclusive: bool = True) -> Journal:
        """Open (or create) the journal of ``output_dir``; the folder must exist.

        ``exclusive``: hold the batch's lock while open (POSIX), so that two runs never write one output folder.

        Raises:
            InputError: another ``medai batch`` holds the lock.
        """
        out = Path(output_dir)
        lock = _lock(out) if exclusive else None
        connection = sqlite3.connect(out / JOURNAL_NAME, isolation_level=None, timeout=30.0)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(_SCHEMA)
        columns = {row[1] for row in connection.execute("PRAGMA table_info(studies)")}
        if "study_uid" not in columns:  # a journal written before DICOMweb inputs
            connection.execute("ALTER TABLE studies ADD COLUMN study_uid TEXT")
        return cls(connection, out, lock)

    def close(self) -> None:
        """Close the database and release the lock."""
        self._db.close()
        if self._lock is not None:
            self._lock.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def studies_dir(self) -> Path:
        """Where the done studies' folders are."""
        return self.output_dir / STUDIES_DIR

    def add(self, studies: Iterable[StudyInput]) -> int:
        """Add the studies not in the journal yet as ``pending``; returns how many were new."""
        now = time.time()
        before = self.count()
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO studies (key, source, path, series, reference, state, updated, study_uid) "
                "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                [
                    (s.key, s.source, str(s.path), s.series, str(s.reference or "") or None, now, s.study_uid)
                    for s in studies
                ],
            )
        return self.count() - before

    def recover(self) -> int:
        """Make the journal agree with the disk after an interrupted run; returns the rows changed.

        A study whose folder was committed (it holds its record) is ``done`` whatever its row said (the run
        stopped between the commit and the journal update); a study left ``running`` goes back to ``pending``; a
        ``done`` study whose folder was removed is ``pending`` again (its outputs are missing).
        """
        changed = 0
        for key, state in self._db.execute("SELECT key, state FROM studies").fetchall():
            record_file = self.studies_dir / key / RECORD_NAME
            if state == "done":
                if not record_file.is_file():
                    self._set(key, "UPDATE studies SET state = 'pending', updated = ? WHERE key = ?")
                    changed += 1
            elif record_file.is_file():
                record = StudyRecord.from_dict(json.loads(record_file.read_text(encoding="utf-8")))
                self.finish(record)  # the committed folder is a finished attempt the journal had not heard of
                changed += 1
            elif state == "running":
                self._set(key, "UPDATE studies SET state = 'pending', updated = ? WHERE key = ?")
                changed += 1
        return changed

    def todo(self, max_attempts: int) -> list[StudyInput]:
        """The studies to run: pending ones, and failed ones with fewer than ``max_attempts`` attempts."""
        rows = self._db.execute(
            "SELECT source, path, series, reference, study_uid FROM studies "
            "WHERE state = 'pending' OR (state = 'failed' AND attempts < ?) ORDER BY source",
            (max_attempts,),
        ).fetchall()
        return [StudyInput(r[0], Path(r[1]), r[2], Path(r[3]) if r[3] else None, r[4]) for r in rows]

    def start(self, key: str) -> None:
        """Mark a study ``running`` (submitted to a worker)."""
        self._set(key, "UPDATE studies SET state = 'running', updated = ? WHERE key = ?")

    def finish(self, record: StudyRecord) -> None:
        """Record a study's outcome (``record.status`` is ``done`` or ``failed``), counting one attempt."""
        state = "done" if record.status == "done" else "failed"
        with self._db:
            self._db.execute(
                "UPDATE studies SET state = ?, attempts = attempts + 1, error = ?, record = ?, updated = ? "
                "WHERE key = ?",
                (state, record.error, json.dumps(record.to_dict()), time.time(), record.key),
            )

    def release_running(self) -> int:
        """Put the studies left ``running`` back to ``pending`` (after an interrupt); returns how many."""
        with self._db:
            cursor = self._db.execute(
                "UPDATE studies SET state = 'pending', updated = ? WHERE state = 'running'", (time.time(),)
            )
        return cursor.rowcount

    def _set(self, key: str, statement: str) -> None:
        with self._db:
            self._db.execute(statement, (time.time(), key))

    def count(self, state: str | None = None) -> int:
        """How many studies (in ``state``, when given)."""
        if state is None:
            return int(self._db.execute("SELECT COUNT(*) FROM studies").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM studies WHERE state = ?", (state,)).fetchone()[0])

    def rows(self) -> list[JournalRow]:
        """Every row, ordered by source."""
        found = self._db.execute(
            "SELECT key, source, state, attempts, error, record FROM studies ORDER BY source"
        ).fetchall()
        return [
            JournalRow(k, s, st, a, e, StudyRecord.from_dict(json.loads(r)) if r else None)
            for k, s, st, a, e, r in found
        ]


def _lock(output_dir: Path) -> IO[bytes] | None:
    try:
        import fcntl  # lazy: POSIX only; elsewhere the batch runs without the lock
    except ImportError:
        return None
    handle = (output_dir / LOCK_NAME).open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise InputError(
            f"Another 'medai batch' is writing into {output_dir}. Wait for it to finish, or choose another --output."
        ) from None
    return handle


def load_records(output_dir: str | Path) -> list[StudyRecord]:
    """The records of a batch's finished studies (done and failed), from its journal, ordered by source.

    Raises:
        InputError: ``output_dir`` holds no journal (not the output folder of ``medai batch``).
    """
    if not (Path(output_dir) / JOURNAL_NAME).is_file():
        raise InputError(f"{output_dir} holds no {JOURNAL_NAME}. Give the --output folder of a 'medai batch' run.")
    with Journal.open(output_dir, exclusive=False) as journal:
        return [row.record for row in journal.rows() if row.record is not None and row.state in ("done", "failed")]
