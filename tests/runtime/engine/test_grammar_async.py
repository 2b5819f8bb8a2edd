"""Structured outputs through the asyncio face: compile checks off the event loop, concurrent submits."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from fleetserve.runtime.engine.async_engine import AsyncEngine
from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.grammar_compiler import GrammarSpec
from fleetserve.runtime.engine.types import EngineError, SamplingParams
from tests.structured_cases import PHONE_REGEX, SCHEMAS, check_json, check_regex


async def run_text(engine: AsyncEngine, rid: str, params: SamplingParams) -> tuple[str, str | None]:
    text, finish = "", None
    async for out in engine.generate(rid, engine.tokenizer.encode("Some structured data:"), params):
        for c in out.outputs:
            text += c.new_text
            finish = c.finish_reason or finish
    return text, finish


async def test_check_grammar_raises_the_reason_and_accepts_valid_constraints(async_engine):
    await async_engine.check_grammar(SamplingParams())  # no constraint: nothing to do
    await async_engine.check_grammar(SamplingParams(regex=PHONE_REGEX))
    with pytest.raises(EngineError, match="invalid regex: Regex parsing error"):
        await async_engine.check_grammar(SamplingParams(regex="[a-"))


async def test_constrained_and_free_streams_together(async_engine):
    schema = SCHEMAS["items_of_objects"]
    results = await asyncio.gather(
        run_text(async_engine, "json", SamplingParams(temperature=1.0, seed=2, max_tokens=128, json_schema=json.dumps(schema))),
        run_text(async_engine, "phone", SamplingParams(temperature=0, max_tokens=128, regex=PHONE_REGEX)),
        run_text(async_engine, "free", SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)),
    )
    (json_text, json_finish), (phone, phone_finish), (_, free_finish) = results
    assert (json_finish, phone_finish, free_finish) == ("stop", "stop", "length")
    check_json(json_text, schema)
    check_regex(phone, PHONE_REGEX)


async def test_a_constrained_request_added_before_its_grammar_compiled_runs_once_ready(async_engine):
    """generate() without check_grammar first: the engine waits for the compile off the step loop."""
    schema = dict(SCHEMAS["enums"], description=f"unique {time.monotonic_ns()}")  # not in the cache yet
    text, finish = await run_text(async_engine, "cold", SamplingParams(temperature=0, max_tokens=64,
                                                                 json_schema=json.dumps(schema)))
    assert finish == "stop"
    check_json(text, SCHEMAS["enums"])


def test_concurrent_submits_share_one_compilation(demo_model):
    engine = AsyncEngine.from_config(EngineConfig(model_path=str(demo_model("llama")), device="cpu", num_pages=16))
    spec = GrammarSpec("json_schema", json.dumps(SCHEMAS["refs"]))
    futures = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        barrier.wait()
        futures.append(engine.engine.grammars.submit(spec))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(f) for f in futures}) == 1
    assert futures[0].result().grammar is not None
    engine.engine.grammars.shutdown()
