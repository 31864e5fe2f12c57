"""Credentials of a PACS connection, read from a configuration section or the environment.

Secrets come from an environment variable (``password_env``, ``token_env``) or a file (``password_file``,
``token_file``; readable by its owner only, as ssh requires of private keys), never from command-line arguments.
A secret written in plain text into the configuration (``password``, ``token``) is refused unless the section also
says ``allow_plaintext_password: true`` (then a warning is logged). Secrets are never shown: :class:`Credentials`
hides them from ``repr`` and error messages name only the setting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from MedAIExtension.errors import InputError
from MedAIExtension.secret_files import check_private_file

if TYPE_CHECKING:
    import requests

__all__ = ["PLAINTEXT_OPT_IN", "Credentials", "check_url", "credentials_from_config", "make_session"]

_log = logging.getLogger(__name__)

#: The configuration key that allows a secret written in plain text into the configuration file.
PLAINTEXT_OPT_IN = "allow_plaintext_password"


@dataclass(frozen=True)
class Credentials:
    """HTTP basic-auth user and password, or a bearer token (or nothing).

    Attributes:
        username: basic-auth user name.
        password: basic-auth password (hidden from ``repr``).
        token: bearer token sent as ``Authorization: Bearer …`` (hidden from ``repr``).
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def is_empty(self) -> bool:
        """Whether no credential at all is set."""
        return self.username is None and self.password is None and self.token is None

    @property
    def kind(self) -> str:
        """``"token"``, ``"basic"`` or ``"none"``."""
        if self.token is not None:
            return "token"
        if self.username is not None:
            return "basic"
        return "none"


def _text(section: Mapping[str, Any], key: str) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(f"The PACS setting `{key}` must be text, not {type(value).__name__}. Fix it in the config.")
    return str(value)


def _secret(section: Mapping[str, Any], name: str, environ: Mapping[str, str]) -> str | None:
    """The secret ``name`` (``password`` or ``token``) from exactly one of ``name``, ``name_env``, ``name_file``."""
    keys = [key for key in (name, f"{name}_env", f"{name}_file") if section.get(key) is not None]
    if len(keys) > 1:
        raise InputError(
            f"The PACS settings {', '.join(f'`{k}`' for k in keys)} are all set; give the {name} only one way "
            f"(`{name}_env` or `{name}_file` are preferred)."
        )
    if not keys:
        return None
    key = keys[0]
    if key == name:
        value = _text(section, key) or ""
        if not value:
            raise InputError(f"The PACS setting `{name}` is empty. Set it, or remove it and use `{name}_env`.")
        if section.get(PLAINTEXT_OPT_IN) is not True:
            raise InputError(
                f"The PACS setting `{name}` holds the {name} in plain text in the configuration, where anyone who "
                f"can read the file (or a backup of it) finds it. Move it into a file readable by this user only "
                f"(`{name}_file`, chmod 600) or an environment variable (`{name}_env`); to keep it in the "
                f"configuration anyway, add `{PLAINTEXT_OPT_IN}: true`."
            )
        _log.warning(
            "The PACS %s is written in plain text in the configuration (%s: true); prefer %s_file or %s_env.",
            name,
            PLAINTEXT_OPT_IN,
            name,
            name,
        )
        return value
    if key.endswith("_env"):
        variable = _text(section, key) or ""
        value = environ.get(variable, "")
        if not value:
            raise InputError(
                f"The environment variable {variable!r} named by `{key}` is not set or empty. Export it before "
                f"starting MedAI, or change `{key}`."
            )
        return value
    path = check_private_file(os.path.expanduser(_text(section, key) or ""), key)
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise InputError(
            f"Cannot read the {name} file {path} named by `{key}` ({reason}). Create it (readable by this user "
            f"only, e.g. chmod 600) or change `{key}`."
        ) from None
    if not value:
        raise InputError(f"The {name} file {path} named by `{key}` is empty. Write the {name} into it.")
    return value


def credentials_from_config(section: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Credentials:
    """Read the credentials of a PACS configuration section.

    Keys: ``username``, ``password`` / ``password_env`` / ``password_file`` (at most one), ``token`` /
    ``token_env`` / ``token_file`` (at most one), ``allow_plaintext_password`` (``true`` accepts ``password`` or
    ``token`` written in the configuration, with a logged warning). Other keys of the section are ignored.

    Args:
        section: the PACS configuration section (e.g. parsed from YAML).
        environ: environment variables (``os.environ`` when ``None``).

    Raises:
        InputError: a named variable is missing or a file unreadable or readable by other users, a plain-text
            secret without ``allow_plaintext_password: true``, a password without a user name (or the reverse),
            or both basic auth and a token are given.
    """
    environ = os.environ if environ is None else environ
    username = _text(section, "username")
    password = _secret(section, "password", environ)
    token = _secret(section, "token", environ)
    if token is not None and (username is not None or password is not None):
        raise InputError(
            "The PACS section sets both basic authentication (`username`/`password…`) and a bearer token "
            "(`token…`). Keep only the one the server expects."
        )
    if password is not None and not username:
        raise InputError("The PACS section sets a password but no `username`. Add `username`.")
    if username is not None and password is None:
        raise InputError(
            f"The PACS section sets `username` ({username!r}) but no password. Add `password_env` (name of an "
            "environment variable) or `password_file`."
        )
    return Credentials(username=username, password=password, token=token)


def make_session(credentials: Credentials | None = None) -> requests.Session:
    """A ``requests.Session`` that sends ``credentials`` (basic auth or a bearer token) with every request."""
    import requests

    session = requests.Session()
    if credentials is not None and credentials.token is not None:
        session.headers["Authorization"] = f"Bearer {credentials.token}"
    elif credentials is not None and credentials.username is not None:
        session.auth = (credentials.username, credentials.password or "")
    return session


def check_url(url: str, setting: str = "url") -> str:
    """``url`` without a trailing slash, checked to be an http(s) address without embedded credentials.

    Raises:
        InputError: not http/https, no host, or a user name/password inside the URL (the message does not repeat
            the URL, which may hold a secret).
    """
    from urllib.parse import urlsplit

    text = str(url or "").strip()
    parts = urlsplit(text)
    if parts.username is not None or parts.password is not None:
        raise InputError(
            f"The PACS `{setting}` contains a user name or password. Remove them from the URL and set `username` "
            "with `password_env` or `password_file` instead."
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(
            f"The PACS `{setting}` {text!r} is not an http(s) address. Give e.g. http://127.0.0.1:8042/dicom-web."
        )
    return text.rstrip("/")
