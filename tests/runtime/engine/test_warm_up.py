"""warm_up runs real steps and leaves nothing behind: no requests, no cached pages, zeroed counters."""

from __future__ import annotations

import pytest

from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import EngineError, SamplingParams


def engine(demo_model, **kw) -> LLMEngine:
    return LLMEngine.from_config(EngineConfig(model_path=str(demo_model("llama")), device="cpu", page_size=4,
                                              num_pages=128, max_num_batched_tokens=256, **kw))


def generate(eng: LLMEngine, prompt: list[int]) -> tuple[list[int], int]:
    eng.add_request("r", prompt, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
    tokens, cached = [], 0
    while eng.has_unfinished_requests():
        for out in eng.step():
            tokens += out.outputs[0].new_token_ids
            cached = out.num_cached_tokens
    return tokens, cached


def test_warm_up_leaves_a_clean_engine(demo_model):
    warmed, cold = engine(demo_model), engine(demo_model)
    steps = []
    original = warmed.step
    warmed.step = lambda: steps.append(1) or original()  # type: ignore[method-assign]
    warmed.warm_up()
    assert len(steps) >= 4  # a prefill step and decode steps really ran
    stats = warmed.stats()
    assert not warmed.has_unfinished_requests()
    assert stats.num_used_pages == 0 and stats.prefix_cache_queries == 0 and stats.prefix_cache_hits == 0
    # the warm-up prompts are not in the prefix cache: the first of them runs with nothing cached
    first_warmup_prompt = [(7919 * j + 13) % warmed.model_config.vocab_size for j in range(32)]
    assert generate(warmed, first_warmup_prompt) == generate(cold, first_warmup_prompt)
    assert generate(warmed, first_warmup_prompt)[1] > 0  # while a real repeat is cached as usual


def test_warm_up_refuses_a_busy_engine(demo_model):
    eng = engine(demo_model)
    eng.add_request("busy", [1, 2, 3], SamplingParams(max_tokens=2))
    with pytest.raises(EngineError, match="idle"):
        eng.warm_up()


@pytest.mark.parametrize("warm", [True, False])
def test_the_config_flag_decides_whether_building_warms_up(demo_model, monkeypatch, warm):
    calls = []
    monkeypatch.setattr(LLMEngine, "warm_up", lambda self: calls.append(self))
    eng = engine(demo_model, warm_up=warm)
    assert calls == ([eng] if warm else [])
