"""The native decode kernel with a first token per sequence (sliding windows), every compiled path,
and the torch backend's windowed plans against plain masked attention."""

from __future__ import annotations

import random

import pytest
import torch

from fleetserve.runtime.engine.attention import BatchLayout
from fleetserve.runtime.engine.attention_torch import TorchAttentionBackend
from tests.runtime.engine.test_cpu_kernels import kernel, needs_kernel, random_case, variant  # noqa: F401


def direct_from(q, k_cache, v_cache, tables, starts, lens, scale):
    """float64 attention of each sequence's query over its tokens starts[b] .. lens[b] - 1."""
    page_size, hkv, d = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    group = q.shape[1] // hkv
    out = []
    for b, (table, start, length) in enumerate(zip(tables, starts, lens, strict=True)):
        pos = torch.arange(start, length)
        slots = torch.tensor(table)[pos // page_size] * page_size + pos % page_size
        keys = k_cache.reshape(-1, hkv, d)[slots].double().repeat_interleave(group, dim=1)
        values = v_cache.reshape(-1, hkv, d)[slots].double().repeat_interleave(group, dim=1)
        scores = torch.einsum("hd,khd->hk", q[b].double(), keys) * scale
        out.append(torch.einsum("hk,khd->hd", scores.softmax(-1), values))
    return torch.stack(out)


@needs_kernel
@pytest.mark.parametrize(("hq", "hkv", "d", "page_size"), [(4, 2, 64, 16), (8, 2, 128, 8), (6, 3, 80, 4)])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 2e-5), (torch.bfloat16, 2e-2)])
def test_kernel_attends_from_each_sequences_first_token(variant, hq, hkv, d, page_size, dtype, tol):  # noqa: F811
    q, k_cache, v_cache, tables, lens, table = random_case(hq + d, 7, hq, hkv, d, page_size, 200, dtype)
    rng = random.Random(d)
    starts = [rng.randint(0, n - 1) for n in lens]
    got, _ = variant(q, k_cache, v_cache, table, torch.tensor(lens, dtype=torch.int32), d**-0.5,
                     torch.tensor(starts, dtype=torch.int32))
    torch.testing.assert_close(got.double(), direct_from(q, k_cache, v_cache, tables, starts, lens, d**-0.5),
                               atol=tol, rtol=tol)


def masked_reference(layout: BatchLayout, kv: torch.Tensor, q, k, v, window: int | None, scale: float):
    """Each sequence on its own: write its new K/V, then SDPA with an explicit causal (+ window) mask."""
    kv = kv.clone()
    ps, out, offset = layout.page_size, [], 0
    for q_len, kv_len, table in zip(layout.query_lens, layout.kv_lens, layout.page_tables, strict=True):
        pos = torch.arange(kv_len)
        slots = torch.tensor(table)[pos // ps] * ps + pos % ps
        new = slots[kv_len - q_len :]
        kv[0].view(-1, *kv.shape[3:])[new] = k[offset : offset + q_len]
        kv[1].view(-1, *kv.shape[3:])[new] = v[offset : offset + q_len]
        keys, values = (kv[i].view(-1, *kv.shape[3:])[slots].transpose(0, 1) for i in (0, 1))
        q_pos = (kv_len - q_len + torch.arange(q_len))[:, None]
        mask = pos[None, :] <= q_pos
        if window is not None:
            mask &= pos[None, :] > q_pos - window
        qs = q[offset : offset + q_len].transpose(0, 1)
        o = torch.nn.functional.scaled_dot_product_attention(qs.double(), keys.double(), values.double(),
                                                             attn_mask=mask, scale=scale, enable_gqa=True)
        out.append(o.transpose(0, 1))
        offset += q_len
    return torch.cat(out)


@pytest.mark.parametrize("use_kernel", [False, pytest.param(True, marks=needs_kernel)])
@pytest.mark.parametrize("window", [None, 5, 13])
def test_backend_applies_each_layers_window(use_kernel, window, request):
    """Decodes, chunks after cached tokens and whole prompts, with a layer that slides and one that does
    not, against direct masked attention."""
    ps, hkv, hq, d = 4, 2, 4, 16
    rng = random.Random(window or 0)
    kv_cache = [torch.randn(2, 200, ps, hkv, d) for _ in range(2)]
    free = list(range(1, 200))
    rng.shuffle(free)
    query_lens, kv_lens, tables = [], [], []
    for q_len, cached in [(1, 30), (1, 3), (9, 0), (6, 22), (1, 57), (17, 11)]:
        tables.append([free.pop() for _ in range(-(-(q_len + cached) // ps))])
        query_lens.append(q_len)
        kv_lens.append(q_len + cached)
    layout = BatchLayout(query_lens, kv_lens, tables, ps)
    t = layout.num_tokens
    q, k, v = (torch.randn(t, h, d) for h in (hq, hkv, hkv))
    kernel_ = request.getfixturevalue("kernel") if use_kernel else None
    backend = TorchAttentionBackend([c.clone() for c in kv_cache], d**-0.5, kernel_, [None, window])
    backend.plan(layout)
    for layer, layer_window in enumerate([None, window]):
        got = backend.forward(layer, q, k, v)
        expected = masked_reference(layout, kv_cache[layer], q, k, v, layer_window, d**-0.5)
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
