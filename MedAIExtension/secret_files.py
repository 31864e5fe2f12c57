"""Files that hold secrets (PACS passwords, bearer tokens, de-identification keys): readable by their owner only.

The rule is ssh's for private keys: a secret file that the group or other users may read or write is refused,
since anyone on the machine could copy the secret out of it. The message names the setting and the fix
(``chmod 600``), never the file's content.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from MedAIExtension.errors import InputError

__all__ = ["check_private_file"]


def check_private_file(path: str | os.PathLike[str], setting: str) -> Path:
    """Check that ``path`` is a regular file that only its owner (this user, or root) can read or write.

    Args:
        path: the secret file.
        setting: the configuration key that names it, e.g. ``"password_file"``, for the message.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: it does not exist, is not a regular file, is owned by another user, or group/others have any
            permission on it. (Not checked on Windows, which has no POSIX modes.)
    """
    target = Path(path)
    try:
        info = target.stat()
    except OSError as exc:
        raise InputError(
            f"Cannot read the file {target} named by `{setting}` ({exc.strerror or type(exc).__name__}). Create it "
            f"(readable by this user only: chmod 600 {target}) or change `{setting}`."
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"The file {target} named by `{setting}` is not a regular file. Point `{setting}` at a file.")
    if os.name == "nt":
        return target
    if info.st_uid not in (os.getuid(), 0):
        raise InputError(
            f"The file {target} named by `{setting}` belongs to another user (uid {info.st_uid}). A secret file must "
            "belong to the user running MedAI (or root): chown it, or use a copy of your own with chmod 600."
        )
    loose = stat.S_IMODE(info.st_mode) & 0o077
    if loose:
        raise InputError(
            f"The file {target} named by `{setting}` can be read or written by other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); it holds a secret, so it is refused, as ssh refuses such "
            f"private keys. Restrict it with: chmod 600 {target}"
        )
    return target
