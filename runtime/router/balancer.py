"""`select()`: one worker for a request, and the callback that gives its load back.

It filters the routable workers by the request's adapter, asks the policy's pure core, then books
the request on the chosen worker: one more in flight, its uncached prompt tokens as pending
prefill, and its blocks as predicted cache entries there (the worker reports them for real on a
later poll). The proxy calls `first_byte()` when the worker starts answering and `release()` in
`finally`; both are idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import NamedTuple

from fleetserve.runtime.router.keys import RequestKey
from fleetserve.runtime.router.policies import Candidate, Policy, Reason
from fleetserve.runtime.router.workers import WorkerSet, WorkerState


def candidate_of(worker: WorkerState, key: RequestKey) -> Candidate:
    blocks, predicted = worker.cache.match(key.block_hashes)
    matched = min(blocks * key.page_size, key.num_tokens)
    return Candidate(worker.url, worker.load, matched, worker.pending_prefill_tokens, len(worker.cache),
                     min(predicted * key.page_size, matched))


@dataclass(slots=True)
class Selection:
    worker: WorkerState
    reason: Reason
    predicted_cached_tokens: int
    _pending: int
    _released: bool = False
    _answered: bool = False
    on_release: Callable[[WorkerState], None] | None = field(default=None, repr=False)

    @property
    def is_answered(self) -> bool:
        return self._answered

    def first_byte(self) -> None:
        if not self._answered:
            self._answered = True
            self.worker.pending_prefill_tokens -= self._pending

    def release(self) -> None:
        if self._released:
            return
        self.first_byte()
        self._released = True
        self.worker.in_flight -= 1
        if self.on_release:
            self.on_release(self.worker)


class NoWorker(NamedTuple):
    """Why nothing could be selected."""

    no_ready_worker: bool  # nothing routable at all (hold the request)
    adapter_missing: bool  # workers are ready but none has the adapter (404)


@dataclass(slots=True)
class Balancer:
    workers: WorkerSet
    policy: Policy
    predict: bool = True  # record routed blocks as predicted cache entries
    clock: Callable[[], float] = time.monotonic
    on_release: Callable[[WorkerState], None] | None = None

    def candidates(self, adapter: str | None, exclude: Collection[str] = (), room_only: bool = False) -> list[WorkerState]:
        ready = [w for w in self.workers.routable() if w.url not in exclude and (not room_only or w.has_room)]
        if adapter is not None:
            ready = [w for w in ready if adapter in w.adapters]
        return sorted(ready, key=lambda w: w.url)

    def has_room(self, adapter: str | None) -> bool:
        """A routable worker (with the adapter) runs fewer requests than its batch cap."""
        return bool(self.candidates(adapter, room_only=True))

    def why_none(self, adapter: str | None) -> NoWorker:
        routable = self.workers.routable()
        return NoWorker(not routable, bool(routable) and adapter is not None
                        and not any(adapter in w.adapters for w in routable))

    def select(self, key: RequestKey, exclude: Collection[str] = (), room_only: bool = False) -> Selection | None:
        """The policy's pick among the routable workers with the key's adapter, not in ``exclude``, and
        with ``room_only`` only among those below their batch cap; None if there is none."""
        workers = self.candidates(key.adapter, exclude, room_only)
        if not workers:
            return None
        cands = [candidate_of(w, key) for w in workers]
        choice = self.policy.choose(key, cands)
        worker, cand = workers[choice.position], cands[choice.position]
        pending = max(0, key.num_tokens - cand.matched_tokens)
        worker.in_flight += 1
        worker.pending_prefill_tokens += pending
        if self.predict and key.block_hashes:
            worker.cache.predict(key.block_hashes, self.clock())
        return Selection(worker, choice.reason, cand.matched_tokens, pending, on_release=self._released)

    def _released(self, worker: WorkerState) -> None:
        if self.on_release:
            self.on_release(worker)
        self.workers.notify()  # a batch slot is free: requests waiting for room look again
