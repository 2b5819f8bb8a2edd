"""The page pool and the scheduler on their own: no model, milliseconds."""

from __future__ import annotations

import pytest

from fleetserve.runtime.engine.detokenizer import IncrementalDetokenizer
from fleetserve.runtime.engine.lora.adapter import LoRAAdapter
from fleetserve.runtime.engine.page_pool import ROOT_NODE, PagePool
from fleetserve.runtime.engine.scheduler import Scheduler
from fleetserve.runtime.engine.sequence import Request, Sequence
from fleetserve.runtime.engine.types import SamplingParams


def make_seq(tokens: list[int], rid: str = "r", lora_name: str | None = None, lora_version: int = 1) -> Sequence:
    """`lora_name`: the sequence runs under an adapter of that name (weights are not needed here)."""
    lora = None if lora_name is None else LoRAAdapter(lora_name, "", lora_version, 1, 1.0, frozenset())
    req = Request(rid, tokens, SamplingParams(max_tokens=8), lora=lora)
    detok = IncrementalDetokenizer.__new__(IncrementalDetokenizer)  # the scheduler never decodes
    seq = Sequence(req, 0, detok, list(tokens))
    req.sequences.append(seq)
    return seq


def test_first_step_prefills_next_decodes_then_preempts_and_frees():
    pool = PagePool(num_pages=4, page_size=4)
    sched = Scheduler(pool, max_num_batched_tokens=64, max_running=8)
    a, b = make_seq(list(range(6)), "a"), make_seq(list(range(100, 106)), "b")
    sched.add(a)
    sched.add(b)
    out = sched.schedule()
    assert [(s.seq, s.num_new_tokens) for s in out.scheduled] == [(a, 6), (b, 6)]
    assert all(s.samples for s in out.scheduled) and pool.num_free == 0
    sched.finish_step(out.scheduled)
    for seq in (a, b):
        seq.token_ids.append(7)
    out = sched.schedule()  # each needs a 7th slot: both fit in their second page
    assert [(s.seq, s.num_new_tokens) for s in out.scheduled] == [(a, 1), (b, 1)]
    sched.finish_step(out.scheduled)
    for seq in (a, b):
        seq.token_ids += [8, 9]  # pretend two more decodes: 9 tokens need a third page each
    a.num_computed_tokens = b.num_computed_tokens = 8
    out = sched.schedule()
    assert out.preempted == [b] and b.status == "waiting" and b.page_ids == []
    assert [s.seq for s in out.scheduled] == [a]
    sched.remove(a)
    assert pool.num_free == 4 and all(r == 0 for r in pool.ref_counts)


def test_token_budget_chunks_a_long_prompt():
    pool = PagePool(num_pages=16, page_size=4)
    sched = Scheduler(pool, max_num_batched_tokens=10, max_running=8)
    seq = make_seq(list(range(25)))
    sched.add(seq)
    chunks, samples = [], []
    while seq.num_computed_tokens < 25:
        out = sched.schedule()
        chunks.append(out.scheduled[0].num_new_tokens)
        samples.append(out.scheduled[0].samples)
        sched.finish_step(out.scheduled)
    assert chunks == [10, 10, 5] and samples == [False, False, True]


def test_running_cap_holds_back_waiting_sequences():
    pool = PagePool(num_pages=16, page_size=4)
    sched = Scheduler(pool, max_num_batched_tokens=100, max_running=2)
    for i in range(3):
        sched.add(make_seq([i, i, i], f"r{i}"))
    assert len(sched.schedule().scheduled) == 2 and sched.num_waiting == 1


def run_step(sched: Scheduler) -> list[tuple[Sequence, int]]:
    """One step: what was scheduled (sequence, new tokens); sampled tokens are appended (token 0)."""
    out = sched.schedule()
    sampling = [item.seq for item in out.scheduled if item.samples]
    sched.finish_step(out.scheduled)
    for seq in sampling:
        seq.token_ids.append(0)
    return [(item.seq, item.num_new_tokens) for item in out.scheduled]


def test_a_page_another_prefill_is_computing_is_waited_for_not_recomputed():
    """Requests of one system prompt arriving together: the first computes the shared pages, the others
    wait one step and find them in the cache; a request with another prompt is not held back."""
    pool = PagePool(num_pages=32, page_size=4)
    sched = Scheduler(pool, max_num_batched_tokens=100, max_running=8)
    system = list(range(1, 13))  # 3 pages
    a, b, c = make_seq([*system, 50, 51], "a"), make_seq([*system, 60], "b"), make_seq([7] * 9, "c")
    d = make_seq(system[:4] + [99] * 8, "d")  # shares only the first page
    for seq in (a, b, c, d):
        sched.add(seq)
    assert run_step(sched) == [(a, 14), (c, 9)]
    assert pool.num_queries == 13 + 8 and pool.num_hits == 0  # looked up once, when admitted
    assert run_step(sched) == [(a, 1), (c, 1), (b, 1), (d, 8)]  # b: 12 cached tokens, d: 4
    assert b.request.num_cached_tokens == 12 and d.request.num_cached_tokens == 4
    assert pool.num_queries == 13 + 8 + 12 + 11 and pool.num_hits == 16


def test_waiting_for_a_page_follows_a_chunked_prefill():
    pool = PagePool(num_pages=32, page_size=4)
    sched = Scheduler(pool, max_num_batched_tokens=6, max_running=8)
    system = list(range(1, 17))
    a, b = make_seq([*system, 50], "a"), make_seq([*system, 60], "b")
    sched.add(a)
    sched.add(b)
    steps = [run_step(sched) for _ in range(4)]
    assert steps == [[(a, 6)], [(a, 6)], [(a, 5)], [(a, 1), (b, 1)]]  # b waits while a computes its pages
    assert b.request.num_cached_tokens == 16


@pytest.mark.parametrize("case", ["other adapter", "no prefix cache"])
def test_no_waiting_where_the_cache_could_not_serve_the_page(case):
    pool = PagePool(num_pages=32, page_size=4, enable_prefix_caching=case != "no prefix cache")
    sched = Scheduler(pool, max_num_batched_tokens=100, max_running=8)
    system = list(range(1, 13))
    a = make_seq([*system, 50], "a")
    b = make_seq([*system, 60], "b", lora_name="sql" if case == "other adapter" else None)
    sched.add(a)
    sched.add(b)
    assert run_step(sched) == [(a, 13), (b, 13)]


def test_prefix_match_is_exact_and_chained():
    pool = PagePool(num_pages=8, page_size=2)
    node1 = pool.register(ROOT_NODE, [1, 2], page=0)
    pool.register(node1, [3, 4], page=1)
    pool.register(ROOT_NODE, [3, 4], page=2)  # same tokens, different parent: a different prefix
    assert pool.match_prefix([1, 2, 3, 4, 5]).pages == [0, 1]
    assert pool.match_prefix([3, 4, 1, 2]).pages == [2]
    assert pool.match_prefix([1, 2, 3, 4], extra="adapter").pages == []  # other adapter, other cache
    assert pool.ref_counts[:3] == [1, 1, 1]


def test_eviction_takes_least_recently_freed_and_forgets_its_prefix():
    pool = PagePool(num_pages=2, page_size=2)
    first = pool.allocate(2)
    node = pool.register(ROOT_NODE, [1, 2], first[0])
    pool.register(node, [3, 4], first[1])
    pool.release(first)  # tail page freed first, so it is evicted first
    (taken,) = pool.allocate(1)
    assert taken == first[1]
    assert pool.match_prefix([1, 2, 3, 4, 9]).pages == [first[0]]


def test_release_twice_is_an_invariant_violation():
    pool = PagePool(num_pages=1, page_size=2)
    pages = pool.allocate(1)
    pool.release(pages)
    with pytest.raises(AssertionError):
        pool.release(pages)
