"""The reader's decisions on an AI result: accept / reject / comment each finding and the whole study.

One SQLite file per result folder (``<result>/review/decisions.sqlite``, :meth:`DecisionStore.for_result`) holds
every decision ever made, append-only: who (the reader), when (UTC, ISO 8601), what (``accepted``, ``rejected``
or ``commented``, with an optional comment), on which finding (``scope`` ``"study"`` or ``"finding"`` with the
finding's id, e.g. a segment name or a nodule id) of which AI result (``result_ref``: the DICOM SEG's
SOPInstanceUID, see :func:`result_reference`). Triggers refuse updates and deletions, so the history is an audit
trail.

Crash safety is the review store's (:class:`~MedAIExtension.review.store.base.StoreBase`): WAL mode,
``synchronous=FULL`` and one ``BEGIN IMMEDIATE`` transaction per decision, committed before :meth:`DecisionStore.add`
returns, so a server killed right after a click keeps the click, and two processes (two server tabs, a CLI) can
write at the same time.

The current state of a finding (:meth:`DecisionStore.latest`): its latest verdict (``accepted``/``rejected``) wins;
a later comment-only record does not undo a verdict; a finding with comments only shows its latest comment.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self, cast

from MedAIExtension.atomic import ensure_writable_directory
from MedAIExtension.errors import InputError
from MedAIExtension.review.store.base import DEFAULT_BUSY_TIMEOUT, StoreBase
from MedAIExtension.review.store.checks import now_utc

__all__ = [
    "DECISIONS",
    "DECISIONS_FILE",
    "SCOPES",
    "DecisionRecord",
    "DecisionStore",
    "check_reader",
    "result_reference",
]

Decision = Literal["accepted", "rejected", "commented"]
Scope = Literal["study", "finding"]

#: The decisions a reader can record.
DECISIONS: tuple[str, ...] = ("accepted", "rejected", "commented")
#: What a decision is about: the whole study, or one finding.
SCOPES: tuple[str, ...] = ("study", "finding")
#: Where the store lives, relative to the result folder.
DECISIONS_FILE = Path("review") / "decisions.sqlite"

_APPLICATION_ID = 0x4D444543  # "MDEC"
_SCHEMA_VERSION = 1
_MAX_READER = 64  # a DICOM PN component group
_MAX_FINDING = 200
_MAX_COMMENT = 10_000
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SEG_FILE = "segmentation.dcm"

_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE decisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        scope TEXT NOT NULL CHECK (scope IN ('study', 'finding')),
        finding_id TEXT NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('accepted', 'rejected', 'commented')),
        comment TEXT NOT NULL DEFAULT '',
        reader TEXT NOT NULL CHECK (length(reader) > 0),
        time TEXT NOT NULL,
        result_ref TEXT NOT NULL DEFAULT '',
        CHECK ((scope = 'study') = (finding_id = ''))
    )""",
    "CREATE INDEX decisions_subject ON decisions (scope, finding_id, id)",
    "CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions "
    "BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END",
    "CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions "
    "BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END",
)


@dataclass(frozen=True)
class DecisionRecord:
    """One recorded decision.

    Attributes:
        id: its row number (increases with time).
        scope: ``"study"`` or ``"finding"``.
        finding_id: the finding's id (``""`` for the study).
        decision: ``"accepted"``, ``"rejected"`` or ``"commented"``.
        comment: the reader's comment (``""`` when none).
        reader: who decided.
        time: when, UTC ISO 8601 with milliseconds.
        result_ref: the AI result decided on (see :func:`result_reference`).
    """

    id: int
    scope: Scope
    finding_id: str
    decision: Decision
    comment: str
    reader: str
    time: str
    result_ref: str

    @property
    def is_verdict(self) -> bool:
        """Whether it accepts or rejects (a comment-only record does not)."""
        return self.decision != "commented"


def result_reference(folder: str | os.PathLike[str], seg_name: str = _SEG_FILE) -> str:
    """The reference of a result folder's AI result that decisions record: the SOPInstanceUID of its DICOM SEG
    (``seg_name``: ``segmentation.dcm`` of a segmentation, ``followup_seg.dcm`` of a tracking) when it has one, else
    ``""`` (the store's location already names the folder)."""
    import pydicom

    seg = Path(folder) / seg_name
    if not seg.is_file():
        return ""
    try:
        dataset = pydicom.dcmread(seg, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise InputError(f"Cannot read the result's DICOM SEG {seg} ({exc}); write the result again.") from None
    return str(dataset.get("SOPInstanceUID", ""))


def _text(value: object, what: str, limit: int, *, required: bool) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InputError(f"The {what} must be text, got {type(value).__name__}.")
    text = value.strip()
    if required and not text:
        raise InputError(f"The {what} is empty; give it (e.g. the reader's user name) and try again.")
    if len(text) > limit:
        raise InputError(f"The {what} has {len(text)} characters; at most {limit} are allowed. Shorten it.")
    return text


def check_reader(reader: object) -> str:
    """``reader`` stripped, or InputError: empty, over 64 characters, or a backslash/control character (not PN)."""
    name = _text(reader, "reader name", _MAX_READER, required=True)
    if "\\" in name or any(ord(ch) < 32 for ch in name):
        raise InputError(
            f"The reader name {name!r} contains a backslash or a control character, which a DICOM person name "
            "cannot hold. Use letters, digits, spaces, '_', '.', '-' or DICOM's 'Family^Given'."
        )
    return name


def _row(row: sqlite3.Row) -> DecisionRecord:
    return DecisionRecord(
        id=int(row["id"]),
        scope=cast(Scope, row["scope"]),
        finding_id=str(row["finding_id"]),
        decision=cast(Decision, row["decision"]),
        comment=str(row["comment"]),
        reader=str(row["reader"]),
        time=str(row["time"]),
        result_ref=str(row["result_ref"]),
    )


class DecisionStore(StoreBase):
    """The decisions file of one AI result. Open with :meth:`open` or :meth:`for_result`; use as a context manager.

    Safe from several threads (one connection behind a lock) and several processes (SQLite locking).
    """

    @classmethod
    def for_result(cls, folder: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> Self:
        """Open (creating it if needed) the decisions store of the result folder ``folder``.

        Raises:
            InputError: ``folder`` is not a folder, or its decisions file is not one.
            OutputError: the folder cannot be written.
        """
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise InputError(f"The result folder {folder} does not exist; give the folder a MedAI command wrote.")
        return cls.open(folder / DECISIONS_FILE, busy_timeout=busy_timeout)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> Self:
        """Open the decisions file ``path``, creating it (and its folder) when missing.

        Raises:
            InputError: ``path`` exists but is not a MedAI decisions file (or is from a newer MedAI).
            OutputError: the folder cannot be written.
        """
        path = Path(path).expanduser()
        not_store = (
            f"{path} is not a MedAI decisions file. Move it away (MedAI then starts a new one) or give the "
            f"result folder whose {DECISIONS_FILE} `medai view` wrote."
        )
        if path.is_dir():
            raise InputError(not_store)
        if not path.exists():
            ensure_writable_directory(path.parent)
        elif path.stat().st_size:
            try:
                with path.open("rb") as handle:
                    header = handle.read(len(_SQLITE_MAGIC))
            except OSError as exc:
                raise InputError(f"Cannot read {path} ({exc.strerror or exc}); check its permissions.") from None
            if header != _SQLITE_MAGIC:
                raise InputError(not_store)
        conn = cls._connect(path, busy_timeout)
        store = cls(conn, path, busy_timeout)
        try:
            store._ensure_wal()
            with store._write("create its tables") as db:
                app_id = db.execute("PRAGMA application_id").fetchone()[0]
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if app_id == 0 and version == 0 and not db.execute("SELECT 1 FROM sqlite_master").fetchone():
                    for statement in _SCHEMA:
                        db.execute(statement)
                    db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                    db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                elif app_id != _APPLICATION_ID:
                    raise InputError(not_store)
                elif version > _SCHEMA_VERSION:
                    raise InputError(
                        f"The decisions file {path} has schema version {version}, written by a newer MedAI; update "
                        "MedAI to open it (the file was not changed)."
                    )
        except BaseException:
            store.close()
            raise
        return store

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise InputError(f"The decisions file {self._path} is closed; open it again with DecisionStore.open.")
        return self._conn

    # ---- writing -----------------------------------------------------------------------------------------------
    def add(
        self,
        decision: str,
        reader: str,
        *,
        finding_id: str | None = None,
        comment: str = "",
        result_ref: str = "",
    ) -> DecisionRecord:
        """Record one decision, durably (committed and synced before it returns).

        Args:
            decision: ``"accepted"``, ``"rejected"`` or ``"commented"`` (a comment without a verdict).
            reader: who decides (non-empty, at most 64 characters; stored as the DICOM person name in the SR).
            finding_id: the finding (segment name, nodule id …); None for a decision on the whole study.
            comment: optional free text (required for ``"commented"``).
            result_ref: the AI result decided on (:func:`result_reference` of the folder).

        Raises:
            InputError: an unknown decision, an empty reader, an empty comment on ``"commented"``, text too long.
            ProjectLockedError: another process held the write lock longer than the busy timeout.
        """
        if decision not in DECISIONS:
            raise InputError(f"Unknown decision {decision!r}; choose one of {', '.join(DECISIONS)}.")
        name = check_reader(reader)
        finding = _text(finding_id, "finding id", _MAX_FINDING, required=finding_id is not None)
        note = _text(comment, "comment", _MAX_COMMENT, required=decision == "commented")
        ref = _text(result_ref, "result reference", 256, required=False)
        scope = "study" if finding_id is None else "finding"
        with self._write("save the decision") as db:
            cursor = db.execute(
                "INSERT INTO decisions (scope, finding_id, decision, comment, reader, time, result_ref) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (scope, finding, decision, note, name, now_utc(), ref),
            )
            row = db.execute("SELECT * FROM decisions WHERE id = ?", (cursor.lastrowid,)).fetchone()
        return _row(row)

    # ---- reading -----------------------------------------------------------------------------------------------
    def history(self, *, result_ref: str | None = None) -> list[DecisionRecord]:
        """Every decision in the order made; only those on ``result_ref`` (and those without one) when given."""
        with self._read() as db:
            rows = db.execute("SELECT * FROM decisions ORDER BY id").fetchall()
        records = [_row(row) for row in rows]
        if result_ref is not None:
            records = [r for r in records if r.result_ref in ("", result_ref)]
        return records

    def latest(self, *, result_ref: str | None = None) -> dict[tuple[str, str], DecisionRecord]:
        """The current decision per ``(scope, finding_id)``, in the order the subjects were first decided.

        The latest verdict (accepted/rejected) wins; comment-only records do not undo it; a subject with comments
        only gives its latest comment. ``result_ref`` as in :meth:`history`.
        """
        current: dict[tuple[str, str], DecisionRecord] = {}
        for record in self.history(result_ref=result_ref):
            key = (record.scope, record.finding_id)
            previous = current.get(key)
            if previous is None or record.is_verdict or not previous.is_verdict:
                current[key] = record
        return current

    def study_decision(self, *, result_ref: str | None = None) -> DecisionRecord | None:
        """The current decision on the whole study, or None."""
        return self.latest(result_ref=result_ref).get(("study", ""))
