"""/v1/embeddings through the official `openai` client against real `fleetserve serve` processes,
compared with sentence-transformers on the same checkpoints (cosine >= 0.9999 for every input):

- the real all-MiniLM-L6-v2 (mean pooling, normalized): mixed lengths and Unicode in one batch, token-id
  inputs, base64, concurrent requests, the 400s (too long, empty, dimensions, chat), truncation;
- a BERT with CLS pooling and no Normalize, built here by sentence-transformers, with Matryoshka
  dimensions declared;
- a decoder with last-token pooling built here on the demo qwen3 checkpoint (texts go through its chat
  template, as sentence-transformers 6 sends them).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from embedding_checkpoints import (
    MATRYOSHKA_DIMS,
    build_bert_cls,
    build_decoder_lasttoken,
    cosines,
    minilm_dir,
    reference,
)
from openai import OpenAI
from serve_process import ServeProcess, start_server
from transformers import AutoTokenizer

from fleetserve.runtime.demo import default_demo_model_dir

pytestmark = pytest.mark.timeout(300)

MIN_COSINE = 0.9999
NAME = "embedder"

TEXTS = [
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé — naïve café, façade, jalapeño.",
    "日本語のテキストと絵文字 🚀🔥",
    "Привет, мир! Как дела?",
    "مرحبا بالعالم",
    "A longer passage about serving embedding models on Kubernetes: requests from many clients are "
    "batched into one forward, pooled as the checkpoint says, and normalized when it asks for it. " * 2,
    "x",
    "   leading and trailing spaces   ",
    "emoji only 🙂🙃",
]


def _serve(tmp_path_factory, model: Path, *extra: str) -> ServeProcess:
    log = tmp_path_factory.mktemp("serve-embed") / "serve.log"
    return start_server(["--model-path", str(model), "--served-model-name", NAME, "--log-level", "warning",
                         *extra], log)


def _stop(proc: ServeProcess) -> None:
    assert proc.stop() in (0, 130), proc.log()
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture(scope="module")
def minilm() -> Path:
    return minilm_dir()


@pytest.fixture(scope="module")
def minilm_server(tmp_path_factory, minilm: Path) -> Iterator[ServeProcess]:
    proc = _serve(tmp_path_factory, minilm)
    yield proc
    _stop(proc)


@pytest.fixture(scope="module")
def client(minilm_server: ServeProcess) -> OpenAI:
    return OpenAI(base_url=minilm_server.base_url, api_key="unused", max_retries=0)


def _vectors(response) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def _decode_base64(response) -> np.ndarray:
    return np.array([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in response.data])


def test_minilm_mixed_batch_matches_sentence_transformers(client: OpenAI, minilm: Path) -> None:
    response = client.embeddings.create(model=NAME, input=TEXTS)
    ours, ref = _vectors(response), reference(minilm, TEXTS)
    assert ours.shape == (len(TEXTS), 384)
    assert cosines(ours, ref).min() >= MIN_COSINE
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # the checkpoint's Normalize module
    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    assert response.usage.prompt_tokens == sum(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    assert response.usage.total_tokens == response.usage.prompt_tokens
    assert response.model == NAME and response.object == "list"


def test_minilm_token_ids_and_base64(client: OpenAI, minilm: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    ids = [tokenizer(t)["input_ids"] for t in TEXTS[:4]]
    ref = reference(minilm, TEXTS[:4])
    one = client.embeddings.create(model=NAME, input=ids[1], encoding_format="base64")
    assert isinstance(one.data[0].embedding, str)
    assert cosines(_decode_base64(one), ref[1:2]).min() >= MIN_COSINE
    many = client.embeddings.create(model=NAME, input=ids, encoding_format="base64")
    assert cosines(_decode_base64(many), ref).min() >= MIN_COSINE
    assert many.usage.prompt_tokens == sum(map(len, ids))
    as_floats = _vectors(client.embeddings.create(model=NAME, input=ids, encoding_format="float"))
    assert np.array_equal(as_floats, _decode_base64(many))  # base64 carries the same float32 values


def test_minilm_concurrent_requests_each_match(client: OpenAI, minilm: Path) -> None:
    ref = reference(minilm, TEXTS)
    with ThreadPoolExecutor(len(TEXTS)) as pool:
        results = list(pool.map(lambda t: client.embeddings.create(model=NAME, input=t), TEXTS))
    ours = np.concatenate([_vectors(r) for r in results])
    assert cosines(ours, ref).min() >= MIN_COSINE


def test_minilm_too_long_is_a_400_with_the_numbers_or_truncated(client: OpenAI, minilm: Path) -> None:
    long_text = "hello " * 400  # 402 tokens with [CLS] and [SEP]; max_seq_length is 256
    assert len(AutoTokenizer.from_pretrained(str(minilm))(long_text)["input_ids"]) == 402
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=NAME, input=["short", long_text])
    message = info.value.body["message"]
    assert "input[1] has 402 tokens" in message and "256" in message
    # truncation as sentence-transformers truncates (the tokenizer keeps [CLS] ... [SEP])
    cut = client.embeddings.create(model=NAME, input=["short", long_text], extra_body={"truncate_prompt_tokens": -1})
    assert cosines(_vectors(cut), reference(minilm, ["short", long_text])).min() >= MIN_COSINE
    assert cut.usage.prompt_tokens == 3 + 256
    ten = client.embeddings.create(model=NAME, input=long_text, extra_body={"truncate_prompt_tokens": 10})
    assert ten.usage.prompt_tokens == 10
    with pytest.raises(openai.BadRequestError, match="truncate_prompt_tokens"):
        client.embeddings.create(model=NAME, input="x", extra_body={"truncate_prompt_tokens": 257})


@pytest.mark.parametrize("bad", ["", [], [""], ["ok", ""], [[]]])
def test_minilm_empty_input_is_a_400(client: OpenAI, bad) -> None:
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.embeddings.create(model=NAME, input=bad)


def test_minilm_refuses_what_it_cannot_serve(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="Matryoshka"):
        client.embeddings.create(model=NAME, input="x", dimensions=64)
    with pytest.raises(openai.BadRequestError, match="outside the vocabulary"):
        client.embeddings.create(model=NAME, input=[[101, 30522, 102]])
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        client.completions.create(model=NAME, prompt="hi")
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")


def test_minilm_operations_and_metrics(minilm_server: ServeProcess) -> None:
    url = minilm_server.url
    assert httpx.get(f"{url}/health_generate", timeout=30).status_code == 200  # probes work for embedders
    assert httpx.get(f"{url}/health").status_code == 200
    # what routers read: no prefix cache (an empty snapshot), no adapters
    cache = httpx.get(f"{url}/cache_state").json()
    assert cache["snapshot"] == [] and cache["adapters"] == [] and cache["num_waiting"] == 0
    assert httpx.get(f"{url}/routing_info").status_code == 200
    assert httpx.post(f"{url}/load_lora_adapter", json={"lora_name": "a", "lora_path": "/x"}).status_code == 400
    assert [m.id for m in OpenAI(base_url=minilm_server.base_url, api_key="x").models.list()] == [NAME]
    info = httpx.get(f"{url}/get_model_info").json()
    assert info["is_generation"] is False and info["architecture"] == "BertModel" and info["max_model_len"] == 256
    before = _metric(url, "fleetserve:prompt_tokens_total")
    OpenAI(base_url=minilm_server.base_url, api_key="x").embeddings.create(model=NAME, input=[[101, 7592, 102]] * 2)
    assert _metric(url, "fleetserve:prompt_tokens_total") == before + 6
    assert _metric(url, 'fleetserve:request_success_total{finished_reason="stop"') >= 2
    assert _metric(url, "fleetserve:e2e_request_latency_seconds_count") >= 1


def _metric(url: str, prefix: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {prefix}")


# -- a BERT with CLS pooling, no Normalize, Matryoshka dimensions ---------------------------------------


@pytest.fixture(scope="module")
def bert_cls(tmp_path_factory) -> Path:
    return build_bert_cls(tmp_path_factory.mktemp("bert-cls"))


def test_bert_cls_without_normalize_matches(tmp_path_factory, bert_cls: Path) -> None:
    proc = _serve(tmp_path_factory, bert_cls)
    try:
        client = OpenAI(base_url=proc.base_url, api_key="unused", max_retries=0)
        ref = reference(bert_cls, TEXTS)
        ours = _vectors(client.embeddings.create(model=NAME, input=TEXTS))
        assert cosines(ours, ref).min() >= MIN_COSINE
        assert np.allclose(ours, ref, rtol=1e-3, atol=1e-4)  # not normalized: the raw CLS states, as ST
        assert not np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-2)
        short = client.embeddings.create(model=NAME, input=TEXTS, dimensions=32, encoding_format="base64")
        head = ref[:, :32] / np.linalg.norm(ref[:, :32], axis=1, keepdims=True)
        got = _decode_base64(short)
        assert got.shape == (len(TEXTS), 32) and cosines(got, head).min() >= MIN_COSINE
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        with pytest.raises(openai.BadRequestError) as info:
            client.embeddings.create(model=NAME, input="x", dimensions=20)
        assert ", ".join(map(str, MATRYOSHKA_DIMS)) in info.value.body["message"]
    finally:
        _stop(proc)


# -- a decoder with last-token pooling ----------------------------------------------------------------


def test_decoder_lasttoken_matches(tmp_path_factory) -> None:
    model = build_decoder_lasttoken(tmp_path_factory.mktemp("decoder") / "st", default_demo_model_dir("qwen3"))
    proc = _serve(tmp_path_factory, model)
    try:
        client = OpenAI(base_url=proc.base_url, api_key="unused", max_retries=0)
        ours = _vectors(client.embeddings.create(model=NAME, input=TEXTS))
        assert cosines(ours, reference(model, TEXTS)).min() >= MIN_COSINE
        info = httpx.get(f"{proc.url}/get_model_info").json()
        assert info["is_generation"] is False and info["architecture"] == "Qwen3Model"
    finally:
        _stop(proc)
