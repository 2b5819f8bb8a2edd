"""Property test: whatever mix of requests, aborts and steps, every page returns to the pool.

60 examples of 20–45 requests (each with up to 3 sequences): about two thousand random requests.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import SamplingParams

from .helpers import absorb

NUM_PAGES = 24


@pytest.fixture(scope="module")
def engine(demo_model) -> LLMEngine:
    return LLMEngine.from_config(
        EngineConfig(
            model_path=str(demo_model("llama")),
            dtype="float32",
            device="cpu",
            page_size=4,
            max_num_batched_tokens=32,
            num_pages=NUM_PAGES,
            max_running_requests=6,
        )
    )


request_st = st.fixed_dictionaries(
    {
        "prompt": st.lists(st.integers(0, 300), min_size=1, max_size=30),
        "max_tokens": st.integers(1, 8),
        "n": st.integers(1, 3),
        "temperature": st.sampled_from([0.0, 1.0]),
        "prompt_logprobs": st.sampled_from([None, None, 1]),
        "abort_after": st.one_of(st.none(), st.integers(0, 6)),  # steps after which it is aborted
    }
)


def check_pool_accounting(engine: LLMEngine) -> None:
    held = Counter(p for r in engine.requests.values() for s in r.sequences for p in s.page_ids)
    assert all(engine.pool.ref_counts[p] == c for p, c in held.items())
    assert sum(engine.pool.ref_counts) == sum(held.values())
    assert engine.pool.num_free == sum(1 for c in engine.pool.ref_counts if c == 0)


@pytest.mark.timeout(900)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(request_st, min_size=20, max_size=45))
def test_every_page_comes_back(engine, requests):
    engine.abort_all()  # a failed example must not leak into the next (hypothesis shrinks by rerunning)
    assert engine.reset_prefix_cache()
    results: dict = {}
    pending_aborts: dict[str, int] = {}
    for i, spec in enumerate(requests):
        params = SamplingParams(
            n=spec["n"],
            temperature=spec["temperature"],
            max_tokens=spec["max_tokens"],
            prompt_logprobs=spec["prompt_logprobs"],
            ignore_eos=True,
        )
        engine.add_request(f"r{i}", spec["prompt"], params)
        if spec["abort_after"] is not None:
            pending_aborts[f"r{i}"] = spec["abort_after"]
        if i % 3 == 0:  # interleave arrivals with steps
            for out in engine.step():
                absorb(results, out)
    steps = 0
    while engine.has_unfinished_requests():
        for rid, after in list(pending_aborts.items()):
            if after <= steps:
                engine.abort_request(rid)
                del pending_aborts[rid]
        for out in engine.step():
            absorb(results, out)
        check_pool_accounting(engine)
        steps += 1
        assert steps < 5000
    assert engine.pool.num_free == NUM_PAGES and not any(engine.pool.ref_counts)
    assert not engine.scheduler.running and not engine.scheduler.waiting
    for i, spec in enumerate(requests):
        res = results[f"r{i}"]
        assert res.finished and len(res.sequences) == spec["n"]
        for seq in res.sequences.values():
            assert seq.num_finishes == 1
            if seq.finish_reason == "length":
                assert len(seq.token_ids) == spec["max_tokens"]
