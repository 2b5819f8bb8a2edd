"""The torch attention backend against a direct per-sequence computation, with and without cascade."""

from __future__ import annotations

import random

import pytest
import torch

from fleetserve.runtime.engine.attention import BatchLayout
from fleetserve.runtime.engine.attention_torch import TorchAttentionBackend

PS, HKV, HQ, D, PAGES = 4, 2, 6, 16, 200


def reference(cache_k, cache_v, layout, q, scale):
    """Attention of each new token over its sequence's keys, one sequence at a time, in float64."""
    out, start = [], 0
    for q_len, kv_len, table in zip(layout.query_lens, layout.kv_lens, layout.page_tables, strict=True):
        pos = torch.arange(kv_len)
        slots = torch.tensor(table)[pos // PS] * PS + pos % PS
        keys = cache_k.view(-1, HKV, D)[slots].double().repeat_interleave(HQ // HKV, dim=1)
        values = cache_v.view(-1, HKV, D)[slots].double().repeat_interleave(HQ // HKV, dim=1)
        for i in range(q_len):
            visible = kv_len - q_len + i + 1
            s = torch.einsum("hd,khd->hk", q[start + i].double(), keys[:visible]) * scale
            out.append(torch.einsum("hk,khd->hd", s.softmax(-1), values[:visible]))
        start += q_len
    return torch.stack(out)


def make_batch(shared_pages: int, seed: int):
    rng = random.Random(seed)
    free = list(range(1, PAGES))
    rng.shuffle(free)
    prefix = [free.pop() for _ in range(shared_pages)]
    query_lens, kv_lens, tables = [], [], []
    for q_len in [1, 1, 1, 5, 9, 1]:
        own_tokens = rng.randint(q_len, 30)
        kv_len = shared_pages * PS + own_tokens
        tables.append(prefix + [free.pop() for _ in range(-(-own_tokens // PS))])
        query_lens.append(q_len)
        kv_lens.append(kv_len)
    return BatchLayout(query_lens, kv_lens, tables, PS)


@pytest.mark.parametrize(("shared_pages", "cascade"), [(0, False), (3, False), (24, True), (70, True)])
def test_matches_direct_attention(shared_pages, cascade):
    torch.manual_seed(shared_pages)
    kv = torch.randn(2, PAGES, PS, HKV, D)
    layout = make_batch(shared_pages, seed=shared_pages)
    backend = TorchAttentionBackend([kv], scale=D**-0.5)
    backend.plan(layout)
    cascaded = [g.shared_pages is not None for g in backend._plans[None].groups]
    assert any(cascaded) == cascade
    if shared_pages == 70:
        assert all(cascaded)  # the prefill group too
    t = layout.num_tokens
    q, k, v = torch.randn(t, HQ, D), torch.randn(t, HKV, D), torch.randn(t, HKV, D)
    got = backend.forward(0, q, k, v)
    expected = reference(kv[0], kv[1], layout, q, D**-0.5)  # forward wrote k/v into the cache first
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_plain_attention_with_lse_matches_the_cpu_flash_kernel(dtype):
    """The non-CPU fallback of the cascade's building block gives what the CPU flash kernel gives."""
    from fleetserve.runtime.engine.attention_torch import _attention_with_lse, _flash_with_lse

    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, n, 16).to(dtype) for n in (5, 9, 9))
    mask = torch.zeros(3, 1, 5, 9, dtype=dtype)
    mask[..., 6:] = float("-inf")
    for m in (None, mask):
        got, got_lse = _attention_with_lse(q, k, v, 0.25, m)
        ref, ref_lse = _flash_with_lse(q, k, v, 0.25, m)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(got.float(), ref.float(), atol=tol, rtol=tol)
        torch.testing.assert_close(got_lse, ref_lse, atol=tol, rtol=tol)


def test_sequences_sharing_different_prefixes_cascade_in_their_own_groups():
    """Two system prompts and a loner in one step: each prompt's sequences are a cascade group, the loner
    is attended alone, and every output matches direct attention."""
    rng = random.Random(5)
    free = list(range(1, PAGES))
    rng.shuffle(free)
    prefixes = [[free.pop() for _ in range(70)], [free.pop() for _ in range(80)]]
    query_lens, kv_lens, tables = [], [], []
    for prefix, q_len in [(0, 1), (1, 6), (0, 4), (None, 3), (1, 1), (0, 1), (1, 2), (0, 5)]:
        own_tokens = rng.randint(q_len, 20)
        shared = prefixes[prefix] if prefix is not None else []
        tables.append(shared + [free.pop() for _ in range(-(-own_tokens // PS))])
        query_lens.append(q_len)
        kv_lens.append(len(shared) * PS + own_tokens)
    layout = BatchLayout(query_lens, kv_lens, tables, PS)
    torch.manual_seed(5)
    kv = torch.randn(2, PAGES, PS, HKV, D)
    backend = TorchAttentionBackend([kv], scale=D**-0.5)
    backend.plan(layout)
    shared_counts = sorted(len(g.shared_pages) for g in backend._plans[None].groups if g.shared_pages is not None)
    assert shared_counts == [70, 70, 80]  # decodes and prefills of the first prompt, prefills of the second
    t = layout.num_tokens
    q, k, v = torch.randn(t, HQ, D), torch.randn(t, HKV, D), torch.randn(t, HKV, D)
    got = backend.forward(0, q, k, v)
    torch.testing.assert_close(got.double(), reference(kv[0], kv[1], layout, q, D**-0.5), atol=1e-5, rtol=1e-5)


def test_prompts_of_mixed_lengths_are_attended_one_by_one():
    """Long prompts of very different lengths: each is attended alone (fresh ones plain causal, a chunk after
    cached tokens with its offset mask), matching direct attention; short equal ones stay one padded group."""
    rng = random.Random(11)
    free = list(range(1, PAGES))
    rng.shuffle(free)
    query_lens, kv_lens, tables = [], [], []
    for q_len, kv_len in [(180, 180), (12, 12), (150, 300), (1, 40), (1, 41)]:
        tables.append([free.pop() for _ in range(-(-kv_len // PS))])
        query_lens.append(q_len)
        kv_lens.append(kv_len)
    layout = BatchLayout(query_lens, kv_lens, tables, PS)
    torch.manual_seed(11)
    kv = torch.randn(2, PAGES, PS, HKV, D)
    backend = TorchAttentionBackend([kv], scale=D**-0.5)
    backend.plan(layout)
    singles = {(one.q_len, one.kv_len): one.mask is None for one in backend._plans[None].singles}
    assert singles == {(180, 180): True, (12, 12): True, (150, 300): False}
    assert [g.q_index.shape for g in backend._plans[None].groups] == [(2, 1)]  # the two decodes, padded together
    t = layout.num_tokens
    q, k, v = torch.randn(t, HQ, D), torch.randn(t, HKV, D), torch.randn(t, HKV, D)
    got = backend.forward(0, q, k, v)
    torch.testing.assert_close(got.double(), reference(kv[0], kv[1], layout, q, D**-0.5), atol=1e-5, rtol=1e-5)
