"""Restrict a row's support before drawing: top-k, then top-p, then min-p.

All three work on temperature-scaled float32 logits ``[rows, vocab]`` and drop tokens by setting
them to -inf; each keeps at least the most likely token. A row pays only for what it asked for:
rows with top_p < 1 are sorted (top_k is applied in the same sorted pass), rows with only top_k
use ``torch.topk``, min_p is one comparison against the row maximum.

- top_k keeps exactly k tokens (ties at the k-th value broken by ``topk``); top_k <= 0 (the
  OpenAI/SGLang "-1 = disabled" convention) or >= vocab means disabled.
- top_p keeps the smallest set of most likely tokens whose probability (after top_k,
  renormalized) reaches top_p: a token is dropped when the tokens ranked above it already
  sum to >= top_p.
- min_p drops tokens whose probability is below ``min_p * max probability``; that ratio does not
  depend on renormalization, so it is ``logit < max_logit + log(min_p)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fleetserve.runtime.engine.row_select import select_rows

_NEG_INF = float("-inf")


def top_k_enabled(top_k: int, vocab_size: int) -> bool:
    return 0 < top_k < vocab_size


def apply_top_k_top_p(logits: torch.Tensor, top_ks: Sequence[int], top_ps: Sequence[float]) -> None:
    """In place: top-k then top-p, each row with its own parameters."""
    vocab_size = logits.shape[-1]
    with_top_p = [i for i, p in enumerate(top_ps) if p < 1.0]
    only_top_k = [i for i, k in enumerate(top_ks) if top_k_enabled(k, vocab_size) and top_ps[i] >= 1.0]
    if with_top_p:
        ks = [top_ks[i] if top_k_enabled(top_ks[i], vocab_size) else vocab_size for i in with_top_p]
        _update_rows(
            logits, with_top_p, lambda sub: _top_k_top_p_sorted(sub, ks, [top_ps[i] for i in with_top_p])
        )
    if only_top_k:
        _update_rows(logits, only_top_k, lambda sub: _top_k(sub, [top_ks[i] for i in only_top_k]))


def apply_min_p(logits: torch.Tensor, min_ps: Sequence[float]) -> None:
    """In place; rows with min_p == 0 are unaffected."""
    if not any(p > 0.0 for p in min_ps):
        return
    log_min_p = [math.log(p) if p > 0.0 else _NEG_INF for p in min_ps]
    offset = torch.tensor(log_min_p, dtype=torch.float32).to(logits.device).unsqueeze(1)
    threshold = logits.max(dim=-1, keepdim=True).values + offset
    logits.masked_fill_(logits < threshold, _NEG_INF)


def _update_rows(logits: torch.Tensor, selected: list[int], transform) -> None:
    """Replace the selected rows of ``logits`` by ``transform(those rows)``."""
    index = select_rows(selected, logits.shape[0], logits.device)
    logits[index] = transform(logits[index])


def _top_k(logits: torch.Tensor, ks: list[int]) -> torch.Tensor:
    top_indices = logits.topk(max(ks), dim=-1).indices
    k_column = torch.tensor(ks, dtype=torch.long).to(logits.device).unsqueeze(1)
    is_kept_rank = torch.arange(top_indices.shape[-1], device=logits.device).unsqueeze(0) < k_column
    is_kept = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top_indices, is_kept_rank)
    return logits.masked_fill(~is_kept, _NEG_INF)


def _top_k_top_p(sorted_logits: torch.Tensor, ks: list[int], ps: list[float]) -> torch.Tensor:
    """Mask of the sorted (descending) positions to drop."""
    device = sorted_logits.device
    rank = torch.arange(sorted_logits.shape[-1], device=device).unsqueeze(0)
    k_column = torch.tensor(ks, dtype=torch.long).to(device).unsqueeze(1)
    sorted_logits = sorted_logits.masked_fill(rank >= k_column, _NEG_INF)
    probs = sorted_logits.softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs
    p_column = torch.tensor(ps, dtype=torch.float32).to(device).unsqueeze(1)
    is_dropped = (rank >= k_column) | (mass_above >= p_column)
    is_dropped[:, 0] = False
    return is_dropped


def _top_k_top_p_sorted(logits: torch.Tensor, ks: list[int], ps: list[float]) -> torch.Tensor:
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    is_dropped_sorted = _top_k_top_p(sorted_logits, ks, ps)
    is_dropped = torch.empty_like(is_dropped_sorted).scatter_(-1, order, is_dropped_sorted)
    return logits.masked_fill(is_dropped, _NEG_INF)
