"""Reasoning separation: the incremental parser, and the HTTP fields it fills (FakeEngine, a test double)."""

from __future__ import annotations

import json

import pytest
from server_fake_engine import FakeEngine

from fleetserve.runtime.server.reasoning import REASONING_FORMATS, ReasoningParser, split_reasoning

QWEN3, R1 = REASONING_FORMATS["qwen3"], REASONING_FORMATS["deepseek-r1"]

CASES = [
    (QWEN3, "<think>\nLet me think.\n</think>\n\nParis.", ("Let me think.", "Paris.")),
    (QWEN3, "  <think>a b</think>c", ("a b", "c")),
    (QWEN3, "Paris, no thinking.", (None, "Paris, no thinking.")),
    (QWEN3, "Paris <think>late</think> x", (None, "Paris <think>late</think> x")),
    (QWEN3, "reasoning without an open tag</think>answer", (None, "reasoning without an open tag</think>answer")),
    (QWEN3, "<think>never closed because max_tokens ", ("never closed because max_tokens", "")),
    (QWEN3, "<think></think>just the answer", (None, "just the answer")),
    (R1, "reasoning without an open tag</think>\n\nanswer", ("reasoning without an open tag", "answer")),
    (R1, "<think>\nwith the tag\n</think>answer", ("with the tag", "answer")),
    (R1, "all reasoning, cut off", ("all reasoning, cut off", "")),
    (REASONING_FORMATS["qwen3-thinking"], "forced</think>ok", ("forced", "ok")),
]


@pytest.mark.parametrize(("fmt", "text", "expected"), CASES)
def test_split_reasoning(fmt, text: str, expected: tuple) -> None:
    assert split_reasoning(fmt, text) == expected


def test_prompt_that_opens_think_starts_in_reasoning() -> None:
    assert split_reasoning(QWEN3, "thinking</think>answer", prompt_opens_reasoning=True) == ("thinking", "answer")


@pytest.mark.parametrize(("fmt", "text", "expected"), CASES)
def test_streaming_agrees_with_whole_text_for_every_split(fmt, text: str, expected: tuple) -> None:
    for size in range(1, len(text) + 1):
        parser, reasoning, content = ReasoningParser(fmt), "", ""
        for start in range(0, len(text), size):
            r, c = parser.feed(text[start:start + size])
            reasoning, content = reasoning + r, content + c
        r, c = parser.finish()
        assert ((reasoning + r) or None, content + c) == expected, size


def test_tags_split_across_deltas_are_never_leaked() -> None:
    parser = ReasoningParser(QWEN3)
    deltas = ["<th", "ink>", "abc</", "thi", "nk>", "\n\nanswer"]
    out = [parser.feed(d) for d in deltas]
    assert all("<" not in r and "<" not in c for r, c in out)
    assert "".join(r for r, _ in out) == "abc" and "".join(c for _, c in out) == "answer"


def _chat(client, **kw) -> dict:
    body = {"messages": [{"role": "user", "content": "q"}], "max_tokens": 200, **kw}
    return client.post("/v1/chat/completions", json=body).json()


@pytest.fixture
def engine() -> FakeEngine:
    """Overrides conftest's engine: this module's double replies with a think block."""
    return FakeEngine(reply="<think>\nstep one, step two\n</think>\n\nThe answer.")


def test_http_reasoning_content_and_stream_deltas(make_client) -> None:
    client = make_client(reasoning_parser="qwen3")
    message = _chat(client)["choices"][0]["message"]
    assert message["reasoning_content"] == "step one, step two"
    assert message["content"] == "The answer."
    raw = _chat(client, separate_reasoning=False)["choices"][0]["message"]
    assert raw["reasoning_content"] is None and raw["content"].startswith("<think>")
    off = _chat(client, chat_template_kwargs={"enable_thinking": False})["choices"][0]["message"]
    assert off["reasoning_content"] is None and "<think>" in off["content"]
    body = {"messages": [{"role": "user", "content": "q"}], "max_tokens": 200, "stream": True}
    events = client.post("/v1/chat/completions", json=body).text.split("\n\n")
    deltas = [json.loads(e[6:])["choices"][0]["delta"] for e in events if e.startswith("data: {")]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "step one, step two"
    assert "".join(d.get("content", "") for d in deltas) == "The answer."


def test_without_a_parser_the_think_block_stays_in_content(client) -> None:
    message = _chat(client)["choices"][0]["message"]
    assert message["reasoning_content"] is None and message["content"].startswith("<think>")


def test_enable_thinking_false_puts_an_empty_think_block_in_the_prompt(make_client, engine: FakeEngine) -> None:
    client = make_client(reasoning_parser="qwen3")
    _chat(client, chat_template_kwargs={"enable_thinking": False})
    prompt = engine.tokenizer.decode(engine.requests[-1][1])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_prefilled_think_block_makes_the_output_reasoning(make_client, engine: FakeEngine) -> None:
    engine.reply = "still thinking</think>\n\nanswer"
    client = make_client(reasoning_parser="qwen3")
    body = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\n"}],
            "add_generation_prompt": False, "continue_final_message": True, "max_tokens": 100}
    message = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
    assert engine.tokenizer.decode(engine.requests[-1][1]).endswith("<|im_start|>assistant\n<think>\n")
    assert (message["reasoning_content"], message["content"]) == ("still thinking", "answer")
