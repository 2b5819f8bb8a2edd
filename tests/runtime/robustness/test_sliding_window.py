"""Sliding-window checkpoints (Mistral-7B-v0.1's layout; Qwen2 with use_sliding_window, where only the
upper layers slide) are served, and their greedy tokens equal transformers' on prompts longer than the
window: chunked prefill, prefix-cache hits, decodes through the native kernel and through SDPA."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from fleetserve.runtime.demo import write_demo_model
from fleetserve.runtime.engine import cpu_kernels
from fleetserve.runtime.engine.config import EngineConfig, ModelConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import SamplingParams
from tests.runtime.engine.helpers import run_to_completion

WINDOW = 13  # not a multiple of the 4-token page: windows start inside a page
MAX_TOKENS = 16
TEXT = ("In the morning the old harbour town wakes slowly, and the fishermen count their nets while the gulls "
        "argue over scraps and a café owner sweeps the steps.")


@pytest.fixture(scope="module", params=["mistral", "qwen2"])
def checkpoint(request, tmp_path_factory):
    return write_demo_model(tmp_path_factory.mktemp(f"sw-{request.param}"), request.param, seed=3,
                            sliding_window=WINDOW)


def prompts(engine: LLMEngine) -> list[list[int]]:
    ids = engine.tokenizer.encode(TEXT)
    out = [ids[:n] for n in (5, 14, 30, len(ids))]  # shorter than, about, and well beyond the window
    out.append(ids + ids[:20])  # shares a long prefix with the previous one: a prefix-cache hit
    assert max(len(p) for p in out) > 3 * WINDOW
    return out


def hf_greedy(hf, prompt: list[int]) -> list[int]:
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=MAX_TOKENS, do_sample=False)
    return out[0, len(prompt):].tolist()


def test_the_window_is_read_per_layer(checkpoint):
    cfg = ModelConfig.from_pretrained(checkpoint, device="cpu")
    if cfg.family == "mistral":
        assert cfg.sliding_windows == [WINDOW] * cfg.num_layers
    else:  # qwen2: layers from max_window_layers on
        assert cfg.sliding_windows == [None] * (cfg.num_layers // 2) + [WINDOW] * (cfg.num_layers - cfg.num_layers // 2)


@pytest.mark.parametrize("native_kernel", [True, False])
def test_greedy_tokens_equal_transformers_beyond_the_window(checkpoint, native_kernel, monkeypatch):
    if not native_kernel:
        monkeypatch.setattr(cpu_kernels, "load", lambda: None)
    elif cpu_kernels.load() is None:
        pytest.skip("no C compiler: the native kernel path cannot run here")
    hf = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    engine = LLMEngine.from_config(EngineConfig(model_path=str(checkpoint), dtype="float32", device="cpu",
                                                page_size=4, max_num_batched_tokens=24, num_pages=128))
    batch = prompts(engine)
    expected = [hf_greedy(hf, p) for p in batch]
    no_window = AutoConfig.from_pretrained(checkpoint)
    no_window.sliding_window = None
    if getattr(no_window, "layer_types", None) is not None:
        no_window.layer_types = ["full_attention"] * no_window.num_hidden_layers
    full = AutoModelForCausalLM.from_pretrained(checkpoint, config=no_window, dtype=torch.float32).eval()
    assert any(hf_greedy(full, p) != e for p, e in zip(batch, expected, strict=True)), \
        "the window must change the output for these prompts, or this test proves nothing"
    for i, prompt in enumerate(batch[:-1]):
        engine.add_request(f"r{i}", prompt, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True))
    results = run_to_completion(engine)
    engine.add_request("cached", batch[-1], SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True))
    results.update(run_to_completion(engine))
    assert results["cached"].num_cached_tokens > WINDOW
    got = [results[f"r{i}"].sequences[0].token_ids for i in range(len(batch) - 1)]
    got.append(results["cached"].sequences[0].token_ids)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"prompt {i} ({len(batch[i])} tokens)"
