"""Per-request and per-sequence state held by the engine.

A request with ``n`` choices owns ``n`` sequences. Sequence 0 computes the prompt; the others wait
until it has, then take its full prompt pages from the prefix cache (sharing them by reference) and
compute only the tail of the prompt that does not fill a page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from fleetserve.runtime.engine.detokenizer import IncrementalDetokenizer
from fleetserve.runtime.engine.types import FinishReason, SamplingParams, TokenLogprob

if TYPE_CHECKING:
    from fleetserve.runtime.engine.grammar_matcher import SequenceGrammar
    from fleetserve.runtime.engine.lora.adapter import LoRAAdapter

SequenceStatus = Literal["waiting", "running", "finished"]


@dataclass(slots=True)
class Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    lora: LoRAAdapter | None = None  # the adapter (one load of it) every token goes through; None: base model
    arrival_time: float = field(default_factory=time.monotonic)
    first_scheduled_time: float | None = None
    num_cached_tokens: int = 0  # prefix-cache hit of the first scheduling of sequence 0
    prompt_logprobs: list[TokenLogprob | None] | None = None
    prompt_logprobs_sent: bool = False
    first_output_sent: bool = False
    is_grammar_pending: bool = False  # its structured-output grammar is still compiling
    sequences: list[Sequence] = field(default_factory=list)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def lora_name(self) -> str | None:
        return None if self.lora is None else self.lora.name

    @property
    def cache_key(self) -> tuple[str, int] | None:
        """Extra prefix-cache key: None for the base model, (adapter name, load version) for an adapter, so KV
        computed under one adapter is never reused under another, nor under a reload of the same name."""
        return None if self.lora is None else self.lora.key

    @property
    def is_finished(self) -> bool:
        return all(s.status == "finished" for s in self.sequences)


@dataclass(slots=True, eq=False)
class Sequence:
    request: Request
    index: int
    detokenizer: IncrementalDetokenizer
    token_ids: list[int]  # prompt + output
    status: SequenceStatus = "waiting"
    num_computed_tokens: int = 0
    page_ids: list[int] = field(default_factory=list)
    cache_nodes: list[int] = field(default_factory=list)  # prefix-cache node of each full computed page
    was_scheduled: bool = False
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    finish_sent: bool = False
    # produced since the last output was sent
    new_token_ids: list[int] = field(default_factory=list)
    new_text: str = ""
    new_logprobs: list[TokenLogprob] = field(default_factory=list)
    grammar: SequenceGrammar | None = None  # the structured-output matcher, once compiled

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.request.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.request.num_prompt_tokens

    @property
    def is_blocked(self) -> bool:
        """Its grammar is still compiling, or it is a sibling of an n > 1 request whose prompt is not
        computed yet by sequence 0."""
        if self.request.is_grammar_pending:
            return True
        if self.index == 0:
            return False
        first = self.request.sequences[0]
        return first.status != "finished" and first.num_computed_tokens < self.request.num_prompt_tokens

    @property
    def wants_prompt_logprobs(self) -> bool:
        logprobs = self.request.prompt_logprobs
        return self.index == 0 and logprobs is not None and len(logprobs) < self.request.num_prompt_tokens
