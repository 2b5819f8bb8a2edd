"""One streaming request against the timing-controlled fake server: timings, usage, failures."""

from __future__ import annotations

import httpx
import pytest

from fleetserve.runtime.bench.client import (
    EndpointConfig,
    build_payload,
    chunk_error,
    chunk_token,
    send_request,
)
from fleetserve.runtime.bench.workloads import BenchRequest

# Scheduling slack on a shared 2-core machine: measured times may exceed the server's sleeps by this
# much, never undercut them (beyond timer resolution).
SLACK_S = 0.08
RESOLUTION_S = 0.002


async def send(server, model: str, endpoint: str = "/v1/completions", max_tokens: int = 6):
    config = EndpointConfig(server.base_url, endpoint, model)
    async with httpx.AsyncClient() as client:
        return await send_request(client, config, BenchRequest("ka to", 2, max_tokens))


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
async def test_timings_match_the_servers_sleeps(fake_server, endpoint):
    fake_server.behaviour.ttft_s, fake_server.behaviour.itl_s = 0.2, 0.05
    result = await send(fake_server, "fake-model", endpoint, max_tokens=6)
    assert result.is_success, result.error
    assert 0.2 - RESOLUTION_S <= result.ttft <= 0.2 + SLACK_S  # chat's role-only chunk is not a token
    assert len(result.itl) == 5
    for gap in result.itl:
        assert 0.05 - RESOLUTION_S <= gap <= 0.05 + SLACK_S
    assert sum(result.itl) / 5 == pytest.approx(0.05, abs=0.02)
    assert 0.45 - RESOLUTION_S <= result.latency <= 0.45 + 2 * SLACK_S
    assert result.generated_text == " ka" * 6
    assert result.usage_output_tokens == 6


async def test_tokens_with_held_back_text_still_count_as_arrivals(fake_server):
    fake_server.behaviour.ttft_s, fake_server.behaviour.itl_s = 0.05, 0.03
    result = await send(fake_server, "held-back", max_tokens=6)
    assert result.is_success
    assert len(result.itl) == 5  # six arrivals; the closing finish_reason chunk is not one
    assert all(gap >= 0.03 - RESOLUTION_S for gap in result.itl)
    assert result.generated_text == " ka" * 3


async def test_usage_prompt_tokens_are_recorded(fake_server):
    fake_server.behaviour.prompt_tokens = 21
    result = await send(fake_server, "fake-model")
    assert (result.usage_prompt_tokens, result.usage_output_tokens) == (21, 6)


async def test_no_usage_chunk_leaves_counting_to_the_tokenizer(fake_server):
    result = await send(fake_server, "no-usage")
    assert result.is_success
    assert result.usage_output_tokens is None
    assert result.generated_text == " ka" * 6


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("fail-500", "HTTP 500: "),
        ("fail-503", "HTTP 503: "),
        ("drop", "RemoteProtocolError"),
        ("no-done", "stream ended before [DONE]"),
        ("stream-error", "stream error: engine fault"),
    ],
)
async def test_failures_are_recorded_not_raised(fake_server, model, reason):
    result = await send(fake_server, model)
    assert not result.is_success
    assert result.error.startswith(reason), result.error
    assert result.latency > 0


async def test_unreachable_server_is_a_failure():
    config = EndpointConfig("http://127.0.0.1:9", "/v1/completions", "m")
    async with httpx.AsyncClient() as client:
        result = await send_request(client, config, BenchRequest("x", 1, 1))
    assert not result.is_success
    assert result.error.startswith("ConnectError")


def test_payload_for_completions_with_adapter_and_ignore_eos():
    config = EndpointConfig("http://h", "/v1/completions", "base", ignore_eos=True, extra_body={"top_k": 1})
    payload = build_payload(config, BenchRequest("hello", 1, 9, adapter="sql"))
    assert payload["model"] == "base:sql"
    assert payload["prompt"] == "hello"
    assert payload["max_tokens"] == 9
    assert payload["ignore_eos"] is True
    assert payload["stream"] is True and payload["stream_options"] == {"include_usage": True}
    assert payload["top_k"] == 1


def test_payload_names_the_adapter_as_the_model_in_vllms_form():
    config = EndpointConfig("http://h", "/v1/completions", "base", lora_as_model=True)
    assert build_payload(config, BenchRequest("hello", 1, 9, adapter="sql"))["model"] == "sql"
    assert build_payload(config, BenchRequest("hello", 1, 9))["model"] == "base"


def test_payload_for_chat_without_ignore_eos():
    payload = build_payload(
        EndpointConfig("http://h", "/v1/chat/completions", "base"), BenchRequest("hi", 1, 3)
    )
    assert payload["messages"] == [{"role": "user", "content": "hi"}]
    assert payload["model"] == "base"
    assert "prompt" not in payload and "ignore_eos" not in payload


def test_which_chunks_carry_a_token():
    chat, completions = "/v1/chat/completions", "/v1/completions"
    assert chunk_token({"choices": [{"delta": {"role": "assistant", "content": ""}}]}, chat) is None
    assert chunk_token({"choices": [{"delta": {"role": "assistant", "content": "Hi"}}]}, chat) == "Hi"
    assert chunk_token({"choices": [{"delta": {"reasoning_content": "hm"}}]}, chat) == "hm"
    assert chunk_token({"choices": [{"delta": {"content": ""}, "finish_reason": None}]}, chat) == ""
    assert chunk_token({"choices": [{"delta": {}, "finish_reason": "stop"}]}, chat) is None
    assert chunk_token({"choices": [{"text": "x"}]}, completions) == "x"
    assert chunk_token({"choices": [{"text": "", "finish_reason": None}]}, completions) == ""
    assert chunk_token({"choices": [{"text": "", "finish_reason": "length"}]}, completions) is None
    assert chunk_token({"choices": [{"text": "y", "finish_reason": "length"}]}, completions) == "y"
    assert chunk_token({"choices": [], "usage": {"completion_tokens": 3}}, completions) is None


def test_stream_errors():
    assert chunk_error({"error": {"message": "boom"}}) == "boom"
    assert chunk_error({"object": "error", "message": "bad"}) == "bad"
    assert chunk_error({"choices": []}) is None
