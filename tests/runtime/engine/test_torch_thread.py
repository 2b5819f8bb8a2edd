"""TorchThread runs jobs in order on one thread; AsyncEngine builds and steps its engine on that thread."""

from __future__ import annotations

import threading

import pytest

from fleetserve.runtime.engine.async_engine import AsyncEngine
from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.torch_thread import TorchThread
from fleetserve.runtime.engine.types import EngineError, SamplingParams


def test_jobs_run_in_order_on_one_thread_and_errors_reach_the_caller():
    worker = TorchThread("test-worker")
    seen: list[tuple[int, str]] = []
    for i in range(3):
        worker.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    assert worker.call(lambda: 42) == 42
    assert seen == [(0, "test-worker"), (1, "test-worker"), (2, "test-worker")]
    with pytest.raises(ZeroDivisionError):
        worker.call(lambda: 1 / 0)
    assert worker.call(lambda: worker.call(lambda: "nested")) == "nested"  # no deadlock from its own thread
    worker.stop()
    worker.join(timeout=5)


async def test_engine_is_built_and_stepped_on_the_same_thread(demo_model, monkeypatch):
    from fleetserve.runtime.engine import engine as engine_module

    threads: dict[str, set[str]] = {"build": set(), "step": set()}
    build, step = engine_module.LLMEngine.from_config.__func__, engine_module.LLMEngine.step

    def recording_build(cls, config):
        threads["build"].add(threading.current_thread().name)
        return build(cls, config)

    def recording_step(self):
        threads["step"].add(threading.current_thread().name)
        return step(self)

    monkeypatch.setattr(engine_module.LLMEngine, "from_config", classmethod(recording_build))
    monkeypatch.setattr(engine_module.LLMEngine, "step", recording_step)
    eng = AsyncEngine.from_config(EngineConfig(model_path=str(demo_model("llama")), device="cpu", num_pages=64))
    await eng.start()
    try:
        outputs = [out async for out in eng.generate("r", [5, 6, 7], SamplingParams(max_tokens=3, ignore_eos=True))]
    finally:
        await eng.shutdown()
    assert outputs[-1].finished
    assert threads["build"] == threads["step"] == {"fleetserve-engine"}


def test_a_model_that_cannot_load_raises_in_the_caller(tmp_path):
    with pytest.raises((EngineError, OSError)):
        AsyncEngine.from_config(EngineConfig(model_path=str(tmp_path / "missing"), device="cpu"))
