"""`POST /v1/chat/completions`: messages -> chat template -> engine -> chat.completion(.chunk)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from fleetserve.runtime.engine.types import CompletionOutput, RequestOutput
from fleetserve.runtime.server.admission import Ticket
from fleetserve.runtime.server.errors import error_body
from fleetserve.runtime.server.generation import (
    RequestResult,
    Usage,
    check_generation_model,
    check_grammar,
    check_request,
    collect,
    default_max_tokens,
    drop_unknown_logit_bias,
    engine_stream,
    new_request_id,
    reports_cached_tokens,
)
from fleetserve.runtime.server.logprobs import chat_logprobs
from fleetserve.runtime.server.protocol import ChatCompletionRequest
from fleetserve.runtime.server.reasoning import (
    THINK_START,
    ReasoningParser,
    is_thinking_enabled,
    split_reasoning,
)
from fleetserve.runtime.server.serving_models import resolve_target
from fleetserve.runtime.server.state import ServerState, get_state
from fleetserve.runtime.server.streaming import (
    CLIENT_CLOSED_REQUEST,
    SSE_DONE,
    ChunkEncoder,
    ClientDisconnected,
    SSEResponse,
    aclose_shielded,
    run_unless_disconnected,
    sse_event,
)

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ChatCall:
    """One chat request after validation: what building its responses needs."""

    state: ServerState
    body: ChatCompletionRequest
    request_id: str
    model: str
    created: int
    prompt_opens_reasoning: bool
    encoder: ChunkEncoder = field(init=False)

    def __post_init__(self) -> None:
        self.encoder = ChunkEncoder(self.request_id, "chat.completion.chunk", self.created, self.model,
                                    self.state.settings.system_fingerprint)

    @property
    def separates_reasoning(self) -> bool:
        fmt = self.state.reasoning
        return (fmt is not None and self.body.separate_reasoning
                and is_thinking_enabled(fmt, self.body.chat_template_kwargs))

    def new_parser(self) -> ReasoningParser | None:
        if not self.separates_reasoning:
            return None
        assert self.state.reasoning is not None
        return ReasoningParser(self.state.reasoning, self.prompt_opens_reasoning)

    def logprobs(self, output_logprobs: list | None) -> dict[str, Any] | None:
        if not self.body.logprobs:
            return None
        return {"content": chat_logprobs(self.state.token_strings, output_logprobs or [])}

    def usage(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> dict[str, Any]:
        usage = Usage(prompt_tokens, completion_tokens, cached_tokens)
        return usage.to_dict(reports_cached_tokens(self.state, self.body.return_cached_tokens_details))

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        return self.encoder.event(choices, usage)


async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    state = get_state(request)
    check_generation_model(state)
    model, adapter = resolve_target(state, body.model, body.lora_path)
    prompt = state.chat.render(body)
    prompt_ids = state.chat.encode(prompt)
    params = drop_unknown_logit_bias(state, body.to_sampling_params(default_max_tokens(state, len(prompt_ids))))
    check_request(state, prompt_ids, params)
    await check_grammar(state, params)
    call = ChatCall(state, body, new_request_id("chatcmpl"), model, int(time.time()),
                    prompt.rstrip().endswith(THINK_START))
    ticket = state.admission.admit()
    stream = engine_stream(state, call.request_id, prompt_ids, params, adapter)
    if body.stream:
        return SSEResponse(stream_chat(call, stream, ticket), on_close=ticket.release)
    try:
        result = await run_unless_disconnected(request, collect(stream, body.n))
    except ClientDisconnected:
        logger.info("client went away; aborted %s", call.request_id)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    finally:
        ticket.release()
    return JSONResponse(chat_response(call, result))


def chat_response(call: ChatCall, result: RequestResult) -> dict[str, Any]:
    choices = []
    for index, choice in enumerate(result.choices):
        reasoning, content = None, choice.text
        if call.separates_reasoning:
            assert call.state.reasoning is not None
            reasoning, content = split_reasoning(call.state.reasoning, content, call.prompt_opens_reasoning)
        choices.append({
            "index": index,
            "message": {"role": "assistant", "content": content, "reasoning_content": reasoning},
            "logprobs": call.logprobs(choice.logprobs),
            "finish_reason": choice.finish_reason,
            "matched_stop": choice.matched_stop,
        })
    completion_tokens = sum(c.num_tokens for c in result.choices)
    return {
        "id": call.request_id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "system_fingerprint": call.state.settings.system_fingerprint,
        "choices": choices,
        "usage": call.usage(result.num_prompt_tokens, result.num_cached_tokens, completion_tokens),
    }


def _choice_delta(call: ChatCall, parser: ReasoningParser | None, o: CompletionOutput) -> dict[str, Any] | None:
    """The chunk choice for one sequence's delta, or None when there is nothing to send yet."""
    delta: dict[str, Any] = {}
    if parser is None:
        if o.new_text:
            delta["content"] = o.new_text
    else:
        reasoning, content = parser.feed(o.new_text)
        if o.finished:
            tail = parser.finish()
            reasoning, content = reasoning + tail.reasoning, content + tail.content
        if reasoning:
            delta["reasoning_content"] = reasoning
        if content:
            delta["content"] = content
    logprobs = call.logprobs(o.new_logprobs) if o.new_logprobs else None
    if not delta and logprobs is None and not o.finished:
        return None
    choice: dict[str, Any] = {"index": o.index, "delta": delta, "logprobs": logprobs,
                              "finish_reason": o.finish_reason}
    if o.finished:
        choice["matched_stop"] = o.stop_reason
    return choice


async def stream_chat(call: ChatCall, stream: AsyncIterator[RequestOutput], ticket: Ticket) -> AsyncIterator[bytes]:
    n = call.body.n
    parsers = [call.new_parser() for _ in range(n)]
    num_tokens = [0] * n
    last: RequestOutput | None = None
    try:
        for index in range(n):
            role = {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None}
            yield call.chunk([role])
        async for output in stream:
            last = output
            for o in output.outputs:
                num_tokens[o.index] += len(o.new_token_ids)
                choice = _choice_delta(call, parsers[o.index], o)
                if choice is not None:
                    yield call.chunk([choice])
        if call.body.include_usage_in_stream and last is not None:
            yield call.chunk([], call.usage(last.num_prompt_tokens, last.num_cached_tokens, sum(num_tokens)))
        yield SSE_DONE
    except Exception:  # the status line is gone: tell the client in the stream, then end it
        logger.exception("chat stream %s failed", call.request_id)
        yield sse_event(error_body(500, "internal server error"))
        yield SSE_DONE
    finally:
        await aclose_shielded(stream)
        ticket.release()
