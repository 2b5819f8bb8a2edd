"""A test double of an OpenAI-compatible streaming server with known, controlled timings.

Every request sleeps `ttft_s` before its first token and `itl_s` between tokens, and emits exactly
`max_tokens` pieces of `piece` text. The request's model name picks a misbehaviour:
  fail-500 / fail-503   answer that HTTP status with an OpenAI-style error body
  drop                  send two tokens, then cut the connection mid-stream
  no-done               send the tokens, then end the stream without "data: [DONE]"
  stream-error          send one token, then an error object inside the 200 stream
  no-usage              send no usage chunk (the client must count tokens itself)
  held-back             every second token comes with empty text, as for a partial UTF-8 character
Every stream closes with a finish_reason-only chunk (no token), as some servers send.
Runs uvicorn in a thread with its own event loop, so the client's clock is not shared with it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

STARTUP_TIMEOUT_S = 10.0


@dataclass
class FakeBehaviour:
    ttft_s: float = 0.05
    itl_s: float = 0.01
    piece: str = " ka"
    prompt_tokens: int | None = None  # usage.prompt_tokens to report; None leaves it out
    model: str = "fake-model"
    received: list[dict] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


def sse(obj: object) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def chunk(endpoint: str, text: str | None, usage: dict | None = None, finish: str | None = None) -> dict:
    if text is None and finish is None:
        choices = []
    elif endpoint == "chat":
        delta = {} if text is None else {"content": text}
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}]
    else:
        choices = [{"index": 0, "text": text or "", "finish_reason": finish}]
    return {"id": "x", "object": "chunk", "choices": choices, "usage": usage}


def usage_for(behaviour: FakeBehaviour, max_tokens: int) -> dict:
    usage = {"completion_tokens": max_tokens}
    if behaviour.prompt_tokens is not None:
        usage["prompt_tokens"] = behaviour.prompt_tokens
    return usage


async def token_stream(behaviour: FakeBehaviour, endpoint: str, body: dict):
    model, max_tokens = body["model"], int(body["max_tokens"])
    behaviour.in_flight += 1
    behaviour.max_in_flight = max(behaviour.max_in_flight, behaviour.in_flight)
    try:
        if endpoint == "chat":  # a role-only chunk at once: it must not count as the first token
            yield sse({"id": "x", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        await asyncio.sleep(behaviour.ttft_s)
        for index in range(max_tokens):
            if index > 0:
                await asyncio.sleep(behaviour.itl_s)
            if model == "drop" and index == 2:
                raise ConnectionAbortedError("fake server drops the stream")
            if model == "stream-error" and index == 1:
                yield sse(
                    {"object": "error", "message": "engine fault", "type": "InternalError", "code": 500}
                )
                return
            held_back = model == "held-back" and index % 2 == 1
            yield sse(chunk(endpoint, "" if held_back else behaviour.piece))
        yield sse(chunk(endpoint, None, finish="length"))
        if model != "no-usage":
            yield sse(chunk(endpoint, None, usage_for(behaviour, max_tokens)))
        if model != "no-done":
            yield "data: [DONE]\n\n"
    finally:
        behaviour.in_flight -= 1


def build_app(behaviour: FakeBehaviour) -> FastAPI:
    app = FastAPI()

    async def complete(request: Request, endpoint: str):
        body = await request.json()
        behaviour.received.append(body)
        if body["model"] in ("fail-500", "fail-503"):
            status = int(body["model"].split("-")[1])
            error = {
                "object": "error",
                "message": "queue full",
                "type": "Error",
                "param": None,
                "code": status,
            }
            return JSONResponse(error, status_code=status)
        return StreamingResponse(token_stream(behaviour, endpoint, body), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, "completions")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await complete(request, "chat")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": behaviour.model, "object": "model"}]}

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeServer:
    """Context manager: serves build_app(behaviour) on 127.0.0.1 in a background thread."""

    def __init__(self, behaviour: FakeBehaviour):
        self.behaviour = behaviour
        self.port = free_port()
        config = uvicorn.Config(build_app(behaviour), host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=STARTUP_TIMEOUT_S)
