"""Per-request logit adjustments applied before temperature: penalties, logit_bias, min_tokens.

Every function edits a float32 ``[rows, vocab]`` logits tensor in place and does nothing (no
allocation, no kernel) for a batch where no row asked for it. Token histories are turned into
tensors once per call and scattered over the batch in one operation; nothing loops per token in
Python except flattening the id lists.

- Repetition penalty (HF/vLLM semantics): for every token seen in the prompt or the output, a
  positive logit is divided by the penalty and a negative one multiplied by it.
- Frequency and presence penalties (OpenAI semantics), over output tokens only:
  ``logit -= frequency_penalty * count + presence_penalty * (count > 0)``.
- logit_bias: an additive bias per token id (ids outside the logits' vocabulary are ignored).
- min_tokens: while the output is shorter than min_tokens, eos (unless ignore_eos) and
  stop_token_ids get -inf. The ban yields when it would leave a row with no token at all (a
  grammar that allows only eos): the grammar is the hard constraint.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import torch

from fleetserve.runtime.engine.row_select import select_rows

if TYPE_CHECKING:
    from fleetserve.runtime.engine.sampler import SamplingRow


def apply_penalties(logits: torch.Tensor, rows: Sequence[SamplingRow]) -> None:
    """Repetition, then frequency and presence penalties, in place."""
    repeated = [i for i, row in enumerate(rows) if row.params.repetition_penalty != 1.0]
    if repeated:
        _apply_repetition_penalty(logits, rows, repeated)
    counted = [
        i
        for i, row in enumerate(rows)
        if row.params.frequency_penalty != 0.0 or row.params.presence_penalty != 0.0
    ]
    if counted:
        _apply_frequency_presence(logits, rows, counted)


def apply_logit_bias(logits: torch.Tensor, rows: Sequence[SamplingRow]) -> None:
    entries = [
        (i, token_id, bias) for i, row in enumerate(rows) for token_id, bias in row.params.logit_bias.items()
    ]
    if not entries:
        return
    row_ids, token_ids, biases = _entries_to_tensors(entries, logits)
    logits.index_put_((row_ids, token_ids), biases.to(logits.dtype), accumulate=True)


def apply_min_tokens(
    logits: torch.Tensor, rows: Sequence[SamplingRow], eos_token_ids: Collection[int]
) -> None:
    entries = [
        (i, token_id, 0.0)
        for i, row in enumerate(rows)
        if row.num_output_tokens < row.params.min_tokens
        for token_id in _stop_token_ids(row, eos_token_ids)
    ]
    if not entries:
        return
    row_ids, token_ids, _ = _entries_to_tensors(entries, logits)
    before = logits[row_ids, token_ids]
    logits[row_ids, token_ids] = float("-inf")
    # Rows left with no finite logit get their banned tokens back.
    is_empty_row = torch.isneginf(logits).all(dim=-1)
    restore = is_empty_row[row_ids]
    logits[row_ids[restore], token_ids[restore]] = before[restore]


def _stop_token_ids(row: SamplingRow, eos_token_ids: Collection[int]) -> set[int]:
    banned = set(row.params.stop_token_ids)
    if not row.params.ignore_eos:
        banned.update(eos_token_ids)
    return banned


def _entries_to_tensors(
    entries: list[tuple[int, int, float]], logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, token id, value) triples → three device tensors, dropping ids outside the vocabulary."""
    vocab_size = logits.shape[-1]
    kept = [entry for entry in entries if 0 <= entry[1] < vocab_size]
    row_ids = torch.tensor([entry[0] for entry in kept], dtype=torch.long)
    token_ids = torch.tensor([entry[1] for entry in kept], dtype=torch.long)
    values = torch.tensor([entry[2] for entry in kept], dtype=torch.float32)
    device = logits.device
    return row_ids.to(device), token_ids.to(device), values.to(device)


def token_counts(token_lists: Sequence[Sequence[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """``[len(token_lists), vocab_size]`` float32 counts of each token id per list (one scatter_add)."""
    lengths = torch.tensor([len(tokens) for tokens in token_lists], dtype=torch.long)
    flat = torch.tensor(list(itertools.chain.from_iterable(token_lists)), dtype=torch.long)
    row_of = torch.repeat_interleave(torch.arange(len(token_lists)), lengths)
    in_vocab = (flat >= 0) & (flat < vocab_size)
    flat_index = (row_of[in_vocab] * vocab_size + flat[in_vocab]).to(device)
    counts = torch.zeros(len(token_lists) * vocab_size, dtype=torch.float32, device=device)
    counts.scatter_add_(0, flat_index, torch.ones_like(flat_index, dtype=torch.float32))
    return counts.view(len(token_lists), vocab_size)


def _apply_repetition_penalty(logits: torch.Tensor, rows: Sequence[SamplingRow], selected: list[int]) -> None:
    histories = [rows[i].token_ids for i in selected]
    is_seen = token_counts(histories, logits.shape[-1], logits.device) > 0
    penalty = _column([rows[i].params.repetition_penalty for i in selected], logits)
    index = select_rows(selected, logits.shape[0], logits.device)
    sub = logits[index]
    penalized = torch.where(sub > 0, sub / penalty, sub * penalty)
    logits[index] = torch.where(is_seen, penalized, sub)


def _apply_frequency_presence(logits: torch.Tensor, rows: Sequence[SamplingRow], selected: list[int]) -> None:
    counts = token_counts([rows[i].output_token_ids for i in selected], logits.shape[-1], logits.device)
    frequency = _column([rows[i].params.frequency_penalty for i in selected], logits)
    presence = _column([rows[i].params.presence_penalty for i in selected], logits)
    index = select_rows(selected, logits.shape[0], logits.device)
    logits[index] -= frequency * counts + presence * (counts > 0).to(torch.float32)


def _column(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """A ``[len(values), 1]`` float32 tensor on ``like``'s device, to broadcast over the vocabulary."""
    return torch.tensor(values, dtype=torch.float32).to(like.device).unsqueeze(1)
