"""Logprobs reported to users: the chosen token's and the top-k alternatives', per position.

They are computed from the model's raw logits (``log_softmax`` of the unprocessed logits, in
float32): vLLM's default "raw logprobs". Penalties, logit_bias, grammar masks, temperature and
top-k/top-p/min-p do not change them, so a token forced by logit_bias (or a grammar) reports its
raw logprob, which may be very low; the alternatives are the model's top-k, whether or not the
sampler could have picked them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fleetserve.runtime.engine.row_select import select_rows
from fleetserve.runtime.engine.types import TokenLogprob

# Upper bound on float32 elements materialized at once by prompt_logprobs (256 MiB).
_PROMPT_CHUNK_ELEMENTS = 1 << 26


def sampled_logprobs(
    raw_logits: torch.Tensor, token_ids: torch.Tensor, num_top: Sequence[int | None]
) -> list[TokenLogprob | None]:
    """Per row: None when ``num_top[row]`` is None, else the logprob of ``token_ids[row]`` and the top-k."""
    wanted = [i for i, k in enumerate(num_top) if k is not None]
    results: list[TokenLogprob | None] = [None] * len(num_top)
    if not wanted:
        return results
    index = select_rows(wanted, len(num_top), raw_logits.device)
    computed = _logprobs_with_top(raw_logits[index], token_ids[index], [num_top[i] or 0 for i in wanted])
    for i, logprob in zip(wanted, computed, strict=True):
        results[i] = logprob
    return results


def prompt_logprobs(
    logits: torch.Tensor, target_ids: torch.Tensor | Sequence[int], k: int
) -> list[TokenLogprob]:
    """``logits[t]`` predicts ``target_ids[t]`` (the token at position t + 1); one entry per position.

    Processes the positions in chunks so that long prompts do not materialize a float32 copy of
    the whole ``[T, vocab]`` block at once.
    """
    targets = torch.as_tensor(target_ids, dtype=torch.long).to(logits.device)
    if targets.shape[0] != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} logit rows for {targets.shape[0]} target tokens")
    chunk = max(1, _PROMPT_CHUNK_ELEMENTS // max(1, logits.shape[-1]))
    results: list[TokenLogprob] = []
    for start in range(0, logits.shape[0], chunk):
        stop = start + chunk
        results += _logprobs_with_top(logits[start:stop], targets[start:stop], [k] * len(targets[start:stop]))
    return results


def _logprobs_with_top(logits: torch.Tensor, chosen: torch.Tensor, ks: list[int]) -> list[TokenLogprob]:
    logprobs = torch.log_softmax(logits.to(torch.float32), dim=-1)
    chosen_logprobs = logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).tolist()
    chosen_ids = chosen.tolist()
    max_k = min(max(ks, default=0), logprobs.shape[-1])
    if max_k > 0:
        top = logprobs.topk(max_k, dim=-1)
        top_ids, top_values = top.indices.tolist(), top.values.tolist()
    else:
        top_ids = top_values = [[] for _ in ks]
    return [
        TokenLogprob(token_id, logprob, list(zip(ids[:k], values[:k], strict=True)))
        for token_id, logprob, ids, values, k in zip(
            chosen_ids, chosen_logprobs, top_ids, top_values, ks, strict=True
        )
    ]
