"""A lagging consumer gets merged deltas: nothing lost, nothing repeated, the final state last."""

from __future__ import annotations

import asyncio

import pytest

from fleetserve.runtime.engine.async_engine import _OutputSlot
from fleetserve.runtime.engine.outputs import merge_outputs
from fleetserve.runtime.engine.types import CompletionOutput, RequestOutput, SamplingParams, TokenLogprob


def delta(index, ids, text, logprobs=None, finish=None, stop=None):
    lp = None if logprobs is None else [TokenLogprob(t, p) for t, p in zip(ids, logprobs, strict=True)]
    return CompletionOutput(index, list(ids), text, lp, finish, stop)


def output(*choices, finished=False, prompt_logprobs=None, queue_time=None):
    return RequestOutput("r", list(choices), num_prompt_tokens=5, num_cached_tokens=2,
                         prompt_logprobs=prompt_logprobs, finished=finished, queue_time=queue_time)


def test_merge_concatenates_each_choice_and_keeps_the_last_finish():
    first = output(delta(0, [1, 2], "ab", [-0.1, -0.2]), delta(1, [7], "x", [-1.0]),
                   prompt_logprobs=[None], queue_time=0.5)
    second = output(delta(1, [8, 9], "yz", [-2.0, -3.0], finish="stop", stop="\n"), delta(2, [4], "q", [-0.4]),
                    finished=True)
    merged = merge_outputs(first, second)
    assert [(c.index, c.new_token_ids, c.new_text, c.finish_reason, c.stop_reason) for c in merged.outputs] == [
        (0, [1, 2], "ab", None, None), (1, [7, 8, 9], "xyz", "stop", "\n"), (2, [4], "q", None, None)]
    assert [lp.logprob for lp in merged.outputs[1].new_logprobs] == [-1.0, -2.0, -3.0]
    assert merged.finished and merged.prompt_logprobs == [None] and merged.queue_time == 0.5
    assert merge_outputs(output(delta(0, [1], "a")), output(delta(0, [2], "b"))).outputs[0].new_logprobs is None


async def test_slot_merges_until_taken_and_raises_after_the_pending_output():
    slot = _OutputSlot()
    slot.put(output(delta(0, [1], "a")))
    slot.put(output(delta(0, [2], "b")))
    got = await slot.get()
    assert got.outputs[0].new_token_ids == [1, 2] and got.outputs[0].new_text == "ab"
    waiter = asyncio.ensure_future(slot.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    slot.put(output(delta(0, [3], "c")))
    slot.fail(RuntimeError("engine died"))
    assert (await waiter).outputs[0].new_token_ids == [3]
    with pytest.raises(RuntimeError, match="engine died"):
        await slot.get()


async def test_a_stream_read_slowly_still_gets_every_token(async_engine):
    """The consumer sleeps between reads: chunks come merged, and their concatenation is the whole output."""
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    fast = [out async for out in async_engine.generate("fast", [5, 6, 7, 8], params)]
    slow, tokens, text = [], [], ""
    async for out in async_engine.generate("slow", [5, 6, 7, 8], params):
        slow.append(out)
        tokens += out.outputs[0].new_token_ids if out.outputs else []
        text += out.outputs[0].new_text if out.outputs else ""
        await asyncio.sleep(0.05)
    assert tokens == [t for out in fast for c in out.outputs for t in c.new_token_ids]
    assert text == "".join(c.new_text for out in fast for c in out.outputs)
    assert len(slow) < len(fast) and slow[-1].finished
