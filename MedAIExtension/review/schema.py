"""The SQLite schema of a review project: version, tables and migrations.

A review project is one SQLite file marked with :data:`APPLICATION_ID` (``PRAGMA application_id``) whose
``PRAGMA user_version`` is its schema version. A new project is built by running the version-1 tables and then
every migration in order, so a fresh project and a migrated old one are the same database and the migration path
runs on every ``create``.

Schema history:

- **1** — grading only: ``project`` (one row: name, created_at, artifact vocabulary as JSON), ``images``
  (role, path, sha256, shape, spacing, modality, provenance JSON; one row per (sha256, role)) and ``grades``
  (one row per grade, reviewer on every row, history kept).
- **2** — adds ``grades.seconds`` (time spent), ``images.parent_id`` (the real image a synthetic one derives from)
  and ``images.added_by``, the blinded reader study (``reader_sessions``, ``reader_trials``), the ``results``
  cache of metrics and memorization outputs, and indexes for resume queries.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

__all__ = ["APPLICATION_ID", "MIGRATIONS", "SCHEMA_VERSION", "create_schema", "migrate"]

#: Version of the schema this MedAI writes; a project with a larger ``user_version`` was written by a newer MedAI.
SCHEMA_VERSION: int = 2

#: ``PRAGMA application_id`` of a MedAI review project ("MdAR"): tells a project from any other SQLite file.
APPLICATION_ID: int = 0x4D644152

_SCHEMA_V1: tuple[str, ...] = (
    """CREATE TABLE project (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        artifacts TEXT NOT NULL
    )""",
    """CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('synthetic', 'real')),
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        shape TEXT NOT NULL,
        spacing TEXT NOT NULL,
        modality TEXT NOT NULL DEFAULT '',
        provenance TEXT NOT NULL DEFAULT '{}',
        added_at TEXT NOT NULL,
        UNIQUE (sha256, role)
    )""",
    """CREATE TABLE grades (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id),
        reviewer TEXT NOT NULL,
        accept INTEGER CHECK (accept IN (0, 1)),
        realism INTEGER CHECK (realism BETWEEN 1 AND 5),
        artifacts TEXT NOT NULL DEFAULT '[]',
        comment TEXT NOT NULL DEFAULT '',
        graded_at TEXT NOT NULL
    )""",
)

_MIGRATE_1_TO_2: tuple[str, ...] = (
    "ALTER TABLE grades ADD COLUMN seconds REAL CHECK (seconds IS NULL OR seconds >= 0)",
    "ALTER TABLE images ADD COLUMN parent_id INTEGER REFERENCES images(id)",
    "ALTER TABLE images ADD COLUMN added_by TEXT",
    "CREATE INDEX grades_by_image_reviewer ON grades (image_id, reviewer, id)",
    "CREATE INDEX grades_by_reviewer ON grades (reviewer, image_id)",
    "CREATE INDEX images_by_role ON images (role, id)",
    """CREATE TABLE reader_sessions (
        id INTEGER PRIMARY KEY,
        reviewer TEXT NOT NULL,
        seed INTEGER,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE reader_trials (
        session_id INTEGER NOT NULL REFERENCES reader_sessions(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL CHECK (idx >= 0),
        image_id INTEGER NOT NULL REFERENCES images(id),
        is_synthetic INTEGER NOT NULL CHECK (is_synthetic IN (0, 1)),
        said_synthetic INTEGER CHECK (said_synthetic IN (0, 1)),
        confidence INTEGER CHECK (confidence BETWEEN 1 AND 5),
        seconds REAL CHECK (seconds IS NULL OR seconds >= 0),
        answered_at TEXT,
        PRIMARY KEY (session_id, idx)
    )""",
    """CREATE TABLE results (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        saved_at TEXT NOT NULL
    )""",
    "CREATE INDEX results_by_kind ON results (kind, id)",
)

#: ``MIGRATIONS[v]`` turns a version-``v`` database into version ``v + 1``.
MIGRATIONS: dict[int, tuple[str, ...]] = {1: _MIGRATE_1_TO_2}


def _run(conn: sqlite3.Connection, statements: tuple[str, ...]) -> None:
    # One statement at a time: ``executescript`` would commit the caller's transaction first.
    for statement in statements:
        conn.execute(statement)


def migrate(conn: sqlite3.Connection, from_version: int, on_step: Callable[[int, int], None] | None = None) -> int:
    """Apply every migration from ``from_version`` up to :data:`SCHEMA_VERSION` inside the caller's transaction.

    Args:
        conn: a connection with an open write transaction (``BEGIN IMMEDIATE``); the caller commits.
        from_version: the database's current ``user_version`` (>= 1).
        on_step: called with ``(old, new)`` after each step.

    Returns:
        The new version (:data:`SCHEMA_VERSION`), also written to ``PRAGMA user_version``.
    """
    if not 1 <= from_version <= SCHEMA_VERSION:
        raise ValueError(f"cannot migrate from schema version {from_version}")
    for version in range(from_version, SCHEMA_VERSION):
        _run(conn, MIGRATIONS[version])
        if on_step is not None:
            on_step(version, version + 1)
    conn.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")
    return SCHEMA_VERSION


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the current schema in an empty database inside the caller's write transaction."""
    conn.execute(f"PRAGMA application_id = {int(APPLICATION_ID)}")
    _run(conn, _SCHEMA_V1)
    conn.execute("PRAGMA user_version = 1")
    migrate(conn, 1)
