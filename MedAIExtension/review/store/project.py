"""The persistent review project: one SQLite file per project, safe under crashes and concurrent reviewers.

Everything a review produces lives in the project file: the images (with content hash and provenance), every
grade of every reviewer (history kept), blinded reader sessions with their answers, cached metric results and the
project settings. The database runs in WAL mode with foreign keys on and ``synchronous=FULL``; every grade and
every reader answer is its own ``BEGIN IMMEDIATE`` transaction, committed before the call returns, so a crash
right after a call loses nothing and two processes (two annotators, the CLI and Slicer) can write at the same
time without overwriting each other. A writer waits up to ``busy_timeout`` seconds for another writer; after
that :class:`ProjectLockedError` says what to close, and nothing already committed is touched.

WAL needs a local file system (not a network share: SQLite's WAL locking does not work over NFS/SMB). While a
project is open its changes may sit in ``<file>-wal`` beside it; closing the last connection folds them into the
file, so copy or back up a project when no one has it open (or copy the -wal file with it).

The schema is versioned (:mod:`MedAIExtension.review.schema`); :meth:`ReviewStore.open` migrates an older
project in one transaction and refuses a project from a newer MedAI.

Example:
    >>> with ReviewStore.create("study.medai-review", "Nodule GAN v3") as store:  # doctest: +SKIP
    ...     image = store.add_image("gan/case01.nii.gz", "synthetic", {"generator": "gan", "seed": 1})
    ...     store.grade(image.id, "dr_a", accept=True, realism=4)
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from MedAIExtension.atomic import ensure_writable_directory
from MedAIExtension.errors import CancelledError, InputError, MedAIError
from MedAIExtension.io.loader import load_image
from MedAIExtension.progress import Progress
from MedAIExtension.review.schema import APPLICATION_ID, SCHEMA_VERSION, create_schema, migrate
from MedAIExtension.review.store.base import DEFAULT_BUSY_TIMEOUT, ProjectLockedError, translate_error
from MedAIExtension.review.store.checks import (
    check_flag,
    check_name,
    check_score,
    check_seconds,
    check_vocabulary,
    image_sha256,
    now_utc,
    parse_role,
    to_json,
)
from MedAIExtension.review.store.manifest import read_manifest
from MedAIExtension.review.store.reader import ReaderStudyMixin
from MedAIExtension.review.store.records import (
    GradeRecord,
    ImageRecord,
    ImageRole,
    ImportFailure,
    ImportReport,
)

__all__ = ["DEFAULT_ARTIFACTS", "ReviewStore"]

#: The artifact flags a new project offers unless the creator gives its own vocabulary.
DEFAULT_ARTIFACTS: tuple[str, ...] = (
    "checkerboard",
    "anatomy implausible",
    "intensity wrong",
    "lesion implausible",
    "noise/texture wrong",
    "other",
)

_SQLITE_MAGIC = b"SQLite format 3\x00"


class ReviewStore(ReaderStudyMixin):
    """An open review project (one SQLite file). Create with :meth:`create`, open with :meth:`open`.

    Safe to use from several processes at once and from several threads of one process. Use it as a context
    manager or call :meth:`close`. Reader-study methods come from
    :class:`~MedAIExtension.review.store.reader.ReaderStudyMixin`.
    """

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        name: str,
        *,
        artifacts: Sequence[str] = DEFAULT_ARTIFACTS,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> ReviewStore:
        """Create a new review project file.

        Args:
            path: the project file to create (conventionally ``*.medai-review`` or ``*.sqlite``); must not exist.
            name: the project's display name.
            artifacts: the artifact-flag vocabulary graders choose from.
            busy_timeout: seconds to wait for another process's write lock.

        Raises:
            InputError: the file exists, or the name or vocabulary is invalid.
            OutputError: the folder cannot be written.
        """
        path = Path(path).expanduser()
        name = check_name(name, "project name")
        words = check_vocabulary(artifacts)
        exists = InputError(
            f"{path} already exists; a new project needs a new file. Open the existing project instead "
            "(ReviewStore.open, or any `medai review` command on it) or choose another file name."
        )
        if path.exists():
            raise exists
        ensure_writable_directory(path.parent)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            raise exists from None
        conn = None
        try:
            conn = cls._connect(path, busy_timeout)
            store = cls(conn, path, busy_timeout)
            store._ensure_wal()
            with store._write("create the project") as db:
                create_schema(db)
                db.execute(
                    "INSERT INTO project (id, name, created_at, artifacts) VALUES (1, ?, ?, ?)",
                    (name, now_utc(), json.dumps(list(words))),
                )
            return store
        except BaseException:
            if conn is not None:
                conn.close()
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                with contextlib.suppress(OSError):
                    leftover.unlink()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> ReviewStore:
        """Open an existing review project, migrating an older schema in one transaction.

        Raises:
            InputError: the file is missing, not a MedAI review project, or from a newer MedAI.
            ProjectLockedError: a migration was needed and another process held the write lock too long.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            what = "is a folder, not a project file" if path.is_dir() else "does not exist"
            raise InputError(f"{path} {what}. Create a project with `medai review init` or give the project file.")
        not_project = (
            f"{path} is not a MedAI review project. Give a project file created with `medai review init` "
            "(ReviewStore.create)."
        )
        try:
            with path.open("rb") as handle:
                header = handle.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise InputError(f"Cannot read {path} ({exc.strerror or exc}). Check the file's permissions.") from None
        if header != _SQLITE_MAGIC:
            raise InputError(not_project)
        conn = cls._connect(path, busy_timeout)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            conn.close()
            raise translate_error(exc, path, "open it", busy_timeout) or InputError(not_project) from None
        if app_id != APPLICATION_ID or version < 1:
            conn.close()
            raise InputError(not_project)
        if version > SCHEMA_VERSION:
            conn.close()
            raise InputError(
                f"The review project {path} has schema version {version}, written by a newer MedAI; this MedAI "
                f"reads schema version {SCHEMA_VERSION} and older. Update MedAI to open it (the file was not changed)."
            )
        store = cls(conn, path, busy_timeout)
        try:
            store._ensure_wal()
            if version < SCHEMA_VERSION:
                with store._write(f"migrate it from schema version {version} to {SCHEMA_VERSION}") as db:
                    current = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
                    if current < SCHEMA_VERSION:
                        migrate(db, current)
        except BaseException:
            store.close()
            raise
        return store

    # ---- project settings ------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The project's display name."""
        with self._read() as db:
            return str(db.execute("SELECT name FROM project").fetchone()[0])

    @property
    def artifacts(self) -> tuple[str, ...]:
        """The artifact-flag vocabulary graders choose from."""
        with self._read() as db:
            return self._artifacts(db)

    @staticmethod
    def _artifacts(db: sqlite3.Connection) -> tuple[str, ...]:
        return tuple(json.loads(db.execute("SELECT artifacts FROM project").fetchone()[0]))

    def set_artifacts(self, artifacts: Sequence[str]) -> None:
        """Replace the artifact vocabulary; grades already given keep their flags."""
        words = check_vocabulary(artifacts)
        with self._write("change the artifact vocabulary") as db:
            db.execute("UPDATE project SET artifacts = ?", (json.dumps(list(words)),))

    def project_info(self) -> dict[str, Any]:
        """Name, creation time, schema version, vocabulary, file path and counts of images, grades and readers."""
        with self._read() as db:
            project = db.execute("SELECT name, created_at, artifacts FROM project").fetchone()
            counts = dict(db.execute("SELECT role, COUNT(*) FROM images GROUP BY role").fetchall())
            reviewers = [r[0] for r in db.execute("SELECT DISTINCT reviewer FROM grades ORDER BY reviewer")]
            return {
                "name": project["name"],
                "created_at": project["created_at"],
                "schema_version": int(db.execute("PRAGMA user_version").fetchone()[0]),
                "artifacts": json.loads(project["artifacts"]),
                "path": str(self._path),
                "images": {role.value: int(counts.get(role.value, 0)) for role in ImageRole},
                "grades": int(db.execute("SELECT COUNT(*) FROM grades").fetchone()[0]),
                "reviewers": reviewers,
                "reader_sessions": int(db.execute("SELECT COUNT(*) FROM reader_sessions").fetchone()[0]),
            }

    # ---- images ----------------------------------------------------------------------------------------------
    @staticmethod
    def _image(row: sqlite3.Row, duplicate: bool = False) -> ImageRecord:
        return ImageRecord(
            id=int(row["id"]),
            role=ImageRole(row["role"]),
            path=row["path"],
            sha256=row["sha256"],
            shape=tuple(json.loads(row["shape"])),
            spacing=tuple(json.loads(row["spacing"])),
            modality=row["modality"],
            provenance=json.loads(row["provenance"]),
            added_at=row["added_at"],
            duplicate=duplicate,
            parent_id=row["parent_id"],
            added_by=row["added_by"],
        )

    @staticmethod
    def _parent_id(db: sqlite3.Connection, parent: Any) -> int | None:
        """The id of the real image ``parent`` names (an id or a path), or None if it is not in the project."""
        if parent is None:
            return None
        if isinstance(parent, numbers.Integral) and not isinstance(parent, bool):
            row = db.execute("SELECT role FROM images WHERE id = ?", (int(parent),)).fetchone()
            if row is None or row["role"] != ImageRole.REAL:
                raise InputError(
                    f"The parent image id {parent} is not a real image of this project. Add the real image first "
                    "(role real) or give the parent's path."
                )
            return int(parent)
        if isinstance(parent, str) and parent.strip():
            row = db.execute(
                "SELECT id FROM images WHERE role = 'real' AND path = ? ORDER BY id LIMIT 1", (parent.strip(),)
            ).fetchone()
            return None if row is None else int(row["id"])
        raise InputError(f"The parent must be a real image's id or path, got {parent!r}.")

    def add_image(
        self,
        source: str | os.PathLike[str],
        role: str | ImageRole,
        provenance: dict[str, Any] | None = None,
        *,
        reviewer: str | None = None,
    ) -> ImageRecord:
        """Add a volume file or DICOM series folder to the project (loaded once to hash and describe it).

        Args:
            source: a .nii.gz/.nrrd/... file or a DICOM series folder.
            role: ``"synthetic"`` or ``"real"``.
            provenance: generator, version, seed, parent (a real image's id or path) and anything else.
            reviewer: who adds it (stored as ``added_by``).

        Returns:
            The new record, or, when an image with the same content and role is already in the project, the
            existing record with ``duplicate=True`` (nothing is added).

        Raises:
            InputError: the image cannot be loaded, the role or provenance is invalid, or a parent id is unknown.
        """
        image_role = parse_role(role)
        added_by = None if reviewer is None else check_name(reviewer, "reviewer name")
        if provenance is None:
            provenance = {}
        if not isinstance(provenance, dict):
            raise InputError(
                f"The provenance must be a dict (generator, version, seed, parent, ...), got {provenance!r}."
            )
        provenance = dict(provenance)
        parent = provenance.get("parent")
        if isinstance(parent, (str, os.PathLike)) and not str(parent).strip().isdigit():
            candidate = Path(parent).expanduser()
            provenance["parent"] = str(candidate.resolve()) if candidate.exists() else str(parent)
        elif isinstance(parent, str):
            provenance["parent"] = int(parent.strip())
        provenance_json = to_json(provenance, "provenance")
        path = Path(source).expanduser().resolve()
        image = load_image(path)
        digest = image_sha256(image)
        modality = image.modality or str(provenance.get("modality", ""))
        shape = json.dumps(list(image.shape))
        spacing = json.dumps([round(float(s), 6) for s in image.spacing])
        with self._write(f"add {path.name}") as db:
            existing = db.execute(
                "SELECT * FROM images WHERE sha256 = ? AND role = ?", (digest, image_role.value)
            ).fetchone()
            if existing is not None:
                return self._image(existing, duplicate=True)
            parent_id = self._parent_id(db, json.loads(provenance_json).get("parent"))
            cursor = db.execute(
                "INSERT INTO images (role, path, sha256, shape, spacing, modality, provenance, added_at, parent_id,"
                " added_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    image_role.value,
                    str(path),
                    digest,
                    shape,
                    spacing,
                    modality,
                    provenance_json,
                    now_utc(),
                    parent_id,
                    added_by,
                ),
            )
            row = db.execute("SELECT * FROM images WHERE id = ?", (cursor.lastrowid,)).fetchone()
            return self._image(row)

    def import_manifest(
        self,
        manifest: str | os.PathLike[str],
        *,
        role: str | ImageRole | None = None,
        reviewer: str | None = None,
        progress: Progress | Callable[[float, str], None] | None = None,
    ) -> ImportReport:
        """Add every image a CSV/JSON manifest lists (see :mod:`MedAIExtension.review.store.manifest`).

        Real images are added first so synthetic rows can name them as parent. Each row is committed on its own;
        a bad row is reported in :attr:`ImportReport.failed` and does not stop the others; running the same
        manifest again adds nothing twice.

        Args:
            manifest: the .csv or .json manifest; relative image paths are relative to its folder.
            role: the role of rows without a role column.
            reviewer: who imports (``added_by``).
            progress: receives (fraction, message); cancellation stops after the current row (rows done stay).

        Raises:
            InputError: the manifest itself cannot be read (missing, wrong format, no path column).
            ProjectLockedError: another process held the write lock too long (rows done so far stay).
            CancelledError: cancelled through ``progress``.
        """
        report = Progress.of(progress)
        default_role = parse_role(role, allow_none=True)
        rows = read_manifest(manifest)

        def real_first(row: Any) -> tuple[bool, int]:
            row_role = row.role if row.role is not None else default_role
            return (row_role != ImageRole.REAL, row.row)

        order = sorted(rows, key=real_first)
        added: list[ImageRecord] = []
        duplicates: list[ImageRecord] = []
        failed: list[ImportFailure] = []
        for done, row in enumerate(order):
            report(done / max(len(order), 1), f"Importing {row.path or f'row {row.row}'} ({done + 1}/{len(order)})")
            try:
                if row.error is not None or row.resolved is None:
                    raise InputError(row.error or "the row has no path")
                row_role = row.role if row.role is not None else default_role
                if row_role is None:
                    raise InputError("the row has no role; fill in the role column (synthetic or real) or pass a role")
                record = self.add_image(row.resolved, row_role, row.provenance, reviewer=reviewer)
            except (ProjectLockedError, CancelledError):
                raise
            except (MedAIError, OSError, ValueError, RuntimeError) as exc:
                failed.append(ImportFailure(row.row, row.path, str(exc)))
                continue
            (duplicates if record.duplicate else added).append(record)
        report(1.0, f"Imported {len(added)} image(s), {len(duplicates)} duplicate(s), {len(failed)} failed")
        failed.sort(key=lambda f: f.row)
        return ImportReport(tuple(added), tuple(duplicates), tuple(failed))

    def images(self, role: str | ImageRole | None = None) -> list[ImageRecord]:
        """All images (or those of one role) in the order they were added."""
        image_role = parse_role(role, allow_none=True)
        with self._read() as db:
            if image_role is None:
                rows = db.execute("SELECT * FROM images ORDER BY id").fetchall()
            else:
                rows = db.execute("SELECT * FROM images WHERE role = ? ORDER BY id", (image_role.value,)).fetchall()
        return [self._image(row) for row in rows]

    def image(self, image_id: int) -> ImageRecord:
        """The image with this id; InputError if there is none."""
        with self._read() as db:
            row = db.execute("SELECT * FROM images WHERE id = ?", (int(image_id),)).fetchone()
        if row is None:
            raise InputError(f"No image with id {image_id} in this project; list the images to see their ids.")
        return self._image(row)

    # ---- grades ----------------------------------------------------------------------------------------------
    @staticmethod
    def _grade(row: sqlite3.Row) -> GradeRecord:
        accept = row["accept"]
        return GradeRecord(
            id=int(row["id"]),
            image_id=int(row["image_id"]),
            reviewer=row["reviewer"],
            accept=None if accept is None else bool(accept),
            realism=row["realism"],
            artifacts=tuple(json.loads(row["artifacts"])),
            comment=row["comment"],
            seconds=row["seconds"],
            graded_at=row["graded_at"],
        )

    def grade(
        self,
        image_id: int,
        reviewer: str,
        *,
        accept: bool | None,
        realism: int | None,
        artifacts: Sequence[str] = (),
        comment: str = "",
        seconds: float | None = None,
    ) -> GradeRecord:
        """Record one reviewer's grade of one image, committed before this returns.

        A reviewer may grade an image again: the new grade is added, the old one kept as history
        (:meth:`grades` with ``latest_only=True`` shows the newest per reviewer).

        Args:
            image_id: the image.
            reviewer: who grades (their grades never overwrite another reviewer's).
            accept: True accept, False reject, None undecided.
            realism: 1 (obviously synthetic) .. 5 (indistinguishable from real), or None.
            artifacts: flags from the project's vocabulary (case-insensitive).
            comment: free text.
            seconds: time spent.

        Raises:
            InputError: unknown image, realism outside 1-5, an artifact outside the vocabulary, an empty grade.
            ProjectLockedError: another process held the write lock too long (the grade was not saved).
        """
        name = check_name(reviewer, "reviewer name")
        decision = check_flag(accept, "accept")
        score = check_score(realism, "realism score")
        spent = check_seconds(seconds)
        if not isinstance(comment, str):
            raise InputError(f"The comment must be text, got {comment!r}.")
        if isinstance(artifacts, str):
            artifacts = [artifacts]
        if decision is None and score is None and not artifacts and not comment.strip():
            raise InputError(
                "The grade is empty; give accept/reject, a realism score 1-5, an artifact flag or a comment."
            )
        with self._write(f"save the grade of image {image_id} by {name}") as db:
            if db.execute("SELECT 1 FROM images WHERE id = ?", (int(image_id),)).fetchone() is None:
                raise InputError(f"No image with id {image_id} in this project; grade an image listed in the project.")
            vocabulary = self._artifacts(db)
            by_key = {word.casefold(): word for word in vocabulary}
            unknown = [a for a in artifacts if not isinstance(a, str) or " ".join(a.split()).casefold() not in by_key]
            if unknown:
                raise InputError(
                    f"Unknown artifact flag(s) {', '.join(map(repr, unknown))}. This project's flags are: "
                    f"{', '.join(vocabulary)}. Use one of these, or add the word to the project's vocabulary."
                )
            flags = list(dict.fromkeys(by_key[" ".join(a.split()).casefold()] for a in artifacts))
            cursor = db.execute(
                "INSERT INTO grades (image_id, reviewer, accept, realism, artifacts, comment, seconds, graded_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (int(image_id), name, decision, score, json.dumps(flags), comment, spent, now_utc()),
            )
            return self._grade(db.execute("SELECT * FROM grades WHERE id = ?", (cursor.lastrowid,)).fetchone())

    def grades(
        self, image_id: int | None = None, reviewer: str | None = None, latest_only: bool = True
    ) -> list[GradeRecord]:
        """Grades, optionally of one image and/or one reviewer, ordered by image, reviewer, time.

        Args:
            image_id: only this image.
            reviewer: only this reviewer.
            latest_only: only each reviewer's newest grade per image (False: the whole history).
        """
        clauses: list[str] = []
        params: list[int | str] = []
        if image_id is not None:
            clauses.append("image_id = ?")
            params.append(int(image_id))
        if reviewer is not None:
            clauses.append("reviewer = ?")
            params.append(check_name(reviewer, "reviewer name"))
        if latest_only:
            clauses.append("id IN (SELECT MAX(id) FROM grades GROUP BY image_id, reviewer)")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read() as db:
            rows = db.execute(f"SELECT * FROM grades {where} ORDER BY image_id, reviewer, id", params).fetchall()
        return [self._grade(row) for row in rows]

    def next_ungraded(self, reviewer: str, role: str | ImageRole | None = "synthetic") -> ImageRecord | None:
        """The first image (by id) of ``role`` (None: any) that ``reviewer`` has not graded yet — for resume."""
        name = check_name(reviewer, "reviewer name")
        image_role = parse_role(role, allow_none=True)
        with self._read() as db:
            row = db.execute(
                "SELECT * FROM images AS i WHERE (? IS NULL OR i.role = ?) AND NOT EXISTS "
                "(SELECT 1 FROM grades AS g WHERE g.image_id = i.id AND g.reviewer = ?) ORDER BY i.id LIMIT 1",
                (
                    None if image_role is None else image_role.value,
                    None if image_role is None else image_role.value,
                    name,
                ),
            ).fetchone()
        return None if row is None else self._image(row)

    def accepted(self, min_reviewers: int = 1, role: str | ImageRole = "synthetic") -> list[ImageRecord]:
        """Images accepted for use: graded by at least ``min_reviewers`` reviewers, and the latest grade of every
        reviewer who graded the image says accept.

        A reviewer whose latest grade rejects the image or leaves the decision open (None) keeps it out.
        """
        if isinstance(min_reviewers, bool) or not isinstance(min_reviewers, numbers.Integral) or min_reviewers < 1:
            raise InputError(f"min_reviewers must be a whole number >= 1, got {min_reviewers!r}.")
        image_role = parse_role(role)
        with self._read() as db:
            rows = db.execute(
                "SELECT i.* FROM images AS i JOIN grades AS g ON g.image_id = i.id "
                "WHERE i.role = ? AND g.id IN (SELECT MAX(id) FROM grades GROUP BY image_id, reviewer) "
                "GROUP BY i.id HAVING COUNT(*) >= ? AND SUM(CASE WHEN g.accept = 1 THEN 1 ELSE 0 END) = COUNT(*) "
                "ORDER BY i.id",
                (image_role.value, int(min_reviewers)),
            ).fetchall()
        return [self._image(row) for row in rows]

    # ---- results cache ---------------------------------------------------------------------------------------
    def save_result(self, kind: str, data: dict[str, Any]) -> None:
        """Store a result (e.g. ``"metrics"``, ``"memorization"``) as JSON with the time; history is kept."""
        label = check_name(kind, "result kind")
        if not isinstance(data, dict):
            raise InputError(f"A result must be a dict, got {type(data).__name__}.")
        payload = to_json(data, f"{label} result")
        with self._write(f"save the {label} result") as db:
            db.execute("INSERT INTO results (kind, data, saved_at) VALUES (?, ?, ?)", (label, payload, now_utc()))

    def latest_result(self, kind: str) -> dict[str, Any] | None:
        """The newest result of ``kind`` as saved, plus ``"saved_at"`` (UTC, ISO 8601); None if there is none."""
        label = check_name(kind, "result kind")
        with self._read() as db:
            row = db.execute(
                "SELECT data, saved_at FROM results WHERE kind = ? ORDER BY id DESC LIMIT 1", (label,)
            ).fetchone()
        if row is None:
            return None
        return {**json.loads(row["data"]), "saved_at": row["saved_at"]}
