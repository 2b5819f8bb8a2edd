"""The torch attention backend: gathers pages and calls SDPA, with cascade attention for shared prefixes.

Decodes (one new token) and prefills are attended in separate groups so a long prefill chunk never
pads a batch of decodes to its length. Whole pages are gathered with one contiguous copy each and
the unused tail of the last page is masked.

Cascade: when the sequences of a group start with the same pages (a shared system prompt, the n
choices of one request, prefix-cache hits), those pages are attended once for all queries of the
group — one matmul against a single copy — and each sequence gathers only its own remaining pages.
The two partial softmaxes are merged exactly through their log-sum-exp. Without it every sequence
would copy the shared prefix for itself at every layer of every step.

On CPU, when the native kernel compiled (cpu_kernels.py), decodes skip the gather altogether: the
kernel reads each sequence's K/V rows in place from its pages. Prefill groups keep gather + SDPA,
where the copy is small next to the attention's own compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fleetserve.runtime.engine.attention import BatchLayout
from fleetserve.runtime.engine.cpu_kernels import PagedDecodeKernel

# Cascade only pays when it saves at least this many gathered tokens per layer.
CASCADE_MIN_SAVED_TOKENS = 256


@dataclass(slots=True)
class _Group:
    """Sequences attended together."""

    q_index: torch.Tensor  # [B, Qmax] index into the batch's tokens (padding -> 0)
    valid_rows: torch.Tensor  # rows of the flattened [B * Qmax] output that are real queries
    out_index: torch.Tensor  # token index in the batch of each of those rows
    shared_pages: torch.Tensor | None  # pages every sequence of the group starts with (cascade)
    own_pages: torch.Tensor  # [B * num_own_pages] each sequence's remaining pages, padded with page 0
    num_own_pages: int
    mask: torch.Tensor  # [B, 1, Qmax, num_own_pages * page_size] over the own pages, True = attend


@dataclass(slots=True)
class _KernelDecodes:
    """Decoding sequences handed to the native kernel."""

    q_index: torch.Tensor  # [B] index of each sequence's query token in the batch
    page_table: torch.Tensor  # [B, max_pages] int32, padded with page 0
    kv_lens: torch.Tensor  # [B] int32


class TorchAttentionBackend:
    def __init__(self, kv_cache: list[torch.Tensor], scale: float, decode_kernel: PagedDecodeKernel | None = None):
        self.kv_cache = kv_cache
        self.scale = scale
        self.page_size = kv_cache[0].shape[2]
        self.device = kv_cache[0].device
        usable = decode_kernel is not None and decode_kernel.supports(kv_cache[0].dtype, self.device)
        self.decode_kernel = decode_kernel if usable else None
        self._slots = torch.empty(0, dtype=torch.long)
        self._groups: list[_Group] = []
        self._kernel_decodes: _KernelDecodes | None = None

    def plan(self, layout: BatchLayout) -> None:
        self._slots = torch.tensor(layout.slot_indices(), dtype=torch.long, device=self.device)
        starts, offset = [], 0
        for q_len in layout.query_lens:
            starts.append(offset)
            offset += q_len
        decode = [i for i, q in enumerate(layout.query_lens) if q == 1]
        prefill = [i for i, q in enumerate(layout.query_lens) if q > 1]
        self._kernel_decodes = None
        if decode and self.decode_kernel is not None:
            self._kernel_decodes = self._for_kernel(layout, decode, starts)
            decode = []
        self._groups = [self._group(layout, idx, starts) for idx in (decode, prefill) if idx]

    def _for_kernel(self, layout: BatchLayout, seqs: list[int], starts: list[int]) -> _KernelDecodes:
        width = max(len(layout.page_tables[i]) for i in seqs)
        table = [layout.page_tables[i] + [0] * (width - len(layout.page_tables[i])) for i in seqs]
        return _KernelDecodes(torch.tensor([starts[i] for i in seqs], dtype=torch.long),
                              torch.tensor(table, dtype=torch.int32),
                              torch.tensor([layout.kv_lens[i] for i in seqs], dtype=torch.int32))

    def _common_pages(self, layout: BatchLayout, seqs: list[int]) -> int:
        """Leading pages shared by every sequence and lying wholly before all of their queries."""
        if len(seqs) < 2:
            return 0
        ps = self.page_size
        limit = min((layout.kv_lens[i] - layout.query_lens[i]) // ps for i in seqs)
        tables = [layout.page_tables[i] for i in seqs]
        if limit == 0 or any(t[0] != tables[0][0] for t in tables):
            return 0  # the common case without sharing, decided in one pass
        count = 0
        for column in zip(*(t[:limit] for t in tables), strict=False):
            if any(page != column[0] for page in column):
                break
            count += 1
        return count if count * ps * (len(seqs) - 1) >= CASCADE_MIN_SAVED_TOKENS else 0

    def _group(self, layout: BatchLayout, seqs: list[int], starts: list[int]) -> _Group:
        ps, dev = self.page_size, self.device
        common = self._common_pages(layout, seqs)
        num_own = -(-max(layout.kv_lens[i] for i in seqs) // ps) - common
        q_max = max(layout.query_lens[i] for i in seqs)
        q_len = torch.tensor([layout.query_lens[i] for i in seqs])
        kv_len = torch.tensor([layout.kv_lens[i] for i in seqs])
        q_pos = torch.arange(q_max)
        q_valid = q_pos[None, :] < q_len[:, None]
        q_index = torch.where(q_valid, torch.tensor([starts[i] for i in seqs])[:, None] + q_pos, 0)
        own = torch.tensor([(layout.page_tables[i][common:] + [0] * num_own)[:num_own] for i in seqs],
                           dtype=torch.long)
        # a key at absolute position j is visible to a query at absolute position p when j <= p
        q_abs = (kv_len - q_len)[:, None] + q_pos[None, :]
        key_abs = common * ps + torch.arange(num_own * ps)
        mask = key_abs[None, None, :] <= q_abs[:, :, None]
        mask[:, :, 0] |= ~q_valid  # padded query rows see one key so a softmax never divides by zero
        shared = torch.tensor(layout.page_tables[seqs[0]][:common], dtype=torch.long).to(dev) if common else None
        return _Group(q_index.to(dev), q_valid.flatten().nonzero().squeeze(1).to(dev), q_index[q_valid].to(dev),
                      shared, own.flatten().to(dev), num_own, mask.unsqueeze(1).to(dev))

    def forward(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k_cache, v_cache = self.kv_cache[layer]
        heads, dim = k_cache.shape[2], k_cache.shape[3]
        k_cache.view(-1, heads, dim).index_copy_(0, self._slots, k)
        v_cache.view(-1, heads, dim).index_copy_(0, self._slots, v)
        out = torch.empty_like(q)
        decodes = self._kernel_decodes
        if decodes is not None and self.decode_kernel is not None:
            o = self.decode_kernel(q.index_select(0, decodes.q_index), k_cache, v_cache, decodes.page_table,
                                   decodes.kv_lens, self.scale)
            out.index_copy_(0, decodes.q_index, o)
        for g in self._groups:
            b, q_max = g.q_index.shape
            qg = q[g.q_index]  # [B, Qmax, Hq, D]
            ko, vo = (_gather(cache, g.own_pages, b) for cache in (k_cache, v_cache))  # [B, L, Hkv, D]
            if g.shared_pages is None:
                o = F.scaled_dot_product_attention(qg.transpose(1, 2), ko.transpose(1, 2), vo.transpose(1, 2),
                                                   attn_mask=g.mask, scale=self.scale,
                                                   enable_gqa=q.shape[1] != heads).transpose(1, 2)
            else:
                ks, vs = (_gather(cache, g.shared_pages, 1)[0] for cache in (k_cache, v_cache))  # [Ls, Hkv, D]
                o = self._cascade(qg, ks, vs, ko, vo, g.mask)
            rows = o.reshape(b * q_max, *q.shape[1:]).index_select(0, g.valid_rows)
            out.index_copy_(0, g.out_index, rows.to(q.dtype))
        return out

    def _cascade(self, q: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor, ko: torch.Tensor, vo: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
        """Attention over shared keys (ks/vs, seen by every query) and own keys (ko/vo, masked) -> [B, Qmax, Hq, D]."""
        b, q_max, hq, d = q.shape
        hkv = ks.shape[1]
        g = hq // hkv
        qh = q.view(b, q_max, hkv, g, d).permute(2, 0, 3, 1, 4)  # [Hkv, B, G, Qmax, D]
        # shared part: every query against one copy of the shared keys
        scores = torch.matmul(qh.reshape(hkv, b * g * q_max, d), ks.permute(1, 2, 0)).float() * self.scale
        o_sh, m_sh, l_sh = _partial_softmax(scores, vs.transpose(0, 1))
        # own part: each sequence's remaining keys under the causal/padding mask
        scores = torch.matmul(qh.reshape(hkv, b, g * q_max, d), ko.permute(2, 0, 3, 1)).float() * self.scale
        scores = scores.view(hkv, b, g, q_max, -1).masked_fill_(~mask.view(1, b, 1, q_max, -1), float("-inf"))
        o_own, m_own, l_own = _partial_softmax(scores.view(hkv, b, g * q_max, -1), vo.permute(2, 0, 1, 3))
        shape = (hkv, b, g, q_max, -1)
        o_sh, m_sh, l_sh = o_sh.view(shape), m_sh.view(shape), l_sh.view(shape)
        o_own, m_own, l_own = o_own.view(shape), m_own.view(shape), l_own.view(shape)
        m = torch.maximum(m_sh, m_own)
        w_sh, w_own = (m_sh - m).exp(), (m_own - m).exp()
        o = (o_sh * w_sh + o_own * w_own) / (l_sh * w_sh + l_own * w_own)
        return o.permute(1, 3, 0, 2, 4).reshape(b, q_max, hq, d)


def _gather(cache: torch.Tensor, pages: torch.Tensor, batch: int) -> torch.Tensor:
    """Whole pages through index_select on a 2-D view (one contiguous copy per page) -> [batch, L, H, D]."""
    heads, dim = cache.shape[2], cache.shape[3]
    rows = cache.view(cache.shape[0], -1).index_select(0, pages)
    return rows.view(batch, -1, heads, dim)


def _partial_softmax(scores: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unnormalised softmax(scores) @ values, with the row max and the row sum needed to merge parts."""
    m = scores.amax(-1, keepdim=True)
    p = (scores - m).exp_()
    return torch.matmul(p.to(values.dtype), values).float(), m, p.sum(-1, keepdim=True)
