"""The simulator's cost model: prefill is compute-bound, decode memory-bound, both as on a real GPU."""

from __future__ import annotations

import pytest

from fleetserve.runtime.sim.profiles import GIB, PROFILES, StepWork, get_profile


def test_decode_steps_grow_with_batch_and_context_prefill_with_tokens():
    p = get_profile("h100-llama-8b")
    one = p.step_time([StepWork(1, 1024)])
    assert 0.006 < one < 0.010  # weights (16 GB) over ~2.5 TB/s effective, plus overhead
    assert p.step_time([StepWork(1, 1024)] * 64) > one  # more KV read
    assert p.step_time([StepWork(1, 8192)] * 64) > p.step_time([StepWork(1, 1024)] * 64)
    # decode is memory-bound: 64 sequences cost far less than 64 single steps
    assert p.step_time([StepWork(1, 1024)] * 64) < 4 * one
    prefill = p.step_time([StepWork(2048, 0)])
    assert 20_000 < 2048 / prefill < 35_000  # compute-bound: peak x MFU / 2P tokens per second
    assert p.step_time([StepWork(2048, 4096)]) > prefill  # attention over the cached context costs too
    assert p.step_time([]) == 0.0


def test_gpus_rank_as_their_datasheets_and_kv_memory_is_what_the_weights_leave():
    h100, a100, l4 = (get_profile(f"{g}-llama-8b") for g in ("h100", "a100", "l4"))
    for work in ([StepWork(2048, 0)], [StepWork(1, 2048)] * 32):
        assert h100.step_time(work) < a100.step_time(work) < l4.step_time(work)
    assert h100.num_pages(16) == a100.num_pages(16) > 9 * l4.num_pages(16)
    expected = 80 * 0.9 * GIB - 8.03e9 * 2 - 2 * GIB
    assert h100.num_pages(16) == int(expected // (16 * 131072))  # Llama-3.1-8B: 128 KiB of KV per token
    for profile in PROFILES.values():
        info = profile.describe()
        assert info["name"] == profile.name and info["prefill_tokens_per_s"] > 0


def test_unknown_profile_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="h100-llama-8b"):
        get_profile("tpu-v9")
