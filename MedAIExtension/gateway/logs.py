"""Structured gateway logs: one JSON object per line, without patient information.

Studies are named by a short one-way hash of their Study Instance UID (``study_ref``), never by patient name,
ID, birth date, accession number or the UID itself; error texts come from MedAI's own messages, and any DICOM UID
inside a text (e.g. a series named in an error) is replaced by ``<uid>``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["GatewayLog", "study_ref"]

_UID = re.compile(r"(?<![\d.])\d+(?:\.\d+){4,}(?![\d.])")  # 5+ components: not an IPv4 address


def study_ref(study_uid: str) -> str:
    """A 12-character reference to a study that does not reveal its UID."""
    return hashlib.sha256(f"medai-study|{study_uid}".encode()).hexdigest()[:12]


class GatewayLog:
    """Writes JSON lines to ``path`` (appending) and, unless ``quiet``, to ``stream``."""

    def __init__(self, path: str | Path | None, stream: IO[str] | None = None, quiet: bool = False) -> None:
        self._file = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")
        self._stream = None if quiet else (stream or sys.stderr)
        self._lock = threading.Lock()

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        """Log ``event`` with ``fields`` (a ``study_uid`` field is replaced by its ``study_ref``)."""
        if "study_uid" in fields:
            fields["study"] = study_ref(str(fields.pop("study_uid")))
        fields = {key: _UID.sub("<uid>", value) if isinstance(value, str) else value for key, value in fields.items()}
        record = {"ts": round(time.time(), 3), "level": level, "event": event, **fields}
        line = json.dumps(record, default=str)
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
            if self._stream is not None:
                print(line, file=self._stream, flush=True)

    def close(self) -> None:
        """Close the log file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
