"""Ending requests that are still running when the server stops.

On Ctrl-C/SIGTERM uvicorn stops accepting connections, waits `timeout_graceful_shutdown` for in-flight
requests, then cancels their tasks. `QuietShutdown` (outermost ASGI middleware) turns that
cancellation into a proper answer instead of a traceback; the engine requests behind them are
aborted on the way out by the serving code's `finally` blocks.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetserve.runtime.server.errors import error_body
from fleetserve.runtime.server.streaming import SSE_DONE, sse_event

logger = logging.getLogger(__name__)


class QuietShutdown:
    """Requests still running when uvicorn's graceful-shutdown timeout ends are cancelled by uvicorn
    (their engine requests are aborted on the way out). Answer them properly instead of a traceback:
    a 503 if nothing was sent yet, else an error event and `data: [DONE]` to end the stream."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            logger.info("%s %s cancelled at shutdown", scope["method"], scope["path"])
            error = error_body(503, "the server is shutting down")
            if not started:
                await JSONResponse(error, 503)(scope, receive, send)
                return
            body = sse_event(error) + SSE_DONE
            await send({"type": "http.response.body", "body": body, "more_body": False})
