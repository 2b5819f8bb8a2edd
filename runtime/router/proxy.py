"""Forwards one OpenAI request to one worker and its answer back, bytes untouched.

Per request: parse the body only to compute the routing key and the adapter; hold while no worker
is ready (bounded in count and time, then 503 with Retry-After); `select()` a worker; send the
original bytes. A failure before the worker answered (connection refused or reset, a 503 queue-full
answer) is retried on another worker, at most `max_retries` times; once the answer started, nothing
is retried, and a worker that breaks off mid-answer makes the router break off the client's
connection too, so the client sees the failure. The selection is released in `finally`; a client
that leaves cancels the handler (aiohttp handler cancellation), which closes the worker connection,
and the worker aborts the request.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from fleetserve.runtime.router.balancer import Balancer, Selection
from fleetserve.runtime.router.config import RouterConfig
from fleetserve.runtime.router.errors import error_response
from fleetserve.runtime.router.keys import RequestKey
from fleetserve.runtime.router.metrics import RouterMetrics
from fleetserve.runtime.router.prompts import PromptEncoder, is_adapter_path, request_key, requested_adapter
from fleetserve.runtime.router.usage import UsageTap
from fleetserve.runtime.router.workers import WorkerSet, WorkerState

logger = logging.getLogger(__name__)

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "host", "content-length"})
WORKER_HEADER = "X-Fleetserve-Worker"
# A request that lost its connection before any answer: a pooled keep-alive connection the worker had
# just closed (tried once more on the same worker), or the worker died with the request.
DROPPED_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def forward_headers(headers: Any) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP)


def _parse(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


@dataclass
class Proxy:
    config: RouterConfig
    workers: WorkerSet
    balancer: Balancer
    metrics: RouterMetrics
    session: aiohttp.ClientSession
    encoder: Callable[[], PromptEncoder | None]

    @property
    def num_held(self) -> int:
        return self.metrics.held[0]

    def served_names(self) -> set[str]:
        encoder = self.encoder()
        return {encoder.model} if encoder is not None and encoder.model else set()

    async def route_key(self, kind: str, parsed: dict[str, Any]) -> tuple[str | None, RequestKey]:
        """The adapter to filter workers by (None: any worker) and the request's routing key.

        The key (template, tokenizer, hashes: about a millisecond per thousand prompt tokens) is
        computed in a worker thread, so the event loop keeps relaying other answers meanwhile.
        """
        adapter = requested_adapter(parsed, self.served_names(), self.workers.adapters())
        key = await asyncio.to_thread(request_key, kind, parsed, self.encoder(), adapter)
        if adapter is not None and is_adapter_path(adapter) and adapter not in self.workers.adapters():
            return None, key._replace(adapter=None)  # a folder: the worker maps it to its adapter
        return adapter, key

    async def hold(self, deadline: float, until: Callable[[], bool]) -> bool:
        """Waits until `until()` holds (re-checked at every change of the workers, a released request
        included, and at least every second) or `deadline`; False when too many are held or time ran out."""
        if self.num_held >= self.config.max_held_requests:
            return False
        self.metrics.held[0] += 1
        start = time.monotonic()
        try:
            while not until():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                await self.workers.wait_changed(min(left, 1.0))
            return True
        finally:
            self.metrics.held[0] -= 1
            self.metrics.hold_time.observe(time.monotonic() - start)

    def _is_spreading(self, until: float | None) -> bool:
        """A held request fills only free batch slots while more workers are starting, until ``until``."""
        return until is not None and time.monotonic() < until and self.workers.any_starting()

    def _room_or_none_starting(self, adapter: str | None) -> bool:
        return self.balancer.has_room(adapter) or not self.workers.any_starting()

    def _unavailable(self, message: str) -> web.Response:
        self.metrics.rejected.labels("no_worker").inc()
        return error_response(503, message, headers={"Retry-After": str(self.config.retry_after_secs)})

    async def handle(self, request: web.Request, kind: str) -> web.StreamResponse:
        start = time.monotonic()
        body = await request.read()
        parsed = _parse(body)
        adapter, key = await self.route_key(kind, parsed)
        headers = forward_headers(request.headers)
        tried: set[str] = set()
        hold_deadline: float | None = None
        spread_until: float | None = None  # after a hold: batches first while workers start, until then
        last_503: tuple[int, bytes, CIMultiDict[str]] | None = None
        while len(tried) <= self.config.max_retries:
            spreading = self._is_spreading(spread_until)
            selection = self.balancer.select(key, exclude=tried, room_only=spreading)
            if selection is None:
                why = self.balancer.why_none(adapter)
                if why.adapter_missing:
                    self.metrics.rejected.labels("adapter_not_found").inc()
                    return error_response(404, f"the LoRA adapter '{adapter}' is not loaded on any worker", "model")
                if spreading and not why.no_ready_worker:
                    # Held through a cold start: the ready workers' batches are full and more workers are
                    # starting. Wait for a free slot or a new worker rather than queue on the first one.
                    assert spread_until is not None
                    if self.balancer.has_room(adapter) or not await self.hold(
                            spread_until, functools.partial(self._room_or_none_starting, adapter)):
                        spread_until = None  # room only where it was tried, spread time over, or hold full
                    continue
                if not why.no_ready_worker:  # every ready worker has been tried
                    break
                if not self.config.is_holding_on:
                    return self._unavailable("no worker is ready")
                if self.num_held >= self.config.max_held_requests:
                    return self._unavailable("no worker is ready and too many requests are held")
                if hold_deadline is None:
                    hold_deadline = time.monotonic() + self.config.max_hold_secs
                if not await self.hold(hold_deadline, lambda: bool(self.workers.routable())):
                    return self._unavailable("no worker became ready in time")
                if spread_until is None and self.config.held_spread_secs > 0:
                    spread_until = time.monotonic() + self.config.held_spread_secs
                adapter, key = await self.route_key(kind, parsed)  # now with a worker's tokenizer and adapters
                continue
            if tried:
                self.metrics.retries.inc()
            self.metrics.decisions.labels(self.balancer.policy.name, selection.reason).inc()
            outcome = await self._attempt(request, selection, body, headers, start)
            if isinstance(outcome, web.StreamResponse):
                return outcome
            tried.add(selection.worker.url)
            if outcome is not None:
                last_503 = outcome
        return self._exhausted(last_503)

    def _exhausted(self, last_503: tuple[int, bytes, CIMultiDict[str]] | None) -> web.Response:
        if last_503 is not None:
            status, payload, headers = last_503
            return web.Response(status=status, body=payload, headers=headers)
        self.metrics.rejected.labels("upstream_failed").inc()
        return error_response(502, "no worker could take the request")

    async def _attempt(self, request: web.Request, selection: Selection, body: bytes, headers: CIMultiDict[str],
                       start: float) -> web.StreamResponse | tuple[int, bytes, CIMultiDict[str]] | None:
        """One try on one worker: the client's answer, or a retriable failure (a 503 answer or None)."""
        worker = selection.worker
        self.metrics.requests.labels(worker.url).inc()
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_secs,
                                        sock_connect=self.config.connect_timeout_secs)
        try:
            try:
                upstream = await self._send(request, worker, body, headers, timeout)
            except TimeoutError:
                self.metrics.upstream_errors.labels(worker.url, "timeout").inc()
                return error_response(504, "the worker did not answer in time")
            if upstream is None:
                return None
            try:
                if upstream.status == 503:
                    payload = await upstream.read()
                    self.metrics.upstream_errors.labels(worker.url, "503").inc()
                    return upstream.status, payload, forward_headers(upstream.headers)
                return await self._relay(request, upstream, selection, start)
            finally:
                upstream.close()
        finally:
            selection.release()

    async def _send(self, request: web.Request, worker: WorkerState, body: bytes, headers: CIMultiDict[str],
                    timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse | None:
        """The worker's answer (headers received), or None when it could not be had (retry elsewhere).

        A refused connection ejects the worker (its poll brings it back). A connection dropped before
        any answer is tried once more on the same worker first: most often it is a keep-alive connection
        the worker closed just as it was reused, and the worker still holds the request's cache.
        """
        for attempt in range(2):
            try:
                return await self.session.request(request.method, worker.url + request.path_qs, data=body,
                                                  headers=headers, timeout=timeout)
            except aiohttp.ClientConnectorError as exc:
                self.metrics.upstream_errors.labels(worker.url, "connect").inc()
                logger.warning("worker %s refused the connection (%s); ejecting it", worker.url, exc)
                if worker.is_healthy:
                    worker.is_healthy = False
                    self.workers.notify()
                return None
            except DROPPED_ERRORS as exc:
                self.metrics.upstream_errors.labels(worker.url, "dropped").inc()
                logger.info("worker %s dropped the connection before answering (%r), %s", worker.url, exc,
                            "trying it again" if attempt == 0 else "trying another worker")
        return None

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse, selection: Selection,
                     start: float) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=forward_headers(upstream.headers))
        response.headers[WORKER_HEADER] = selection.worker.url
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        tap = UsageTap(is_sse=upstream.content_type == "text/event-stream")
        chunks = upstream.content.iter_any().__aiter__()
        while True:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
                self.metrics.upstream_errors.labels(selection.worker.url, "broken_answer").inc()
                self.metrics.responses.labels("broken").inc()
                logger.warning("worker %s broke off an answer (%r); closing the client's connection",
                               selection.worker.url, exc)
                if request.transport is not None:
                    request.transport.close()
                return response
            if not selection.is_answered:
                selection.first_byte()
                self.metrics.first_byte.observe(time.monotonic() - start)
            tap.feed(chunk)
            try:
                await response.write(chunk)
            except ConnectionResetError:  # the client left: closing the worker's answer aborts it there
                self.metrics.responses.labels("client_gone").inc()
                return response
        try:
            await response.write_eof()
        except ConnectionResetError:
            self.metrics.responses.labels("client_gone").inc()
            return response
        self.metrics.responses.labels(str(upstream.status)).inc()
        self.metrics.latency.observe(time.monotonic() - start)
        self._record_usage(tap, selection)
        return response

    def _record_usage(self, tap: UsageTap, selection: Selection) -> None:
        usage = tap.finish()
        if usage is None:
            return
        self.metrics.prompt_tokens.inc(usage.prompt_tokens)
        if usage.cached_tokens is not None:
            self.metrics.cached_tokens.labels("reported").inc(usage.cached_tokens)
            self.metrics.cached_tokens.labels("predicted").inc(selection.predicted_cached_tokens)

