"""Running engine requests for an endpoint: pre-flight checks, the tracked stream, collection, usage.

Both endpoints check everything that can be a 400 (token ids in the vocabulary, the context length)
before they take an admission ticket, so a stream never starts for a request the engine refuses.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fleetserve.runtime.engine.lora.adapter import AdapterNotFoundError
from fleetserve.runtime.engine.types import EngineError, RequestOutput, SamplingParams, TokenLogprob
from fleetserve.runtime.server.errors import bad_request, not_found
from fleetserve.runtime.server.state import ServerState
from fleetserve.runtime.server.streaming import aclose_shielded


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def default_max_tokens(state: ServerState, num_prompt_tokens: int) -> int:
    """The rest of the context (at least 1, so an over-long prompt gets the engine's message)."""
    return max(1, state.max_model_len - num_prompt_tokens)


def check_generation_model(state: ServerState) -> None:
    """An embedding model refuses chat and completions (400)."""
    if getattr(state.engine, "is_embedding", False):
        raise bad_request(f"model '{state.settings.model_name}' is an embedding model: it does not support chat "
                          "or completions; use /v1/embeddings", "model")


def check_token_ids(state: ServerState, token_ids: list[int] | set[int], param: str) -> None:
    vocab = state.vocab_size
    bad = [t for t in token_ids if not 0 <= t < vocab]
    if bad:
        raise bad_request(f"{param} has token id {bad[0]} outside the vocabulary (0..{vocab - 1})", param)


def drop_unknown_logit_bias(state: ServerState, params: SamplingParams) -> SamplingParams:
    """A bias on an id beyond the vocabulary names no token and cannot change sampling: drop it
    (SGLang's documented examples bias ids such as 67890 whatever the model's vocabulary)."""
    params.logit_bias = {t: bias for t, bias in params.logit_bias.items() if t < state.vocab_size}
    return params


def check_request(state: ServerState, prompt_ids: list[int], params: SamplingParams) -> None:
    """Everything about one engine request that can be a 400, before it is admitted."""
    if not prompt_ids:
        raise bad_request("the prompt is empty", "prompt")
    check_token_ids(state, set(params.stop_token_ids), "stop_token_ids")
    try:
        state.engine.check_request(prompt_ids, params)
    except EngineError as exc:
        raise bad_request(str(exc)) from exc


def constraint_param(params: SamplingParams) -> str | None:
    """The request field that holds the structured-output constraint, for error bodies."""
    if params.regex is not None:
        return "regex"
    if params.ebnf is not None:
        return "ebnf"
    if params.json_schema is not None or params.json_object:
        return "response_format"
    return None


async def check_grammar(state: ServerState, params: SamplingParams) -> None:
    """A schema, regex or grammar that xgrammar cannot compile is a 400 with xgrammar's reason."""
    try:
        await state.engine.check_grammar(params)
    except EngineError as exc:
        raise bad_request(str(exc), constraint_param(params)) from exc


async def engine_stream(state: ServerState, request_id: str, prompt_ids: list[int],
                        params: SamplingParams, lora_name: str | None = None) -> AsyncIterator[RequestOutput]:
    """The engine's output stream with metrics; closing it early aborts the engine request.
    `lora_name`: the loaded adapter to run under (None: the base model)."""
    tracker = state.metrics.track()
    stream = (state.engine.generate(request_id, prompt_ids, params) if lora_name is None
              else state.engine.generate(request_id, prompt_ids, params, lora_name=lora_name))
    finished = False
    try:
        async for output in stream:
            tracker.observe(output)
            finished = output.finished
            yield output
    except AdapterNotFoundError as exc:  # unloaded between the request's check and the engine taking it
        raise not_found(str(exc), "model") from exc
    finally:
        tracker.finish(aborted=not finished)
        if not finished:
            await aclose_shielded(stream)


@dataclass(slots=True)
class ChoiceResult:
    texts: list[str] = field(default_factory=list)
    num_tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    matched_stop: str | int | None = None

    @property
    def text(self) -> str:
        return "".join(self.texts)


@dataclass(slots=True)
class RequestResult:
    choices: list[ChoiceResult]
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    prompt_logprobs: list[TokenLogprob | None] | None = None


async def collect(stream: AsyncIterator[RequestOutput], n: int) -> RequestResult:
    """Run one engine request to the end and gather its n choices."""
    result = RequestResult([ChoiceResult() for _ in range(n)])
    async for output in stream:
        result.num_prompt_tokens = output.num_prompt_tokens
        result.num_cached_tokens = output.num_cached_tokens
        if output.prompt_logprobs is not None:
            result.prompt_logprobs = output.prompt_logprobs
        for o in output.outputs:
            choice = result.choices[o.index]
            choice.texts.append(o.new_text)
            choice.num_tokens += len(o.new_token_ids)
            choice.logprobs += o.new_logprobs or []
            if o.finish_reason is not None:
                choice.finish_reason, choice.matched_stop = o.finish_reason, o.stop_reason
    return result


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def add(self, prompt_tokens: int, cached_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.cached_tokens += cached_tokens

    def to_dict(self, report_cached: bool) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if report_cached:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage


def reports_cached_tokens(state: ServerState, requested: bool) -> bool:
    return state.settings.enable_cache_report or requested
