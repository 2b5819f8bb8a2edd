"""Policy cores, table-tested: pure inputs (candidates) -> the chosen worker and why."""

from __future__ import annotations

import random

import pytest

from fleetserve.runtime.router.keys import RequestKey, text_key, token_key
from fleetserve.runtime.router.policies import (
    CacheAware,
    CacheAwareConfig,
    Candidate,
    LeastLoad,
    PowerOfTwo,
    Random,
    RoundRobin,
    build_policy,
    is_imbalanced,
)

PAGE = 16
KEY = RequestKey(tuple(range(128)), 2048 + 8, PAGE, None)  # a 2k-token prompt: 128 full pages


def cand(url: str, load: int = 0, matched: int = 0, pending: int = 0, blocks: int = 0) -> Candidate:
    return Candidate(url, load, matched, pending, blocks)


@pytest.mark.parametrize(
    ("candidates", "expected", "reason"),
    [
        # the worker holding the prefix wins while loads are balanced
        ([cand("a", 2), cand("b", 2, matched=2048), cand("c", 2)], "b", "prefix_hit"),
        # ... and while its extra load costs less than recomputing the prefix (2048 > 256 * 4)
        ([cand("a", 0), cand("b", 4, matched=2048), cand("c", 0)], "b", "prefix_hit"),
        # a hot prefix spreads: its holder's load now costs more than a miss elsewhere
        ([cand("a", 0), cand("b", 9, matched=2048), cand("c", 1)], "a", "spread"),
        # the longer match wins at equal load
        ([cand("a", 1, matched=512), cand("b", 1, matched=1024)], "b", "prefix_hit"),
        # a cold request goes to the least-loaded worker
        ([cand("a", 3), cand("b", 1), cand("c", 2)], "b", "no_cache"),
        # pending prefill work counts as load
        ([cand("a", 1, pending=4000), cand("b", 1)], "b", "no_cache"),
        # SGLang's imbalance gate: both thresholds crossed -> the least loaded, whatever it holds
        ([cand("a", 100, matched=2048), cand("b", 10)], "b", "imbalance"),
    ],
)
def test_cache_aware_table(candidates, expected, reason):
    choice = CacheAware(CacheAwareConfig(request_cost_tokens=256)).choose(KEY, candidates)
    assert (candidates[choice.position].url, choice.reason) == (expected, reason)


def test_hot_prefix_spreads_as_its_holders_load_grows():
    """Route 64 requests of one prefix to 8 idle workers, with the bookkeeping select() does."""
    policy = CacheAware(CacheAwareConfig(request_cost_tokens=256))
    loads = dict.fromkeys("abcdefgh", 0)
    holders: set[str] = set()
    for _ in range(64):
        cands = [cand(u, loads[u], matched=2048 if u in holders else 0) for u in sorted(loads)]
        url = cands[policy.choose(KEY, cands).position].url
        loads[url] += 1
        holders.add(url)
    assert max(loads.values()) - min(loads.values()) <= 2048 // 256 + 1
    assert len(holders) == 8  # it spread everywhere, each holder paying one miss
    assert max(loads.values()) > 64 // 8  # ... yet holders take more than a fair share while they hit


def test_cold_requests_rotate_among_equally_loaded_workers():
    """No 'always the same replica' on a miss at low concurrency (sglang #32983)."""
    policy = CacheAware()
    cands = [cand("a"), cand("b"), cand("c")]
    picked = {cands[policy.choose(KEY, cands).position].url for _ in range(3)}
    assert picked == {"a", "b", "c"}


def test_cold_requests_prefer_the_smaller_cache_at_equal_cost():
    cands = [cand("a", blocks=900), cand("b", blocks=10), cand("c", blocks=500)]
    assert cands[CacheAware().choose(KEY, cands).position].url == "b"


def test_cache_threshold_ignores_small_matches():
    cands = [cand("a", 1, matched=64), cand("b", 0)]
    strict = CacheAware(CacheAwareConfig(cache_threshold=0.5, request_cost_tokens=0.01))
    assert cands[strict.choose(KEY, cands).position].url == "b"
    loose = CacheAware(CacheAwareConfig(cache_threshold=0.0, request_cost_tokens=0.01))
    assert cands[loose.choose(KEY, cands).position].url == "a"


@pytest.mark.parametrize(("loads", "expected"), [
    ([0, 64], False), ([0, 65], True), ([100, 70], False), ([200, 70], True), ([5, 5], False),
])
def test_imbalance_gate_needs_both_thresholds(loads, expected):
    assert is_imbalanced(loads, 64, 1.5) is expected


def test_round_robin_cycles_and_least_load_picks_minimum():
    cands = [cand("a", 5), cand("b", 1), cand("c", 1)]
    rr = RoundRobin()
    assert [rr.choose(KEY, cands).position for _ in range(4)] == [0, 1, 2, 0]
    ll = LeastLoad()
    assert {ll.choose(KEY, cands).position for _ in range(4)} == {1, 2}


def test_power_of_two_never_picks_the_busier_of_its_pair():
    cands = [cand(str(i), load=i) for i in range(6)]
    policy = PowerOfTwo(random.Random(0))
    picks = [policy.choose(KEY, cands).position for _ in range(200)]
    assert 5 not in picks and picks.count(0) > picks.count(4)


def test_random_is_seeded_and_covers_everyone():
    cands = [cand(str(i)) for i in range(4)]
    a = [Random(random.Random(3)).choose(KEY, cands).position for _ in range(1)]
    b = [Random(random.Random(3)).choose(KEY, cands).position for _ in range(1)]
    assert a == b
    policy = Random(random.Random(1))
    assert {policy.choose(KEY, cands).position for _ in range(100)} == {0, 1, 2, 3}


def test_build_policy_knows_every_name():
    for name in ("cache_aware", "round_robin", "least_load", "power_of_two", "random"):
        assert build_policy(name, seed=0).name == name
    with pytest.raises(ValueError):
        build_policy("sticky")


def test_keys_are_namespaced_by_adapter_and_unicode_safe():
    ids = list(range(40))
    base, lora = token_key(ids, PAGE, None), token_key(ids, PAGE, "sql")
    assert len(base.block_hashes) == 2 and not set(base.block_hashes) & set(lora.block_hashes)
    system = "日本語のシステムプロンプト🙂" * 20
    a, b = text_key(system + "質問その一" * 20, None), text_key(system + "別の質問です" * 20, None)
    shared = sum(1 for x, y in zip(a.block_hashes, b.block_hashes, strict=False) if x == y)
    assert shared == len(system.encode()) // 64 and len(a.block_hashes) > shared


def test_pending_prefill_of_the_requests_own_prefix_does_not_push_it_away():
    """A burst of one new prefix: the holder is still prefilling it; the next request waits for that
    prefill there instead of recomputing the prefix elsewhere (unrelated pending work still counts)."""
    policy = CacheAware(CacheAwareConfig(request_cost_tokens=256))
    holder = Candidate("a", 1, 2048, pending_prefill_tokens=2048, matched_predicted_tokens=2048)
    idle = cand("b")
    assert policy.choose(KEY, [holder, idle]).position == 0
    busy_elsewhere = Candidate("a", 1, 0, pending_prefill_tokens=2048)
    assert policy.choose(KEY, [busy_elsewhere, idle]).position == 1
