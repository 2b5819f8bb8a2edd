"""`POST /v1/completions`: prompts (text or token ids, one or many) -> engine -> text_completion.

Each prompt is one engine request with `n` sequences; choice `index = prompt_index * n + i`.
`echo` puts the prompt in front of the text (and, with `logprobs`, the prompt's logprobs in front of
the output's, the first prompt token's being None).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from fleetserve.runtime.engine.types import RequestOutput, SamplingParams
from fleetserve.runtime.server.admission import Ticket
from fleetserve.runtime.server.errors import bad_request, error_body
from fleetserve.runtime.server.generation import (
    ChoiceResult,
    RequestResult,
    Usage,
    check_generation_model,
    check_grammar,
    check_request,
    check_token_ids,
    collect,
    drop_unknown_logit_bias,
    engine_stream,
    new_request_id,
    reports_cached_tokens,
)
from fleetserve.runtime.server.logprobs import CompletionLogprobs
from fleetserve.runtime.server.protocol import CompletionRequest
from fleetserve.runtime.server.serving_models import resolve_target
from fleetserve.runtime.server.state import ServerState, get_state
from fleetserve.runtime.server.streaming import (
    CLIENT_CLOSED_REQUEST,
    SSE_DONE,
    ChunkEncoder,
    ClientDisconnected,
    SSEResponse,
    aclose_shielded,
    merge_streams,
    run_unless_disconnected,
    sse_event,
)

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Prompt:
    token_ids: list[int]
    text: str  # for echo


@dataclass(slots=True)
class CompletionCall:
    state: ServerState
    body: CompletionRequest
    request_id: str
    model: str
    created: int
    prompts: list[Prompt]
    encoder: ChunkEncoder = field(init=False)

    def __post_init__(self) -> None:
        self.encoder = ChunkEncoder(self.request_id, "text_completion", self.created, self.model,
                                    self.state.settings.system_fingerprint)

    def new_logprobs(self) -> CompletionLogprobs | None:
        return CompletionLogprobs(self.state.token_strings) if self.body.logprobs is not None else None

    def usage(self, usage: Usage) -> dict[str, Any]:
        return usage.to_dict(reports_cached_tokens(self.state, self.body.return_cached_tokens_details))

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        return self.encoder.event(choices, usage)


def tokenize_prompts(state: ServerState, body: CompletionRequest) -> list[Prompt]:
    prompts = []
    for prompt in body.prompts():
        if isinstance(prompt, str):
            ids = list(state.engine.tokenizer(prompt, add_special_tokens=True)["input_ids"])
            prompts.append(Prompt(ids, prompt))
        else:
            check_token_ids(state, prompt, "prompt")
            text = state.engine.tokenizer.decode(prompt, skip_special_tokens=False) if body.echo else ""
            prompts.append(Prompt(prompt, text))
    if not prompts:
        raise bad_request("the prompt is empty", "prompt")
    return prompts


async def create_completion(body: CompletionRequest, request: Request) -> Response:
    state = get_state(request)
    check_generation_model(state)
    model, adapter = resolve_target(state, body.model, body.lora_path)
    prompts = tokenize_prompts(state, body)
    params = drop_unknown_logit_bias(state, body.to_sampling_params())
    for prompt in prompts:
        check_request(state, prompt.token_ids, params)
    await check_grammar(state, params)
    call = CompletionCall(state, body, new_request_id("cmpl"), model, int(time.time()), prompts)
    ticket = state.admission.admit(len(prompts))
    streams = _start(call, params, adapter)
    if body.stream:
        return SSEResponse(stream_completion(call, streams, ticket), on_close=ticket.release)
    try:
        results = await run_unless_disconnected(request, asyncio.gather(*(collect(s, body.n) for s in streams)))
    except ClientDisconnected:
        logger.info("client went away; aborted %s", call.request_id)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    finally:
        ticket.release()
    return JSONResponse(completion_response(call, results))


def _start(call: CompletionCall, params: SamplingParams, adapter: str | None) -> list[AsyncIterator[RequestOutput]]:
    ids = [call.request_id] if len(call.prompts) == 1 else [f"{call.request_id}-{i}" for i in range(len(call.prompts))]
    # one SamplingParams per engine request: the engine owns what it is given
    return [engine_stream(call.state, rid, p.token_ids, dataclasses.replace(params), adapter)
            for rid, p in zip(ids, call.prompts, strict=True)]


def _choice(call: CompletionCall, prompt: Prompt, result: RequestResult, choice: ChoiceResult,
            index: int) -> dict[str, Any]:
    text, logprobs = choice.text, call.new_logprobs()
    if call.body.echo:
        text = prompt.text + text
        if logprobs is not None:
            logprobs.add_prompt(prompt.token_ids, result.prompt_logprobs)
    if logprobs is not None:
        logprobs.add_output(choice.logprobs)
    return {"index": index, "text": text, "logprobs": logprobs.take() if logprobs else None,
            "finish_reason": choice.finish_reason, "matched_stop": choice.matched_stop}


def completion_response(call: CompletionCall, results: list[RequestResult]) -> dict[str, Any]:
    n, usage, choices = call.body.n, Usage(), []
    for p, (prompt, result) in enumerate(zip(call.prompts, results, strict=True)):
        usage.add(result.num_prompt_tokens, result.num_cached_tokens)
        for i, choice in enumerate(result.choices):
            usage.completion_tokens += choice.num_tokens
            choices.append(_choice(call, prompt, result, choice, p * n + i))
    return {"id": call.request_id, "object": "text_completion", "created": call.created, "model": call.model,
            "system_fingerprint": call.state.settings.system_fingerprint, "choices": choices, "usage": call.usage(usage)}


def _echo_choice(call: CompletionCall, prompt: Prompt, output: RequestOutput, index: int,
                 logprobs: CompletionLogprobs | None) -> dict[str, Any]:
    if logprobs is not None:
        logprobs.add_prompt(prompt.token_ids, output.prompt_logprobs)
    return {"index": index, "text": prompt.text, "logprobs": logprobs.take() if logprobs else None,
            "finish_reason": None}


async def stream_completion(call: CompletionCall, streams: list[AsyncIterator[RequestOutput]],
                            ticket: Ticket) -> AsyncIterator[bytes]:
    n = call.body.n
    logprobs = [call.new_logprobs() for _ in range(len(streams) * n)]
    usage, echoed = Usage(), [False] * len(streams)
    merged = merge_streams(streams)
    try:
        async for p, output in merged:
            if not echoed[p]:
                echoed[p] = True
                usage.add(output.num_prompt_tokens, output.num_cached_tokens)
                if call.body.echo:
                    echo = [_echo_choice(call, call.prompts[p], output, p * n + i, logprobs[p * n + i]) for i in range(n)]
                    yield call.chunk(echo)
            for o in output.outputs:
                index = p * n + o.index
                usage.completion_tokens += len(o.new_token_ids)
                lp = logprobs[index]
                if lp is not None and o.new_logprobs:
                    lp.add_output(o.new_logprobs)
                if o.new_text or o.finished or (lp is not None and lp.tokens):
                    yield call.chunk([{"index": index, "text": o.new_text, "logprobs": lp.take() if lp else None,
                                       "finish_reason": o.finish_reason, "matched_stop": o.stop_reason}])
        if call.body.include_usage_in_stream:
            yield call.chunk([], call.usage(usage))
        yield SSE_DONE
    except Exception:  # the status line is gone: tell the client in the stream, then end it
        logger.exception("completion stream %s failed", call.request_id)
        yield sse_event(error_body(500, "internal server error"))
        yield SSE_DONE
    finally:
        await aclose_shielded(merged)
        for stream in streams:
            await aclose_shielded(stream)
        ticket.release()
