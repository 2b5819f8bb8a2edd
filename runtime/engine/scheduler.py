"""Picks each step's batch under a token budget.

Decodes go first: every running sequence that needs one token gets it, every step (vLLM's order).
The budget is never smaller than the running cap (the cap is lowered to the budget), so no decode is
left out however many run. Then the running prefills take their next chunks, then waiting sequences
are admitted in arrival order, from what the budget leaves; in a step that decodes, prefill tokens are
also capped at `max_prefill_tokens_with_decodes` when it is set, which bounds the step's tokens (the
decodes' wait beside a long prompt, at that prompt's time to first token; docs/benchmarks.md). A waiting sequence's prefix-cache hit counts as computed
tokens. When pages run out, the most recently admitted running sequence not yet scheduled in this
step is preempted: its pages are released (its full pages stay in the prefix cache) and it is
recomputed later.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from fleetserve.runtime.engine.lora.admission import AdapterSlots, Fits
from fleetserve.runtime.engine.page_pool import ROOT_NODE, PagePool
from fleetserve.runtime.engine.sequence import Sequence


class ScheduledSequence(NamedTuple):
    seq: Sequence
    num_new_tokens: int

    @property
    def samples(self) -> bool:
        """True when this step computes the sequence's last known token, so it samples the next."""
        return self.seq.num_computed_tokens + self.num_new_tokens == self.seq.num_tokens


class SchedulerOutput(NamedTuple):
    scheduled: list[ScheduledSequence]
    preempted: list[Sequence]


class Scheduler:
    def __init__(self, pool: PagePool, max_num_batched_tokens: int, max_running: int,
                 max_prefill_tokens_with_decodes: int | None = None):
        """`max_running` above the budget is lowered to it: each running sequence must be able to decode in
        every step. `max_prefill_tokens_with_decodes`: None lets prefills take the whole budget left."""
        if max_num_batched_tokens < 1 or max_running < 1:
            raise ValueError("the step budget and the running cap must be at least 1")
        self.pool = pool
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_running = min(max_running, max_num_batched_tokens)
        self.max_prefill_tokens_with_decodes = max_prefill_tokens_with_decodes
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.lora_fits: Fits | None = None  # with LoRA: whether a set of adapters fits the slots (lora/admission.py)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Takes a sequence out of the queues (finished or aborted) and frees its pages at once."""
        if seq.status == "running":
            self.running.remove(seq)
        elif seq.status == "waiting":
            self.waiting.remove(seq)
        self._free(seq)
        seq.status = "finished"

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput([], [])
        taken: set[Sequence] = set()
        budget = self.max_num_batched_tokens
        for seq in [s for s in self.running if not _in_prefill(s)]:
            if budget <= 0:
                break
            if seq.status == "running" and self._make_room(seq, 1, out, taken):
                self._take(seq, 1, out, taken)
                budget -= 1
        cap = self.max_prefill_tokens_with_decodes
        if out.scheduled and cap is not None:
            budget = min(budget, cap)
        for seq in [s for s in self.running if _in_prefill(s)]:
            if budget <= 0:
                break
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if seq.status == "running" and self._make_room(seq, num_new, out, taken):
                self._take(seq, num_new, out, taken)
                budget -= num_new
        if not out.preempted:
            self._admit_waiting(budget, out.scheduled)
        return out

    @staticmethod
    def _take(seq: Sequence, num_new: int, out: SchedulerOutput, taken: set[Sequence]) -> None:
        out.scheduled.append(ScheduledSequence(seq, num_new))
        taken.add(seq)

    def _make_room(self, seq: Sequence, num_new: int, out: SchedulerOutput, taken: set[Sequence]) -> bool:
        """Grows seq by num_new tokens, preempting the most recently admitted running sequences not yet
        scheduled in this step until its pages fit; False when seq itself had to go."""
        while not self.pool.can_allocate(self._pages_needed(seq, num_new)):
            victim = next(s for s in reversed(self.running) if s not in taken)  # seq itself at the latest
            self.running.remove(victim)
            self._preempt(victim)
            out.preempted.append(victim)
            if victim is seq:
                return False
        self._grow(seq, num_new)
        return True

    def _admit_waiting(self, budget: int, scheduled: list[ScheduledSequence]) -> None:
        prefilling = [seq for seq in self.running if _in_prefill(seq)]
        slots = AdapterSlots(self.running, self.lora_fits) if self.lora_fits is not None else None
        for seq in list(self.waiting):
            if budget <= 0 or len(self.running) >= self.max_running:
                return
            if seq.is_blocked:
                continue
            if slots is not None and not slots.admits(seq):
                continue  # its adapter waits for a device slot
            looks_up = seq.num_computed_tokens == 0 and not seq.wants_prompt_logprobs
            if looks_up:
                self._match_prefix(seq)
                if self._page_being_computed(seq, prefilling):
                    self._free(seq)  # next step it finds that page (and maybe more) in the cache
                    continue
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if not self.pool.can_allocate(self._pages_needed(seq, num_new)):
                self._free(seq)
                return  # first come, first served: nobody overtakes a sequence that does not fit
            if looks_up:
                self.pool.record_lookup(seq.num_tokens - 1, seq.num_computed_tokens)
            self._grow(seq, num_new)
            self.waiting.remove(seq)
            self.running.append(seq)
            if slots is not None:
                slots.take(seq)
            seq.status = "running"
            if seq.index == 0 and not seq.was_scheduled:
                seq.request.num_cached_tokens = seq.num_computed_tokens
            seq.was_scheduled = True
            scheduled.append(ScheduledSequence(seq, num_new))
            budget -= num_new
            if _in_prefill(seq):
                prefilling.append(seq)

    def _match_prefix(self, seq: Sequence) -> None:
        lookup = seq.token_ids[:-1]  # at least one token must be computed to get logits
        match = self.pool.match_prefix(lookup, seq.request.cache_key)
        seq.page_ids = match.pages
        seq.cache_nodes = match.nodes
        seq.num_computed_tokens = len(match.pages) * self.pool.page_size

    def _page_being_computed(self, seq: Sequence, prefilling: list[Sequence]) -> bool:
        """Whether a sequence still in its prefill will compute the first page `seq` missed in the cache.

        Then `seq` waits a step instead of computing the same page beside it (the requests of a shared
        system prompt arriving together); SGLang's scheduler does the same. The n choices of one request
        already wait for sequence 0 (Sequence.is_blocked).
        Only sequences on the same cached path qualify: same pages so far (or both at the root with the
        same adapter) and the same tokens in that page.
        """
        if not self.pool.enable_prefix_caching:
            return False
        ps, start = self.pool.page_size, seq.num_computed_tokens
        end, k = start + ps, start // ps
        if end > seq.num_tokens - 1:
            return False  # no full page left that the cache could give it
        page = seq.token_ids[start:end]
        for other in prefilling:
            if other.num_computed_tokens >= end or other.num_tokens < end or other.token_ids[start:end] != page:
                continue
            if k == 0 and other.request.cache_key == seq.request.cache_key:
                return True
            if k > 0 and len(other.cache_nodes) >= k and other.cache_nodes[k - 1] == seq.cache_nodes[k - 1]:
                return True
        return False

    def finish_step(self, scheduled: list[ScheduledSequence]) -> None:
        """Marks the batch's tokens computed and publishes pages that became full."""
        ps = self.pool.page_size
        for seq, num_new in scheduled:
            seq.num_computed_tokens += num_new
            for j in range(len(seq.cache_nodes), seq.num_computed_tokens // ps):
                parent = seq.cache_nodes[-1] if seq.cache_nodes else ROOT_NODE
                tokens = seq.token_ids[j * ps : (j + 1) * ps]
                seq.cache_nodes.append(self.pool.register(parent, tokens, seq.page_ids[j], seq.request.cache_key))

    def _pages_needed(self, seq: Sequence, num_new: int) -> int:
        total = seq.num_computed_tokens + num_new
        return max(0, -(-total // self.pool.page_size) - len(seq.page_ids))

    def _grow(self, seq: Sequence, num_new: int) -> None:
        seq.page_ids.extend(self.pool.allocate(self._pages_needed(seq, num_new)))

    def _preempt(self, seq: Sequence) -> None:
        self._free(seq)
        seq.status = "waiting"
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _free(self, seq: Sequence) -> None:
        self.pool.release(seq.page_ids)
        seq.page_ids = []
        seq.cache_nodes = []
        seq.num_computed_tokens = 0

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)


def _in_prefill(seq: Sequence) -> bool:
    """Prompt tokens (beyond the last one, which every step computes for a decode) still to compute."""
    return seq.num_computed_tokens + 1 < seq.num_tokens
