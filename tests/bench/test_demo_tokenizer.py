"""Exact prompt lengths under the project's own demo-model tokenizer (the comparison's checkpoint)."""

from __future__ import annotations

import numpy as np
import pytest

from fleetserve.runtime.bench.prompts import PromptBuilder
from fleetserve.runtime.bench.tokenizer import count_tokens, load_tokenizer, sampleable_token_ids
from fleetserve.runtime.bench.workloads import (
    RandomSpec,
    SharedPrefixSpec,
    random_workload,
    shared_prefix_workload,
)


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def demo_tokenizer(request, demo_model):
    return load_tokenizer(str(demo_model(request.param)))


def test_comparison_workloads_have_exact_lengths(demo_tokenizer):
    builder = PromptBuilder(demo_tokenizer, sampleable_token_ids(demo_tokenizer), np.random.default_rng(0))
    for request in random_workload(builder, RandomSpec(num_prompts=8, input_len=256, output_len=64)):
        assert count_tokens(demo_tokenizer, request.prompt) == 256
    spec = SharedPrefixSpec(
        num_groups=2, prompts_per_group=3, system_prompt_len=512, question_len=64, output_len=64
    )
    requests = shared_prefix_workload(builder, spec)
    prefixes = {tuple(demo_tokenizer.encode(r.prompt, add_special_tokens=False)[:512]) for r in requests}
    assert len(prefixes) == 2
    assert all(count_tokens(demo_tokenizer, r.prompt) == r.prompt_len == 576 for r in requests)


def test_pool_has_no_chat_markers(demo_tokenizer):
    pool = set(sampleable_token_ids(demo_tokenizer).tolist())
    assert not pool & set(demo_tokenizer.get_added_vocab().values())


def test_oscillating_suffixes_are_redrawn(demo_model):
    """A few random suffixes flip between two lengths under decode → encode forever; 640 prompts of 128
    tokens with seed 0 met two of them before they were redrawn (the bench then died on its own workload)."""
    tokenizer = load_tokenizer(str(demo_model("llama")))
    builder = PromptBuilder(tokenizer, sampleable_token_ids(tokenizer), np.random.default_rng(0))
    for _ in range(1000):
        assert builder.build(128).num_tokens == 128
