"""`/routing_info` and `/cache_state` over a real engine (tiny demo model): a router can predict the
block hashes a worker caches from what `/routing_info` gives it, and follow them with `/cache_state`."""

from __future__ import annotations

from collections.abc import Iterator

import jinja2
import pytest
from fastapi.testclient import TestClient
from tokenizers import Tokenizer

from fleetserve.runtime.engine.async_engine import AsyncEngine
from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.server.app import build_app
from fleetserve.runtime.server.state import ServerSettings, ServerState
from fleetserve.runtime.wire import BLOCK_HASH_SCHEME, chain_block_hashes, hash_hex

PAGE = 4
SYSTEM = "You are a helpful assistant who answers in one short sentence about the weather."


@pytest.fixture(scope="module")
def client(demo_model) -> Iterator[TestClient]:
    path = str(demo_model("llama"))
    engine = AsyncEngine.from_config(EngineConfig(model_path=path, device="cpu", page_size=PAGE, num_pages=64))
    state = ServerState.build(engine, ServerSettings(model_path=path, served_model_names=["demo"]))
    with TestClient(build_app(state), raise_server_exceptions=False) as c:
        yield c


def render_like_a_router(info: dict, messages: list[dict]) -> list[int]:
    """What a router does with /routing_info alone: `tokenizers` + the Jinja template, no transformers."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    text = env.from_string(info["chat_template"]).render(messages=messages, add_generation_prompt=True,
                                                         **info["special_tokens"])
    return Tokenizer.from_str(info["tokenizer"]).encode(text, add_special_tokens=False).ids


def chat(client: TestClient, messages: list[dict]) -> dict:
    response = client.post("/v1/chat/completions", json={"model": "demo", "messages": messages, "max_tokens": 3,
                                                         "temperature": 0, "return_cached_tokens_details": True})
    assert response.status_code == 200, response.text
    return response.json()


def test_published_hashes_are_the_chain_of_the_prompt_the_server_computed(client: TestClient):
    assert client.post("/flush_cache").status_code == 200
    info = client.get("/routing_info").json()
    assert info["page_size"] == PAGE and info["hash_scheme"] == BLOCK_HASH_SCHEME and not info["is_simulated"]
    assert info["model"] == "demo" and info["tokenizer"] and info["chat_template"]
    start = client.get("/cache_state").json()
    assert start["snapshot"] == [] and start["num_running"] == 0 and start["adapters"] == []

    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Will it rain? ☔ Ünïcode"}]
    body = chat(client, messages)
    prompt_ids = render_like_a_router(info, messages)
    assert body["usage"]["prompt_tokens"] == len(prompt_ids)  # the router's ids are the server's
    state = client.get("/cache_state", params={"epoch": start["epoch"], "after": start["seq"]}).json()
    assert state["epoch"] == start["epoch"] and state["snapshot"] is None and state["removed"] == []
    expected = [hash_hex(h) for h in chain_block_hashes(prompt_ids, PAGE)]
    # the prompt's full pages, and maybe pages completed by the generated tokens after it
    assert set(expected) <= set(state["stored"])
    assert len(state["stored"]) <= len(chain_block_hashes(prompt_ids + [0] * 3, PAGE))

    # a second user turn on the same system prompt: its leading blocks are already cached, and reported
    other = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "And tomorrow?"}]
    body = chat(client, other)
    shared = 0
    for a, b in zip(chain_block_hashes(prompt_ids, PAGE), chain_block_hashes(render_like_a_router(info, other), PAGE),
                    strict=False):
        if a != b:
            break
        shared += 1
    assert shared > 0 and body["usage"]["prompt_tokens_details"]["cached_tokens"] == shared * PAGE

    flushed = client.post("/flush_cache")
    assert flushed.status_code == 200
    after = client.get("/cache_state", params={"epoch": start["epoch"], "after": state["seq"]}).json()
    assert after["epoch"] != start["epoch"] and after["snapshot"] == []


def test_cache_state_rejects_a_negative_event_number(client: TestClient):
    response = client.get("/cache_state", params={"after": -1})
    assert response.status_code == 400 and response.json()["param"] == "after"
    for bad in ("x", "0.0", "1e3", " 1"):
        response = client.get("/cache_state", params={"after": bad})
        assert response.status_code == 400 and response.json()["param"] == "after", bad
    assert client.get("/cache_state", params={"after": "0"}).status_code == 200


def test_responses_carry_the_system_fingerprint(client: TestClient):
    body = chat(client, [{"role": "user", "content": "hi"}])
    assert body["system_fingerprint"] == "fleetserve"
    info = client.get("/get_server_info").json()
    assert info["is_simulated"] is False and info["simulation"] is None


def test_adapter_requests_publish_blocks_in_the_adapter_namespace(demo_model, tmp_path):
    from tests.runtime.lora.adapters import SPECS, make_adapter

    spec = SPECS[0]
    path = str(demo_model("llama"))
    adapter = make_adapter(demo_model("llama"), tmp_path / spec.name, spec)
    engine = AsyncEngine.from_config(EngineConfig(model_path=path, device="cpu", page_size=PAGE, num_pages=64,
                                                  enable_lora=True, lora_paths={spec.name: str(adapter)}))
    state = ServerState.build(engine, ServerSettings(model_path=path, served_model_names=["demo"]))
    with TestClient(build_app(state), raise_server_exceptions=False) as client:
        info = client.get("/routing_info").json()
        start = client.get("/cache_state").json()
        assert start["adapters"] == [spec.name]
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Sunny?"}]
        response = client.post("/v1/chat/completions", json={"model": f"demo:{spec.name}", "messages": messages,
                                                              "max_tokens": 2, "temperature": 0})
        assert response.status_code == 200, response.text
        ids = render_like_a_router(info, messages)
        held = set(client.get("/cache_state").json()["snapshot"])
        assert {hash_hex(h) for h in chain_block_hashes(ids, PAGE, spec.name)} <= held
        assert not {hash_hex(h) for h in chain_block_hashes(ids, PAGE)} & held  # no base-model blocks
