"""Atomic file output: write to a temporary name beside the target, then rename.

An error, a cancel or an interrupt therefore never leaves a partial file under the final name, and a job's
results appear together or not at all (:func:`staged_output`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from MedAIExtension.errors import OutputError
from MedAIExtension.interrupts import deferred_interrupts, raise_if_interrupted

__all__ = [
    "StagedOutput",
    "atomic_directory",
    "atomic_path",
    "check_output_directory",
    "disk_full_error",
    "ensure_writable_directory",
    "save_dataset",
    "staged_output",
]


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


def _errors_in_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def disk_full_error(exc: BaseException, folder: Path) -> OutputError | None:
    """One-line :class:`OutputError` when ``exc`` (or an error it came from) is a full disk or quota, else None."""
    for item in _errors_in_chain(exc):
        if isinstance(item, OSError) and item.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return OutputError(
                f"The disk holding {folder} is full ({os.strerror(item.errno)}); nothing was written. Free some "
                "space or choose another folder with --output."
            )
    return None


class StagedOutput:
    """A hidden staging folder inside the output folder; :meth:`commit` moves finished results into place.

    Attributes:
        folder: the staging folder to write into.
        output: the final output folder.
    """

    def __init__(self, output: Path, folder: Path) -> None:
        self.output = output
        self.folder = folder

    def commit(self, names: Iterable[str]) -> dict[str, Path]:
        """Move the named results (files or folders, relative to the staging folder) into place, all or none.

        Each name replaces what the output folder held under it; other files there stay (``"png/a.png"`` moves
        one file into ``png/``). Terminating signals wait until the move is over; if a move fails, the results
        already moved are taken back out and what they replaced is put back.

        Returns:
            ``{name: final path}``.
        """
        raise_if_interrupted()  # a signal whose exception a finaliser swallowed still stops the job here
        names = list(dict.fromkeys(names))
        backup = self.folder / ".previous"
        moved: list[tuple[str, bool]] = []
        with deferred_interrupts():
            try:
                for name in names:
                    target = self.output / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    replaced = target.exists() or target.is_symlink()
                    if replaced:
                        (backup / name).parent.mkdir(parents=True, exist_ok=True)
                        os.replace(target, backup / name)
                    moved.append((name, replaced))
                    os.replace(self.folder / name, target)
            except BaseException:
                for name, replaced in reversed(moved):
                    target = self.output / name
                    with contextlib.suppress(OSError):
                        if target.is_dir() and not target.is_symlink():
                            shutil.rmtree(target)
                        elif target.exists() or target.is_symlink():
                            target.unlink()
                    if replaced:
                        with contextlib.suppress(OSError):
                            os.replace(backup / name, target)
                raise
        return {name: self.output / name for name in names}


@contextlib.contextmanager
def staged_output(output_dir: str | os.PathLike[str]) -> Iterator[StagedOutput]:
    """Write a job's results into a staging folder inside ``output_dir``, then :meth:`StagedOutput.commit` them.

    Whatever happens inside the block — an error, a full disk, Ctrl-C, SIGTERM, SIGHUP — the staging folder is
    removed, and an output folder this call created is removed again if it holds nothing. A full disk becomes
    one :class:`OutputError` line; other ``OSError``s become an :class:`OutputError` naming the folder.
    """
    directory = Path(output_dir)
    created = not directory.exists()
    out = ensure_writable_directory(directory)
    try:
        staging = Path(tempfile.mkdtemp(dir=out, prefix=".medai-staging-"))
    except OSError as exc:
        _remove_if_created_and_empty(out, created)
        raise disk_full_error(exc, out) or OutputError(
            f"Cannot write into {out} ({exc.strerror or exc}). Choose a folder you can write to with --output."
        ) from None
    try:
        yield StagedOutput(out, staging)
    except OSError as exc:
        raise disk_full_error(exc, out) or OutputError(
            f"Writing results into {out} failed ({exc.strerror or exc}); nothing was written."
        ) from None
    except BaseException as exc:
        full = disk_full_error(exc, out)
        if full is not None:
            raise full from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_created_and_empty(out, created)


def _remove_if_created_and_empty(folder: Path, created: bool) -> None:
    if created:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds when empty


def save_dataset(dataset: Any, target: str | os.PathLike[str], what: str) -> Path:
    """Write a pydicom dataset (a DICOM object ``what``, e.g. ``"DICOM SEG"``) to ``target`` atomically.

    Raises:
        OutputError: one line naming the object and the folder (a full disk as such); no partial file is left.
    """
    target = Path(target)
    try:
        with atomic_path(target) as tmp:
            dataset.save_as(tmp, enforce_file_format=True)
    except OSError as exc:
        raise disk_full_error(exc, target.parent) or OutputError(
            f"Cannot write the {what} {target} ({exc.strerror or exc}). Choose a writable output folder."
        ) from None
    return target
