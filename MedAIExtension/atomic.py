"""Atomic file output: write to a temporary name beside the target, then rename.

An error or a cancel therefore never leaves a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from MedAIExtension.errors import OutputError

__all__ = ["atomic_directory", "atomic_path", "check_output_directory", "ensure_writable_directory"]


def _probe_writable(folder: Path, shown: Path) -> None:
    """Create and delete a temporary file in ``folder``; raise :class:`OutputError` about ``shown`` if that fails."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".medai-write-test-"):
            pass
    except OSError as exc:
        raise OutputError(
            f"The output folder {shown} is not writable ({exc.strerror or exc}). "
            "Choose a folder you can write to with --output."
        ) from None


def check_output_directory(path: str | os.PathLike[str]) -> Path:
    """Check, without creating anything, that ``path`` is (or can become) a writable folder.

    Lets long jobs fail before they start; raises :class:`OutputError` naming the folder and the fix.
    """
    directory = Path(path)
    probe = directory
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(
            f"Cannot create the output folder {directory}: {probe} is a file, not a folder. "
            "Choose a folder you can write to with --output."
        )
    _probe_writable(probe, directory)
    return directory


def ensure_writable_directory(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check that files can be written there.

    Raises :class:`OutputError` naming the folder and the fix otherwise.
    """
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot create the output folder {directory} ({exc.strerror or exc}). "
            "Choose a folder you can write to with --output."
        ) from None
    if not directory.is_dir():
        raise OutputError(f"The output path {directory} exists and is not a folder. Choose a folder with --output.")
    _probe_writable(directory, directory)
    return directory


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    The temporary name keeps the target's suffixes (writers pick the format from them). On any exception
    the temporary file is removed and the target is left untouched.
    """
    target = Path(target)
    suffix = "".join(target.suffixes)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name.split('.')[0]}-", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` as a whole."""
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
