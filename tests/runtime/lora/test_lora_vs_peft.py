"""Mixed-adapter batches against PEFT's generate() on the same base and adapters: identical greedy tokens.

Per architecture (llama, qwen2, qwen3 demo models, float32): the base model and four PEFT adapters of
ranks 2-16 with different targets (fused q/k/v and gate/up slices alone and together, rsLoRA on one),
random non-zero B, all submitted at once; two device slots for four adapters (LRU swaps), a 24-token
step budget (chunked prefill) and a KV pool too small for the batch (preemption by recompute). Both
forms of the op: packed (the CPU default) on every arch, per-slot segments on llama.
"""

from __future__ import annotations

import pytest

from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import SamplingParams

from ..engine.helpers import run_to_completion
from .adapters import peft_greedy, peft_model

ARCHS = ["llama", "qwen2", "qwen3"]
MAX_TOKENS = 10
TEXTS = [
    "In the morning the old harbour town wakes slowly, and the fishermen count their nets while the gulls",
    "Hello there",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
]


@pytest.mark.parametrize(("arch", "packed"), [(arch, True) for arch in ARCHS] + [("llama", False)])
def test_mixed_adapter_batch_equals_peft(arch, packed, demo_model, lora_adapters):
    base, adapters = demo_model(arch), lora_adapters(arch)
    engine = LLMEngine.from_config(EngineConfig(
        model_path=str(base), dtype="float32", device="cpu", page_size=4, max_num_batched_tokens=24,
        num_pages=40, enable_lora=True, max_loras_per_batch=2, max_lora_rank=16,
    ))
    assert engine.lora is not None and engine.lora.packed
    engine.lora.packed = packed
    for name, path in adapters.items():
        engine.load_lora(name, str(path))
    names = [None, *adapters]
    requests = {}
    for t, text in enumerate(TEXTS):
        prompt = engine.tokenizer.encode(text)
        for name in names:
            rid = f"{t}-{name}"
            engine.add_request(rid, prompt, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS), lora_name=name)
            requests[rid] = (name, prompt)
    results = run_to_completion(engine)
    assert engine.scheduler.num_preemptions > 0, "the pool was meant to force preemption"
    assert engine.lora is not None and engine.lora.slots.num_swaps > len(adapters), "slots were meant to swap"
    assert max(len(p) for _, p in requests.values()) > 24, "a prompt was meant to be chunked"
    reference = peft_model(base, adapters)
    outputs: dict[tuple, set] = {}
    for rid, (name, prompt) in requests.items():
        got = results[rid].sequences[0].token_ids
        assert got == peft_greedy(reference, name, prompt, MAX_TOKENS), f"{arch} adapter {name} prompt {rid}"
        outputs.setdefault(tuple(prompt), set()).add(tuple(got))
    # every adapter changes every output: one silently skipped would have matched the base
    assert all(len(distinct) == len(names) for distinct in outputs.values())
    assert engine.pool.num_free == engine.pool.num_pages
