"""Prompts with an exact token count under the model's tokenizer.

Random token ids rarely survive decode → encode unchanged (neighbours merge, pre-tokenizers split
differently), so a prompt is built by rounds: decode the ids to text, re-encode the text, and keep the
re-encoded ids, trimmed or topped up with fresh random ids, until the text encodes to exactly the
requested count. About one suffix in a few hundred oscillates between two lengths; those are redrawn
every RESTART_EVERY rounds. The prompt is sent as that text. Behind a shared prefix the prefix's own ids must also
stay intact, so the prefix cache sees the same tokens in every prompt of the group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fleetserve.runtime.bench.tokenizer import TokenizerLike

# Decode/encode rounds before giving up on one prompt; convergence takes one to three in practice.
MAX_ROUNDS = 64
# A few suffixes oscillate (trimming re-creates a merge that topping up undoes): start afresh after this many.
RESTART_EVERY = 8


class Prompt(NamedTuple):
    text: str
    token_ids: tuple[int, ...]  # tokenizer.encode(text, add_special_tokens=False)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


EMPTY_PROMPT = Prompt("", ())


class PromptLengthError(ValueError):
    """No text with the requested token count was found within MAX_ROUNDS."""


@dataclass(slots=True)
class PromptBuilder:
    tokenizer: TokenizerLike
    pool: np.ndarray  # token ids to draw from (tokenizer.sampleable_token_ids)
    rng: np.random.Generator

    def sample_ids(self, num_tokens: int) -> list[int]:
        return [int(i) for i in self.rng.choice(self.pool, size=num_tokens)]

    def build(self, num_tokens: int, prefix: Prompt = EMPTY_PROMPT) -> Prompt:
        """`prefix.text` + random text, encoding to prefix.token_ids followed by `num_tokens` more ids."""
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        num_prefix = prefix.num_tokens
        suffix = self.sample_ids(num_tokens)
        for round_ in range(1, MAX_ROUNDS + 1):
            text = prefix.text + self.tokenizer.decode(suffix, skip_special_tokens=False)
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if tuple(ids[:num_prefix]) != prefix.token_ids:
                suffix = self.sample_ids(num_tokens)  # the suffix merged into the prefix: start afresh
                continue
            tail = ids[num_prefix:]
            if len(tail) == num_tokens:
                return Prompt(text, tuple(ids))
            if round_ % RESTART_EVERY == 0:
                suffix = self.sample_ids(num_tokens)
                continue
            suffix = (
                tail[:num_tokens]
                if len(tail) > num_tokens
                else tail + self.sample_ids(num_tokens - len(tail))
            )
        raise PromptLengthError(f"no text of exactly {num_tokens} tokens after {MAX_ROUNDS} rounds")
