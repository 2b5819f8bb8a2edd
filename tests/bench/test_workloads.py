"""Workloads: exact token counts, reproducible by seed, shared prefixes really shared."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetserve.runtime.bench.prompts import PromptBuilder
from fleetserve.runtime.bench.tokenizer import count_tokens, sampleable_token_ids
from fleetserve.runtime.bench.workloads import (
    BenchRequest,
    RandomSpec,
    SharedPrefixSpec,
    assign_adapters,
    file_workload,
    length_range,
    parse_prompt_file,
    random_workload,
    shared_prefix_workload,
)


def builder_for(tokenizer, seed: int) -> PromptBuilder:
    return PromptBuilder(tokenizer, sampleable_token_ids(tokenizer), np.random.default_rng(seed))


def test_pool_leaves_out_special_and_added_tokens(any_tokenizer):
    pool = set(sampleable_token_ids(any_tokenizer).tolist())
    assert not pool & set(any_tokenizer.all_special_ids)
    assert len(pool) > 100


def test_random_prompts_have_exactly_the_requested_token_count(any_tokenizer):
    spec = RandomSpec(num_prompts=24, input_len=64, output_len=16, range_ratio=0.5)
    requests = random_workload(builder_for(any_tokenizer, 0), spec)
    assert len(requests) == 24
    for request in requests:
        assert count_tokens(any_tokenizer, request.prompt) == request.prompt_len
        assert 32 <= request.prompt_len <= 96
        assert 8 <= request.output_len <= 24
    assert len({r.prompt_len for r in requests}) > 1  # the range ratio spreads lengths


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), num_tokens=st.integers(0, 300))
def test_any_length_any_seed_is_exact(bpe_tokenizer, seed, num_tokens):
    prompt = builder_for(bpe_tokenizer, seed).build(num_tokens)
    assert prompt.num_tokens == num_tokens
    assert count_tokens(bpe_tokenizer, prompt.text) == num_tokens


def test_fixed_lengths_without_range_ratio(bpe_tokenizer):
    requests = random_workload(builder_for(bpe_tokenizer, 3), RandomSpec(10, 256, 64))
    assert {r.prompt_len for r in requests} == {256}
    assert {r.output_len for r in requests} == {64}


def test_same_seed_same_workload_other_seed_other_workload(bpe_tokenizer):
    spec = RandomSpec(num_prompts=8, input_len=40, output_len=8, range_ratio=0.3)
    first = random_workload(builder_for(bpe_tokenizer, 11), spec)
    again = random_workload(builder_for(bpe_tokenizer, 11), spec)
    other = random_workload(builder_for(bpe_tokenizer, 12), spec)
    assert first == again
    assert [r.prompt for r in first] != [r.prompt for r in other]


def test_shared_prefix_prompts_share_their_group_prefix(any_tokenizer):
    spec = SharedPrefixSpec(
        num_groups=3, prompts_per_group=4, system_prompt_len=48, question_len=12, output_len=8
    )
    requests = shared_prefix_workload(builder_for(any_tokenizer, 5), spec)
    assert len(requests) == 12
    prefixes = Counter()
    for request in requests:
        ids = any_tokenizer.encode(request.prompt, add_special_tokens=False)
        assert len(ids) == request.prompt_len == 60
        prefixes[tuple(ids[:48])] += 1
    assert sorted(prefixes.values()) == [4, 4, 4]  # three prefixes, token for token, four prompts each
    assert len({r.prompt for r in requests}) == 12  # every question differs


def test_shared_prefix_order_is_shuffled_by_seed(bpe_tokenizer):
    spec = SharedPrefixSpec(
        num_groups=2, prompts_per_group=6, system_prompt_len=20, question_len=5, output_len=4
    )
    requests = shared_prefix_workload(builder_for(bpe_tokenizer, 1), spec)
    group_of = [requests[0].prompt[:10] == r.prompt[:10] for r in requests]
    assert group_of != sorted(group_of, reverse=True)  # not all of group one, then all of group two


def test_length_range():
    assert length_range(256, 0.0) == (256, 256)
    assert length_range(100, 0.25) == (75, 125)
    assert length_range(1, 0.9) == (1, 2)
    with pytest.raises(ValueError):
        length_range(10, 1.0)


def test_prompt_file_json_and_jsonl(bpe_tokenizer):
    as_json = json.dumps(["ka to ri", {"prompt": "ne sa", "output_len": 7}])
    as_jsonl = '"ka to ri"\n{"prompt": "ne sa", "max_tokens": 7}\n\n'
    for text in (as_json, as_jsonl):
        requests = file_workload(parse_prompt_file(text), bpe_tokenizer, default_output_len=32, num_prompts=5)
        assert [r.output_len for r in requests] == [32, 7, 32, 7, 32]  # cycles through the file
        assert requests[1].prompt == "ne sa"
        assert requests[0].prompt_len == count_tokens(bpe_tokenizer, "ka to ri")


def test_prompt_file_rejects_entries_without_prompt():
    with pytest.raises(ValueError, match="entry 2"):
        parse_prompt_file('[{"prompt": "a"}, {"text": "b"}]')


def test_adapters_spread_evenly_and_reproducibly():
    def make():
        return [BenchRequest("p", 1, 1) for _ in range(10)]

    first, again = make(), make()
    assign_adapters(first, ["a", "b", "c"], np.random.default_rng(4))
    assign_adapters(again, ["a", "b", "c"], np.random.default_rng(4))
    counts = Counter(r.adapter for r in first)
    assert sorted(counts.values()) == [3, 3, 4]
    assert [r.adapter for r in first] == [r.adapter for r in again]
    assert [r.adapter for r in first] != ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a"]


def test_no_adapters_leaves_base_model():
    requests = [BenchRequest("p", 1, 1)]
    assign_adapters(requests, [], np.random.default_rng(0))
    assert requests[0].adapter is None
