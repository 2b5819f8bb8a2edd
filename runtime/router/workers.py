"""The router's view of its workers: the set discovery gives it and each worker's live state.

A worker takes new requests when discovery lists it as ready (a static URL always is; a
terminating endpoint is not) and the router has seen it answer (its cache-state poll, or /health for
workers without /cache_state). Failures eject it until a poll succeeds again. A worker that
discovery drops leaves the set at once; requests already sent to it keep their own reference and
finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from fleetserve.runtime.router.block_index import BlockIndex

logger = logging.getLogger(__name__)

Phase = Literal["pending", "ready", "ejected", "starting", "draining"]
EndpointState = Literal["ready", "starting", "terminating"]  # as discovery lists an endpoint


@dataclass(slots=True)
class WorkerState:
    url: str
    cache: BlockIndex
    is_discovered_ready: bool = True  # False while its endpoint is terminating (drain: no new requests)
    is_healthy: bool = False  # it answered its last poll (or proxied request)
    has_answered: bool = False  # it has answered at least once
    is_removed: bool = False  # discovery dropped it
    in_flight: int = 0  # requests the router has sent there and not finished
    pending_prefill_tokens: int = 0  # uncached prompt tokens of in-flight requests with no reply byte yet
    reported_running: int = 0
    reported_waiting: int = 0
    adapters: frozenset[str] = frozenset()
    max_running: int | None = None  # the worker's batch cap, from /cache_state (None: not reported)
    is_starting: bool = False  # discovery lists it as not ready yet (a pod starting), not as terminating
    supports_cache_state: bool | None = None  # None until the first poll answers
    consecutive_failures: int = 0

    @property
    def is_routable(self) -> bool:
        return self.is_discovered_ready and self.is_healthy and not self.is_removed

    @property
    def load(self) -> int:
        """Requests there: the router's own count, or the worker's if other routers send it more."""
        return max(self.in_flight, self.reported_running + self.reported_waiting)

    @property
    def has_room(self) -> bool:
        """Fewer requests than its batch cap (or no cap reported): one more would run, not wait."""
        return self.max_running is None or self.load < self.max_running

    @property
    def phase(self) -> Phase:
        if not self.is_discovered_ready:
            return "starting" if self.is_starting else "draining"
        if self.is_healthy:
            return "ready"
        return "ejected" if self.has_answered else "pending"

    def mark_ok(self) -> bool:
        """Records an answer; True if this brings the worker (back) into rotation."""
        self.consecutive_failures = 0
        was_healthy = self.is_healthy
        self.is_healthy = self.has_answered = True
        return not was_healthy

    def mark_failure(self, threshold: int) -> bool:
        """Records a failure; True if it ejects the worker now."""
        self.consecutive_failures += 1
        if self.is_healthy and self.consecutive_failures >= threshold:
            self.is_healthy = False
            return True
        return False


@dataclass(slots=True)
class WorkerSet:
    """All known workers by URL, and an event fired whenever the routable set may have changed."""

    make_index: Callable[[], BlockIndex] = BlockIndex
    workers: dict[str, WorkerState] = field(default_factory=dict)
    _changed: asyncio.Event | None = None
    on_added: Callable[[WorkerState], None] | None = None
    on_removed: Callable[[WorkerState], None] | None = None

    def routable(self) -> list[WorkerState]:
        return [w for w in self.workers.values() if w.is_routable]

    def sync(self, endpoints: Mapping[str, EndpointState]) -> None:
        """Makes the set match discovery: URL -> ready, starting (not ready yet) or terminating (drain it)."""
        for url in [u for u in self.workers if u not in endpoints]:
            worker = self.workers.pop(url)
            worker.is_removed = True
            logger.info("worker %s removed", url)
            if self.on_removed:
                self.on_removed(worker)
        for url, state in endpoints.items():
            ready, starting = state == "ready", state == "starting"
            known = self.workers.get(url)
            if known is None:
                worker = self.workers[url] = WorkerState(url, self.make_index(), is_discovered_ready=ready,
                                                         is_starting=starting)
                logger.info("worker %s added (%s)", url, state)
                if self.on_added:
                    self.on_added(worker)
            elif (known.is_discovered_ready, known.is_starting) != (ready, starting):
                known.is_discovered_ready, known.is_starting = ready, starting
                logger.info("worker %s %s", url, "ready" if ready else state if starting else "draining")
        self.notify()

    def any_starting(self) -> bool:
        """A worker is on its way: listed but not ready yet, or ready but never answered a poll."""
        return any(w.is_starting or w.phase == "pending" for w in self.workers.values())

    def notify(self) -> None:
        """Wakes requests held for a worker (call after any change of routability)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_changed(self, timeout: float) -> None:
        """Returns at the next `notify()` or after `timeout` seconds."""
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def adapters(self) -> set[str]:
        return {a for w in self.routable() for a in w.adapters}

    def get(self, url: str) -> WorkerState | None:
        return self.workers.get(url)

    def urls(self) -> Iterable[str]:
        return self.workers.keys()
