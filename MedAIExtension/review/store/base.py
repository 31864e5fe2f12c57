"""Connection plumbing of a review project: WAL, busy timeout, transactions and typed SQLite errors."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from MedAIExtension.errors import InputError, MedAIError, OutputError

__all__ = ["DEFAULT_BUSY_TIMEOUT", "ProjectLockedError", "StoreBase", "translate_error"]

#: Seconds a writer waits for another process's write lock before :class:`ProjectLockedError`.
DEFAULT_BUSY_TIMEOUT: float = 5.0


class ProjectLockedError(InputError):
    """Another process held the review project's write lock longer than the busy timeout."""


def translate_error(exc: sqlite3.Error, path: Path, action: str, timeout: float) -> MedAIError | None:
    """Turn an sqlite3 error into a typed MedAI error with the fix, or None for an unexpected one."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return ProjectLockedError(
            f"The review project {path} is locked: another program has held its write lock for more than "
            f"{timeout:g} s, so MedAI could not {action}. Close the other program that is writing to this project "
            "(another `medai review` command, a MedAISyntheticReview session in Slicer, or a database tool such as "
            "DB Browser for SQLite with unsaved changes) or wait for it to finish, then try again. Nothing was "
            "lost: everything saved before is intact, and this change was not saved."
        )
    if "readonly" in text or "read-only" in text or "permission" in text:
        return OutputError(
            f"Cannot write to the review project {path} ({exc}). Make the file and its folder writable "
            "(SQLite also writes -wal and -shm files beside it), or copy the project to a writable folder."
        )
    if "disk is full" in text or "disk i/o" in text:
        return OutputError(f"Cannot write to the review project {path} ({exc}). Free disk space, then try again.")
    if "not a database" in text or "malformed" in text or "unable to open" in text:
        return InputError(
            f"Cannot open the review project {path} ({exc}). Check that the file and its folder are readable and "
            "writable (SQLite writes -wal and -shm files beside it) and that it is a project created with "
            "`medai review init`."
        )
    return None


class StoreBase:
    """One SQLite connection to a review project, shared safely by the threads of one process.

    Writes go through :meth:`_write` (``BEGIN IMMEDIATE`` … ``COMMIT``), reads through :meth:`_read` (one
    snapshot); SQLite errors become typed MedAI errors.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, busy_timeout: float) -> None:
        """Wrap an already prepared connection; use :meth:`create` or :meth:`open` instead."""
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()

    # ---- opening ---------------------------------------------------------------------------------------------
    @staticmethod
    def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise translate_error(exc, path, "open it", busy_timeout) or exc from None
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        except sqlite3.Error as exc:
            conn.close()
            raise translate_error(exc, path, "open it", busy_timeout) or exc from None
        conn.row_factory = sqlite3.Row
        return conn

    def _ensure_wal(self) -> None:
        """Switch the project to WAL mode unless it is already (new projects, or one a tool switched back)."""
        with self._lock:
            db = self._db()
            try:
                if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    db.execute("PRAGMA journal_mode = WAL")
            except sqlite3.Error as exc:
                raise translate_error(exc, self._path, "switch it to WAL mode", self._busy_timeout) or exc from None

    # ---- life cycle --------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the database (idempotent); everything was already committed."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._conn is not None else "closed"
        return f"{type(self).__name__}({str(self._path)!r}, {state})"

    @property
    def path(self) -> Path:
        """The project file."""
        return self._path

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise InputError(f"The review project {self._path} is closed; open it again with ReviewStore.open.")
        return self._conn

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), rolled back on any error."""
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise translate_error(exc, self._path, action, self._busy_timeout) or exc from None
            try:
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise translate_error(exc, self._path, action, self._busy_timeout) or exc from None
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One consistent read snapshot (WAL readers never wait for writers)."""
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN")
                yield db
            except sqlite3.Error as exc:
                raise translate_error(exc, self._path, "read it", self._busy_timeout) or exc from None
            finally:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("COMMIT")
