"""The native paged decode kernel against direct attention in float64, and the backend using it."""

from __future__ import annotations

import random

import pytest
import torch

from fleetserve.runtime.engine import cpu_kernels
from fleetserve.runtime.engine.attention import BatchLayout
from fleetserve.runtime.engine.attention_torch import TorchAttentionBackend

HAS_COMPILER = cpu_kernels._compiler() is not None
needs_kernel = pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")


# The source's paths, each forced on in turn where the CPU has the instructions: the blocked AVX-512 path
# with bfloat16 dot products (AVX512-BF16), the same converting bfloat16 to float32, and the generic loops.
VARIANTS = {"native": (), "no-avx512bf16": ("-mno-avx512bf16",), "generic": ("-mno-avx512f",)}


@pytest.fixture(scope="module")
def kernel():
    loaded = cpu_kernels.load()
    assert loaded is not None, "a C compiler is installed, so the kernel must build (see the warning logged)"
    return loaded


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request):
    if request.param == "native":
        return request.getfixturevalue("kernel")
    cc = cpu_kernels._compiler()
    assert cc is not None
    return cpu_kernels.build(cc, VARIANTS[request.param])


def direct(q, k_cache, v_cache, tables, lens, scale):
    """One sequence at a time, float64: softmax(q k^T * scale) v over the sequence's tokens."""
    page_size, hkv = k_cache.shape[1], k_cache.shape[2]
    group = q.shape[1] // hkv
    out = []
    for b, (table, length) in enumerate(zip(tables, lens, strict=True)):
        pos = torch.arange(length)
        slots = torch.tensor(table)[pos // page_size] * page_size + pos % page_size
        keys = k_cache.reshape(-1, hkv, k_cache.shape[3])[slots].double().repeat_interleave(group, dim=1)
        values = v_cache.reshape(-1, hkv, k_cache.shape[3])[slots].double().repeat_interleave(group, dim=1)
        scores = torch.einsum("hd,khd->hk", q[b].double(), keys) * scale
        out.append(torch.einsum("hk,khd->hd", scores.softmax(-1), values))
    return torch.stack(out)


def direct_lse(q, k_cache, tables, lens, scale):
    page_size, hkv = k_cache.shape[1], k_cache.shape[2]
    rows = []
    for b, (table, length) in enumerate(zip(tables, lens, strict=True)):
        pos = torch.arange(length)
        slots = torch.tensor(table)[pos // page_size] * page_size + pos % page_size
        keys = k_cache.reshape(-1, hkv, k_cache.shape[3])[slots].double().repeat_interleave(q.shape[1] // hkv, dim=1)
        rows.append((torch.einsum("hd,khd->hk", q[b].double(), keys) * scale).logsumexp(-1))
    return torch.stack(rows)


def random_case(seed, num_seqs, hq, hkv, d, page_size, max_len, dtype, shared_pages=0):
    """Sequences of 1..max_len own tokens after `shared_pages` pages they all share, pages shuffled."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    own_lens = [1] + [rng.randint(1, max_len) for _ in range(num_seqs - 1)]  # one with a single token
    num_pages = shared_pages + sum(-(-n // page_size) for n in own_lens) + 8
    pages = list(range(1, num_pages))
    rng.shuffle(pages)
    shared = [pages.pop() for _ in range(shared_pages)]
    tables = [shared + [pages.pop() for _ in range(-(-n // page_size))] for n in own_lens]
    lens = [shared_pages * page_size + n for n in own_lens]
    k_cache = torch.randn(num_pages, page_size, hkv, d, generator=gen).to(dtype)
    v_cache = torch.randn(num_pages, page_size, hkv, d, generator=gen).to(dtype)
    q = (torch.randn(num_seqs, hq, d, generator=gen) * 2).to(dtype)
    width = max(len(t) for t in tables)
    table = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32)
    return q, k_cache, v_cache, tables, lens, table


@needs_kernel
@pytest.mark.parametrize(("hq", "hkv", "d", "page_size"), [(4, 4, 64, 16), (12, 4, 64, 16), (8, 2, 128, 16),
                                                           (6, 3, 80, 4), (2, 1, 16, 1), (32, 8, 128, 32),
                                                           (14, 2, 64, 16), (16, 2, 128, 8), (20, 2, 64, 16)])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 2e-5), (torch.bfloat16, 2e-2)])
def test_kernel_matches_direct_attention(variant, hq, hkv, d, page_size, dtype, tol):
    q, k_cache, v_cache, tables, lens, table = random_case(hq * d + page_size, 9, hq, hkv, d, page_size, 300, dtype)
    got, lse = variant(q, k_cache, v_cache, table, torch.tensor(lens, dtype=torch.int32), d**-0.5)
    expected = direct(q, k_cache, v_cache, tables, lens, d**-0.5)
    assert got.dtype == dtype and lse.shape == q.shape[:2]
    torch.testing.assert_close(got.double(), expected, atol=tol, rtol=tol)
    torch.testing.assert_close(lse.double(), direct_lse(q, k_cache, tables, lens, d**-0.5), atol=tol, rtol=tol)


@needs_kernel
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 2e-5), (torch.bfloat16, 2e-2)])
def test_kernel_reads_shared_pages_and_sharp_softmax(variant, dtype, tol):
    q, k_cache, v_cache, tables, lens, table = random_case(7, 5, 8, 2, 64, 16, 200, dtype, shared_pages=3)
    q = q * 40  # near one-hot attention: exp() far into its range
    got, _ = variant(q, k_cache, v_cache, table, torch.tensor(lens, dtype=torch.int32), 0.125)
    torch.testing.assert_close(got.double(), direct(q, k_cache, v_cache, tables, lens, 0.125), atol=tol, rtol=tol)


@needs_kernel
def test_kernel_refuses_what_it_cannot_read(kernel):
    q, k_cache, v_cache, _, lens, table = random_case(1, 3, 4, 2, 64, 16, 50, torch.float32)
    lens_t = torch.tensor(lens, dtype=torch.int32)
    assert not kernel.supports(torch.float16, torch.device("cpu"))
    with pytest.raises(TypeError):
        kernel(q.half(), k_cache.half(), v_cache.half(), table, lens_t, 1.0)
    with pytest.raises(ValueError, match="index dtypes"):
        kernel(q, k_cache, v_cache, table.long(), lens_t, 1.0)
    with pytest.raises(ValueError, match="contiguous"):
        kernel(q.transpose(0, 1).contiguous().transpose(0, 1), k_cache, v_cache, table, lens_t, 1.0)
    with pytest.raises(ValueError, match="one row per sequence"):
        kernel(q, k_cache, v_cache, table[:2], lens_t, 1.0)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shared_pages", [0, 80])
def test_backend_decodes_through_the_kernel_like_the_torch_path(kernel, dtype, shared_pages):
    """A mixed step (decodes and prefill chunks), with and without a shared prefix long enough for cascade
    (the prefills then cascade, the decodes read the shared pages in place): the same outputs as gather + SDPA."""
    ps, hkv, hq, d = 4, 2, 6, 32
    rng = random.Random(3)
    kv = torch.randn(2, 400, ps, hkv, d).to(dtype)
    free = list(range(1, 400))
    rng.shuffle(free)
    prefix = [free.pop() for _ in range(shared_pages)]
    query_lens, kv_lens, tables = [], [], []
    for q_len in [1, 7, 1, 1, 12, 1]:
        own = q_len + rng.randint(0, 40)
        tables.append(prefix + [free.pop() for _ in range(-(-own // ps))])
        query_lens.append(q_len)
        kv_lens.append(shared_pages * ps + own)
    layout = BatchLayout(query_lens, kv_lens, tables, ps)
    t = layout.num_tokens
    q, k, v = (torch.randn(t, h, d).to(dtype) for h in (hq, hkv, hkv))
    with_kernel = TorchAttentionBackend([kv.clone()], d**-0.5, kernel)
    without = TorchAttentionBackend([kv.clone()], d**-0.5)
    assert with_kernel.decode_kernel is kernel and without.decode_kernel is None
    outputs = []
    for backend in (with_kernel, without):
        backend.plan(layout)
        outputs.append(backend.forward(0, q, k, v))
    plan = with_kernel._plans[None]
    assert plan.kernel_decodes is not None and len(plan.groups) == 1  # only the prefills
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(outputs[0].float(), outputs[1].float(), atol=tol, rtol=tol)


def test_switch_and_missing_compiler_fall_back_to_torch(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("FLEETSERVE_CACHE", str(tmp_path))
    cpu_kernels.load.cache_clear()
    try:
        monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
        assert cpu_kernels.load() is None
        cpu_kernels.load.cache_clear()
        monkeypatch.delenv(cpu_kernels.ENV_SWITCH)
        monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
        with caplog.at_level("WARNING"):
            assert cpu_kernels.load() is None
        assert "native CPU kernel unavailable" in caplog.text
        cpu_kernels.load.cache_clear()
        broken = tmp_path / "cc"
        broken.write_text("#!/bin/sh\necho 'cc: error: nothing works' >&2\nexit 1\n")
        broken.chmod(0o755)
        monkeypatch.setenv("CC", str(broken))
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert cpu_kernels.load() is None
        assert "nothing works" in caplog.text and not list((tmp_path / "kernels").glob("*.so"))
    finally:
        cpu_kernels.load.cache_clear()
