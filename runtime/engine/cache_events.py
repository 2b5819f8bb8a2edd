"""What the prefix cache holds, as stable block hashes, for routers (the `/cache_state` endpoint).

The page pool calls `stored(hash)` when a full page enters the prefix cache and `removed(hash)` when
it leaves (eviction), and `reset()` when the whole cache is dropped. The log keeps the current set of
cached hashes and a bounded list of the most recent changes, each with a sequence number, under an
*epoch* that changes at start-up and on every reset.

Written by the engine thread, read by the HTTP server's thread: every method takes one short lock (the
writer's critical section is an append and a dict update; a reader copies at most the retained events
or the live set), so the step loop never waits on the server for longer than a copy.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from typing import NamedTuple

DEFAULT_MAX_EVENTS = 65536


class CacheState(NamedTuple):
    """An answer to "what changed since event `after` of epoch `epoch`"."""

    epoch: str
    seq: int  # number of the newest event
    snapshot: list[int] | None  # every cached hash, when the caller's view cannot be brought up to date
    stored: list[int]  # hashes cached now that changed after `after` (disjoint from `removed`)
    removed: list[int]  # hashes no longer cached that changed after `after`


class CacheEventLog:
    def __init__(self, max_events: int = DEFAULT_MAX_EVENTS):
        self._lock = threading.Lock()
        self._events: deque[tuple[int, int]] = deque(maxlen=max_events)  # (seq, hash)
        self._live: dict[int, int] = {}  # hash -> number of cached pages with it (1 unless orphaned dups)
        self.epoch = uuid.uuid4().hex
        self.seq = 0

    @property
    def num_cached(self) -> int:
        return len(self._live)

    def stored(self, block_hash: int) -> None:
        with self._lock:
            count = self._live.get(block_hash, 0)
            self._live[block_hash] = count + 1
            if count == 0:
                self.seq += 1
                self._events.append((self.seq, block_hash))

    def removed(self, block_hash: int) -> None:
        with self._lock:
            count = self._live.get(block_hash, 0)
            if count <= 1:
                self._live.pop(block_hash, None)
                self.seq += 1
                self._events.append((self.seq, block_hash))
            else:
                self._live[block_hash] = count - 1

    def reset(self) -> None:
        """The whole cache was dropped: a new epoch, nothing cached, no events."""
        with self._lock:
            self._live.clear()
            self._events.clear()
            self.epoch = uuid.uuid4().hex
            self.seq = 0

    def read(self, epoch: str | None = None, after: int | None = None) -> CacheState:
        """The changes after event `after` of `epoch`; a full snapshot when the epoch differs, `after` is
        missing or newer than the log, or events after it were already dropped from the log."""
        with self._lock:
            current, seq = self.epoch, self.seq
            oldest = self._events[0][0] if self._events else seq + 1
            if epoch != current or after is None or after > seq or after < oldest - 1:
                return CacheState(current, seq, list(self._live), [], [])
            touched: set[int] = set()
            for s, h in reversed(self._events):  # newest first: the cost is the number of changes
                if s <= after:
                    break
                touched.add(h)
            live = self._live
            stored = [h for h in touched if h in live]
            removed = [h for h in touched if h not in live]
        return CacheState(current, seq, None, stored, removed)
