"""Plain data exchanged between the engine and its callers (the server, benchmarks, tests).

No torch here: the server builds these from HTTP bodies and reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

FinishReason = Literal["stop", "length", "abort"]


class EngineError(Exception):
    """A request the engine cannot take; the message is fit for a user (the server answers 400)."""


@dataclass(slots=True)
class SamplingParams:
    """How to sample one request. Defaults follow the OpenAI API.

    Validation of ranges is done by the server (400s); the engine asserts nothing about them
    beyond what would break it.
    """

    n: int = 1
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = -1  # -1 or 0: disabled
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    max_tokens: int = 16
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: int | None = None  # None: no logprobs; k >= 0: chosen token + k top alternatives
    prompt_logprobs: int | None = None  # None: none; k >= 0: logprob of each prompt token + k top
    skip_special_tokens: bool = True
    # Structured output: at most one of these (issue: xgrammar constraints).
    json_schema: str | None = None
    json_object: bool = False
    regex: str | None = None
    ebnf: str | None = None

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(slots=True)
class TokenLogprob:
    """Logprob of one token plus the top alternatives at that position (token id -> logprob)."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass(slots=True)
class CompletionOutput:
    """What one of the n sequences of a request produced in one engine step (a delta)."""

    index: int
    new_token_ids: list[int]
    new_text: str
    new_logprobs: list[TokenLogprob] | None
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None  # the stop string or stop token id that ended it

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(slots=True)
class RequestOutput:
    """The deltas of one request after one engine step.

    ``prompt_logprobs`` is filled once (on the first output) when asked for; its first entry is
    None because the first prompt token has no logprob.
    """

    request_id: str
    outputs: list[CompletionOutput]
    num_prompt_tokens: int
    num_cached_tokens: int
    prompt_logprobs: list[TokenLogprob | None] | None = None
    finished: bool = False  # every sequence of the request has finished
    queue_time: float | None = None  # seconds from arrival to first scheduled (on the first output)


@dataclass(slots=True)
class EngineStats:
    """A snapshot for /metrics and /get_server_info. Counters are cumulative since start."""

    num_running: int
    num_waiting: int
    num_total_pages: int
    num_used_pages: int  # pages referenced by live requests (cached-but-free pages not counted)
    page_size: int
    prefix_cache_queries: int  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int  # of those, tokens found
    num_preemptions: int
    # LoRA (empty when it is off): requests per adapter name, the adapters loaded, the slots per step
    lora_running: dict[str, int] = field(default_factory=dict)
    lora_waiting: dict[str, int] = field(default_factory=dict)
    loaded_adapters: list[str] = field(default_factory=list)
    max_loras: int = 0

    @property
    def kv_cache_usage(self) -> float:
        return self.num_used_pages / self.num_total_pages if self.num_total_pages else 0.0


class EngineHealth(NamedTuple):
    """What /health reports: the step loop alive, and finishing steps when it has work."""

    is_alive: bool
    is_stepping: bool  # no work waiting, or a step finished within the stall timeout
    reason: str | None  # why it is unhealthy

    @property
    def is_healthy(self) -> bool:
        return self.is_alive and self.is_stepping
