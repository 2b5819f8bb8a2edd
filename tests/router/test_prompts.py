"""The router's token ids equal the worker's: chat template rendered as transformers renders it.

transformers is only the reference here (the router never imports it): the worker tokenizes with
`AutoTokenizer`, `apply_chat_template(tokenize=False)` and `add_special_tokens=False` for chat, and
`add_special_tokens=True` for completion prompts (runtime/server/chat_template.py, serving_completions.py).
"""

from __future__ import annotations

import json

import pytest

from fleetserve.runtime.router.keys import token_key
from fleetserve.runtime.router.prompts import PromptEncoder, request_key, requested_adapter

SYSTEM = "You are a terse assistant. Answer in one line; prefer examples; ünïcödé ✓ 日本語."
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
CHATS = {
    "one_user": {"messages": [{"role": "user", "content": "Hello there"}]},
    "system_and_user": {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Why?"}]},
    "developer_role": {"messages": [{"role": "developer", "content": SYSTEM}, {"role": "user", "content": "Hi"}]},
    "unicode": {"messages": [{"role": "user", "content": "Привет 👋🏽 — ¿qué tal? 中文 \u200b tabs\tand\nnewlines"}]},
    "content_parts": {"messages": [{"role": "user", "content": [{"type": "text", "text": "part one"},
                                                                  {"type": "text", "text": "part two"}]}]},
    "multi_turn": {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "a"},
                                {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]},
    "tools": {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS},
    "no_generation_prompt": {"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": False},
    "continue_final": {"messages": [{"role": "user", "content": "Count"}, {"role": "assistant", "content": "1, 2,"}],
                       "add_generation_prompt": False, "continue_final_message": True},
    "no_thinking": {"messages": [{"role": "user", "content": "Quick"}], "chat_template_kwargs": {"enable_thinking": False}},
}
PROMPTS = ["Once upon a time", "  leading spaces and ünïcödé 🙂", "<|im_start|>user\nspecial tokens in text", ""]


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def tokenizers_pair(request, tmp_path_factory):
    from transformers import AutoTokenizer

    from fleetserve.runtime.demo.tokenizer import write_tokenizer_files

    folder = tmp_path_factory.mktemp(f"tok-{request.param}")
    write_tokenizer_files(folder, request.param)
    return PromptEncoder.from_directory(folder, page_size=4), AutoTokenizer.from_pretrained(str(folder))


def worker_chat_ids(tok, body: dict) -> list[int]:
    messages = []
    for m in body["messages"]:
        content = m["content"]
        if isinstance(content, list):
            content = "\n".join(p["text"] for p in content)
        messages.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    kwargs = dict(body.get("chat_template_kwargs") or {})
    text = tok.apply_chat_template(messages, tools=body.get("tools"), tokenize=False,
                                   add_generation_prompt=body.get("add_generation_prompt", True),
                                   continue_final_message=body.get("continue_final_message", False), **kwargs)
    return list(tok(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("case", sorted(CHATS))
def test_chat_token_ids_match_the_worker(tokenizers_pair, case):
    encoder, tok = tokenizers_pair
    body = json.loads(json.dumps(CHATS[case]))  # as parsed from the wire
    assert encoder.chat_ids(body) == worker_chat_ids(tok, body)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_completion_token_ids_match_the_worker(tokenizers_pair, prompt):
    encoder, tok = tokenizers_pair
    assert encoder.text_ids(prompt) == list(tok(prompt, add_special_tokens=True)["input_ids"])


def test_chats_sharing_a_system_prompt_share_a_key_prefix(tokenizers_pair):
    encoder, _ = tokenizers_pair
    long_system = SYSTEM * 8
    a = {"messages": [{"role": "system", "content": long_system}, {"role": "user", "content": "first question"}]}
    b = {"messages": [{"role": "system", "content": long_system}, {"role": "user", "content": "another, different one"}]}
    ka, kb = request_key("chat", a, encoder, None), request_key("chat", b, encoder, None)
    system_only = len(encoder.chat_ids({"messages": [{"role": "system", "content": long_system}],
                                        "add_generation_prompt": False})) // encoder.page_size
    shared = next(i for i, (x, y) in enumerate(zip(ka.block_hashes, kb.block_hashes, strict=False)) if x != y)
    assert shared >= system_only - 1 and shared > 10
    # the same chat under an adapter shares nothing with the base model's key
    kl = request_key("chat", a, encoder, "sql")
    assert not set(kl.block_hashes) & set(ka.block_hashes)


def test_completion_keys_from_text_and_from_token_ids_agree(tokenizers_pair):
    encoder, _ = tokenizers_pair
    text = "The same prompt, long enough to fill a few pages of four tokens each."
    ids = encoder.text_ids(text)
    by_text = request_key("completions", {"prompt": text}, encoder, None)
    assert by_text == request_key("completions", {"prompt": [ids]}, encoder, None)
    assert by_text == token_key(ids, encoder.page_size, None)


def test_routing_info_round_trip(tokenizers_pair):
    encoder, _ = tokenizers_pair
    info = {"model": "m", "page_size": 4, "tokenizer": encoder.tokenizer.to_str(),
            "chat_template": encoder.chat_template, "special_tokens": encoder.special_tokens, "add_bos": False}
    again = PromptEncoder.from_routing_info(info)
    body = CHATS["system_and_user"]
    assert again.chat_ids(body) == encoder.chat_ids(body)


def test_a_template_that_refuses_gives_an_empty_key_not_an_error(tokenizers_pair):
    encoder, _ = tokenizers_pair
    # the worker answers 400; the router must not raise
    assert request_key("chat", {"messages": "nope"}, encoder, None).is_empty


@pytest.mark.parametrize(("body", "expected"), [
    ({"model": "qwen"}, None),
    ({"model": "qwen", "lora_path": "sql"}, "sql"),
    ({"model": "qwen:sql", "lora_path": "other"}, "sql"),
    ({"model": "default:sql"}, "sql"),
    ({"lora_path": "sql"}, "sql"),
    ({"model": "org:model-7b"}, None),  # a served name with a colon is not an adapter
    ({"model": "sql"}, "sql"),  # vLLM style: the adapter as the model
    ({"model": "alias:sql"}, "sql"),  # another served name the router does not know, a known adapter
    ({"model": "other-model"}, None),  # unknown: the worker answers 404
    ({"lora_path": "/models/adapters/sql"}, "/models/adapters/sql"),
])
def test_requested_adapter(body, expected):
    assert requested_adapter(body, {"qwen", "org:model-7b"}, {"sql", "chat"}) == expected
