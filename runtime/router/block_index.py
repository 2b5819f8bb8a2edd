"""What one worker's prefix cache holds, as the router knows it: reported blocks plus predictions.

`reported` mirrors the worker's own cache (from GET /cache_state snapshots and stored/removed
deltas), evictions included. `predicted` holds the blocks of requests the router has just sent
there and the worker has not reported yet; each expires after `ttl` seconds if the worker never
reports it (the request failed, or the pages were evicted before the next poll), and the oldest go
first when there are more than `max_predicted`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class BlockIndex:
    ttl: float = 30.0
    max_predicted: int = 1 << 18
    reported: set[int] = field(default_factory=set)
    predicted: OrderedDict[int, float] = field(default_factory=OrderedDict)  # hash -> expiry time

    def __len__(self) -> int:
        return len(self.reported) + len(self.predicted)

    def matched_blocks(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of a request the worker holds (hashes are chained: a prefix)."""
        return self.match(hashes)[0]

    def match(self, hashes: Sequence[int]) -> tuple[int, int]:
        """(leading blocks held, how many of those are only predicted, i.e. maybe still being computed)."""
        predicted = 0
        for i, h in enumerate(hashes):
            if h in self.reported:
                continue
            if h not in self.predicted:
                return i, predicted
            predicted += 1
        return len(hashes), predicted

    def predict(self, hashes: Iterable[int], now: float) -> None:
        expiry = now + self.ttl
        for h in hashes:
            if h in self.reported:
                continue
            self.predicted[h] = expiry
            self.predicted.move_to_end(h)
        while len(self.predicted) > self.max_predicted:
            self.predicted.popitem(last=False)

    def expire(self, now: float) -> int:
        """Drops predictions past their expiry; returns how many."""
        dropped = 0
        while self.predicted:
            h, expiry = next(iter(self.predicted.items()))
            if expiry > now:
                break
            del self.predicted[h]
            dropped += 1
        return dropped

    def apply_snapshot(self, hashes: Iterable[int]) -> None:
        self.reported = set(hashes)
        for h in self.reported:
            self.predicted.pop(h, None)

    def apply_delta(self, stored: Iterable[int], removed: Iterable[int]) -> None:
        """Net changes (disjoint sets, docs/routing.md): removed, then stored."""
        for h in removed:
            self.reported.discard(h)
            self.predicted.pop(h, None)
        for h in stored:
            self.reported.add(h)
            self.predicted.pop(h, None)

    def clear(self) -> None:
        self.reported.clear()
        self.predicted.clear()
