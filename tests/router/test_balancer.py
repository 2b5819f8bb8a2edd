"""select()/release bookkeeping, worker set changes, the block index and cache-state folding (pure, no HTTP)."""

from __future__ import annotations

import asyncio
from collections import Counter

from fleetserve.runtime.router.balancer import Balancer
from fleetserve.runtime.router.block_index import BlockIndex
from fleetserve.runtime.router.keys import RequestKey
from fleetserve.runtime.router.policies import CacheAware, CacheAwareConfig
from fleetserve.runtime.router.state_sync import PollCursor, apply_cache_state
from fleetserve.runtime.router.workers import WorkerSet

HOT = RequestKey(tuple(range(1000, 1128)), 2048 + 10, 16, None)  # 128 pages of one hot system prompt


def fleet(n: int, now: list[float] | None = None) -> tuple[WorkerSet, Balancer]:
    workers = WorkerSet()
    workers.sync({f"http://w{i}": "ready" for i in range(n)})
    for w in workers.workers.values():
        w.mark_ok()
    clock = (lambda: now[0]) if now is not None else (lambda: 0.0)
    return workers, Balancer(workers, CacheAware(CacheAwareConfig(request_cost_tokens=256)), clock=clock)


def test_a_hot_prefix_spreads_as_requests_pile_up_and_release_gives_everything_back():
    workers, balancer = fleet(4)
    selections = [balancer.select(HOT) for _ in range(48)]
    counts = Counter(s.worker.url for s in selections)
    first = selections[0].worker.url
    assert len(counts) == 4 and counts[first] == max(counts.values())
    assert Counter(s.reason for s in selections)["spread"] == 3  # each new holder paid one miss
    assert all(w.in_flight == counts[w.url] for w in workers.workers.values())
    assert sum(w.pending_prefill_tokens for w in workers.workers.values()) == 4 * 2048 + 48 * 10
    for s in selections:
        s.first_byte()
        s.release()
        s.release()  # idempotent
    assert all(w.in_flight == 0 and w.pending_prefill_tokens == 0 for w in workers.workers.values())


def test_removed_and_draining_workers_get_nothing_new():
    workers, balancer = fleet(3)
    held = balancer.select(HOT)
    assert held is not None
    keep = {u: "ready" for u in workers.urls() if u != held.worker.url}
    workers.sync({**keep, "http://w-draining": "terminating"})
    workers.workers["http://w-draining"].mark_ok()
    picked = {balancer.select(HOT).worker.url for _ in range(10)}
    assert picked == set(keep)  # the removed holder and the draining worker are out
    held.release()  # a request on a removed worker still finishes and releases
    assert held.worker.is_removed and held.worker.in_flight == 0


def test_adapters_filter_candidates_and_explain_why_none():
    workers, balancer = fleet(2)
    workers.workers["http://w1"].adapters = frozenset({"sql"})
    key = HOT._replace(adapter="sql")
    assert {balancer.select(key).worker.url for _ in range(5)} == {"http://w1"}
    missing = HOT._replace(adapter="nope")
    assert balancer.select(missing) is None
    assert balancer.why_none("nope") == (False, True)
    for w in workers.workers.values():
        w.is_healthy = False
    assert balancer.why_none("nope") == (True, False)  # nothing ready: hold, not 404


def test_predictions_expire_when_the_worker_never_reports_them():
    now = [0.0]
    _, balancer = fleet(2, now)
    first = balancer.select(HOT)
    first.release()
    assert first.worker.cache.matched_blocks(HOT.block_hashes) == 128
    now[0] = 31.0
    first.worker.cache.expire(now[0])
    assert first.worker.cache.matched_blocks(HOT.block_hashes) == 0


def test_block_index_bounds_predictions_and_matches_prefixes_only():
    index = BlockIndex(ttl=10, max_predicted=3)
    index.predict([1, 2, 3, 4, 5], now=0)
    assert list(index.predicted) == [3, 4, 5]
    index.apply_snapshot([1, 2])
    assert index.matched_blocks([1, 2, 3, 4, 9]) == 5 - 1
    assert index.matched_blocks([9, 1, 2]) == 0
    index.apply_delta(stored=[7], removed=[2])
    assert index.matched_blocks([1, 2, 3]) == 1 and 7 in index.reported


def test_cache_state_snapshot_then_deltas_then_a_new_epoch():
    workers, _ = fleet(1)
    worker = next(iter(workers.workers.values()))
    cursor = PollCursor()
    apply_cache_state(worker, cursor, {"epoch": "a", "seq": 2, "snapshot": ["0000000000000001", "00000000000000ff"],
                                       "stored": [], "removed": [], "adapters": ["sql"], "num_running": 2,
                                       "num_waiting": 1})
    assert worker.cache.reported == {1, 255} and worker.adapters == {"sql"} and worker.load == 3
    assert (cursor.epoch, cursor.seq) == ("a", 2)
    apply_cache_state(worker, cursor, {"epoch": "a", "seq": 4, "snapshot": None, "stored": ["0000000000000002"],
                                       "removed": ["0000000000000001"], "adapters": [], "num_running": 0,
                                       "num_waiting": 0})
    assert worker.cache.reported == {2, 255} and worker.adapters == frozenset() and worker.load == 0
    worker.cache.predict([42], now=0)
    apply_cache_state(worker, cursor, {"epoch": "b", "seq": 0, "snapshot": [], "stored": [], "removed": [],
                                       "adapters": [], "num_running": 0, "num_waiting": 0})
    assert len(worker.cache) == 0  # restarted worker: reports and predictions are gone


async def test_room_only_picks_workers_below_their_batch_cap_and_a_release_wakes_waiters():
    workers, balancer = fleet(2)
    a, b = workers.workers["http://w0"], workers.workers["http://w1"]
    a.max_running, b.max_running = 1, None  # b reports no cap: it always has room
    taken = balancer.select(HOT, room_only=True)
    assert taken is not None and balancer.has_room(None)
    a.max_running = b.max_running = 1
    both = [taken, balancer.select(HOT, room_only=True)]
    assert {s.worker.url for s in both} == {"http://w0", "http://w1"}  # one each: each cap is 1
    assert not balancer.has_room(None) and balancer.select(HOT, room_only=True) is None
    queued = balancer.select(HOT)  # without room_only a full worker still takes it (into its queue)
    assert queued is not None
    queued.release()
    waiter = asyncio.create_task(workers.wait_changed(5.0))  # a request waiting for room
    await asyncio.sleep(0)
    both[0].release()
    await asyncio.wait_for(waiter, 1.0)
    assert balancer.has_room(None)


def test_the_batch_cap_comes_from_cache_state():
    workers, _ = fleet(1)
    worker = workers.workers["http://w0"]
    common = {"epoch": "a", "seq": 0, "snapshot": [], "stored": [], "removed": []}
    apply_cache_state(worker, PollCursor(), {**common, "max_running_requests": 8})
    assert worker.max_running == 8
    apply_cache_state(worker, PollCursor(), common)  # an older worker: no cap, never held back
    assert worker.max_running is None and worker.has_room


def test_starting_and_pending_workers_are_on_their_way():
    workers = WorkerSet()
    workers.sync({"http://up": "ready", "http://gone": "terminating"})
    workers.workers["http://up"].mark_ok()
    assert not workers.any_starting()  # a draining worker is not coming
    workers.sync({"http://up": "ready", "http://gone": "terminating", "http://new": "starting"})
    assert workers.workers["http://new"].phase == "starting" and workers.any_starting()
    workers.sync({"http://up": "ready", "http://new": "ready"})  # its pod is ready: polled, not answered yet
    assert workers.workers["http://new"].phase == "pending" and workers.any_starting()
    workers.workers["http://new"].mark_ok()
    assert not workers.any_starting()
