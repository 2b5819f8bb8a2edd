"""Request bodies of the OpenAI-compatible endpoints (pydantic, the HTTP edge only).

Ranges are declared on the fields, so they appear in /openapi.json and a value out of range is a 400.
Each request converts itself into the engine's `SamplingParams`; what needs the tokenizer (token ids
in range, prompt length) is checked by the serving code.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleetserve.runtime.engine.types import SamplingParams

INT64_MAX = 2**63 - 1
MAX_TOP_LOGPROBS = 20
MAX_N = 128

TokenId = Annotated[int, Field(ge=0)]


class StrictModel(BaseModel):
    """Types are not coerced (`0` is not `false`, `"1"` is not `1`): a mismatch is a 400."""

    model_config = ConfigDict(strict=True)


class StreamOptions(StrictModel):
    include_usage: bool = False


class JsonSchemaSpec(StrictModel):
    model_config = ConfigDict(strict=True, populate_by_name=True)

    name: str = "schema"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(StrictModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class SamplingRequest(StrictModel):
    """Parameters shared by chat and text completions (OpenAI's plus SGLang's extensions)."""

    model: str | None = Field(default=None, description="served model name; `name:adapter` picks a LoRA adapter")
    max_tokens: int | None = Field(default=None, ge=1, le=INT64_MAX)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1, le=INT64_MAX, description="-1 or 0 disables top-k")
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    stop_token_ids: list[TokenId] | None = None
    seed: int | None = Field(default=None, ge=-INT64_MAX - 1, le=INT64_MAX)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0, le=INT64_MAX)
    skip_special_tokens: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # SGLang extensions.
    regex: str | None = None
    ebnf: str | None = None
    response_format: ResponseFormat | None = None
    lora_path: str | None = Field(default=None, description="LoRA adapter name; `model: name:adapter` wins")
    return_cached_tokens_details: bool = False

    @model_validator(mode="after")
    def _check_common(self) -> SamplingRequest:
        if self.logit_bias:
            for key in self.logit_bias:
                if not key.isdigit():
                    raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
        constraints = [self.regex is not None, self.ebnf is not None, self._is_json_format()]
        if sum(constraints) > 1:
            raise ValueError("use at most one of regex, ebnf and a JSON response_format")
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_schema" and (fmt.json_schema is None or fmt.json_schema.schema_ is None):
            raise ValueError("response_format of type json_schema needs json_schema.schema")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def _is_json_format(self) -> bool:
        return self.response_format is not None and self.response_format.type != "text"

    @property
    def include_usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling_params(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        """The engine parameters; `max_tokens` is already resolved (request value or default)."""
        fmt = self.response_format
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            n=self.n,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=-1 if self.top_k is None else self.top_k,
            min_p=self.min_p or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
            logit_bias={int(k): v for k, v in (self.logit_bias or {}).items()},
            seed=self.seed,
            max_tokens=max_tokens,
            min_tokens=self.min_tokens,
            stop=[s for s in stop if s],
            stop_token_ids=list(self.stop_token_ids or []),
            ignore_eos=self.ignore_eos,
            logprobs=logprobs,
            skip_special_tokens=self.skip_special_tokens,
            json_schema=json.dumps(fmt.json_schema.schema_) if fmt and fmt.type == "json_schema" and fmt.json_schema else None,
            json_object=fmt is not None and fmt.type == "json_object",
            regex=self.regex,
            ebnf=self.ebnf,
        )


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class ChatMessage(StrictModel):
    model_config = ConfigDict(strict=True, extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _only_text_parts(cls, value: Any) -> Any:
        if isinstance(value, list):
            for part in value:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind != "text":
                    raise ValueError(f"only text content parts are supported, got type {kind!r}")
        return value

    def text(self) -> str | None:
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content)
        return self.content


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT64_MAX)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    separate_reasoning: bool = True
    # vLLM's extensions for prefilling the answer: end the prompt inside the last assistant message.
    add_generation_prompt: bool = True
    continue_final_message: bool = False

    @model_validator(mode="after")
    def _check_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs to be true")
        if self.continue_final_message and (self.add_generation_prompt or self.messages[-1].role != "assistant"):
            raise ValueError("continue_final_message needs add_generation_prompt false and a final assistant message")
        return self

    def to_sampling_params(self, default_max_tokens: int) -> SamplingParams:
        """`max_tokens` wins over `max_completion_tokens`; with neither, the rest of the context."""
        max_tokens = self.max_tokens or self.max_completion_tokens or default_max_tokens
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        return self.sampling_params(max_tokens, logprobs)


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=MAX_N)

    @model_validator(mode="after")
    def _check_completion(self) -> CompletionRequest:
        if self.suffix:
            raise ValueError("suffix is not supported")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of is not supported (it must be unset or equal to n)")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of prompts, each a string or a list of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            return []
        if isinstance(prompt[0], int):
            return [list(prompt)]
        return list(prompt)

    def to_sampling_params(self, default_max_tokens: int = 16) -> SamplingParams:
        params = self.sampling_params(self.max_tokens or default_max_tokens, self.logprobs)
        if self.echo and self.logprobs is not None:
            params.prompt_logprobs = self.logprobs
        return params


class EmbeddingRequest(StrictModel):
    model: str | None = None
    input: str | list[str] | list[TokenId] | list[list[TokenId]]
    dimensions: int | None = Field(default=None, ge=1, description="Matryoshka models only: the first N "
                                   "dimensions, normalized again")
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    # vLLM's extension: cut each input to this many tokens (-1: the model's maximum) instead of a 400
    truncate_prompt_tokens: int | None = Field(default=None, ge=-1)

    @field_validator("truncate_prompt_tokens")
    @classmethod
    def _no_zero_truncation(cls, value: int | None) -> int | None:
        if value == 0:
            raise ValueError("truncate_prompt_tokens must be -1 (the model's maximum) or at least 1")
        return value
