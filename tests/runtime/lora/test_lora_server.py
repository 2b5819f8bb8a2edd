"""LoRA through a real `fleetserve serve` process and the official openai client.

The server starts with one adapter (--lora-paths) and two device slots; the others are loaded at run
time over HTTP (SGLang's path and vLLM's /v1 alias). Outputs are compared with PEFT's greedy
generate() on the same base and adapters; prompts are sent as token ids so both sides see the same.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import OpenAI
from transformers import AutoTokenizer

from tests.e2e.serve_process import ServeProcess, start_server

from .adapters import AdapterSpec, peft_greedy, peft_model

pytestmark = pytest.mark.timeout(300)

BASE = "base"
MAX_TOKENS = 8
PROMPT_TEXTS = ["Once upon a time, in a kingdom by the sea, there lived", "Numbers: 1, 2, 3, 4, 5"]
# the same shape as "mlp8" with other weights, for reloads
OTHER_MLP8 = AdapterSpec("mlp8-other", 8, 4, ("gate_proj", "down_proj"), seed=12)


@pytest.fixture(scope="module")
def setup(demo_model, lora_adapters, extra_adapter, tmp_path_factory):
    base, adapters = demo_model("llama"), lora_adapters("llama")
    other = extra_adapter(OTHER_MLP8)
    tokenizer = AutoTokenizer.from_pretrained(base)
    prompts = [tokenizer.encode(t) for t in PROMPT_TEXTS]
    reference = peft_model(base, {**adapters, "other": other})
    expected = {(name, i): peft_greedy(reference, name, p, MAX_TOKENS)
                for name in [None, *adapters, "other"] for i, p in enumerate(prompts)}
    return base, adapters, other, tokenizer, prompts, expected


@pytest.fixture(scope="module")
def server(setup, tmp_path_factory) -> Iterator[ServeProcess]:
    base, adapters = setup[0], setup[1]
    log = tmp_path_factory.mktemp("lora-serve") / "serve.log"
    proc = start_server([
        "--model-path", str(base), "--served-model-name", BASE, "--dtype", "float32", "--device", "cpu",
        "--page-size", "4", "--kv-cache-memory-gb", "0.02", "--enable-cache-report", "--log-level", "warning",
        "--enable-lora", "--lora-paths", f"qv4={adapters['qv4']}", "--max-loras-per-batch", "2",
        "--max-lora-rank", "16",
    ], log)
    yield proc
    assert proc.stop() in (0, 130), proc.log()
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="none", max_retries=0)


def load(server: ServeProcess, name: str, path, alias: bool = False) -> httpx.Response:
    url = f"{server.base_url if alias else server.url}/load_lora_adapter"
    return httpx.post(url, json={"lora_name": name, "lora_path": str(path)}, timeout=60)


def unload(server: ServeProcess, name: str) -> httpx.Response:
    return httpx.post(f"{server.url}/unload_lora_adapter", json={"lora_name": name}, timeout=60)


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def complete(client: OpenAI, prompt: list[int], model: str = BASE, **extra):
    return client.completions.create(model=model, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0,
                                     extra_body=extra or None)


def test_models_list_adapters_with_parent(client, server, setup):
    assert load(server, "mlp8", setup[1]["mlp8"]).status_code == 200
    cards = {m.id: m for m in client.models.list().data}
    assert cards[BASE].parent is None
    assert cards["qv4"].parent == BASE and cards["mlp8"].parent == BASE
    assert client.models.retrieve("qv4").parent == BASE


def test_concurrent_mixed_requests_equal_peft(client, server, setup):
    _, adapters, _, tokenizer, prompts, expected = setup
    assert load(server, "mlp8", adapters["mlp8"], alias=True).json()["success"] is True  # vLLM's path
    response = load(server, "all16", adapters["all16"])  # SGLang's path
    assert response.status_code == 200 and set(response.json()["loaded_adapters"]) >= {"qv4", "mlp8", "all16"}
    # the three ways to name an adapter, and the base model, all at once (3 adapters > 2 slots)
    calls = []
    for i in range(len(prompts)):
        calls += [((None, i), dict(model=BASE)), (("qv4", i), dict(model=f"{BASE}:qv4")),
                  (("mlp8", i), dict(model=BASE, lora_path="mlp8")), (("all16", i), dict(model="all16")),
                  (("qv4", i), dict(model=f"{BASE}:qv4", lora_path="all16"))]  # base:adapter wins
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [(key, kw, pool.submit(complete, client, prompts[key[1]], **kw)) for key, kw in calls]
        for key, kw, future in futures:
            got = future.result()
            assert got.choices[0].text == decode(tokenizer, expected[key]), (key, kw)
            assert got.model == kw["model"]


def test_reload_follows_new_weights_and_never_serves_stale_cache(client, server, setup):
    _, adapters, other, tokenizer, prompts, expected = setup
    assert load(server, "swap", adapters["mlp8"]).status_code == 200
    prompt = prompts[0] * 3  # long enough for full cached pages
    first = complete(client, prompt, "swap")
    again = complete(client, prompt, "swap")
    assert again.choices[0].text == first.choices[0].text
    assert again.usage.prompt_tokens_details.cached_tokens > 0
    assert load(server, "swap", other).status_code == 200  # same name, other weights
    after = complete(client, prompt, "swap")
    assert after.usage.prompt_tokens_details.cached_tokens == 0, "KV of the old weights was reused"
    reference = peft_model(setup[0], {"mlp8": adapters["mlp8"], "other": other})
    assert first.choices[0].text == decode(tokenizer, peft_greedy(reference, "mlp8", prompt, MAX_TOKENS))
    assert after.choices[0].text == decode(tokenizer, peft_greedy(reference, "other", prompt, MAX_TOKENS))
    assert after.choices[0].text != first.choices[0].text
    assert complete(client, prompts[1], f"{BASE}:swap").choices[0].text == decode(tokenizer, expected[("other", 1)])


def test_bad_adapters_are_refused_with_the_reason(client, server, setup, extra_adapter, tmp_path):
    _, adapters, _, tokenizer, prompts, expected = setup
    big = extra_adapter(AdapterSpec("rank32", 32, 32, ("q_proj",), seed=5))
    broken_json = tmp_path / "broken-json"
    shutil.copytree(adapters["qv4"], broken_json)
    (broken_json / "adapter_config.json").write_text("{not json")
    no_weights = tmp_path / "no-weights"
    shutil.copytree(adapters["qv4"], no_weights)
    (no_weights / "adapter_model.safetensors").unlink()
    bad_weights = tmp_path / "bad-weights"
    shutil.copytree(adapters["qv4"], bad_weights)
    (bad_weights / "adapter_model.safetensors").write_bytes(b"garbage")
    cases = {big: "above this server's --max-lora-rank 16", tmp_path / "missing": "neither an adapter directory",
             broken_json: "not valid JSON", no_weights: "has no adapter_model.safetensors",
             bad_weights: "not a valid safetensors file"}
    for path, reason in cases.items():
        response = load(server, "bad", path)
        body = response.json()
        assert response.status_code == 400 and body["object"] == "error" and body["code"] == 400, body
        assert reason in body["message"], body
    config = json.loads((adapters["qv4"] / "adapter_config.json").read_text())
    assert config["r"] == 4
    assert "bad" not in {m.id for m in client.models.list().data}
    assert complete(client, prompts[0], f"{BASE}:qv4").choices[0].text == decode(tokenizer, expected[("qv4", 0)])


def test_unknown_adapter_is_404(client, server, setup):
    prompt = setup[4][0]
    for kw in (dict(model=f"{BASE}:nope"), dict(model=BASE, lora_path="nope"), dict(model="nope")):
        response = httpx.post(f"{server.base_url}/completions", json={"prompt": prompt, "max_tokens": 2, **kw})
        body = response.json()
        assert response.status_code == 404 and body["object"] == "error" and body["code"] == 404, body
    response = unload(server, "nope")
    assert response.status_code == 404 and "nope" in response.json()["message"]


def test_unload_lets_in_flight_requests_finish(client, server, setup):
    _, adapters, _, _, prompts, _ = setup
    assert load(server, "going", adapters["ko2"]).status_code == 200
    stream = client.completions.create(model=f"{BASE}:going", prompt=prompts[0], max_tokens=400, temperature=0,
                                       stream=True, extra_body={"ignore_eos": True})
    chunks = iter(stream)
    next(chunks)
    assert unload(server, "going").status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text  # still running on the unloaded adapter
    assert f'fleetserve:lora_num_requests_running{{lora_name="going",model_name="{BASE}"}} 1.0' in metrics
    rest = list(chunks)
    assert rest[-1].choices[0].finish_reason == "length"
    assert sum(len(c.choices[0].text) for c in rest if c.choices) > 0
    assert "going" not in {m.id for m in client.models.list().data}
    response = httpx.post(f"{server.base_url}/completions", json={"model": f"{BASE}:going", "prompt": "x"})
    assert response.status_code == 404


def test_features_under_an_adapter(client, server):
    model = f"{BASE}:qv4"
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "a number"}], max_tokens=40, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
    assert isinstance(json.loads(chat.choices[0].message.content)["n"], int)
    with_logprobs = client.completions.create(model=model, prompt="Hello", max_tokens=4, temperature=0, logprobs=2)
    assert len(with_logprobs.choices[0].logprobs.token_logprobs) == 4
    seeded = [client.completions.create(model=model, prompt="Hello", max_tokens=6, n=2, temperature=1.0, seed=7)
              for _ in range(2)]
    assert len(seeded[0].choices) == 2
    assert [c.text for c in seeded[0].choices] == [c.text for c in seeded[1].choices]
    whole = client.completions.create(model=model, prompt="Hello", max_tokens=6, temperature=0).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model, prompt="Hello", max_tokens=6, temperature=0, stream=True) if c.choices)
    assert streamed == whole


def test_metrics_per_adapter(server):
    text = httpx.get(f"{server.url}/metrics").text
    assert f'fleetserve:lora_loaded_adapters{{lora_name="qv4",model_name="{BASE}"}} 1.0' in text
    assert 'fleetserve:lora_requests_info{max_lora="2"' in text
    assert "fleetserve:lora_num_requests_running" in text


def test_adapters_file_is_loaded_before_the_server_listens(setup, tmp_path):
    """--lora-paths-file: /health answers only once the listed adapters are in; bad entries are skipped."""
    base, adapters, _, tokenizer, prompts, expected = setup
    listed = tmp_path / "adapters.json"
    listed.write_text(json.dumps([
        {"lora_name": "all16", "lora_path": str(adapters["all16"])},
        {"lora_name": "gone", "lora_path": str(tmp_path / "missing")},  # fails: logged, skipped
        {"lora_name": BASE, "lora_path": str(adapters["qv4"])},  # the served name: refused, skipped
        {"lora_name": "ko2", "lora_path": str(adapters["ko2"]), "pinned": True},
    ]))
    proc = start_server([
        "--model-path", str(base), "--served-model-name", BASE, "--dtype", "float32", "--device", "cpu",
        "--page-size", "4", "--kv-cache-memory-gb", "0.02", "--skip-server-warmup",
        "--lora-paths-file", str(listed), "--max-lora-rank", "16",
    ], tmp_path / "serve.log")
    try:
        client = OpenAI(base_url=proc.base_url, api_key="none", max_retries=0)
        assert {m.id for m in client.models.list().data} == {BASE, "all16", "ko2"}  # the first answer after /health
        for name in ("all16", "ko2"):
            got = complete(client, prompts[0], f"{BASE}:{name}").choices[0].text
            assert got == decode(tokenizer, expected[(name, 0)])
    finally:
        assert proc.stop() in (0, 130), proc.log()
    log = proc.log()
    assert "gone from --lora-paths-file not loaded" in log and "neither an adapter directory" in log
    assert f"{BASE} from --lora-paths-file not loaded" in log and "Traceback" not in log
