"""Response bodies, declared for /openapi.json (and checked against it by schemathesis).

The serving code builds plain dicts (streaming chunks are built per token, so no pydantic there);
these models document their shape, and tests validate real responses against them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class ErrorResponse(BaseModel):
    object: Literal["error"] = "error"
    message: str
    type: str
    param: str | None = None
    code: int


class PromptTokensDetails(BaseModel):
    cached_tokens: int


class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatLogprobEntry(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatLogprobEntry] | None


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None
    matched_stop: str | int | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str | None = None  # "fleetserve", or "fleetserve-SIMULATED-<profile>" from the simulator
    choices: list[ChatChoice]
    usage: UsageInfo


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None
    matched_stop: str | int | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: UsageInfo


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str | None = None
    parent: str | None = None
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class FlushCacheResponse(BaseModel):
    success: bool
    message: str


class ModelInfo(BaseModel):
    model_path: str
    tokenizer_path: str
    served_model_name: str
    is_generation: bool
    architecture: str | None
    max_model_len: int
    vocab_size: int
    dtype: str
    reasoning_parser: str | None


class ServerInfo(BaseModel):
    version: str
    served_model_names: list[str]
    max_model_len: int
    uptime_s: float
    num_requests_in_flight: int
    engine: dict[str, Any]
    server_args: dict[str, Any]
    is_simulated: bool = False
    simulation: dict[str, Any] | None = None  # the simulator's profile when is_simulated
