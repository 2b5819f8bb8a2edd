"""Engine faults never hang a request: one request's fault stays with it; a fault that cannot be pinned
on one request fails every request in flight and the engine reports itself dead; no busy loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from fleetserve.runtime.engine import detokenizer as detok_module
from fleetserve.runtime.engine import engine as engine_module
from fleetserve.runtime.engine.async_engine import AsyncEngine, EngineDeadError, RequestFailedError
from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.types import SamplingParams

POISON = "<<poison>>"  # a stop string that marks the request whose processing the tests make raise
TIMEOUT_S = 20.0


@pytest.fixture
async def engine(demo_model):
    eng = AsyncEngine.from_config(EngineConfig(model_path=str(demo_model("llama")), device="cpu", page_size=4,
                                               num_pages=256))
    eng.stall_timeout_s = 0.3
    await eng.start()
    yield eng
    await eng.shutdown()


async def run(engine: AsyncEngine, rid: str, params: SamplingParams, prompt: list[int] | None = None) -> list[int]:
    tokens: list[int] = []
    async for out in engine.generate(rid, prompt or [5, 6, 7, 8, 9], params):
        for c in out.outputs:
            tokens += c.new_token_ids
    return tokens


def greedy(max_tokens: int = 8, **kw) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, **kw)


async def settle(engine: AsyncEngine) -> None:
    for _ in range(200):
        stats = engine.stats()
        if stats.num_used_pages == 0 and stats.num_running == 0 and stats.num_waiting == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the engine did not settle: {engine.stats()}")


async def test_a_request_whose_post_processing_raises_fails_alone(engine, monkeypatch):
    original = detok_module.IncrementalDetokenizer.add_tokens

    def add_tokens(self, token_ids):
        if POISON in self._matcher._stops:
            raise RuntimeError("injected detokenizer fault")
        return original(self, token_ids)

    monkeypatch.setattr(detok_module.IncrementalDetokenizer, "add_tokens", add_tokens)
    healthy = [asyncio.create_task(run(engine, f"ok{i}", greedy(12))) for i in range(3)]
    with pytest.raises(RequestFailedError, match="injected detokenizer fault"):
        await asyncio.wait_for(run(engine, "poisoned", greedy(12, stop=[POISON])), TIMEOUT_S)
    results = await asyncio.wait_for(asyncio.gather(*healthy), TIMEOUT_S)
    assert all(len(r) == 12 for r in results)
    assert engine.health().is_healthy
    assert len(await run(engine, "after", greedy(4))) == 4
    await settle(engine)


async def test_a_request_whose_sampling_raises_fails_alone_in_a_batch(engine, monkeypatch):
    """The batched sampler raises because of one row: the step retries row by row, and only that row's
    request ends."""
    original = engine_module.sample

    def sample(logits, rows, **kw):
        if any(row.params.seed == 666 for row in rows):
            raise RuntimeError("injected sampler fault")
        return original(logits, rows, **kw)

    monkeypatch.setattr(engine_module, "sample", sample)
    healthy = [asyncio.create_task(run(engine, f"ok{i}", greedy(10))) for i in range(3)]
    poisoned = asyncio.create_task(run(engine, "poisoned", greedy(10, seed=666)))
    with pytest.raises(RequestFailedError, match="injected sampler fault"):
        await asyncio.wait_for(poisoned, TIMEOUT_S)
    assert all(len(r) == 10 for r in await asyncio.wait_for(asyncio.gather(*healthy), TIMEOUT_S))
    assert engine.health().is_healthy
    await settle(engine)


async def test_a_request_that_fails_to_be_added_fails_alone(engine, monkeypatch):
    """A non-EngineError while adding a request used to escape the command and end the step loop."""
    original = detok_module.IncrementalDetokenizer.__init__

    def init(self, tokenizer, prompt_token_ids, **kw):
        if POISON in kw.get("stop", ()):
            raise ValueError("injected fault while adding")
        original(self, tokenizer, prompt_token_ids, **kw)

    monkeypatch.setattr(engine_module.IncrementalDetokenizer, "__init__", init)
    with pytest.raises(RequestFailedError, match="injected fault while adding"):
        await asyncio.wait_for(run(engine, "poisoned", greedy(4, stop=[POISON], n=2)), TIMEOUT_S)
    assert len(await asyncio.wait_for(run(engine, "next", greedy(6)), TIMEOUT_S)) == 6
    assert engine.health().is_healthy
    await settle(engine)


async def test_a_failing_model_step_fails_everything_in_flight_and_reports_dead(engine, monkeypatch):
    streams = [asyncio.create_task(run(engine, f"r{i}", greedy(200))) for i in range(3)]
    await asyncio.sleep(0.2)

    def broken(batch):
        raise RuntimeError("injected forward fault")

    monkeypatch.setattr(engine.engine.runner, "execute", broken)
    for task in streams:
        with pytest.raises(EngineDeadError, match="injected forward fault"):
            await asyncio.wait_for(task, TIMEOUT_S)
    health = engine.health()
    assert not health.is_alive and "injected forward fault" in (health.reason or "")
    with pytest.raises(EngineDeadError):
        await run(engine, "late", greedy(2))
    with pytest.raises(EngineDeadError):
        await engine.flush_cache()


async def test_a_command_that_raises_fails_requests_instead_of_hanging_them(engine, monkeypatch):
    """An abort that raised anything but EngineError ended the engine thread: every other request then
    waited forever while the engine looked alive."""
    others = [asyncio.create_task(run(engine, f"r{i}", greedy(300))) for i in range(2)]
    doomed = engine.generate("doomed", [1, 2, 3], greedy(300))
    await doomed.__anext__()

    def broken_abort(request_id):
        raise KeyError("injected abort fault")

    monkeypatch.setattr(engine.engine, "abort_request", broken_abort)
    await doomed.aclose()
    for task in others:
        with pytest.raises(EngineDeadError, match="injected abort fault"):
            await asyncio.wait_for(task, TIMEOUT_S)
    assert not engine.health().is_alive


async def test_a_step_that_schedules_nothing_waits_instead_of_spinning(engine, monkeypatch):
    from fleetserve.runtime.engine.scheduler import SchedulerOutput

    steps = 0
    original_step = engine.engine.step

    def counting_step():
        nonlocal steps
        steps += 1
        return original_step()

    monkeypatch.setattr(engine.engine, "step", counting_step)
    monkeypatch.setattr(engine.engine.scheduler, "schedule", lambda: SchedulerOutput([], []))
    stream = engine.generate("stuck", [1, 2, 3], greedy(4))
    task = asyncio.create_task(stream.__anext__())
    await asyncio.sleep(0.5)
    assert steps < 100, f"{steps} steps in 0.5 s with nothing to schedule: the loop spins"
    assert steps >= 5
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await stream.aclose()


async def test_health_reports_a_step_that_does_not_finish(engine, monkeypatch):
    release = threading.Event()
    original = engine.engine.runner.execute

    def slow(batch):
        release.wait(TIMEOUT_S)
        return original(batch)

    monkeypatch.setattr(engine.engine.runner, "execute", slow)
    assert engine.health().is_healthy
    task = asyncio.create_task(run(engine, "slow", greedy(2)))
    deadline = time.monotonic() + 5
    while engine.health().is_stepping and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    health = engine.health()
    assert health.is_alive and not health.is_stepping and "no step finished" in (health.reason or "")
    release.set()
    assert len(await asyncio.wait_for(task, TIMEOUT_S)) == 2
    assert engine.health().is_healthy
