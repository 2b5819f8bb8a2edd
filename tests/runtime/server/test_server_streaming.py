"""SSE framing and streamed content (TestClient over FakeEngine, a test double)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from server_fake_engine import FakeEngine

from fleetserve.runtime.server import responses

USER = [{"role": "user", "content": "hi"}]


def sse_events(response) -> list[str]:
    """The `data:` payloads; asserts the framing (each event one `data:` line then a blank line)."""
    assert response.headers["content-type"].startswith("text/event-stream")
    text = response.text
    assert text.endswith("data: [DONE]\n\n")
    events = text.split("\n\n")[:-1]
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    return [e[len("data: "):] for e in events]


def chunks(response) -> list[dict]:
    events = sse_events(response)
    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1]
    return [json.loads(e) for e in events[:-1]]


def stream_chat(client: TestClient, **kw) -> list[dict]:
    response = client.post("/v1/chat/completions", json={"messages": USER, "stream": True, **kw})
    assert response.status_code == 200
    return chunks(response)


def test_chat_stream_framing_role_first_and_one_finish_reason(client: TestClient) -> None:
    parsed = stream_chat(client, max_tokens=50)
    for chunk in parsed:
        responses_chunk_ok(chunk, "chat.completion.chunk")
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    finishes = [c["choices"][0]["finish_reason"] for c in parsed if c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"]
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
    assert len({c["id"] for c in parsed}) == 1


def responses_chunk_ok(chunk: dict, obj: str) -> None:
    assert chunk["object"] == obj and chunk["model"] == "fake-model"
    assert isinstance(chunk["created"], int) and chunk["id"]


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_streamed_text_equals_non_streamed_text_for_each_of_n(client: TestClient, endpoint: str) -> None:
    if endpoint == "chat":
        url, body, key = "/v1/chat/completions", {"messages": USER}, "content"
    else:
        url, body, key = "/v1/completions", {"prompt": "hi"}, "text"
    body = {**body, "n": 3, "max_tokens": 40, "seed": 7}
    full = client.post(url, json=body).json()
    streamed = chunks(client.post(url, json={**body, "stream": True}))
    texts = ["", "", ""]
    finishes: list[list[str]] = [[], [], []]
    for chunk in streamed:
        (choice,) = chunk["choices"]
        piece = choice["delta"].get(key) if endpoint == "chat" else choice["text"]
        texts[choice["index"]] += piece or ""
        if choice["finish_reason"]:
            finishes[choice["index"]].append(choice["finish_reason"])
    expected = [c["message"][key] if endpoint == "chat" else c["text"] for c in full["choices"]]
    assert texts == expected and len(set(expected)) == 3
    assert finishes == [[c["finish_reason"]] for c in full["choices"]]


def test_n_choices_are_interleaved_not_sequential(client: TestClient) -> None:
    indices = [c["choices"][0]["index"] for c in stream_chat(client, n=2, max_tokens=5)]
    assert indices[:6] == [0, 1, 0, 1, 0, 1]


def test_include_usage_sends_a_final_usage_chunk_with_exact_counts(client: TestClient, engine: FakeEngine) -> None:
    parsed = stream_chat(client, n=2, max_tokens=4, stream_options={"include_usage": True})
    usage_chunk = parsed[-1]
    assert usage_chunk["choices"] == []
    prompt_ids = engine.requests[-1][1]
    assert usage_chunk["usage"] == {"prompt_tokens": len(prompt_ids), "completion_tokens": 8,
                                    "total_tokens": len(prompt_ids) + 8}
    assert all("usage" not in c for c in parsed[:-1])
    assert "usage" not in stream_chat(client, max_tokens=2)[-1]


def test_completion_stream_echo_and_logprobs(client: TestClient) -> None:
    body = {"prompt": "ab", "echo": True, "logprobs": 1, "max_tokens": 3, "stream": True}
    parsed = chunks(client.post("/v1/completions", json=body))
    first = parsed[0]["choices"][0]
    assert first["text"] == "ab" and first["logprobs"]["tokens"] == ["a", "b"]
    assert first["logprobs"]["token_logprobs"][0] is None
    text = "".join(c["choices"][0]["text"] for c in parsed)
    full = client.post("/v1/completions", json={**body, "stream": False}).json()["choices"][0]
    assert text == full["text"] == "abHel"
    tokens = [t for c in parsed for t in c["choices"][0]["logprobs"]["tokens"]]
    assert tokens == full["logprobs"]["tokens"]
    offsets = [t for c in parsed for t in c["choices"][0]["logprobs"]["text_offset"]]
    assert offsets == full["logprobs"]["text_offset"] == [0, 1, 2, 3, 4]


def test_completion_stream_many_prompts_indexes_choices(client: TestClient) -> None:
    body = {"prompt": ["a", "b"], "n": 2, "max_tokens": 2, "stream": True}
    parsed = chunks(client.post("/v1/completions", json=body))
    assert {c["choices"][0]["index"] for c in parsed} == {0, 1, 2, 3}
    finished = [c["choices"][0]["index"] for c in parsed if c["choices"][0]["finish_reason"]]
    assert sorted(finished) == [0, 1, 2, 3]


def test_chat_stream_logprobs_in_chat_format(client: TestClient) -> None:
    parsed = stream_chat(client, max_tokens=2, logprobs=True, top_logprobs=2)
    entries = [e for c in parsed[1:] for e in c["choices"][0]["logprobs"]["content"]]
    assert [e["token"] for e in entries] == ["H", "e"]
    assert entries[0]["bytes"] == [72] and len(entries[0]["top_logprobs"]) == 2


def test_non_streaming_responses_match_the_documented_models(client: TestClient) -> None:
    chat = client.post("/v1/chat/completions", json={"messages": USER, "logprobs": True, "top_logprobs": 1,
                                                     "max_tokens": 3}).json()
    responses.ChatCompletionResponse.model_validate(chat)
    completion = client.post("/v1/completions", json={"prompt": "x", "logprobs": 1, "echo": True}).json()
    responses.CompletionResponse.model_validate(completion)
