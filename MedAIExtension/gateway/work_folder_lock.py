"""The lock that keeps two gateways off one work folder (and so off one journal)."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from MedAIExtension.errors import InputError

__all__ = ["WorkFolderLock"]


class WorkFolderLock:
    """An exclusive lock on the work folder so two gateways never share one journal."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "gateway.lock"
        self._handle: TextIO | None = None

    def acquire(self) -> None:
        """Take the lock; raises :class:`InputError` when another gateway holds it."""
        try:
            import fcntl  # lazy: POSIX only
        except ImportError:  # Windows: no advisory locks; one gateway per folder is up to the operator
            return
        self._handle = open(self.path, "a+")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._handle.close()
            self._handle = None
            raise InputError(
                f"Another gateway is running with the work folder {self.path.parent}. Stop it first, or give this "
                "one its own 'workdir'."
            ) from None

    def release(self) -> None:
        """Give the lock back."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
