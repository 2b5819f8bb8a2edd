"""Structured outputs through a real `fleetserve serve` process and the official `openai` client.

The demo model's weights are random, the hardest case for a grammar: every bounded constraint must
still end with `stop` well within max_tokens, and every output must parse and validate. Chat and
completions, streaming and not; invalid constraints are 400s carrying xgrammar's reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from openai import OpenAI
from serve_process import ServeProcess, start_server

from tests.structured_cases import EBNF_GRAMMAR, EBNF_PATTERN, PHONE_REGEX, SCHEMAS, check_json, check_regex

pytestmark = pytest.mark.timeout(600)

MODEL = "demo"
MAX_TOKENS = 200
BOUNDED_WITHIN = MAX_TOKENS // 2  # "well within max_tokens"
JSON_MODE_MAX_TOKENS = 1200
MESSAGES = [{"role": "user", "content": "Answer in JSON."}]
PROMPT = "Here is the answer in JSON:"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("serve") / "structured.log"
    proc = start_server(["--served-model-name", MODEL, "--context-length", "2048", "--kv-cache-memory-gb", "0.25",
                         "--log-level", "warning"], log)
    yield proc
    assert proc.stop() in (0, 130), proc.log()
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture(scope="module")
def client(server: ServeProcess) -> OpenAI:
    return openai.Client(base_url=server.base_url, api_key="EMPTY", max_retries=0, timeout=300)


def json_format(name: str, strict: bool | None = None) -> dict:
    spec = {"name": name, "schema": SCHEMAS[name]}
    if strict is not None:
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}


def chat(client: OpenAI, stream: bool, **kwargs) -> list[tuple[str, str, int | None]]:
    """(text, finish_reason, completion_tokens or None when streamed) per choice."""
    if not stream:
        response = client.chat.completions.create(model=MODEL, messages=MESSAGES, **kwargs)
        return [(c.message.content or "", c.finish_reason, response.usage.completion_tokens // len(response.choices))
                for c in response.choices]
    texts: dict[int, list[str]] = {}
    finishes: dict[int, str] = {}
    for chunk in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **kwargs):
        for choice in chunk.choices:
            texts.setdefault(choice.index, []).append(choice.delta.content or "")
            if choice.finish_reason:
                assert choice.index not in finishes, "two finish reasons"
                finishes[choice.index] = choice.finish_reason
    return [("".join(texts[i]), finishes[i], None) for i in sorted(texts)]


def complete(client: OpenAI, stream: bool, **kwargs) -> list[tuple[str, str, int | None]]:
    if not stream:
        response = client.completions.create(model=MODEL, prompt=PROMPT, **kwargs)
        return [(c.text, c.finish_reason, None) for c in response.choices]
    texts: dict[int, list[str]] = {}
    finishes: dict[int, str] = {}
    for chunk in client.completions.create(model=MODEL, prompt=PROMPT, stream=True, **kwargs):
        for choice in chunk.choices:
            texts.setdefault(choice.index, []).append(choice.text)
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    return [("".join(texts[i]), finishes[i], None) for i in sorted(texts)]


def assert_bounded_stop(choices: list[tuple[str, str, int | None]], check) -> None:
    assert choices
    for text, finish, num_tokens in choices:
        assert finish == "stop", text
        if num_tokens is not None:
            assert num_tokens < BOUNDED_WITHIN
        check(text)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_chat(client: OpenAI, name: str, stream: bool) -> None:
    choices = chat(client, stream, response_format=json_format(name, strict=True), temperature=0, max_tokens=MAX_TOKENS)
    assert_bounded_stop(choices, lambda text: check_json(text, SCHEMAS[name]))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_completions_sampled(client: OpenAI, name: str, stream: bool) -> None:
    choices = complete(client, stream, extra_body={"response_format": json_format(name)}, temperature=1.0, seed=11, n=3,
                       max_tokens=MAX_TOKENS)
    assert len(choices) == 3
    assert_bounded_stop(choices, lambda text: check_json(text, SCHEMAS[name]))


def test_streamed_json_equals_the_whole_response(client: OpenAI) -> None:
    kwargs = {"response_format": json_format("user_info"), "temperature": 1.0, "seed": 3, "max_tokens": MAX_TOKENS}
    assert [c[:2] for c in chat(client, True, **kwargs)] == [c[:2] for c in chat(client, False, **kwargs)]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_phone_number_regex(client: OpenAI, stream: bool) -> None:
    """The SGLang docs' example, on both endpoints."""
    body = {"regex": PHONE_REGEX}
    check = lambda text: check_regex(text, PHONE_REGEX)  # noqa: E731
    assert_bounded_stop(chat(client, stream, extra_body=body, temperature=1.0, seed=1, n=2, max_tokens=MAX_TOKENS), check)
    assert_bounded_stop(complete(client, stream, extra_body=body, temperature=0, max_tokens=MAX_TOKENS), check)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_ebnf_grammar(client: OpenAI, stream: bool) -> None:
    body = {"ebnf": EBNF_GRAMMAR}
    check = lambda text: EBNF_PATTERN.fullmatch(text) or pytest.fail(f"{text!r} is not in the grammar")  # noqa: E731
    assert_bounded_stop(chat(client, stream, extra_body=body, temperature=1.0, seed=2, n=2, max_tokens=MAX_TOKENS), check)
    assert_bounded_stop(complete(client, stream, extra_body=body, temperature=1.0, seed=4, max_tokens=MAX_TOKENS), check)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_json_mode_parses_whenever_it_stops(client: OpenAI, stream: bool) -> None:
    """JSON mode is unbounded by nature (any keys, any string lengths): a random model may run to
    max_tokens. Whitespace is bounded (none but the fixed separators); every choice that stops is an
    object, and with a generous max_tokens some do."""
    fmt = {"type": "json_object"}
    choices = chat(client, stream, response_format=fmt, temperature=1.0, seed=1, n=6, max_tokens=JSON_MODE_MAX_TOKENS)
    choices += complete(client, stream, extra_body={"response_format": fmt}, temperature=0, max_tokens=JSON_MODE_MAX_TOKENS)
    stopped = [text for text, finish, _ in choices if finish == "stop"]
    assert stopped, [(text[:80], finish) for text, finish, _ in choices]
    for text, finish, _ in choices:
        assert finish in ("stop", "length")
        assert text.startswith("{")
    for text in stopped:
        assert isinstance(json.loads(text), dict)


def test_constrained_and_free_requests_in_flight_together(client: OpenAI) -> None:
    """Several schemas, a regex and free text at once: each constrained output still validates."""
    names = sorted(SCHEMAS)[:6]
    with ThreadPoolExecutor(len(names) + 2) as pool:
        jsons = [pool.submit(chat, client, False, response_format=json_format(n), temperature=1.0, seed=9,
                             max_tokens=MAX_TOKENS) for n in names]
        phone = pool.submit(complete, client, True, extra_body={"regex": PHONE_REGEX}, temperature=1.0, max_tokens=MAX_TOKENS)
        free = pool.submit(chat, client, False, temperature=1.0, max_tokens=32, extra_body={"ignore_eos": True})
        for name, future in zip(names, jsons, strict=True):
            assert_bounded_stop(future.result(), lambda text, name=name: check_json(text, SCHEMAS[name]))
        assert_bounded_stop(phone.result(), lambda text: check_regex(text, PHONE_REGEX))
        assert free.result()[0][1] == "length"


@pytest.mark.parametrize(("body", "param", "reason"), [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}}},
     "response_format", 'Unsupported type "foo"'),
    ({"regex": "(ab"}, "regex", "The parenthesis is not closed"),
    ({"ebnf": "root ::= yes"}, "ebnf", 'Rule "yes" is not defined'),
    ({"response_format": {"type": "xml"}}, "response_format.type", "response_format"),
])
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_invalid_constraints_are_400s_with_the_reason(client: OpenAI, endpoint: str, body: dict, param: str,
                                                      reason: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        if endpoint == "chat":
            client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, extra_body=body)
        else:
            client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, extra_body=body)
    error = info.value.body
    assert info.value.status_code == 400 and reason in error["message"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
