"""Prefix-cache events: the block hashes the page pool publishes, and the log a router reads them from."""

from __future__ import annotations

import threading

from fleetserve.runtime.engine.cache_events import CacheEventLog
from fleetserve.runtime.engine.page_pool import ROOT_NODE, PagePool, cache_namespace
from fleetserve.runtime.engine.scheduler import Scheduler
from fleetserve.runtime.wire import chain_block_hashes
from tests.runtime.engine.test_page_pool_and_scheduler import make_seq


def run_prompt(sched: Scheduler, seq) -> None:
    sched.add(seq)
    while seq.num_computed_tokens < seq.num_tokens:
        out = sched.schedule()
        sched.finish_step(out.scheduled)


def test_log_sends_changes_after_a_point_and_a_snapshot_when_it_cannot():
    log = CacheEventLog(max_events=4)
    first = log.read()
    assert first.snapshot == [] and first.seq == 0
    log.stored(1)
    log.stored(2)
    state = log.read(first.epoch, 0)
    assert state.snapshot is None and sorted(state.stored) == [1, 2] and state.removed == [] and state.seq == 2
    log.removed(1)
    log.stored(3)
    state = log.read(first.epoch, 2)
    assert (state.stored, state.removed, state.seq) == ([3], [1], 4)
    log.stored(1)  # removed then stored again: only the net effect is sent
    state = log.read(first.epoch, 2)
    assert sorted(state.stored) == [1, 3] and state.removed == []
    assert log.read(first.epoch, 5) == (first.epoch, 5, None, [], [])  # up to date
    assert sorted(log.read(first.epoch, 0).snapshot) == [1, 2, 3]  # event 1 left the 4-event log
    assert sorted(log.read("another-epoch", 5).snapshot) == [1, 2, 3]
    assert log.read(first.epoch, 99).snapshot is not None  # from the future: resync
    log.reset()
    assert log.epoch != first.epoch and log.read(first.epoch, 5).snapshot == []


def test_duplicate_hashes_are_counted_so_one_removal_keeps_the_other():
    log = CacheEventLog()
    log.stored(7)
    log.stored(7)
    log.removed(7)
    assert log.read().snapshot == [7] and log.seq == 1
    log.removed(7)
    assert log.read().snapshot == [] and log.seq == 2


def test_pool_publishes_chained_hashes_of_full_pages_and_their_evictions():
    pool = PagePool(num_pages=4, page_size=4)
    sched = Scheduler(pool, max_num_batched_tokens=64, max_running=8)
    tokens = list(range(10))  # two full pages and a partial one
    seq = make_seq(tokens, "a")
    run_prompt(sched, seq)
    state = pool.events.read()
    assert sorted(state.snapshot) == sorted(chain_block_hashes(tokens, 4))
    sched.remove(seq)
    epoch, seq_no = state.epoch, state.seq
    other = make_seq(list(range(100, 116)), "b")  # needs all 4 pages: both cached ones are evicted
    run_prompt(sched, other)
    state = pool.events.read(epoch, seq_no)
    assert sorted(state.removed) == sorted(chain_block_hashes(tokens, 4))
    assert sorted(state.stored) == sorted(chain_block_hashes(list(range(100, 116)), 4))
    assert len(pool.node_hash) == 4


def test_adapter_namespaces_give_other_hashes_and_reset_starts_a_new_epoch():
    pool = PagePool(num_pages=8, page_size=4)
    sched = Scheduler(pool, max_num_batched_tokens=64, max_running=8)
    tokens = list(range(5))
    for name in (None, "sql"):
        seq = make_seq(tokens, f"r-{name}", lora_name=name)
        run_prompt(sched, seq)
        sched.remove(seq)
    state = pool.events.read()
    assert sorted(state.snapshot) == sorted(chain_block_hashes(tokens, 4) + chain_block_hashes(tokens, 4, "sql"))
    assert cache_namespace(("sql", 3)) == "sql" and cache_namespace(None) == ""
    pool.reset_prefix_cache()
    after = pool.events.read(state.epoch, state.seq)
    assert after.epoch != state.epoch and after.snapshot == [] and pool.node_hash == {}


def test_a_page_whose_parent_is_not_cached_is_not_published():
    pool = PagePool(num_pages=8, page_size=2)
    node = pool.register(ROOT_NODE, [1, 2], page=0)
    pool.register(ROOT_NODE, [1, 2], page=1)  # same content: the existing node, nothing new
    orphan_parent = 10_000  # a node id that is not cached
    pool.register(orphan_parent, [3, 4], page=2)
    assert pool.events.read().snapshot == chain_block_hashes([1, 2], 2) and node in pool.node_hash


def test_a_reader_thread_never_sees_a_torn_log():
    log = CacheEventLog(max_events=64)
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            epoch, seq = log.epoch, 0
            while not stop.is_set():
                state = log.read(epoch, seq)
                epoch, seq = state.epoch, state.seq
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(20_000):
        log.stored(i)
        if i % 3 == 0:
            log.removed(i)
    stop.set()
    reader.join(timeout=10)
    assert not errors and log.num_cached == 20_000 - len(range(0, 20_000, 3))
