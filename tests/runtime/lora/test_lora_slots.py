"""Device slot assignment (LRU swapping, pinning) and the scheduler's adapter admission rule; no model."""

from __future__ import annotations

import pytest

from fleetserve.runtime.engine.lora.slots import Placement, SlotTable
from fleetserve.runtime.engine.page_pool import PagePool
from fleetserve.runtime.engine.scheduler import Scheduler

from ..engine.test_page_pool_and_scheduler import make_seq


def test_slots_fill_then_swap_the_least_recently_used():
    table = SlotTable(2)
    assert table.assign(["a", "b"]) == [Placement("a", 0), Placement("b", 1)]
    assert table.assign(["a"]) == []  # already in its slot: nothing to copy; "a" is now the most recent
    assert table.assign(["c"]) == [Placement("c", 1)]  # "b" was least recently used
    assert table.assign(["c", "a"]) == []
    assert table.assign(["b", "a"]) == [Placement("b", 1)]  # "c" goes, "a" is in this step
    assert table.num_swaps == 4


def test_adapters_of_the_step_are_never_swapped_out():
    table = SlotTable(2)
    table.assign(["a", "b"])
    table.assign(["b"])
    assert table.assign(["c", "a"]) == [Placement("c", 1)]  # "a" is older but in this step: "b" goes
    with pytest.raises(AssertionError):
        table.assign(["x", "y", "z"])


def test_pinned_adapters_keep_their_slot_and_discard_frees_it():
    table = SlotTable(3)
    assert table.pin("p") == Placement("p", 0)
    table.assign(["a", "b"])
    for key in ("c", "d", "e"):
        placed = table.assign([key])
        assert placed[0].slot != 0 and table.slot_of["p"] == 0
    table.discard("p")
    assert table.assign(["f"]) == [Placement("f", 0)]
    table.discard("unknown")  # no-op


def two_slot_scheduler(num_pages: int = 64) -> Scheduler:
    scheduler = Scheduler(PagePool(num_pages, 4), max_num_batched_tokens=256, max_running=16)
    scheduler.lora_fits = lambda keys: len(keys) <= 2
    return scheduler


def adapters_running(scheduler: Scheduler) -> set:
    return {s.request.lora_name for s in scheduler.running}


def test_admission_never_runs_more_adapters_than_slots():
    scheduler = two_slot_scheduler()
    seqs = {name: make_seq([1, 2, 3, 4, 5], f"r-{name}", lora_name=name) for name in ("a", "b", "c")}
    base = make_seq([1, 2, 3], "r-base")
    for seq in [*seqs.values(), base]:
        scheduler.add(seq)
    batch = scheduler.schedule().scheduled
    assert {item.seq.request.request_id for item in batch} == {"r-a", "r-b", "r-base"}
    assert adapters_running(scheduler) == {"a", "b", None}
    assert seqs["c"].status == "waiting"
    scheduler.finish_step(batch)
    scheduler.remove(seqs["a"])
    batch = scheduler.schedule().scheduled
    assert seqs["c"].status == "running" and adapters_running(scheduler) == {"b", "c", None}


def test_a_request_waiting_for_a_slot_is_not_starved():
    """Requests of running adapters keep arriving; they stop overtaking the one that waits for a slot."""
    scheduler = two_slot_scheduler()
    running = [make_seq([1, 2, 3], "a0", lora_name="a"), make_seq([1, 2, 3], "b0", lora_name="b")]
    for seq in running:
        scheduler.add(seq)
    scheduler.finish_step(scheduler.schedule().scheduled)
    starving = make_seq([4, 5, 6], "c0", lora_name="c")
    scheduler.add(starving)
    later_a = make_seq([7, 8, 9], "a1", lora_name="a")
    later_base = make_seq([7, 8], "base1")
    scheduler.add(later_a)
    scheduler.add(later_base)
    scheduler.finish_step(scheduler.schedule().scheduled)
    assert starving.status == "waiting"
    assert later_a.status == "waiting", "a request of a running adapter overtook the one waiting for a slot"
    assert later_base.status == "running", "base-model requests need no slot and may go ahead"
    scheduler.remove(running[0])  # "a" drains: its slot frees up
    scheduler.finish_step(scheduler.schedule().scheduled)
    assert starving.status == "running"
    assert later_a.status == "waiting"  # "a" would be a third adapter beside "b" and "c"
    scheduler.remove(running[1])
    scheduler.schedule()
    assert later_a.status == "running"


def test_sequences_of_one_adapter_share_its_slot():
    scheduler = two_slot_scheduler()
    seqs = [make_seq([i, 2, 3], f"r{i}", lora_name="a" if i % 2 else "b") for i in range(6)]
    for seq in seqs:
        scheduler.add(seq)
    scheduler.schedule()
    assert all(seq.status == "running" for seq in seqs)


def test_a_reload_is_another_adapter_for_the_slots():
    scheduler = two_slot_scheduler()
    for seq in (make_seq([1, 2], "old", lora_name="a", lora_version=1), make_seq([1, 2], "b", lora_name="b"),
                make_seq([1, 2], "new", lora_name="a", lora_version=2)):
        scheduler.add(seq)
    scheduler.schedule()
    assert [s.request.request_id for s in scheduler.running] == ["old", "b"]
