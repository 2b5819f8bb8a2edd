"""The engine against transformers on the same demo checkpoints: identical greedy tokens, close logprobs.

The batch is built to exercise everything at once: 18 prompts of 1–120 tokens, several sharing long
prefixes, submitted together, with a 24-token step budget (chunked prefill), 4-token pages and a KV
pool too small for all of them (preemption by recompute).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import SamplingParams

from .helpers import run_to_completion

ARCHS = ["llama", "qwen2", "qwen3"]
MAX_TOKENS = 24
# Prompt logprobs: both sides compute in float32; differences come from summation order only.
LOGPROB_ATOL = 1e-4

BASE = "In the morning the old harbour town wakes slowly, and the fishermen count their nets while"
TEXTS = [
    BASE,
    BASE + " the gulls argue over scraps",
    BASE + " a café owner sweeps the steps — déjà vu, every day",
    BASE + " nobody notices the ship on the horizon. " + BASE,
    "Hello",
    "a",
    "The quick brown fox jumps over the lazy dog.",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "東京の朝はとても静かです。",
    "Numbers: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20",
    "Once upon a time, in a kingdom by the sea, there lived a king who loved maps more than gold.",
    "Once upon a time, in a kingdom by the sea, there lived a queen",
    "🙂 emoji at the start",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Short",
    "Why is the sky blue? Explain it to a child, then to a physicist, then to a poet.",
    BASE + " " + BASE + " " + BASE,
    "Ünïcödé everywhere: naïve coöperation, façade, jalapeño, smörgåsbord.",
]


@pytest.fixture(scope="module", params=ARCHS)
def pair(request, demo_model):
    path = demo_model(request.param)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    engine = LLMEngine.from_config(EngineConfig(
        model_path=str(path), dtype="float32", device="cpu",
        page_size=4, max_num_batched_tokens=24, num_pages=48,
    ))
    return hf, engine


def hf_greedy(hf, prompt: list[int], max_new_tokens: int) -> list[int]:
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, len(prompt):].tolist()


def test_greedy_batch_equals_transformers(pair):
    hf, engine = pair
    prompts = [engine.tokenizer.encode(t) for t in TEXTS]
    assert len({len(p) for p in prompts}) > 10 and max(len(p) for p in prompts) > 60
    for i, prompt in enumerate(prompts):
        engine.add_request(f"r{i}", prompt, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS))
    preemptions_before = engine.scheduler.num_preemptions
    results = run_to_completion(engine)
    assert engine.scheduler.num_preemptions > preemptions_before, "the pool was meant to force preemption"
    for i, prompt in enumerate(prompts):
        got = results[f"r{i}"].sequences[0]
        assert got.token_ids == hf_greedy(hf, prompt, MAX_TOKENS), f"prompt {i} ({len(prompt)} tokens)"
        assert got.num_finishes == 1
    assert engine.pool.num_free == engine.pool.num_pages


def test_prompt_logprobs_close_to_transformers(pair):
    hf, engine = pair
    prompt = engine.tokenizer.encode(TEXTS[3])
    k = 3
    engine.add_request("p", prompt, SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=k))
    got = run_to_completion(engine)["p"].prompt_logprobs
    with torch.no_grad():
        ref = torch.log_softmax(hf(torch.tensor([prompt])).logits[0].float(), dim=-1)
    assert got is not None and len(got) == len(prompt) and got[0] is None
    for t in range(1, len(prompt)):
        entry = got[t]
        assert entry is not None and entry.token_id == prompt[t]
        assert entry.logprob == pytest.approx(ref[t - 1, prompt[t]].item(), abs=LOGPROB_ATOL)
        top_ids = [tid for tid, _ in entry.top]
        assert top_ids == ref[t - 1].topk(k).indices.tolist()


def test_sampled_logprobs_close_to_transformers(pair):
    hf, engine = pair
    prompt = engine.tokenizer.encode(TEXTS[10])
    engine.add_request("l", prompt, SamplingParams(temperature=0.0, max_tokens=8, logprobs=2, ignore_eos=True))
    got = run_to_completion(engine)["l"].sequences[0]
    full = prompt + got.token_ids
    with torch.no_grad():
        ref = torch.log_softmax(hf(torch.tensor([full])).logits[0].float(), dim=-1)
    for j, entry in enumerate(got.logprobs):
        pos = len(prompt) - 1 + j
        assert entry.token_id == full[pos + 1]
        assert entry.logprob == pytest.approx(ref[pos, entry.token_id].item(), abs=LOGPROB_ATOL)
        assert [tid for tid, _ in entry.top] == ref[pos].topk(2).indices.tolist()


def test_shared_prefix_batch_equals_transformers(pair):
    """Prompts behind one long prefix: prefix-cache hits share pages, so attention runs as a cascade."""
    hf, engine = pair
    prefix = engine.tokenizer.encode(" ".join([BASE] * 4))[:100]
    prompts = [prefix + engine.tokenizer.encode(f" question {i}: what happens {'next ' * i}?") for i in range(6)]
    engine.add_request("warm", prefix, SamplingParams(temperature=0.0, max_tokens=1))
    run_to_completion(engine)
    for i, prompt in enumerate(prompts):
        engine.add_request(f"s{i}", prompt, SamplingParams(temperature=0.0, max_tokens=12))
    results = run_to_completion(engine)
    assert all(results[f"s{i}"].num_cached_tokens >= 96 for i in range(6))
    for i, prompt in enumerate(prompts):
        assert results[f"s{i}"].sequences[0].token_ids == hf_greedy(hf, prompt, 12), f"prompt {i}"
