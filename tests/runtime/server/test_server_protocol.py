"""Request -> SamplingParams conversion is complete (every parameter reaches the engine)."""

from __future__ import annotations

import json

import pytest

from fleetserve.runtime.engine.types import SamplingParams
from fleetserve.runtime.server.protocol import ChatCompletionRequest, CompletionRequest

USER = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}

CHAT_CASES = [
    ({}, {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "n": 1, "max_tokens": 100, "logprobs": None,
          "stop": [], "seed": None, "json_schema": None, "json_object": False, "regex": None, "ebnf": None}),
    ({"temperature": 0, "top_p": 0.5, "top_k": 7, "min_p": 0.1}, {"temperature": 0.0, "top_p": 0.5, "top_k": 7,
                                                                   "min_p": 0.1}),
    ({"frequency_penalty": 0.5, "presence_penalty": -0.5, "repetition_penalty": 1.3},
     {"frequency_penalty": 0.5, "presence_penalty": -0.5, "repetition_penalty": 1.3}),
    ({"n": 3, "seed": 42, "ignore_eos": True, "min_tokens": 2, "skip_special_tokens": False},
     {"n": 3, "seed": 42, "ignore_eos": True, "min_tokens": 2, "skip_special_tokens": False}),
    ({"stop": "END"}, {"stop": ["END"]}),
    ({"stop": ["a", "", "b"], "stop_token_ids": [5]}, {"stop": ["a", "b"], "stop_token_ids": [5]}),
    ({"logit_bias": {"12": 50, "7": -100}}, {"logit_bias": {12: 50.0, 7: -100.0}}),
    ({"max_tokens": 5, "max_completion_tokens": 9}, {"max_tokens": 5}),
    ({"max_completion_tokens": 9}, {"max_tokens": 9}),
    ({"logprobs": True}, {"logprobs": 0}),
    ({"logprobs": True, "top_logprobs": 5}, {"logprobs": 5}),
    ({"regex": r"\d{3}-\d{3}-\d{4}"}, {"regex": r"\d{3}-\d{3}-\d{4}"}),
    ({"ebnf": "root ::= 'yes' | 'no'"}, {"ebnf": "root ::= 'yes' | 'no'"}),
    ({"response_format": {"type": "json_object"}}, {"json_object": True, "json_schema": None}),
    ({"response_format": {"type": "text"}}, {"json_object": False, "json_schema": None}),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "user_info", "schema": SCHEMA}}},
     {"json_schema": json.dumps(SCHEMA), "json_object": False}),
]


@pytest.mark.parametrize(("fields", "expected"), CHAT_CASES)
def test_chat_request_to_sampling_params(fields: dict, expected: dict) -> None:
    params = ChatCompletionRequest.model_validate({"messages": USER, **fields}).to_sampling_params(100)
    assert isinstance(params, SamplingParams)
    for name, value in expected.items():
        assert getattr(params, name) == value, name


COMPLETION_CASES = [
    ({}, {"max_tokens": 16, "logprobs": None, "prompt_logprobs": None}),
    ({"max_tokens": 3, "logprobs": 2}, {"max_tokens": 3, "logprobs": 2, "prompt_logprobs": None}),
    ({"echo": True, "logprobs": 1}, {"logprobs": 1, "prompt_logprobs": 1}),
    ({"echo": True}, {"logprobs": None, "prompt_logprobs": None}),
    ({"regex": "a|b", "seed": 1, "n": 2}, {"regex": "a|b", "seed": 1, "n": 2}),
]


@pytest.mark.parametrize(("fields", "expected"), COMPLETION_CASES)
def test_completion_request_to_sampling_params(fields: dict, expected: dict) -> None:
    params = CompletionRequest.model_validate({"prompt": "hi", **fields}).to_sampling_params()
    for name, value in expected.items():
        assert getattr(params, name) == value, name


@pytest.mark.parametrize(("prompt", "expected"), [
    ("text", ["text"]),
    (["a", "b"], ["a", "b"]),
    ([1, 2, 3], [[1, 2, 3]]),
    ([[1, 2], [3]], [[1, 2], [3]]),
    ([], []),
])
def test_completion_prompt_forms(prompt, expected) -> None:
    assert CompletionRequest.model_validate({"prompt": prompt}).prompts() == expected


def test_lora_and_extensions_are_accepted_in_the_request_model() -> None:
    request = ChatCompletionRequest.model_validate({
        "model": "base:adapter", "messages": USER, "lora_path": "adapter", "separate_reasoning": False,
        "chat_template_kwargs": {"enable_thinking": True}, "return_cached_tokens_details": True,
        "stream": True, "stream_options": {"include_usage": True}, "user": "u1", "unknown_field": 1})
    assert request.lora_path == "adapter" and request.include_usage_in_stream
    assert request.chat_template_kwargs == {"enable_thinking": True}
