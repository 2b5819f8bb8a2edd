"""Routing policies: pure cores that pick one of the candidate workers for a request.

Every policy is `choose(key, candidates) -> Choice`. Candidates carry what the router knows of each
worker at that instant (load, cached prefix, pending prefill); the policies keep no state about
workers, only a counter or a seeded random generator for tie-breaking. The stateful part (in-flight
counts, predictions, the release callback) is in `balancer.py`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

from fleetserve.runtime.router.keys import RequestKey

PolicyName = Literal["cache_aware", "round_robin", "least_load", "power_of_two", "random"]
POLICY_NAMES: tuple[str, ...] = ("cache_aware", "round_robin", "least_load", "power_of_two", "random")

# Why a worker was chosen; the `reason` label of fleetserve_router:decisions_total.
Reason = Literal["prefix_hit", "spread", "no_cache", "imbalance", "round_robin", "least_load",
                 "power_of_two", "random"]


class Candidate(NamedTuple):
    url: str
    load: int  # requests running or queued on the worker, as far as the router knows
    matched_tokens: int  # prompt tokens the worker holds as a cached prefix of this request
    pending_prefill_tokens: int = 0  # uncached prompt tokens of requests routed there and not yet answering
    cached_blocks: int = 0  # size of the worker's cache as the router knows it
    matched_predicted_tokens: int = 0  # of matched_tokens, those only predicted (maybe still being prefilled)


class Choice(NamedTuple):
    position: int  # into the candidates
    reason: Reason


class Policy(Protocol):
    name: str

    def choose(self, key: RequestKey, candidates: Sequence[Candidate]) -> Choice: ...


def _rotate(indices: list[int], counter: int) -> int:
    return indices[counter % len(indices)]


def least_loaded(candidates: Sequence[Candidate]) -> list[int]:
    low = min(c.load for c in candidates)
    return [i for i, c in enumerate(candidates) if c.load == low]


def is_imbalanced(loads: Sequence[int], abs_threshold: int, rel_threshold: float) -> bool:
    """SGLang's gate: the busiest and the idlest worker differ by both thresholds."""
    high, low = max(loads), min(loads)
    return high - low > abs_threshold and high > rel_threshold * low


@dataclass(slots=True)
class CacheAwareConfig:
    cache_threshold: float = 0.0  # a match covering less of the prompt than this counts as no match
    balance_abs_threshold: int = 64
    balance_rel_threshold: float = 1.5
    request_cost_tokens: float = 64.0  # what one running or queued request costs, in prefill tokens


def estimated_cost(key: RequestKey, c: Candidate, cfg: CacheAwareConfig) -> float:
    """Prefill tokens the request would wait for and compute there, plus the worker's load.

    cost = max(0, pending_prefill_tokens - matched_predicted_tokens) + uncached_tokens
           + request_cost_tokens * load

    Pending prefill that is this request's own prefix (routed there a moment ago, not computed yet)
    is not counted: the request would wait for it there, or compute it itself anywhere else.
    """
    waiting = max(0, c.pending_prefill_tokens - c.matched_predicted_tokens)
    return waiting + uncached_tokens(key, c, cfg) + cfg.request_cost_tokens * c.load


def uncached_tokens(key: RequestKey, c: Candidate, cfg: CacheAwareConfig) -> int:
    matched = min(c.matched_tokens, key.num_tokens)
    if key.num_tokens and matched < cfg.cache_threshold * key.num_tokens:
        matched = 0
    return key.num_tokens - matched


@dataclass(slots=True)
class CacheAware:
    """Lowest estimated cost wins; ties go to the smaller cache, then in turn.

    A hot prefix stays on its holder until the holder's extra load costs more than recomputing the
    prefix elsewhere (`request_cost_tokens` per request), then spreads to one more worker, which pays
    one miss and holds it too. A request no worker has cached goes to the least-loaded worker.
    """

    config: CacheAwareConfig = field(default_factory=CacheAwareConfig)
    counter: int = 0
    name: str = "cache_aware"

    def choose(self, key: RequestKey, candidates: Sequence[Candidate]) -> Choice:
        self.counter += 1
        cfg = self.config
        if is_imbalanced([c.load for c in candidates], cfg.balance_abs_threshold, cfg.balance_rel_threshold):
            return Choice(_rotate(least_loaded(candidates), self.counter), "imbalance")
        costs = [estimated_cost(key, c, cfg) for c in candidates]
        best = min(costs)
        ties = [i for i, cost in enumerate(costs) if cost == best]
        smallest = min(candidates[i].cached_blocks for i in ties)
        index = _rotate([i for i in ties if candidates[i].cached_blocks == smallest], self.counter)
        saved = [key.num_tokens - uncached_tokens(key, c, cfg) for c in candidates]
        if max(saved) <= 0:
            return Choice(index, "no_cache")
        return Choice(index, "prefix_hit" if saved[index] == max(saved) else "spread")


@dataclass(slots=True)
class RoundRobin:
    counter: int = 0
    name: str = "round_robin"

    def choose(self, key: RequestKey, candidates: Sequence[Candidate]) -> Choice:
        index = self.counter % len(candidates)
        self.counter += 1
        return Choice(index, "round_robin")


@dataclass(slots=True)
class LeastLoad:
    counter: int = 0
    name: str = "least_load"

    def choose(self, key: RequestKey, candidates: Sequence[Candidate]) -> Choice:
        self.counter += 1
        return Choice(_rotate(least_loaded(candidates), self.counter), "least_load")


@dataclass(slots=True)
class PowerOfTwo:
    rng: random.Random = field(default_factory=random.Random)
    name: str = "power_of_two"

    def choose(self, key: RequestKey, candidates: Sequence[Candidate]) -> Choice:
        if len(candidates) == 1:
            return Choice(0, "power_of_two")
        a, b = self.rng.sample(range(len(candidates)), 2)
        return Choice(a if candidates[a].load <= candidates[b].load else b, "power_of_two")


@dataclass(slots=True)
class Random:
    rng: random.Random = field(default_factory=random.Random)
    name: str = "random"

    def choose(self, key: RequestKey, candidates: Sequence[Candidate]) -> Choice:
        return Choice(self.rng.randrange(len(candidates)), "random")


def build_policy(name: str, config: CacheAwareConfig | None = None, seed: int | None = None) -> Policy:
    if name == "cache_aware":
        return CacheAware(config or CacheAwareConfig())
    if name == "round_robin":
        return RoundRobin()
    if name == "least_load":
        return LeastLoad()
    if name == "power_of_two":
        return PowerOfTwo(random.Random(seed))
    if name == "random":
        return Random(random.Random(seed))
    raise ValueError(f"unknown policy {name!r}; one of {', '.join(POLICY_NAMES)}")
