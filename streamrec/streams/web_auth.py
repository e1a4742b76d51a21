"""A bearer token on every request to the worker's web server (``/metrics`` and Faust's own
pages), installed as an aiohttp middleware on the Faust web app."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from streamrec.config import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_middleware(token: str) -> Any:
    """Answer 401 unless the request carries ``Authorization: Bearer <token>``."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        # Constant time: how much of a guess matched must not show in the response time.
        if not hmac.compare_digest(given, expected):
            return web.Response(status=401, text="401: Authorization: Bearer <token> needed\n",
                                headers={"WWW-Authenticate": 'Bearer realm="streamrec"'})
        return await handler(request)

    return require_token


def web_application_options(settings: Settings) -> dict[str, Any]:
    """Faust's ``web_application_options`` (keyword arguments of ``aiohttp.web.Application``)."""
    return {"middlewares": [token_middleware(settings.web_token)]} if settings.web_token else {}
