"""Turn one step's last-position logits into one token per sequence.

Processing order, per row (only the stages some row asked for run at all):

1. penalties: repetition (prompt + output tokens), frequency and presence (output tokens);
2. grammar mask: ``allowed_mask`` ([rows, vocab] bool, False = banned), the structured-output hook;
3. logit_bias; 4. min_tokens (bans eos and stop_token_ids while the output is too short);
5. temperature: 0 means greedy, an argmax that ignores top_k/top_p/min_p and the seed;
6. top_k → top_p → min_p; 7. draw.

Logprobs are the model's raw logprobs (see ``logprobs.py``): log_softmax of the unprocessed logits,
also for a token that a logit_bias or a grammar forced.

Seeding. A sampled row draws exactly one uniform number u per step and picks its token by inverse
CDF over the processed distribution (cumulative sums in float64, so tokens with tiny probabilities
keep their share). For a row with ``params.seed`` set, u is a counter-based hash (BLAKE2b) of
(seed, seed_offset, number of output tokens) and nothing else: the token does not depend on the
other rows of the batch, on the row's position, on the device, or on whether the sequence was
preempted and recomputed (given the same logits). ``seed_offset`` (the sequence's index among the
request's n) gives each child its own stream. Unseeded rows take u from a process-wide generator.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from fleetserve.runtime.engine.logprobs import sampled_logprobs
from fleetserve.runtime.engine.penalties import apply_logit_bias, apply_min_tokens, apply_penalties
from fleetserve.runtime.engine.truncation import apply_min_p, apply_top_k_top_p
from fleetserve.runtime.engine.types import SamplingParams, TokenLogprob

logger = logging.getLogger(__name__)

_UNIT_53 = 2.0**-53
_unseeded_rng = random.Random()
# A forked engine process (--dp) must not repeat its parent's unseeded draws.
os.register_at_fork(after_in_child=_unseeded_rng.seed)


@dataclass(slots=True)
class SamplingRow:
    """One row of the logits batch: one sequence that samples this step."""

    params: SamplingParams
    token_ids: list[int]  # the sequence's prompt + generated tokens before this step (not copied)
    num_prompt_tokens: int
    seed_offset: int = 0  # the sequence's index within its request (n > 1)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        """A copy: only the penalties that count output tokens take it."""
        return self.token_ids[self.num_prompt_tokens :]


class SamplerOutput(NamedTuple):
    token_ids: list[int]
    logprobs: list[TokenLogprob | None]  # None for rows whose params.logprobs is None


def sample(
    logits: torch.Tensor,
    rows: Sequence[SamplingRow],
    eos_token_ids: Collection[int] = frozenset(),
    allowed_mask: torch.Tensor | None = None,
) -> SamplerOutput:
    """Pick one token per row of ``logits`` ([len(rows), vocab], any float dtype, not modified)."""
    if logits.dim() != 2 or logits.shape[0] != len(rows):
        raise ValueError(f"logits of shape {tuple(logits.shape)} for {len(rows)} rows")
    if allowed_mask is None and all(_is_plain_greedy(row) for row in rows):
        token_ids = logits.argmax(dim=-1)  # nothing to process: no copy
    else:
        processed = logits.to(torch.float32, copy=True)
        apply_penalties(processed, rows)
        if allowed_mask is not None:
            processed.masked_fill_(~allowed_mask, float("-inf"))
        apply_logit_bias(processed, rows)
        apply_min_tokens(processed, rows, eos_token_ids)
        token_ids = _choose_tokens(processed, rows)
    logprobs = sampled_logprobs(logits, token_ids, [row.params.logprobs for row in rows])
    return SamplerOutput(token_ids.tolist(), logprobs)


def _is_plain_greedy(row: SamplingRow) -> bool:
    """Greedy with nothing that changes the logits: the argmax of the raw logits."""
    params = row.params
    return (
        params.is_greedy
        and params.repetition_penalty == 1.0
        and params.frequency_penalty == 0.0
        and params.presence_penalty == 0.0
        and not params.logit_bias
        and row.num_output_tokens >= params.min_tokens
    )


def _choose_tokens(logits: torch.Tensor, rows: Sequence[SamplingRow]) -> torch.Tensor:
    """Greedy rows take the argmax; the others are drawn. ``logits`` may be modified."""
    drawn = [i for i, row in enumerate(rows) if not row.params.is_greedy]
    if not drawn:
        return logits.argmax(dim=-1)
    if len(drawn) == len(rows):
        return _draw(logits, rows)
    token_ids = logits.argmax(dim=-1)
    index = torch.tensor(drawn, dtype=torch.long, device=logits.device)
    token_ids[index] = _draw(logits[index], [rows[i] for i in drawn])
    return token_ids


def _draw(logits: torch.Tensor, rows: Sequence[SamplingRow]) -> torch.Tensor:
    """Temperature, top-k/top-p/min-p, then one inverse-CDF draw per row. Modifies ``logits``."""
    params = [row.params for row in rows]
    temperature = torch.tensor([p.temperature for p in params], dtype=torch.float32)
    logits.div_(temperature.to(logits.device).unsqueeze(1))
    apply_top_k_top_p(logits, [p.top_k for p in params], [p.top_p for p in params])
    apply_min_p(logits, [p.min_p for p in params])
    uniforms = torch.tensor([_uniform(row) for row in rows], dtype=torch.float64).to(logits.device)
    return draw_inverse_cdf(logits, uniforms)


def draw_inverse_cdf(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Token per row with P(token) ∝ exp(logit), chosen by ``uniforms`` (float64 in [0, 1)).

    Token i owns the interval (cdf[i-1], cdf[i]] of the float64 cumulative weights and the target is
    (1 - u) * total, which lies in (0, total]: a token of weight 0 (logit -inf) is never chosen.
    """
    weights = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
    cdf = torch.cumsum(weights, dim=-1, dtype=torch.float64)
    target = (1.0 - uniforms) * cdf[:, -1]
    token_ids = torch.searchsorted(cdf, target.unsqueeze(1)).squeeze(1)
    # A row with no allowed token at all (NaN weights) must still yield an id inside the vocabulary.
    return token_ids.clamp_(max=logits.shape[-1] - 1)


def _uniform(row: SamplingRow) -> float:
    if row.params.seed is None:
        return _unseeded_rng.random()
    return seeded_uniform(row.params.seed, row.seed_offset, row.num_output_tokens)


def seeded_uniform(seed: int, seed_offset: int, step: int) -> float:
    """A uniform number in [0, 1) that depends only on its three arguments (53 random bits).

    Counter-based: BLAKE2b of the integers' decimal forms, so any int seed (negative, > 64 bits)
    gets its own stream.
    """
    key = f"{seed}:{seed_offset}:{step}".encode()
    bits = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    return (bits >> 11) * _UNIT_53
