"""The asyncio wrapper: concurrent generate() streams, early close aborts, the event loop stays free."""

from __future__ import annotations

import asyncio
import time

import pytest

from fleetserve.runtime.engine.async_engine import AsyncEngine
from fleetserve.runtime.engine.types import EngineError, SamplingParams


async def collect(engine: AsyncEngine, rid: str, prompt: list[int], params: SamplingParams) -> list[int]:
    tokens: list[int] = []
    async for out in engine.generate(rid, prompt, params):
        for c in out.outputs:
            tokens += c.new_token_ids
    return tokens


async def test_concurrent_streams_match_sequential_runs(async_engine):
    prompts = [async_engine.tokenizer.encode(f"request {i} asks about the weather in town {i}") for i in range(6)]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    alone = [await collect(async_engine, f"a{i}", p, params) for i, p in enumerate(prompts)]
    together = await asyncio.gather(*(collect(async_engine, f"b{i}", p, params) for i, p in enumerate(prompts)))
    assert list(together) == alone and all(len(t) == 12 for t in alone)


async def test_closing_the_stream_aborts_and_frees_pages(async_engine):
    prompt = async_engine.tokenizer.encode("a long story begins")
    stream = async_engine.generate("x", prompt, SamplingParams(max_tokens=500, ignore_eos=True))
    await stream.__anext__()
    assert async_engine.stats().num_used_pages > 0
    await stream.aclose()
    for _ in range(100):
        if async_engine.stats().num_used_pages == 0 and async_engine.stats().num_running == 0:
            break
        await asyncio.sleep(0.02)
    assert async_engine.stats().num_used_pages == 0 and async_engine.stats().num_running == 0


async def test_event_loop_is_not_blocked_while_generating(async_engine, monkeypatch):
    """Each step is made to take 0.4 s: were any of it run on the event loop, the loop would stall that
    long. It must keep ticking (5 ms sleeps) with gaps far below a step, and generating for real must
    leave its median tick on time."""
    execute = async_engine.engine.runner.execute

    def slow_execute(batch):
        time.sleep(0.4)  # releases the GIL, like a long native forward
        return execute(batch)

    monkeypatch.setattr(async_engine.engine.runner, "execute", slow_execute)
    gaps = await _tick_while(collect(async_engine, "slow", async_engine.tokenizer.encode("tick"),
                                     SamplingParams(max_tokens=4, ignore_eos=True)))
    assert len(gaps) > 100 and max(gaps) < 0.2, f"the event loop stalled for {max(gaps):.3f}s during 0.4 s steps"
    monkeypatch.setattr(async_engine.engine.runner, "execute", execute)
    prompt = async_engine.tokenizer.encode("tick tock " * 20)
    gaps = await _tick_while(collect(async_engine, "busy", prompt, SamplingParams(max_tokens=200, ignore_eos=True)))
    assert sorted(gaps)[len(gaps) // 2] < 0.02, "the event loop's median tick is late while generating"


async def _tick_while(work) -> list[float]:
    """Runs `work`, and meanwhile the gaps between 5 ms ticks of the event loop."""
    task = asyncio.create_task(work)
    gaps: list[float] = []
    while not task.done():
        t0 = time.perf_counter()
        await asyncio.sleep(0.005)
        gaps.append(time.perf_counter() - t0)
    await task
    return gaps


async def test_bad_request_raises_engine_error(async_engine):
    with pytest.raises(EngineError, match="context length"):
        await collect(async_engine, "big", [1] * 10, SamplingParams(max_tokens=10**6))


async def test_flush_cache_refuses_while_busy(async_engine):
    prompt = async_engine.tokenizer.encode("cache me")
    stream = async_engine.generate("busy", prompt, SamplingParams(max_tokens=300, ignore_eos=True))
    await stream.__anext__()
    assert await async_engine.flush_cache() is False
    await stream.aclose()
    for _ in range(100):
        if await async_engine.flush_cache():
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("flush_cache never succeeded once idle")
