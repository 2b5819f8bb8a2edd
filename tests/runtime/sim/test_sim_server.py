"""`fleetserve serve --simulate` as a real process: it serves the OpenAI API and never hides what it is."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.serve_process import ServeProcess, start_server


@pytest.fixture(scope="module")
def sim_server(demo_model, tmp_path_factory) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("sim") / "serve.log"
    server = start_server(["--model-path", str(demo_model("llama")), "--simulate", "a100-llama-8b",
                           "--simulate-time-scale", "0.5", "--enable-cache-report", "--kv-cache-memory-gb", "0.5"],
                          log)
    yield server
    assert server.stop() in (0, 130), server.log()  # as the real server (tests/e2e)


def test_it_announces_itself_at_start_in_server_info_and_in_every_response(sim_server: ServeProcess):
    assert "WARNING" in sim_server.log() and "SIMULATED worker: profile a100-llama-8b" in sim_server.log()
    info = httpx.get(f"{sim_server.url}/get_server_info").json()
    assert info["is_simulated"] is True and info["simulation"]["name"] == "a100-llama-8b"
    assert info["simulation"]["time_scale"] == 0.5 and info["engine"]["num_total_pages"] == (1 << 29) // (16 << 17)
    assert httpx.get(f"{sim_server.url}/routing_info").json()["is_simulated"] is True
    client = openai.OpenAI(base_url=sim_server.base_url, api_key="none")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reply = client.chat.completions.create(model="default", messages=messages, max_tokens=5)
    assert reply.system_fingerprint == "fleetserve-SIMULATED-a100-llama-8b"
    assert reply.usage.completion_tokens == 5 and reply.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(model="default", prompt="Once upon a time", max_tokens=4, stream=True))
    assert chunks and all(c.system_fingerprint == "fleetserve-SIMULATED-a100-llama-8b" for c in chunks)


def test_its_prefix_cache_is_real_and_published(sim_server: ServeProcess):
    client = openai.OpenAI(base_url=sim_server.base_url, api_key="none")
    prompt = "The same long shared system prompt, repeated. " * 20
    first = client.completions.create(model="default", prompt=prompt + "A", max_tokens=2)
    second = client.completions.create(model="default", prompt=prompt + "B", max_tokens=2)
    assert first.usage.prompt_tokens > 64
    assert second.usage.prompt_tokens_details.cached_tokens >= (first.usage.prompt_tokens - 16) // 16 * 16 - 16
    state = httpx.get(f"{sim_server.url}/cache_state").json()
    assert len(state["snapshot"]) >= first.usage.prompt_tokens // 16


@pytest.mark.parametrize("drain_secs", [30.0, 2.0])
def test_a_stopping_server_finishes_the_streams_it_has(demo_model, tmp_path, drain_secs):
    """SIGTERM, as a pod removed by a scale-down or a rollout gets it: no new connections, and a stream in
    flight runs to its end within --graceful-shutdown-timeout (about 7 s here; 2 s cuts it)."""
    server = start_server(["--model-path", str(demo_model("llama")), "--simulate", "a100-llama-8b",
                           "--simulate-time-scale", "20", "--graceful-shutdown-timeout", str(drain_secs)],
                          tmp_path / "serve.log")
    body = {"prompt": "hi", "max_tokens": 30, "ignore_eos": True, "stream": True}
    try:
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as response:
            events = (line for line in response.iter_lines() if line.startswith("data: "))
            first = next(events)
            server.process.send_signal(signal.SIGTERM)
            assert refuses_connections(server.url + "/health")  # a router sends new requests elsewhere
            rest = list(events)
        assert server.process.wait(30) is not None
    finally:
        server.stop()
    assert rest[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in [first, *rest[:-1]]]
    text = "".join(c["choices"][0]["text"] for c in chunks if c.get("choices"))
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")][-1]
    if drain_secs >= 10:
        assert finish == "length" and "error" not in chunks[-1] and text
    else:
        assert any("shutting down" in json.dumps(c) for c in chunks)  # cut, with an error event
    assert "Traceback" not in server.log()


def refuses_connections(url: str, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
        except httpx.ConnectError:
            return True
        time.sleep(0.1)
    return False
