"""The access token of a ``medai view`` server: every HTTP request and the WebSocket need it.

Like Jupyter: a random token in the URL the command prints. The first request that carries ``?token=`` gets a
cookie (HttpOnly, SameSite=Strict) so that the page's own assets and its WebSocket, which do not repeat the query,
are let in; anything else is answered 403 before a handler runs. The token is compared in constant time and never
logged.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["COOKIE_NAME", "new_token", "token_middleware"]

COOKIE_NAME = "medai_view_token"


def new_token() -> str:
    """A fresh random token (32 bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_middleware(token: str) -> Callable[..., Awaitable[Any]]:
    """An aiohttp middleware that refuses (403) every request without ``token`` in its query or cookie.

    Raises:
        ValueError: an empty token (a server that shows patient images must not run open).
    """
    from aiohttp import web  # lazy: aiohttp comes with trame (requirements-view.txt)

    if not token:
        raise ValueError("medai view needs a non-empty access token")
    expected = token.encode("utf-8")

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
        in_query = request.query.get("token", "")
        given = in_query or request.cookies.get(COOKIE_NAME, "")
        if not hmac.compare_digest(given.encode("utf-8"), expected):
            return web.Response(status=403, text="403: this MedAI view needs the token from the URL it printed.\n")
        response = await handler(request)
        if in_query and isinstance(response, web.StreamResponse) and not response.prepared:
            response.set_cookie(COOKIE_NAME, token, httponly=True, samesite="Strict", path="/")
        return response

    return guard
