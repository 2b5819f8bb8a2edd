"""Decodes are first-class: every running sequence decodes in every step, before any prefill chunk."""

from __future__ import annotations

from fleetserve.runtime.engine.detokenizer import IncrementalDetokenizer
from fleetserve.runtime.engine.page_pool import PagePool
from fleetserve.runtime.engine.scheduler import Scheduler
from fleetserve.runtime.engine.sequence import Request, Sequence
from fleetserve.runtime.engine.types import SamplingParams


def make_seq(tokens: list[int], rid: str) -> Sequence:
    req = Request(rid, tokens, SamplingParams(max_tokens=64))
    seq = Sequence(req, 0, IncrementalDetokenizer.__new__(IncrementalDetokenizer), list(tokens))
    req.sequences.append(seq)
    return seq


def step(sched: Scheduler) -> dict[str, int]:
    """One step; sampled tokens are appended. Returns request id -> tokens scheduled."""
    out = sched.schedule()
    sched.finish_step(out.scheduled)
    for item in out.scheduled:
        if item.samples:
            item.seq.token_ids.append(1)
    return {item.seq.request.request_id: item.num_new_tokens for item in out.scheduled}


def test_budget_below_running_cap_starves_nobody():
    """Budget 4, cap 8: the cap is lowered to 4, and each of the 4 running sequences decodes every step
    (walking `running` under the budget used to leave the tail without a token, step after step)."""
    sched = Scheduler(PagePool(num_pages=64, page_size=4), max_num_batched_tokens=4, max_running=8)
    assert sched.max_running == 4
    seqs = [make_seq([i + 1], f"r{i}") for i in range(8)]  # one-token prompts: the first step samples
    for seq in seqs:
        sched.add(seq)
    for _ in range(10):
        scheduled = step(sched)
        running = {s.request.request_id for s in sched.running}
        assert set(scheduled) == running and len(running) == 4 and all(n == 1 for n in scheduled.values())


def test_decodes_run_before_a_long_prefill_ahead_of_them():
    """A prefill ahead of a decode in `running` (a sequence resumed after preemption or admitted beside
    a chunk lands behind it) no longer takes the whole budget: the decode gets its token every step."""
    sched = Scheduler(PagePool(num_pages=64, page_size=4), max_num_batched_tokens=8, max_running=4)
    short, long = make_seq([5, 6, 7], "short"), make_seq(list(range(10, 50)), "long")
    sched.add(short)
    assert step(sched) == {"short": 3}
    sched.add(long)
    assert step(sched) == {"short": 1, "long": 7}
    sched.running.reverse()  # the long prefill now ahead of the decode
    chunks = []
    for _ in range(5):
        scheduled = step(sched)
        assert scheduled["short"] == 1, scheduled
        chunks.append(scheduled.get("long", 0))
    assert chunks == [7, 7, 7, 7, 5]


def test_prefill_tokens_beside_decodes_are_capped():
    sched = Scheduler(PagePool(num_pages=64, page_size=4), max_num_batched_tokens=32, max_running=4,
                      max_prefill_tokens_with_decodes=6)
    short, long = make_seq([5, 6, 7], "short"), make_seq(list(range(10, 50)), "long")
    sched.add(short)
    sched.add(long)
    assert step(sched) == {"short": 3, "long": 29}  # nothing decodes yet: the whole budget
    assert step(sched) == {"short": 1, "long": 6}  # a decode in the step: prefill capped
    assert step(sched) == {"short": 1, "long": 5}


def test_preemption_never_takes_a_sequence_already_scheduled_in_the_step():
    """Pages run out while the prefill grows: the victims are unscheduled sequences (or the prefill
    itself), never a decode already in the batch, whose pages the step is about to write."""
    pool = PagePool(num_pages=6, page_size=4)
    sched = Scheduler(pool, max_num_batched_tokens=16, max_running=4)
    a, b = make_seq([1, 2, 3], "a"), make_seq([4, 5, 6], "b")
    for seq in (a, b):
        sched.add(seq)
    step(sched)  # a, b prefilled (1 page each)
    long = make_seq(list(range(100, 120)), "long")  # 20 tokens: 5 pages
    sched.add(long)
    for _ in range(6):
        out = sched.schedule()
        assert not {item.seq for item in out.scheduled} & set(out.preempted)
        used = sum(len(item.seq.page_ids) for item in out.scheduled)
        assert used <= pool.num_pages
        sched.finish_step(out.scheduled)
        for item in out.scheduled:
            if item.samples:
                item.seq.token_ids.append(1)
    assert a.status == "running" and b.status == "running"  # the decodes kept their places
