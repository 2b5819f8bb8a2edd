"""The simulated engine: the real engine and page pool over SimulatedRunner, paced by the cost model."""

from __future__ import annotations

import time

import pytest

from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import EngineError, SamplingParams
from fleetserve.runtime.sim.profiles import get_profile
from fleetserve.runtime.sim.runner import pseudo_token
from fleetserve.runtime.wire import chain_block_hashes


def sim_engine(demo_model, **kw) -> LLMEngine:
    config = EngineConfig(model_path=str(demo_model("llama")), simulate="h100-llama-8b", page_size=16, **kw)
    return LLMEngine.from_config(config)


def run(engine: LLMEngine, prompts: list[list[int]], max_tokens: int) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        engine.add_request(f"r{i}", prompt, SamplingParams(max_tokens=max_tokens, temperature=1.0))
    deadline = time.monotonic() + 60
    while engine.has_unfinished_requests():
        assert time.monotonic() < deadline
        for o in engine.step():
            out.setdefault(o.request_id, []).extend(o.outputs[0].new_token_ids)
    return out


def test_pages_come_from_the_modelled_gpu_and_no_model_is_loaded(demo_model):
    engine = sim_engine(demo_model)
    assert engine.pool.num_pages == get_profile("h100-llama-8b").num_pages(16)
    assert engine.model_config.max_model_len == 131072 and not hasattr(engine.runner, "model")
    assert sim_engine(demo_model, kv_cache_memory_gb=1.0).pool.num_pages == (1 << 30) // (16 * 131072)
    assert sim_engine(demo_model, num_pages=100).pool.num_pages == 100
    with pytest.raises(EngineError, match="unknown simulator profile"):
        LLMEngine.from_config(EngineConfig(model_path=str(demo_model("llama")), simulate="nope"))


def test_tokens_are_deterministic_never_special_and_run_to_max_tokens(demo_model):
    engine = sim_engine(demo_model)
    prompts = [list(range(5, 40)), list(range(100, 170))]
    first, second = run(engine, prompts, 12), run(engine, prompts, 12)
    assert first == second  # sampling at temperature 1 still picks the runner's token
    special = set(engine.tokenizer.all_special_ids) | engine.model_config.eos_token_ids
    assert all(len(t) == 12 and not special & set(t) for t in first.values())
    assert first["r0"][0] == pseudo_token(39, 35, engine.runner.choices)


def test_steps_take_the_modelled_time_scaled(demo_model):
    engine = sim_engine(demo_model, simulate_time_scale=3.0)
    start = time.monotonic()
    run(engine, [list(range(1, 2001))], 4)
    wall = time.monotonic() - start
    modelled = engine.runner.modelled_s
    assert engine.runner.num_steps == 4 and 0.05 < modelled < 0.2  # a 2000-token prefill, then 3 decodes
    assert 3 * modelled * 0.95 < wall < 3 * modelled + 1.0


def test_prefix_cache_and_its_events_work_as_in_the_real_engine(demo_model):
    engine = sim_engine(demo_model)
    prompt = list(range(3, 200))
    run(engine, [prompt], 1)
    engine.add_request("again", prompt, SamplingParams(max_tokens=1))
    outputs = []
    while engine.has_unfinished_requests():
        outputs += engine.step()
    assert outputs[0].num_cached_tokens == 192  # every full page of the prompt but the last token's
    held = set(engine.pool.events.read().snapshot)
    assert set(chain_block_hashes(prompt, 16)) <= held
