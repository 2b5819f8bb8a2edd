"""API-key check (`--api-key` / FLEETSERVE_API_KEY) as a pure ASGI middleware.

Every path needs `Authorization: Bearer <key>` except the probes and the scrape target
(`OPEN_PATHS`): Kubernetes probes and Prometheus carry no key. CORS preflights (OPTIONS) pass.
A pure ASGI middleware, unlike BaseHTTPMiddleware, leaves streaming responses untouched.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from fleetserve.runtime.server.errors import error_body
from fleetserve.runtime.wire import PATH_HEALTH, PATH_METRICS

OPEN_PATHS = frozenset({PATH_HEALTH, "/health_generate", PATH_METRICS})


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def is_authorized(api_key: str, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(token.encode(), api_key.encode())


class APIKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str, open_paths: frozenset[str] = OPEN_PATHS):
        self.app = app
        self.api_key = api_key
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope["headers"])
        if is_authorized(self.api_key, token):
            await self.app(scope, receive, send)
            return
        message = "missing API key" if token is None else "invalid API key"
        body = json.dumps(error_body(401, message)).encode()
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
