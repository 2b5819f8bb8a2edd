"""Server-sent events and the plumbing around an HTTP request's lifetime.

- `sse_event` / `SSE_DONE`: OpenAI's framing (`data: <json>\\n\\n`, ending with `data: [DONE]`).
- `SSEResponse`: a StreamingResponse that always closes its body iterator, so a client that goes
  away closes the engine streams behind it (which aborts their requests).
- `merge_streams`: interleaves several engine streams (a completions request with many prompts).
- `run_unless_disconnected`: runs a non-streaming request while watching for the client leaving.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

T = TypeVar("T")

SSE_DONE = b"data: [DONE]\n\n"
DISCONNECT_POLL_S = 0.1
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; logged, never received


class ClientDisconnected(Exception):
    """The client closed the connection before its response was ready."""


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # one encoder: dumps(**kw) builds one per call


def to_json(data: Any) -> bytes:
    return _JSON.encode(data).encode()


def sse_event(data: dict[str, Any]) -> bytes:
    return b"data: " + to_json(data) + b"\n\n"


class ChunkEncoder:
    """The SSE events of one response; its fixed fields (id, object, created, model, system_fingerprint)
    are encoded once."""

    __slots__ = ("head",)

    def __init__(self, request_id: str, obj: str, created: int, model: str, system_fingerprint: str | None = None):
        fixed = to_json({"id": request_id, "object": obj, "created": created, "model": model,
                         "system_fingerprint": system_fingerprint})
        self.head = b"data: " + fixed[:-1] + b',"choices":['

    def event(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        body = b",".join(to_json(choice) for choice in choices)
        if usage is None:
            return self.head + body + b"]}\n\n"
        return self.head + body + b'],"usage":' + to_json(usage) + b"}\n\n"


async def aclose_shielded(stream: Any) -> None:
    """Close an async generator even while the surrounding scope is being cancelled."""
    with anyio.CancelScope(shield=True):
        await stream.aclose()


class SSEResponse(StreamingResponse):
    """`on_close` runs once the response is over, however it ended: a client that left before the first
    byte never starts the body generator, so the generator's own `finally` (which releases the admission
    ticket) never runs — this does."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None] | None = None):
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.on_close is not None:
                self.on_close()

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose_shielded(self.body_iterator)


async def _pump(index: int, stream: AsyncIterator[T], queue: asyncio.Queue) -> None:
    try:
        async for item in stream:
            await queue.put((index, item, None))
    except Exception as exc:  # handed to the consumer, which re-raises it
        await queue.put((index, None, exc))
        return
    await queue.put((index, None, StopAsyncIteration()))


async def merge_streams(streams: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Yield `(stream index, item)` as items arrive; closing this closes every stream."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield 0, item
        return
    queue: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(_pump(i, s, queue)) for i, s in enumerate(streams)]
    try:
        num_open = len(tasks)
        while num_open:
            index, item, end = await queue.get()
            if end is None:
                yield index, item
            elif isinstance(end, StopAsyncIteration):
                num_open -= 1
            else:
                raise end
    finally:
        for task in tasks:
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*tasks, return_exceptions=True)


async def run_unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; if the client disconnects first, cancel it and raise ClientDisconnected."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientDisconnected()
    finally:
        if not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(task, return_exceptions=True)
