"""Typed errors of the PACS layer, and the mapping of HTTP failures onto them.

Messages name the server (its URL) and the setting to fix; they never contain a password or a token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from MedAIExtension.errors import MedAIError

if TYPE_CHECKING:
    from MedAIExtension.pacs.credentials import Credentials

__all__ = [
    "PacsAuthError",
    "PacsError",
    "PacsNotFoundError",
    "PacsRejectedError",
    "PacsTransferError",
    "PacsUnavailableError",
    "error_for_exception",
    "error_for_status",
]


class PacsError(MedAIError):
    """A PACS (DICOM store) request failed."""

    #: Whether trying the same request again later may succeed.
    retryable: bool = False


class PacsUnavailableError(PacsError):
    """The PACS cannot be reached right now (connection refused, timeout, HTTP 5xx): try again later."""

    retryable = True


class PacsTransferError(PacsUnavailableError):
    """A transfer from the PACS arrived cut short or damaged (connection lost mid-answer, PACS restarted, fewer
    instances than the PACS lists): nothing of it is used, and the request is retried later like an outage."""


class PacsAuthError(PacsError):
    """The PACS refused the credentials (HTTP 401) or the permission (HTTP 403)."""


class PacsNotFoundError(PacsError):
    """The requested study, series or resource is not in the PACS."""


class PacsRejectedError(PacsError):
    """The PACS refused to store some instances.

    Attributes:
        failed: ``(SOPInstanceUID, reason)`` of every refused instance.
        stored: SOPInstanceUIDs the same request did store.
        already_present: SOPInstanceUIDs that were in the PACS before and were not sent again.
    """

    def __init__(
        self,
        message: str,
        failed: list[tuple[str, str]],
        stored: tuple[str, ...] = (),
        already_present: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.failed = list(failed)
        self.stored = tuple(stored)
        self.already_present = tuple(already_present)


def _credential_settings(credentials: Credentials | None) -> str:
    """The configuration keys to fix for the credentials in use (never their values)."""
    if credentials is not None and credentials.token is not None:
        return "`token_env` or `token_file` (or `token`)"
    if credentials is not None and credentials.username is not None:
        return "`username` and `password_env` or `password_file` (or `password`)"
    return "`username` with `password_env`/`password_file`, or `token_env`/`token_file`"


def error_for_status(
    status: int,
    url: str,
    action: str,
    credentials: Credentials | None = None,
    detail: str = "",
) -> PacsError:
    """The :class:`PacsError` for an HTTP error ``status`` answered by ``url`` while trying to ``action``.

    Args:
        status: the HTTP status code (4xx or 5xx).
        url: the address that answered (shown in the message).
        action: what was being done, e.g. ``"search for studies"``.
        credentials: the credentials that were sent (only their kind and user name are named).
        detail: the server's own explanation, when it gave one.
    """
    extra = f" The server said: {detail.strip()[:300]}" if detail.strip() else ""
    if status == 401:
        if credentials is None or credentials.is_empty:
            return PacsAuthError(
                f"The PACS at {url} requires credentials (HTTP 401) to {action}. Set "
                f"{_credential_settings(None)} in its configuration section."
            )
        who = f"user {credentials.username!r}" if credentials.username else "the bearer token"
        return PacsAuthError(
            f"The PACS at {url} rejected {who} (HTTP 401) when trying to {action}. Fix "
            f"{_credential_settings(credentials)} in its configuration section."
        )
    if status == 403:
        who = f"user {credentials.username!r}" if credentials is not None and credentials.username else "this client"
        return PacsAuthError(
            f"The PACS at {url} does not allow {who} to {action} (HTTP 403). Grant the permission on the PACS, or "
            f"use other credentials ({_credential_settings(credentials)}).{extra}"
        )
    if status == 404:
        return PacsNotFoundError(
            f"The PACS at {url} answered 'not found' (HTTP 404) when trying to {action}. Check the `url` setting "
            f"(for Orthanc's DICOMweb plugin it ends in /dicom-web) and that the requested item exists.{extra}"
        )
    if status >= 500 or status in (408, 429):
        return PacsUnavailableError(
            f"The PACS at {url} failed to {action} (HTTP {status}); it may be overloaded or restarting. "
            f"Try again later; if it persists, check the PACS log.{extra}"
        )
    return PacsError(
        f"The PACS at {url} refused to {action} (HTTP {status}).{extra} Check the request and the PACS log."
    )


def error_for_exception(exc: BaseException, url: str, action: str) -> PacsError:
    """The :class:`PacsError` for a ``requests`` exception raised before any HTTP answer came back."""
    import requests

    if isinstance(exc, requests.Timeout):
        return PacsUnavailableError(
            f"The PACS at {url} did not answer in time when trying to {action}. Check that it is running and "
            "reachable, or raise the `timeout` setting; try again later."
        )
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return PacsTransferError(
            f"The answer of the PACS at {url} was cut off when trying to {action} (the connection broke "
            "mid-transfer); nothing of it is used. Try again later."
        )
    if isinstance(exc, requests.ConnectionError):
        return PacsUnavailableError(
            f"Cannot connect to the PACS at {url} to {action} ({_reason(exc)}). Check that the server is running "
            "and that the `url` setting (host, port) is right; try again later."
        )
    return PacsError(f"The request to the PACS at {url} to {action} failed ({type(exc).__name__}). Check `url`.")


def _reason(exc: Any) -> str:
    """A short reason for a connection error, without the (possibly long) urllib3 repr."""
    text = str(exc)
    for key in ("Connection refused", "Name or service not known", "No route to host", "timed out", "reset"):
        if key in text:
            return key.lower()
    return type(exc).__name__
