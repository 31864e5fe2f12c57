"""Keyed, deterministic identifiers for de-identification: UID remapping, patient pseudonyms and the key.

Every value is derived from the original with HMAC-SHA256 under a secret key, so the same key gives the same
UIDs and pseudonyms in every run (a SEG de-identified tomorrow still references the CT de-identified today),
while nobody without the key can link a new UID back to the original or guess the original from it.

Keys are read from a file or from the environment variable ``MEDAI_DEID_KEY``, never from a command-line
argument (those are visible to every user of the machine in the process list), and never appear in a
message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from functools import lru_cache

from MedAIExtension.errors import InputError
from MedAIExtension.secret_files import check_private_file

__all__ = ["KEY_ENV_VAR", "MIN_KEY_BYTES", "is_standard_uid", "load_key", "pseudonym", "remap_uid"]

#: Environment variable holding the de-identification key (text) when no key file is given.
KEY_ENV_VAR = "MEDAI_DEID_KEY"
#: Shortest accepted key, in bytes: shorter keys could be guessed by trying them all.
MIN_KEY_BYTES = 16
_UID_MAX = 64
_KEY_HINT = (
    'Create one with: python -c "import secrets; print(secrets.token_hex(32))" > deid.key ; chmod 600 deid.key '
    "and keep it: the same key gives the same UIDs and pseudonyms in later runs."
)


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
        raise InputError(f"The de-identification key must be at least {MIN_KEY_BYTES} bytes long. {_KEY_HINT}")
    return bytes(key)


def _digest(key: bytes, domain: bytes, value: str) -> bytes:
    return hmac.new(_check_key(key), domain + value.encode("utf-8"), hashlib.sha256).digest()


@lru_cache(maxsize=1)
def _registered_uids() -> frozenset[str]:
    from pydicom.uid import UID_dictionary

    return frozenset(UID_dictionary)


def is_standard_uid(uid: str) -> bool:
    """Whether ``uid`` is a UID registered in the DICOM standard (SOP Class, Transfer Syntax, coding scheme ...).

    Such UIDs identify kinds of things, not patients, and are kept by de-identification. The registry is
    pydicom's UID dictionary (PS3.6 Annex A).
    """
    return str(uid).strip().rstrip("\0") in _registered_uids()


def remap_uid(uid: str, key: bytes) -> str:
    """The de-identified UID of ``uid``: ``"2.25."`` + the integer of the first 16 bytes of HMAC-SHA256.

    Deterministic for a given key; standard (registered) UIDs are returned unchanged.

    Args:
        uid: the original UID (trailing padding is ignored).
        key: the secret key (at least :data:`MIN_KEY_BYTES` bytes).

    Returns:
        A valid UID of at most 64 characters under the UUID-derived root ``2.25``.

    Raises:
        InputError: the key is too short, or ``uid`` is empty.
    """
    original = str(uid).strip().rstrip("\0")
    if not original:
        raise InputError("Cannot remap an empty UID; the DICOM file has an empty UID attribute. Repair the file.")
    if is_standard_uid(original):
        return original
    number = int.from_bytes(_digest(key, b"medai-deid-uid\0", original)[:16], "big")
    new = f"2.25.{number}"
    if len(new) > _UID_MAX:  # cannot happen (2**128 has 39 digits), kept as a guard against future edits
        raise AssertionError(f"remapped UID is {len(new)} characters long")
    return new


def pseudonym(value: str, key: bytes, prefix: str = "ANON") -> str:
    """A key-derived pseudonym of ``value`` (e.g. a Patient ID): ``prefix`` + 16 upper-case hex digits.

    The same value and key always give the same pseudonym; the pseudonym is a valid Patient ID (LO) and
    Patient Name (PN, one component).

    Args:
        value: the identifier to replace (leading/trailing spaces are ignored).
        key: the secret key (at least :data:`MIN_KEY_BYTES` bytes).
        prefix: letters put before the hex digits (at most 32 characters, no ``^`` or ``\\``).

    Raises:
        InputError: the key is too short or the prefix is unusable.
    """
    if len(prefix) > 32 or any(c in prefix for c in "^\\=") or not prefix.isprintable():
        raise InputError(f"The pseudonym prefix {prefix!r} is not usable; use up to 32 letters or digits.")
    return prefix + _digest(key, b"medai-deid-pseudonym\0", str(value).strip()).hex()[:16].upper()


def _decode_key(raw: bytes) -> bytes:
    """Key file content: text keys (hex, passphrases) are stripped of surrounding white space."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    return text.strip().encode("utf-8")


def load_key(
    key_file: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[bytes, bool]:
    """The de-identification key: from ``key_file``, else from ``MEDAI_DEID_KEY``, else a random one.

    Args:
        key_file: file holding the key (text, e.g. 64 hex digits, or raw bytes); read as given, with the
            surrounding white space of a text key removed.
        environ: the environment to read ``MEDAI_DEID_KEY`` from (default: ``os.environ``).

    Returns:
        ``(key, persistent)``: ``persistent`` is False for a random key made for this run only, so the caller
        can warn that its UIDs and pseudonyms will not match a later run.

    Raises:
        InputError: the key file cannot be read or others may read it (as ssh refuses such keys), or the key is
            shorter than :data:`MIN_KEY_BYTES` bytes.
            The message never contains the key.
    """
    if key_file is not None:
        path = check_private_file(key_file, "--key-file")  # a key others can read links every pseudonym back
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(
                f"Cannot read the key file {path} ({exc.strerror or exc}). Give an existing, readable file with "
                f"--key-file. {_KEY_HINT}"
            ) from None
        key = _decode_key(raw)
        if len(key) < MIN_KEY_BYTES:
            raise InputError(
                f"The key file {path} holds {len(key)} byte(s); at least {MIN_KEY_BYTES} are needed. {_KEY_HINT}"
            )
        return key, True
    env = os.environ if environ is None else environ
    text = env.get(KEY_ENV_VAR)
    if text is not None and text.strip():
        key = text.strip().encode("utf-8")
        if len(key) < MIN_KEY_BYTES:
            raise InputError(
                f"{KEY_ENV_VAR} holds {len(key)} byte(s); at least {MIN_KEY_BYTES} are needed. {_KEY_HINT}"
            )
        return key, True
    return secrets.token_bytes(32), False
