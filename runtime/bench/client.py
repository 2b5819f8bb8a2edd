"""One streaming request to an OpenAI-compatible server, timed: RequestResult.

Timings follow `vllm bench serve`: a stream chunk that carries a token is a token arrival; time to
first token runs from sending the request to the first arrival, each later arrival adds one inter-token
latency (the gap since the previous one), and end-to-end latency runs to the last arrival. A chunk
carries a token when it has text, or has empty text but is neither the chat role announcement nor a
closing chunk with only a finish_reason (servers send empty text for a token whose bytes do not yet
form a whole character). Token counts come from the usage the server reports
(stream_options.include_usage), else from the client's tokenizer.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import httpx

from fleetserve.runtime.bench.workloads import BenchRequest

Endpoint = Literal["/v1/completions", "/v1/chat/completions"]
DONE_SENTINEL = "[DONE]"
SSE_DATA_PREFIX = "data:"
# Characters of a server's error body kept in a failure message.
MAX_ERROR_CHARS = 300


@dataclass(slots=True)
class EndpointConfig:
    base_url: str
    endpoint: Endpoint
    model: str
    api_key: str | None = None
    ignore_eos: bool = False
    temperature: float = 0.0
    extra_body: dict = field(default_factory=dict)
    lora_as_model: bool = False  # name an adapter as `model: adapter` (vLLM's form), not `base:adapter`


@dataclass(slots=True)
class RequestResult:
    prompt_len: int
    is_success: bool = False
    error: str | None = None
    ttft: float | None = None  # seconds; None when no text arrived
    itl: list[float] = field(default_factory=list)  # seconds between text-carrying chunks
    latency: float = 0.0  # seconds, send to the last token (to the end of the response if none came)
    generated_text: str = ""
    usage_prompt_tokens: int | None = None  # prompt_tokens reported by the server
    usage_output_tokens: int | None = None  # completion_tokens reported by the server
    usage_cached_tokens: int | None = None  # prompt_tokens_details.cached_tokens, when the server reports it
    output_tokens: int | None = None  # resolved after the run (usage, else tokenizer)


def build_payload(config: EndpointConfig, request: BenchRequest) -> dict:
    if request.adapter is None:
        model = config.model
    else:
        model = request.adapter if config.lora_as_model else f"{config.model}:{request.adapter}"
    payload: dict = {
        "model": model,
        "max_tokens": request.output_len,
        "temperature": config.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if config.endpoint == "/v1/chat/completions":
        payload["messages"] = [{"role": "user", "content": request.prompt}]
    else:
        payload["prompt"] = request.prompt
    if config.ignore_eos:
        payload["ignore_eos"] = True
    payload.update(config.extra_body)
    return payload


def build_headers(config: EndpointConfig) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    return headers


def chunk_token(chunk: dict, endpoint: Endpoint) -> str | None:
    """The text of the token this chunk carries ("" for a token with no whole character yet), or None
    when it carries none (usage-only, chat role announcement, closing finish_reason-only chunk)."""
    choices = chunk.get("choices") or []
    if not choices:
        return None
    choice = choices[0]
    if endpoint == "/v1/completions":
        text = choice.get("text")
    else:
        delta = choice.get("delta") or {}
        if delta.get("role") and not delta.get("content"):
            return None
        reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
        content = delta.get("content")
        text = None if content is None and not reasoning else reasoning + (content or "")
    if text is None or (text == "" and choice.get("finish_reason") is not None):
        return None
    return text


def chunk_error(chunk: dict) -> str | None:
    """An error the server reported inside a 200 stream, if this chunk is one."""
    if chunk.get("object") == "error":
        return str(chunk.get("message", chunk))
    error = chunk.get("error")
    if error is None:
        return None
    return str(error.get("message", error)) if isinstance(error, dict) else str(error)


async def iter_sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The payloads of `data:` lines; comments, event names and blank lines are skipped."""
    async for line in lines:
        if line.startswith(SSE_DATA_PREFIX):
            yield line[len(SSE_DATA_PREFIX) :].strip()


def record_usage(chunk: dict, result: RequestResult) -> None:
    usage = chunk.get("usage") or {}
    if usage.get("prompt_tokens") is not None:
        result.usage_prompt_tokens = int(usage["prompt_tokens"])
    if usage.get("completion_tokens") is not None:
        result.usage_output_tokens = int(usage["completion_tokens"])
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if cached is not None:
        result.usage_cached_tokens = int(cached)


async def read_stream(
    response: httpx.Response, config: EndpointConfig, result: RequestResult, start: float
) -> None:
    """Fill `result` from the event stream; sets is_success only when the stream ends with [DONE]."""
    last_token_time = start
    pieces: list[str] = []
    async for data in iter_sse_data(response.aiter_lines()):
        if data == DONE_SENTINEL:
            result.is_success = True
            break
        now = time.perf_counter()
        chunk = json.loads(data)
        error = chunk_error(chunk)
        if error is not None:
            result.error = f"stream error: {error[:MAX_ERROR_CHARS]}"
            return
        text = chunk_token(chunk, config.endpoint)
        if text is not None:
            if result.ttft is None:
                result.ttft = now - start
            else:
                result.itl.append(now - last_token_time)
            last_token_time = now
            result.latency = now - start
            pieces.append(text)
        record_usage(chunk, result)
    result.generated_text = "".join(pieces)
    if not result.is_success:
        result.error = "stream ended before [DONE]"


async def send_request(
    client: httpx.AsyncClient, config: EndpointConfig, request: BenchRequest
) -> RequestResult:
    """Send one streaming request; failures (HTTP errors, dropped or malformed streams) are recorded in
    the result, never raised."""
    result = RequestResult(prompt_len=request.prompt_len)
    url = config.base_url.rstrip("/") + config.endpoint
    start = time.perf_counter()
    try:
        async with client.stream(
            "POST", url, json=build_payload(config, request), headers=build_headers(config)
        ) as response:
            if response.status_code != httpx.codes.OK:
                body = (await response.aread()).decode(errors="replace")
                result.error = f"HTTP {response.status_code}: {body[:MAX_ERROR_CHARS]}"
            else:
                await read_stream(response, config, result, start)
    except httpx.HTTPError as exc:
        result.is_success = False
        result.error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    except json.JSONDecodeError as exc:
        result.is_success = False
        result.error = f"malformed stream chunk: {exc}"
    if result.ttft is None:  # no token arrived: the request lasted until its response ended
        result.latency = time.perf_counter() - start
    return result
