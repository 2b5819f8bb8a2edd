"""Each bad parameter -> 400 in the one error shape (TestClient over FakeEngine, a test double)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]


def chat(**kw) -> dict:
    return {"model": "fake-model", "messages": USER, **kw}


def completion(**kw) -> dict:
    return {"model": "fake-model", "prompt": "hi", **kw}


def assert_error(response, status: int, message_part: str, param: str | None = "") -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == {"object", "message", "type", "param", "code"}
    assert body["object"] == "error" and body["code"] == status
    assert message_part.lower() in body["message"].lower(), body["message"]
    if param != "":
        assert body["param"] == param
    return body


BAD_CHAT = [
    ("negative temperature", chat(temperature=-0.5), "temperature", "temperature"),
    ("temperature above 2", chat(temperature=2.5), "temperature", "temperature"),
    ("top_p zero", chat(top_p=0), "top_p", "top_p"),
    ("top_p above 1", chat(top_p=1.5), "top_p", "top_p"),
    ("top_k below -1", chat(top_k=-2), "top_k", "top_k"),
    ("min_p above 1", chat(min_p=1.1), "min_p", "min_p"),
    ("frequency_penalty", chat(frequency_penalty=3), "frequency_penalty", "frequency_penalty"),
    ("presence_penalty", chat(presence_penalty=-2.5), "presence_penalty", "presence_penalty"),
    ("repetition_penalty zero", chat(repetition_penalty=0), "repetition_penalty", "repetition_penalty"),
    ("n zero", chat(n=0), "n", "n"),
    ("n negative", chat(n=-1), "n", "n"),
    ("max_tokens zero", chat(max_tokens=0), "max_tokens", "max_tokens"),
    ("max_completion_tokens zero", chat(max_completion_tokens=0), "max_completion_tokens", "max_completion_tokens"),
    ("top_logprobs over 20", chat(logprobs=True, top_logprobs=21), "top_logprobs", "top_logprobs"),
    ("top_logprobs without logprobs", chat(top_logprobs=2), "top_logprobs needs logprobs", None),
    ("unknown role", chat(messages=[{"role": "wizard", "content": "hi"}]), "role", "messages.0.role"),
    ("no messages", chat(messages=[]), "messages", "messages"),
    ("missing messages", {"model": "fake-model"}, "missing required parameter: messages", "messages"),
    ("image part", chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
     "only text content parts", "messages.0.content"),
    ("logit_bias out of range", chat(logit_bias={"5": 150}), "logit_bias", "logit_bias.5"),
    ("logit_bias non-id key", chat(logit_bias={"hello": 1}), "token ids", None),
    ("logit_bias negative id", chat(logit_bias={"-5": 1}), "token ids", None),
    ("stop_token_ids beyond vocab", chat(stop_token_ids=[999999]), "outside the vocabulary", "stop_token_ids"),
    ("string temperature", chat(temperature="hot"), "temperature", "temperature"),
    ("bool as int", chat(stream=1), "stream", "stream"),
    ("two constraints", chat(regex="a+", ebnf="root ::= 'a'"), "at most one", None),
    ("json_schema without schema", chat(response_format={"type": "json_schema"}), "json_schema", None),
    ("unknown response_format", chat(response_format={"type": "xml"}), "response_format", "response_format.type"),
    ("stream_options without stream", chat(stream_options={"include_usage": True}), "stream_options", None),
    ("system not first (template)", chat(messages=[*USER, {"role": "system", "content": "x"}]),
     "system message must come first", "messages"),
    ("continue_final_message after a user message", chat(continue_final_message=True, add_generation_prompt=False),
     "continue_final_message", None),
    ("context overflow", chat(max_tokens=10_000), "exceeds the context length (512)", None),
]

BAD_COMPLETIONS = [
    ("suffix", completion(suffix="end"), "suffix is not supported", None),
    ("negative temperature", completion(temperature=-1), "temperature", "temperature"),
    ("logprobs over 20", completion(logprobs=21), "logprobs", "logprobs"),
    ("empty prompt list", completion(prompt=[]), "prompt is empty", "prompt"),
    ("empty string prompt", completion(prompt=""), "prompt is empty", "prompt"),
    ("negative token id", completion(prompt=[1, -3]), "prompt", "prompt"),
    ("token id beyond vocab", completion(prompt=[1, 999999]), "outside the vocabulary", "prompt"),
    ("prompt of mixed types", completion(prompt=[1, "a"]), "prompt", "prompt"),
    ("best_of", completion(best_of=3), "best_of", None),
    ("missing prompt", {"model": "fake-model"}, "missing required parameter: prompt", "prompt"),
]


@pytest.mark.parametrize(("case", "body", "message", "param"), BAD_CHAT, ids=[c[0] for c in BAD_CHAT])
def test_bad_chat_parameter_is_400(client: TestClient, case: str, body: dict, message: str, param) -> None:
    assert_error(client.post(CHAT, json=body), 400, message, param)


@pytest.mark.parametrize(("case", "body", "message", "param"), BAD_COMPLETIONS, ids=[c[0] for c in BAD_COMPLETIONS])
def test_bad_completion_parameter_is_400(client: TestClient, case: str, body: dict, message: str, param) -> None:
    assert_error(client.post(COMPLETIONS, json=body), 400, message, param)


def test_context_overflow_message_says_the_numbers(client: TestClient) -> None:
    prompt = [65] * 500
    body = assert_error(client.post(COMPLETIONS, json=completion(prompt=prompt, max_tokens=20)), 400, "")
    for number in ("500", "20", "520", "512"):
        assert number in body["message"]


@pytest.mark.parametrize("raw", [b"{not json", b'{"model": "fake-model", "prompt": "hi",}', b"[1, 2]", b""])
def test_malformed_body_is_400_never_422(client: TestClient, raw: bytes) -> None:
    response = client.post(COMPLETIONS, content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400, "")


def test_logit_bias_beyond_the_vocabulary_is_dropped(client, engine) -> None:
    response = client.post(CHAT, json=chat(logit_bias={"12345": 50, "67890": -50, "65": 5}, max_tokens=1))
    assert response.status_code == 200
    assert engine.requests[-1][2].logit_bias == {65: 5.0}


def test_valid_extremes_are_accepted(client: TestClient) -> None:
    body = chat(temperature=0, top_p=1, top_k=-1, min_p=0, n=2, logprobs=True, top_logprobs=20,
                frequency_penalty=-2, presence_penalty=2, logit_bias={"65": -100, "66": 100}, max_tokens=2)
    response = client.post(CHAT, json=body)
    assert response.status_code == 200, response.json()
    assert [c["index"] for c in response.json()["choices"]] == [0, 1]


@pytest.mark.parametrize("model", ["gpt-4", "fake-model:adapter", "other:adapter", "default:adapter", "Default"])
def test_unknown_model_or_adapter_is_404(client: TestClient, model: str) -> None:
    assert_error(client.post(CHAT, json=chat(model=model)), 404, "does not exist", "model")


def test_lora_path_names_an_unknown_adapter(client: TestClient) -> None:
    assert_error(client.post(CHAT, json=chat(lora_path="sql")), 404, "adapter 'sql'", "model")


def test_model_may_be_omitted_and_any_served_name_is_accepted(make_client) -> None:
    client = make_client(served_model_names=["first", "second/name"])
    assert client.post(CHAT, json={"messages": USER, "max_tokens": 1}).json()["model"] == "first"
    assert client.post(CHAT, json=chat(model="default", max_tokens=1)).json()["model"] == "first"
    assert client.post(CHAT, json=chat(model="second/name", max_tokens=1)).json()["model"] == "first"
    assert client.get("/v1/models/second/name").json()["id"] == "second/name"
    assert_error(client.get("/v1/models/fake-model"), 404, "does not exist")


def test_embeddings_refused_with_400(client: TestClient) -> None:
    response = client.post("/v1/embeddings", json={"model": "fake-model", "input": ["a", "b"]})
    assert_error(response, 400, "does not support embeddings", "model")


def test_unknown_path_and_method_use_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing"), 404, "not found")
    assert_error(client.get(CHAT), 405, "method not allowed")
