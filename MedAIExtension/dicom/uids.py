"""The DICOM UID grammar (PS3.5 §9.1), checked wherever a UID enters MedAI from outside (a PACS, a DICOM file).

A UID is text that came from someone else: a PACS answer or a file header may hold anything in a "UID" field — an
absolute path, ``..``, NUL, shell metacharacters, kilobytes of text. Code that receives one checks it here before
using it, and never builds a file-system path from it even when valid (work folders are named by the caller).

>>> is_valid_uid("1.2.840.10008.5.1.4.1.1.2")
True
>>> uid_problem("/etc")
'contains characters other than digits and dots'
>>> check_uid("1.2.3", "SeriesInstanceUID")
'1.2.3'
"""

from __future__ import annotations

import re

from MedAIExtension.errors import InputError

__all__ = ["UID_MAX_LENGTH", "InvalidUidError", "check_uid", "is_valid_uid", "uid_problem"]

#: Longest UID the standard allows (characters, without the padding byte).
UID_MAX_LENGTH = 64

_COMPONENT = r"(?:0|[1-9][0-9]*)"
_UID = re.compile(rf"{_COMPONENT}(?:\.{_COMPONENT})*")


class InvalidUidError(InputError):
    """A value that should be a DICOM UID is not one (it is refused, never used as given).

    Attributes:
        what: which attribute held it, e.g. ``"SeriesInstanceUID of a search answer"``.
        problem: what is wrong with it (never the value itself, which may be hostile or long).
    """

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(
            f"The {what} is not a valid DICOM UID ({problem}); the object was refused. A DICOM UID is digits and "
            f"dots, at most {UID_MAX_LENGTH} characters, without leading zeros in a component. Correct the object "
            "in the PACS (or in the file) to have it processed."
        )
        self.what = what
        self.problem = problem


def _normalised(value: object) -> str | None:
    """``value`` as text without DICOM's trailing padding (one NUL or space), or None when it is not text."""
    if not isinstance(value, str):
        return None
    return value[:-1] if value.endswith(("\0", " ")) else value


def uid_problem(value: object) -> str | None:
    """What makes ``value`` not a DICOM UID, or ``None`` when it is one.

    The answer describes the problem in words and never repeats the value.
    """
    text = _normalised(value)
    if text is None:
        return f"it is {type(value).__name__}, not text"
    if not text:
        return "it is empty"
    if len(text) > UID_MAX_LENGTH:
        return f"it is {len(text)} characters long, more than {UID_MAX_LENGTH}"
    if any(c not in "0123456789." for c in text):
        return "contains characters other than digits and dots"
    if _UID.fullmatch(text) is None:
        return "has an empty component or a component with a leading zero"
    return None


def is_valid_uid(value: object) -> bool:
    """Whether ``value`` is a DICOM UID: digits and dots, components without leading zeros, ≤ 64 characters."""
    return uid_problem(value) is None


def check_uid(value: object, what: str) -> str:
    """``value`` as a UID (trailing padding removed) when it follows the grammar.

    Args:
        value: the text to check.
        what: which attribute it is, for the message, e.g. ``"StudyInstanceUID of a search answer"``.

    Raises:
        InvalidUidError: it is not a UID (the message names ``what`` and the problem, not the value).
    """
    problem = uid_problem(value)
    if problem is not None:
        raise InvalidUidError(what, problem)
    return str(_normalised(value))
