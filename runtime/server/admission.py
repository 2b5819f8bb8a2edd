"""Admission control: refuse a request with 503 "queue full" before it reaches the engine.

`--max-queued-requests` bounds the requests waiting for a running slot. A request is refused when
the server already has `max_running_requests + max_queued_requests` engine requests in flight, or
when the engine reports requests waiting (so a new one would wait too) and one more would exceed
the bound (the engine may run fewer than max_running_requests when KV pages are short). The server's
own count catches a burst the engine has not seen yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fleetserve.runtime.engine.types import EngineStats
from fleetserve.runtime.server.errors import APIError

logger = logging.getLogger(__name__)


class Ticket:
    """Slots held by one HTTP request; `release()` is idempotent."""

    __slots__ = ("_admission", "num_requests")

    def __init__(self, admission: Admission, num_requests: int):
        self._admission: Admission | None = admission
        self.num_requests = num_requests

    def release(self) -> None:
        if self._admission is not None:
            self._admission.num_in_flight -= self.num_requests
            self._admission = None


class Admission:
    def __init__(self, max_running_requests: int, max_queued_requests: int | None,
                 stats: Callable[[], EngineStats]):
        self.max_running_requests = max_running_requests
        self.max_queued_requests = max_queued_requests
        self.stats = stats
        self.num_in_flight = 0

    def is_full(self, num_requests: int) -> bool:
        if self.max_queued_requests is None:
            return False
        capacity = self.max_running_requests + self.max_queued_requests
        if self.num_in_flight + num_requests > capacity:
            return True
        num_waiting = self.stats().num_waiting
        return num_waiting > 0 and num_waiting + num_requests > self.max_queued_requests

    def admit(self, num_requests: int = 1) -> Ticket:
        """Take slots for `num_requests` engine requests or raise a 503."""
        if self.is_full(num_requests):
            logger.warning("queue full: %d requests in flight, refusing %d more", self.num_in_flight, num_requests)
            raise APIError(503, "queue full: the server has reached --max-queued-requests; retry later")
        self.num_in_flight += num_requests
        return Ticket(self, num_requests)
