"""Persistence of blinded reader studies (visual Turing tests) in a review project.

The order of the trials is decided by the caller (:mod:`MedAIExtension.review.reader_study` randomises and
balances it) and stored as given; each answer is committed on its own, so a reader who quits half-way resumes at
:meth:`ReaderStudyMixin.next_trial`.
"""

from __future__ import annotations

import numbers
import sqlite3
from collections.abc import Sequence

from MedAIExtension.errors import InputError
from MedAIExtension.review.store.base import StoreBase
from MedAIExtension.review.store.checks import check_flag, check_name, check_score, check_seconds, now_utc
from MedAIExtension.review.store.records import ImageRole, ReaderSession, Trial

__all__ = ["ReaderStudyMixin"]


class ReaderStudyMixin(StoreBase):
    """Reader sessions and their trials; part of :class:`~MedAIExtension.review.store.ReviewStore`."""

    # ---- blinded reader study --------------------------------------------------------------------------------
    def create_reader_session(self, reviewer: str, trials: Sequence[tuple[int, bool]], seed: int | None = None) -> int:
        """Store a blinded reader session whose order the caller decided (index 0 is shown first).

        Args:
            reviewer: the reader.
            trials: ``(image_id, is_synthetic)`` in presentation order; ``is_synthetic`` must match the image's
                role.
            seed: the seed used to randomise the order (stored for reproducibility).

        Returns:
            The new session's id.
        """
        name = check_name(reviewer, "reader name")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise InputError(f"The seed must be a whole number or none, got {seed!r}.")
        pairs = list(trials)
        if not pairs:
            raise InputError("The reader session has no trials; give at least one (image id, is synthetic) pair.")
        with self._write(f"create a reader session for {name}") as db:
            cursor = db.execute(
                "INSERT INTO reader_sessions (reviewer, seed, created_at) VALUES (?, ?, ?)",
                (name, None if seed is None else int(seed), now_utc()),
            )
            assert cursor.lastrowid is not None  # set by the INSERT just made
            session_id = cursor.lastrowid
            for index, pair in enumerate(pairs):
                try:
                    image_id, is_synthetic = pair
                    image_id = int(image_id)
                except (TypeError, ValueError):
                    raise InputError(f"Trial {index} must be an (image id, is synthetic) pair, got {pair!r}.") from None
                truth = check_flag(is_synthetic, f"is_synthetic of trial {index}", allow_none=False)
                row = db.execute("SELECT role FROM images WHERE id = ?", (int(image_id),)).fetchone()
                if row is None:
                    raise InputError(f"Trial {index} shows image {image_id}, which is not in this project.")
                if (row["role"] == ImageRole.SYNTHETIC) != truth:
                    raise InputError(
                        f"Trial {index}: image {image_id} is {row['role']} but is_synthetic={truth}; "
                        "the truth must match the image's role."
                    )
                db.execute(
                    "INSERT INTO reader_trials (session_id, idx, image_id, is_synthetic) VALUES (?, ?, ?, ?)",
                    (session_id, index, int(image_id), int(truth)),
                )
        return session_id

    @staticmethod
    def _trial(row: sqlite3.Row) -> Trial:
        said = row["said_synthetic"]
        return Trial(
            index=int(row["idx"]),
            image_id=int(row["image_id"]),
            is_synthetic=bool(row["is_synthetic"]),
            said_synthetic=None if said is None else bool(said),
            confidence=row["confidence"],
            seconds=row["seconds"],
            answered_at=row["answered_at"],
        )

    @staticmethod
    def _require_session(db: sqlite3.Connection, session_id: int) -> None:
        if db.execute("SELECT 1 FROM reader_sessions WHERE id = ?", (int(session_id),)).fetchone() is None:
            raise InputError(f"No reader session {session_id} in this project; list the reader sessions to see ids.")

    def reader_trials(self, session_id: int) -> list[Trial]:
        """Every trial of a session in presentation order."""
        with self._read() as db:
            self._require_session(db, session_id)
            rows = db.execute(
                "SELECT * FROM reader_trials WHERE session_id = ? ORDER BY idx", (int(session_id),)
            ).fetchall()
        return [self._trial(row) for row in rows]

    def next_trial(self, session_id: int) -> Trial | None:
        """The first unanswered trial (resume where the reader stopped), or None when the session is complete."""
        with self._read() as db:
            self._require_session(db, session_id)
            row = db.execute(
                "SELECT * FROM reader_trials WHERE session_id = ? AND answered_at IS NULL ORDER BY idx LIMIT 1",
                (int(session_id),),
            ).fetchone()
        return None if row is None else self._trial(row)

    def answer_trial(
        self,
        session_id: int,
        index: int,
        said_synthetic: bool,
        confidence: int | None = None,
        seconds: float | None = None,
    ) -> Trial:
        """Record the reader's answer to one trial, committed before this returns; answers are final.

        Raises:
            InputError: unknown session or index, the trial was already answered, or an invalid confidence.
        """
        said = check_flag(said_synthetic, "said_synthetic", allow_none=False)
        score = check_score(confidence, "confidence")
        spent = check_seconds(seconds)
        with self._write(f"save the answer to trial {index} of reader session {session_id}") as db:
            self._require_session(db, session_id)
            row = db.execute(
                "SELECT * FROM reader_trials WHERE session_id = ? AND idx = ?", (int(session_id), int(index))
            ).fetchone()
            if row is None:
                count = db.execute("SELECT COUNT(*) FROM reader_trials WHERE session_id = ?", (int(session_id),))
                raise InputError(
                    f"Reader session {session_id} has no trial {index}; its trials are 0..{count.fetchone()[0] - 1}."
                )
            if row["answered_at"] is not None:
                raise InputError(
                    f"Trial {index} of reader session {session_id} was already answered at {row['answered_at']}; "
                    "answers in a blinded study are final. Continue with the next unanswered trial."
                )
            db.execute(
                "UPDATE reader_trials SET said_synthetic = ?, confidence = ?, seconds = ?, answered_at = ? "
                "WHERE session_id = ? AND idx = ?",
                (int(said), score, spent, now_utc(), int(session_id), int(index)),
            )
            row = db.execute(
                "SELECT * FROM reader_trials WHERE session_id = ? AND idx = ?", (int(session_id), int(index))
            ).fetchone()
            return self._trial(row)

    def reader_sessions(self, reviewer: str | None = None) -> list[ReaderSession]:
        """Reader sessions (of one reader, or all) with their progress, oldest first."""
        name = None if reviewer is None else check_name(reviewer, "reader name")
        with self._read() as db:
            rows = db.execute(
                "SELECT s.id, s.reviewer, s.seed, s.created_at, COUNT(t.idx) AS n_trials, "
                "COUNT(t.answered_at) AS n_answered FROM reader_sessions AS s "
                "LEFT JOIN reader_trials AS t ON t.session_id = s.id WHERE (? IS NULL OR s.reviewer = ?) "
                "GROUP BY s.id ORDER BY s.id",
                (name, name),
            ).fetchall()
        return [
            ReaderSession(
                int(r["id"]), r["reviewer"], r["seed"], r["created_at"], int(r["n_trials"]), int(r["n_answered"])
            )
            for r in rows
        ]
