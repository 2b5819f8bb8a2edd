"""A fake worker speaking the router <-> runtime contract (wire.py), for fast router tests.

Not the runtime: no model. It serves /routing_info (a given tokenizer), /cache_state (snapshot or
deltas of the pages its requests "cached"), /v1/chat/completions and /v1/completions (fixed text,
streaming or not, `usage.prompt_tokens_details.cached_tokens` counted from its own cache), /v1/models,
/health, and knobs to fail: 503 answers, slow or hanging answers, breaking off mid-stream.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fleetserve.runtime import wire
from fleetserve.runtime.router.prompts import PromptEncoder, request_key, requested_adapter

MODEL = "fake-model"
WORDS = ["Hello", " from", " the", " fake", " worker", " ✓"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class FakeWorker:
    encoder: PromptEncoder | None = None
    adapters: set[str] = field(default_factory=set)
    api_key: str | None = None
    has_cache_state: bool = True
    num_503: int = 0  # answer this many requests with 503 (queue full)
    num_resets: int = 0  # drop the connection of this many requests without a byte of answer
    chunk_delay: float = 0.0
    hang: bool = False  # never answer a completion (until the client leaves)
    break_after_chunks: int | None = None  # close the connection after this many SSE chunks
    epoch: str = "e1"
    blocks: set[int] = field(default_factory=set)
    events: list[tuple[int, str, int]] = field(default_factory=list)  # (seq, "stored"|"removed", hash)
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)  # the body of each answer, as written
    cancelled: int = 0
    num_running: int = 0
    max_running: int | None = None  # the batch cap /cache_state reports (None: not reported)
    port: int = field(default_factory=free_port)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeWorker:
        app = web.Application()
        app.router.add_get(wire.PATH_HEALTH, self.health)
        app.router.add_get(wire.PATH_ROUTING_INFO, self.routing_info)
        if self.has_cache_state:
            app.router.add_get(wire.PATH_CACHE_STATE, self.cache_state)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model_id}", self.model)
        app.router.add_post("/v1/chat/completions", functools.partial(self.complete, kind="chat"))
        app.router.add_post("/v1/completions", functools.partial(self.complete, kind="completions"))
        app.router.add_post("/v1/embeddings", self.embeddings)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def _authorized(self, request: web.Request) -> bool:
        return not self.api_key or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def routing_info(self, request: web.Request) -> web.Response:
        if self.encoder is None:
            raise web.HTTPNotFound()
        e = self.encoder
        return web.json_response({"model": MODEL, "page_size": e.page_size, "hash_scheme": wire.BLOCK_HASH_SCHEME,
                                  "max_model_len": 4096, "is_simulated": True, "tokenizer": e.tokenizer.to_str(),
                                  "chat_template": e.chat_template, "special_tokens": e.special_tokens,
                                  "add_bos": e.add_bos})

    async def cache_state(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"object": "error"}, status=401)
        seq = len(self.events)
        common = {"epoch": self.epoch, "seq": seq, "adapters": sorted(self.adapters),
                  "num_running": self.num_running, "num_waiting": 0}
        if self.max_running is not None:
            common["max_running_requests"] = self.max_running
        if request.query.get("epoch") != self.epoch:
            return web.json_response({**common, "snapshot": [wire.hash_hex(h) for h in self.blocks],
                                      "stored": [], "removed": []})
        after = int(request.query.get("after", "0"))
        new = self.events[after:]
        return web.json_response({**common, "snapshot": None,
                                  "stored": [wire.hash_hex(h) for _, kind, h in new if kind == "stored"],
                                  "removed": [wire.hash_hex(h) for _, kind, h in new if kind == "removed"]})

    def evict_all(self) -> None:
        for h in list(self.blocks):
            self.events.append((len(self.events) + 1, "removed", h))
        self.blocks.clear()

    async def models(self, request: web.Request) -> web.Response:
        cards = [{"id": MODEL, "object": "model", "owned_by": "fake"}]
        cards += [{"id": f"{MODEL}:{a}", "object": "model", "owned_by": "fake", "parent": MODEL}
                  for a in sorted(self.adapters)]
        return web.json_response({"object": "list", "data": cards})

    async def model(self, request: web.Request) -> web.Response:
        if request.match_info["model_id"] != MODEL:
            return web.json_response({"object": "error", "code": 404}, status=404)
        return web.json_response({"id": MODEL, "object": "model", "max_model_len": 4096})

    async def embeddings(self, request: web.Request) -> web.Response:
        self.received.append({"path": request.path, "body": await request.read(), "headers": dict(request.headers)})
        return web.json_response({"object": "list", "data": [{"object": "embedding", "index": 0,
                                                              "embedding": [0.1, 0.2]}], "model": MODEL})

    def _cache(self, body: dict[str, Any], kind: str) -> tuple[int, int]:
        """(prompt tokens, cached tokens) for this request, storing its pages as the runtime would."""
        adapter = requested_adapter(body, {MODEL})
        key = request_key(kind, body, self.encoder, adapter)
        cached = 0
        for h in key.block_hashes:
            if h not in self.blocks:
                break
            cached += key.page_size
        for h in key.block_hashes:
            if h not in self.blocks:
                self.blocks.add(h)
                self.events.append((len(self.events) + 1, "stored", h))
        return key.num_tokens, cached

    async def complete(self, request: web.Request, kind: str) -> web.StreamResponse:
        raw = await request.read()
        self.received.append({"path": request.path, "body": raw, "headers": dict(request.headers)})
        if not self._authorized(request):
            return web.json_response({"object": "error", "message": "invalid API key", "type": "authentication_error",
                                      "param": None, "code": 401}, status=401)
        if self.num_resets > 0:
            self.num_resets -= 1
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if self.num_503 > 0:
            self.num_503 -= 1
            return web.json_response({"object": "error", "message": "queue full", "type": "service_unavailable_error",
                                      "param": None, "code": 503}, status=503)
        body = json.loads(raw)
        prompt_tokens, cached = self._cache(body, kind)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(WORDS),
                 "total_tokens": prompt_tokens + len(WORDS), "prompt_tokens_details": {"cached_tokens": cached}}
        self.num_running += 1
        try:
            if self.hang:
                await asyncio.sleep(3600)
            if not body.get("stream"):
                text = "".join(WORDS)
                choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                          if kind == "chat" else {"index": 0, "text": text, "finish_reason": "stop"})
                answer = web.json_response({"id": "x", "object": "chat.completion" if kind == "chat" else "text_completion",
                                            "model": body.get("model", MODEL), "choices": [choice], "usage": usage})
                assert isinstance(answer.body, bytes)
                self.sent.append(answer.body)
                return answer
            return await self._stream(request, kind, body, usage)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.num_running -= 1

    async def _stream(self, request: web.Request, kind: str, body: dict, usage: dict) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        self.sent.append(b"")

        async def write(data: bytes) -> None:
            self.sent[-1] += data
            await response.write(data)

        for i, word in enumerate(WORDS):
            if self.break_after_chunks is not None and i >= self.break_after_chunks:
                assert request.transport is not None
                request.transport.close()
                return response
            delta = {"index": 0, "delta": {"content": word}} if kind == "chat" else {"index": 0, "text": word}
            await write(f"data: {json.dumps({'id': 'x', 'choices': [delta]}, ensure_ascii=False)}\n\n".encode())
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        if (body.get("stream_options") or {}).get("include_usage"):
            await write(f"data: {json.dumps({'id': 'x', 'choices': [], 'usage': usage})}\n\n".encode())
        await write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
