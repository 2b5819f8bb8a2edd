"""Keeps each worker's state current by polling it: cache blocks, adapters, queue, health.

One task per worker polls GET /cache_state (wire.PATH_CACHE_STATE) every `interval` seconds: a
snapshot when the epoch changed or the router is new, else stored/removed deltas; with them the
loaded adapters and the worker's running/waiting counts. A worker without /cache_state (404: an
older runtime, another server) is probed on /health instead and routed on the router's own
predictions. Failed polls eject the worker after `failure_threshold` in a row; it keeps being probed
and comes back at the first answer. The first worker to answer also gives the router its tokenizer
(GET /routing_info) unless one was given on the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from fleetserve.runtime import wire
from fleetserve.runtime.router.prompts import PromptEncoder
from fleetserve.runtime.router.workers import WorkerSet, WorkerState

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class PollCursor:
    epoch: str | None = None
    seq: int = 0


def apply_cache_state(worker: WorkerState, cursor: PollCursor, state: dict[str, Any]) -> None:
    """Pure: folds one /cache_state answer into the worker's state and the poll cursor."""
    epoch = str(state.get("epoch"))
    snapshot = state.get("snapshot")
    if snapshot is not None:
        if cursor.epoch is not None and epoch != cursor.epoch:
            worker.cache.clear()  # the worker restarted or reset its cache: predictions are void too
        worker.cache.apply_snapshot(int(h, 16) for h in snapshot)
    elif epoch == cursor.epoch:
        worker.cache.apply_delta((int(h, 16) for h in state.get("stored") or ()),
                                 (int(h, 16) for h in state.get("removed") or ()))
    cursor.epoch = epoch
    cursor.seq = int(state.get("seq", 0))
    worker.adapters = frozenset(state.get("adapters") or ())
    worker.reported_running = int(state.get("num_running", 0))
    worker.reported_waiting = int(state.get("num_waiting", 0))
    cap = state.get("max_running_requests")
    worker.max_running = int(cap) if isinstance(cap, int) and cap > 0 else None


@dataclass(slots=True)
class StateSync:
    workers: WorkerSet
    session: aiohttp.ClientSession
    headers: dict[str, str]
    interval: float = 0.2
    probe_interval: float = 1.0
    timeout: float = 2.0
    failure_threshold: int = 3
    encoder: PromptEncoder | None = None
    fetch_routing_info: bool = True
    on_event: Callable[[str, WorkerState], None] | None = None  # ("ejected"|"ready", worker)
    clock: Callable[[], float] = time.monotonic
    _tasks: dict[str, asyncio.Task] = field(default_factory=dict)
    _info_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def start(self, worker: WorkerState) -> None:
        if worker.url not in self._tasks:
            self._tasks[worker.url] = asyncio.get_running_loop().create_task(self._run(worker))

    def stop(self, worker: WorkerState) -> None:
        task = self._tasks.pop(worker.url, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _get(self, url: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with self.session.get(url, params=params, headers=self.headers, timeout=timeout) as resp:
            if resp.status != 200:
                return resp.status, None
            return 200, await resp.json(content_type=None)

    async def poll_once(self, worker: WorkerState, cursor: PollCursor) -> bool:
        """One poll; True if the worker answered."""
        try:
            if worker.supports_cache_state is not False:
                params = {"after": str(cursor.seq)}
                if cursor.epoch is not None:
                    params["epoch"] = cursor.epoch
                status, state = await self._get(worker.url + wire.PATH_CACHE_STATE, params)
                if status == 200:
                    worker.supports_cache_state = True
                    apply_cache_state(worker, cursor, state)
                    return True
                if status != 404:
                    return False
                logger.warning("worker %s has no %s: routing on the router's own predictions",
                               worker.url, wire.PATH_CACHE_STATE)
                worker.supports_cache_state = False
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with self.session.get(worker.url + wire.PATH_HEALTH, headers=self.headers, timeout=timeout) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            logger.debug("poll of %s failed: %r", worker.url, exc)
            return False

    async def _ensure_encoder(self, worker: WorkerState) -> None:
        if self.encoder is not None or not self.fetch_routing_info:
            return
        async with self._info_lock:
            if self.encoder is not None:
                return
            try:
                status, info = await self._get(worker.url + wire.PATH_ROUTING_INFO)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                logger.debug("routing info of %s failed: %r", worker.url, exc)
                return
            if status == 404:
                logger.warning("worker %s has no %s: routing on text keys", worker.url, wire.PATH_ROUTING_INFO)
                self.fetch_routing_info = False
                return
            if status != 200 or not info or not info.get("tokenizer"):
                return
            if info.get("hash_scheme") not in (None, wire.BLOCK_HASH_SCHEME):
                logger.warning("worker %s hashes blocks with %s, not %s: routing on predictions only",
                               worker.url, info.get("hash_scheme"), wire.BLOCK_HASH_SCHEME)
            encoder = await asyncio.to_thread(PromptEncoder.from_routing_info, info)
            self.encoder = encoder
            logger.info("routing on %s's tokenizer (model %s, page size %d)", worker.url, encoder.model,
                        encoder.page_size)

    def check_in(self, worker: WorkerState, answered: bool) -> None:
        if answered:
            if worker.mark_ok():
                logger.info("worker %s ready", worker.url)
                self.workers.notify()
                if self.on_event:
                    self.on_event("ready", worker)
        elif worker.mark_failure(self.failure_threshold):
            logger.warning("worker %s ejected after %d failed polls", worker.url, worker.consecutive_failures)
            self.workers.notify()
            if self.on_event:
                self.on_event("ejected", worker)

    async def _run(self, worker: WorkerState) -> None:
        cursor = PollCursor()
        while not worker.is_removed:
            answered = await self.poll_once(worker, cursor)
            if answered:
                await self._ensure_encoder(worker)
            self.check_in(worker, answered)
            worker.cache.expire(self.clock())
            await asyncio.sleep(self.interval if worker.is_healthy else self.probe_interval)
