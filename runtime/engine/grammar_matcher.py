"""Per-sequence grammar state and the per-step token mask of a batch.

Each constrained sequence owns one ``SequenceGrammar`` (an xgrammar ``GrammarMatcher``), advanced
with every token the sequence accepts. Its state is a function of the sequence's output tokens only:
a preempted sequence keeps its tokens and its matcher, and recomputing its KV samples nothing, so no
token is ever fed twice.

A sequence is finished by its grammar when the matcher is terminated (it accepted a stop token), or
when the text so far is complete and nothing but a stop token may follow: the sequence then ends with
``finish_reason="stop"`` without sampling (or emitting) the end-of-sequence token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import xgrammar as xgr

from fleetserve.runtime.engine.grammar_compiler import (
    BITS_PER_WORD,
    CompiledConstraint,
    token_bitmask_without,
)

logger = logging.getLogger(__name__)

FILL_THREADS = 1  # xgrammar threads filling a batch's bitmask rows (2 measured slower on 2 cores)


class SequenceGrammar:
    def __init__(self, compiled: CompiledConstraint, vocab_size: int):
        self.matcher = xgr.GrammarMatcher(compiled.grammar)
        self.token_filter = compiled.token_filter
        self.vocab_size = vocab_size
        self._not_stop = token_bitmask_without(self.matcher.stop_token_ids, vocab_size)
        self.is_finished = False

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        """Writes the tokens allowed next into ``bitmask[row]``."""
        self.matcher.fill_next_token_bitmask(bitmask, row)
        if self.token_filter is not None:
            bitmask[row] &= self.token_filter

    def accept(self, token: int) -> bool:
        """Advances past ``token``; False when the grammar refuses it (the sequence must end)."""
        if not self.matcher.accept_token(token):
            logger.warning("grammar refused token %d; ending the sequence", token)
            self.is_finished = True
            return False
        self.is_finished = self.matcher.is_terminated() or (self.matcher.is_completed() and self._only_stop_allowed())
        return True

    def _only_stop_allowed(self) -> bool:
        row = xgr.allocate_token_bitmask(1, self.vocab_size)
        self.fill(row, 0)
        return not bool((row[0] & self._not_stop).any())


class GrammarMaskBuilder:
    """Builds a step's token mask: the constrained rows' bitmasks filled in one xgrammar call."""

    def __init__(self, vocab_size: int, max_threads: int = FILL_THREADS):
        self.vocab_size = vocab_size
        self._batch = xgr.BatchGrammarMatcher(max_threads)

    def build(self, grammars: Sequence[SequenceGrammar | None], device: torch.device) -> torch.Tensor | None:
        """[rows, vocab] bool (True = allowed) for the sampler, or None when no row is constrained."""
        rows = [i for i, g in enumerate(grammars) if g is not None]
        if not rows:
            return None
        bitmask = xgr.allocate_token_bitmask(len(grammars), self.vocab_size)  # all allowed
        matchers = [grammars[i].matcher for i in rows]  # type: ignore[union-attr]
        self._batch.batch_fill_next_token_bitmask(matchers, bitmask, rows)
        by_filter: dict[int, tuple[torch.Tensor, list[int]]] = {}
        for i in rows:
            token_filter = grammars[i].token_filter  # type: ignore[union-attr]
            if token_filter is not None:
                by_filter.setdefault(id(token_filter), (token_filter, []))[1].append(i)
        for token_filter, filtered in by_filter.values():
            bitmask[filtered] &= token_filter
        if device.type != "cpu":  # ship the packed words (32x smaller) and unpack on the device
            return unpack_bitmask_torch(bitmask.to(device, non_blocking=True), self.vocab_size)
        return unpack_bitmask(bitmask, self.vocab_size)


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """xgrammar's int32 bitmask [rows, words] (CPU) -> bool [rows, vocab_size]."""
    as_bytes = bitmask.contiguous().numpy().view(np.uint8)  # little-endian words: bit order = token order
    bits = np.unpackbits(as_bytes, axis=1, count=vocab_size, bitorder="little")
    return torch.from_numpy(bits).view(torch.bool)


def unpack_bitmask_torch(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The same with torch ops, on the bitmask's device."""
    shifts = torch.arange(BITS_PER_WORD, dtype=torch.int32, device=bitmask.device)
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1
    return bits.view(bitmask.shape[0], -1)[:, :vocab_size].bool()
