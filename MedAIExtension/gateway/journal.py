"""The gateway's persistent job journal (SQLite, WAL): a restart neither loses nor repeats a job.

A job is one (study, rule) pair and moves through these states::

    queued --claim--> running --pipeline ok--> results --claim--> storing --stored--> done
       ^                 |  (PACS down: back to queued after a delay)    |--STOW rejected--> outbox --claim--> storing
       |                 '--bad series / max attempts--> failed           '--shadow mode--> shadow

A job in the outbox is retried at the longest delay until the PACS takes its results; it never fails on its own.
Storing happens only from ``results``: the result files are on disk and listed in the journal before anything is
sent, and the same files (same SOP Instance UIDs) are sent again after a crash, so the PACS ends up with exactly
one copy. :meth:`Journal.recover` puts jobs a killed gateway left ``running`` back to ``queued`` and ``storing``
back to ``results``. The cursor table remembers how far the PACS change feed was read; it advances in the same
transaction that records the studies it produced.

Each job also keeps a ``skipped`` list: the objects the PACS offered that the gateway refused (a "UID" that is not
a UID, an instance of another series …), each with what it was and why, so the journal says why something was left
out. A job that failed for good can be put back with :meth:`Journal.requeue` (``medai gateway requeue``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from MedAIExtension.errors import InputError

__all__ = ["JOURNAL_NAME", "Job", "JobState", "Journal", "ReportDelivery", "StudyCandidate", "existing_journal"]

#: The journal's file name in the gateway's work folder.
JOURNAL_NAME = "journal.sqlite"

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL,
    rule TEXT NOT NULL,
    series_uid TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    store_attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '',
    priority INTEGER,
    priority_label TEXT NOT NULL DEFAULT '',
    priority_reason TEXT NOT NULL DEFAULT '',
    results TEXT NOT NULL DEFAULT '[]',
    summary TEXT NOT NULL DEFAULT '{}',
    stable_at REAL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    skipped TEXT NOT NULL DEFAULT '[]',
    UNIQUE (study_uid, rule)
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, next_at);
CREATE TABLE IF NOT EXISTS reports (
    job_id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '',
    control_id TEXT NOT NULL DEFAULT '',
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS cursor (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class JobState(StrEnum):
    """Where a job is (see the module docstring)."""

    QUEUED = "queued"
    RUNNING = "running"
    RESULTS = "results"
    STORING = "storing"
    OUTBOX = "outbox"
    DONE = "done"
    SHADOW = "shadow"
    FAILED = "failed"
    IGNORED = "ignored"


#: States with nothing left to do.
FINAL_STATES = frozenset({JobState.DONE, JobState.SHADOW, JobState.FAILED, JobState.IGNORED})


@dataclass(frozen=True)
class ReportDelivery:
    """The RIS report (HL7 ORU) of a finished job: ``pending`` (due at ``next_at``), ``sent`` or ``failed``."""

    job_id: int
    state: str
    attempts: int
    next_at: float
    detail: str
    control_id: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ReportDelivery:
        """Build it from a ``reports`` row."""
        return cls(
            int(row["job_id"]), row["state"], int(row["attempts"]), float(row["next_at"]), row["detail"],
            row["control_id"],
        )  # fmt: skip


@dataclass(frozen=True)
class StudyCandidate:
    """A study the PACS reported stable, classified against the rules.

    ``rule`` is None when no rule matched (the study is journaled as ignored, with ``detail`` saying why).
    """

    study_uid: str
    rule: str | None
    series_uid: str = ""
    stable_at: float | None = None
    detail: str = ""
    skipped: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class Job:
    """One row of the journal."""

    id: int
    study_uid: str
    rule: str
    series_uid: str
    state: JobState
    attempts: int
    store_attempts: int
    next_at: float
    detail: str
    priority: int | None
    priority_label: str
    priority_reason: str
    results: tuple[str, ...]
    summary: dict[str, Any]
    stable_at: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    skipped: tuple[dict[str, str], ...] = ()

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        """Build a job from a ``jobs`` row."""
        return cls(
            id=int(row["id"]),
            study_uid=row["study_uid"],
            rule=row["rule"],
            series_uid=row["series_uid"],
            state=JobState(row["state"]),
            attempts=int(row["attempts"]),
            store_attempts=int(row["store_attempts"]),
            next_at=float(row["next_at"]),
            detail=row["detail"],
            priority=row["priority"],
            priority_label=row["priority_label"],
            priority_reason=row["priority_reason"],
            results=tuple(json.loads(row["results"])),
            summary=json.loads(row["summary"]),
            stable_at=row["stable_at"],
            created_at=float(row["created_at"]),
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            skipped=tuple(json.loads(row["skipped"])),
        )

    @property
    def latency_seconds(self) -> float | None:
        """Seconds from the study becoming stable (or being journaled) to its results being stored."""
        if self.finished_at is None:
            return None
        return self.finished_at - (self.stable_at if self.stable_at is not None else self.created_at)


class Journal:
    """The SQLite job journal of one gateway work folder (thread-safe: one connection behind a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise InputError(
                f"The gateway journal {self.path} cannot be opened ({exc}). Point 'workdir' at the gateway's own "
                "folder, or move the damaged journal away to start afresh."
            ) from None
        if row is not None and int(row["value"]) > SCHEMA_VERSION:
            raise InputError(
                f"The gateway journal {self.path} was written by a newer MedAI (schema {row['value']}); upgrade MedAI."
            )
        columns = {item["name"] for item in self._db.execute("PRAGMA table_info(jobs)")}
        if "skipped" not in columns:  # schema 1 -> 2
            self._db.execute("ALTER TABLE jobs ADD COLUMN skipped TEXT NOT NULL DEFAULT '[]'")
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        self._lock = threading.RLock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- the change-feed cursor -------------------------------------------------------------------------------

    def cursor(self, name: str, default: str = "") -> str:
        """The saved position of feed ``name``."""
        with self._lock:
            row = self._db.execute("SELECT value FROM cursor WHERE name = ?", (name,)).fetchone()
        return row["value"] if row else default

    def record_candidates(
        self, candidates: Sequence[StudyCandidate], cursor: tuple[str, str] | None = None
    ) -> list[Job]:
        """Journal new studies (queued, or ignored when no rule matched) and move the feed cursor, atomically.

        A (study, rule) pair already in the journal is not added again; a study's ignore record is replaced by its
        first real job (the study changed since it was ignored). Returns the jobs created.
        """
        now = time.time()
        created = []
        with self._transaction() as db:
            for item in candidates:
                rule = item.rule or ""
                state = JobState.QUEUED if item.rule else JobState.IGNORED
                inserted = db.execute(
                    "INSERT OR IGNORE INTO jobs (study_uid, rule, series_uid, state, detail, stable_at, created_at, "
                    "finished_at, skipped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        item.study_uid,
                        rule,
                        item.series_uid,
                        state.value,
                        item.detail,
                        item.stable_at,
                        now,
                        None if item.rule else now,
                        json.dumps(list(item.skipped)),
                    ),
                )
                if inserted.rowcount:
                    row = db.execute("SELECT * FROM jobs WHERE id = ?", (inserted.lastrowid,)).fetchone()
                    created.append(Job.from_row(row))
                    if item.rule:  # the study has work now: its earlier ignore record no longer says the truth
                        db.execute("DELETE FROM jobs WHERE study_uid = ? AND state = 'ignored'", (item.study_uid,))
            if cursor is not None:
                db.execute("INSERT OR REPLACE INTO cursor VALUES (?, ?)", cursor)
        return created

    def known(self, study_uid: str, *, ignored: bool = True) -> bool:
        """Whether the journal has any job for this study; with ``ignored`` false, ignore records do not count.

        A study known only as *ignored* is looked at again when it changes: a series that matched no rule (or was
        refused) must not hide the study from the series that arrive after it.
        """
        query = "SELECT 1 FROM jobs WHERE study_uid = ?" + ("" if ignored else " AND state != 'ignored'")
        with self._lock:
            row = self._db.execute(query + " LIMIT 1", (study_uid,)).fetchone()
        return row is not None

    # -- claiming and finishing work ------------------------------------------------------------------------

    def recover(self) -> int:
        """After a crash: ``running`` jobs go back to ``queued``, ``storing`` to ``results``. Returns how many."""
        with self._transaction() as db:
            first = db.execute("UPDATE jobs SET state = 'queued', next_at = 0 WHERE state = 'running'").rowcount
            second = db.execute("UPDATE jobs SET state = 'results', next_at = 0 WHERE state = 'storing'").rowcount
        return first + second

    def claim(self, now: float | None = None) -> Job | None:
        """Take the next due job: a queued one to run, or one with results (or in the outbox) to store."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE state IN ('results', 'outbox', 'queued') AND next_at <= ? "
                "ORDER BY CASE state WHEN 'queued' THEN 1 ELSE 0 END, id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            if row["state"] == JobState.QUEUED:
                db.execute(
                    "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = COALESCE(started_at, ?) "
                    "WHERE id = ?",
                    (now, row["id"]),
                )
            else:
                db.execute(
                    "UPDATE jobs SET state = 'storing', store_attempts = store_attempts + 1 WHERE id = ?", (row["id"],)
                )
            return Job.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def _update(self, job_id: int, **values: Any) -> Job:
        columns = ", ".join(f"{key} = ?" for key in values)
        with self._transaction() as db:
            db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*values.values(), job_id))
            return Job.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def results_ready(
        self,
        job_id: int,
        results: Sequence[str],
        priority: int | None,
        priority_label: str,
        priority_reason: str,
        summary: dict[str, Any],
    ) -> Job:
        """The pipeline finished: its files are on disk; next comes storing them."""
        return self._update(
            job_id,
            state=JobState.RESULTS.value,
            next_at=0.0,
            results=json.dumps(list(results)),
            priority=priority,
            priority_label=priority_label,
            priority_reason=priority_reason,
            summary=json.dumps(summary),
            detail="",
        )

    def retry_later(self, job_id: int, state: JobState, delay: float, detail: str) -> Job:
        """Put a job back into ``state`` (queued, results or outbox), due after ``delay`` seconds."""
        return self._update(job_id, state=state.value, next_at=time.time() + delay, detail=detail)

    def finish(self, job_id: int, state: JobState, detail: str = "") -> Job:
        """Mark a job done, shadow (results kept, nothing stored) or failed."""
        return self._update(job_id, state=state.value, detail=detail, finished_at=time.time())

    def note_skipped(self, job_id: int, skipped: Sequence[dict[str, str]]) -> Job:
        """Add refused objects (``{"what": …, "reason": …}``) to a job's ``skipped`` list (repeats are kept once)."""
        with self._transaction() as db:
            row = db.execute("SELECT skipped FROM jobs WHERE id = ?", (job_id,)).fetchone()
            items = json.loads(row["skipped"]) if row else []
            for item in skipped:
                if dict(item) not in items:
                    items.append(dict(item))
            db.execute("UPDATE jobs SET skipped = ? WHERE id = ?", (json.dumps(items), job_id))
            return Job.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def requeue(self, study_uid: str, rule: str | None = None) -> list[Job]:
        """Put the failed jobs of a study (optionally of one rule) back into the queue with fresh attempts.

        Returns:
            The re-queued jobs (empty when the study has no failed job).
        """
        now = time.time()
        with self._transaction() as db:
            query = "SELECT id FROM jobs WHERE study_uid = ? AND state = 'failed'"
            params: list[Any] = [study_uid]
            if rule is not None:
                query += " AND rule = ?"
                params.append(rule)
            ids = [int(row["id"]) for row in db.execute(query, params).fetchall()]
            for job_id in ids:
                db.execute(
                    "UPDATE jobs SET state = 'queued', attempts = 0, store_attempts = 0, next_at = ?, "
                    "detail = 'requeued by the operator', finished_at = NULL WHERE id = ?",
                    (now, job_id),
                )
            return [Job.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (i,)).fetchone()) for i in ids]

    # -- reading ------------------------------------------------------------------------------------------------

    def job(self, job_id: int) -> Job:
        """One job by id."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise InputError(f"No job {job_id} in {self.path}.")
        return Job.from_row(row)

    def jobs(self, states: Sequence[JobState | str] | None = None) -> list[Job]:
        """All jobs (optionally only those in ``states``), oldest first."""
        with self._lock:
            if states:
                marks = ", ".join("?" for _ in states)
                rows = self._db.execute(
                    f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id",
                    [str(s) for s in states],
                ).fetchall()
            else:
                rows = self._db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        return [Job.from_row(row) for row in rows]

    # -- RIS reports (one per finished job, sent after its results are in the PACS) ------------------------------

    def queue_report(self, job_id: int) -> None:
        """Queue the report of a finished job for delivery (once: a second call changes nothing)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO reports (job_id, state, updated_at) VALUES (?, 'pending', ?)",
                (job_id, time.time()),
            )

    def due_reports(self, now: float | None = None) -> list[ReportDelivery]:
        """Pending reports whose time has come, oldest job first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM reports WHERE state = 'pending' AND next_at <= ? ORDER BY job_id",
                (time.time() if now is None else now,),
            ).fetchall()
        return [ReportDelivery.from_row(row) for row in rows]

    def reports(self) -> list[ReportDelivery]:
        """Every report, by job."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM reports ORDER BY job_id").fetchall()
        return [ReportDelivery.from_row(row) for row in rows]

    def report_outcome(
        self, job_id: int, state: str, detail: str = "", control_id: str = "", delay: float = 0.0
    ) -> ReportDelivery:
        """Record one delivery attempt: ``sent``, ``failed`` or ``pending`` again after ``delay`` seconds."""
        with self._transaction() as db:
            db.execute(
                "UPDATE reports SET state = ?, attempts = attempts + 1, next_at = ?, detail = ?, "
                "control_id = CASE WHEN ? = '' THEN control_id ELSE ? END, updated_at = ? WHERE job_id = ?",
                (state, time.time() + delay, detail, control_id, control_id, time.time(), job_id),
            )
            row = db.execute("SELECT * FROM reports WHERE job_id = ?", (job_id,)).fetchone()
        return ReportDelivery.from_row(row)

    def count(self, states: Sequence[JobState | str]) -> int:
        """Number of jobs in ``states``."""
        marks = ", ".join("?" for _ in states)
        with self._lock:
            row = self._db.execute(
                f"SELECT COUNT(*) AS n FROM jobs WHERE state IN ({marks})",
                [str(s) for s in states],
            ).fetchone()
        return int(row["n"])

    def pending(self) -> int:
        """Jobs not yet in a final state."""
        return self.count([s for s in JobState if s not in FINAL_STATES])


def existing_journal(workdir: Path) -> Journal:
    """The journal of a gateway that has run with the work folder ``workdir`` (for the commands that read it).

    Raises:
        InputError: the gateway never ran with this work folder.
    """
    path = workdir / JOURNAL_NAME
    if not path.is_file():
        raise InputError(
            f"No gateway journal in {workdir}. Start the gateway with this configuration first "
            "(medai gateway --config ...)."
        )
    return Journal(path)
