"""Attention over the paged KV cache, behind a backend interface.

KV cache layout (shared by every backend): one tensor per layer of shape
``[2, num_pages, page_size, num_kv_heads, head_dim]``; ``cache[0]`` holds K and ``cache[1]`` V, each a
contiguous ``[num_pages, page_size, num_kv_heads, head_dim]`` — FlashInfer's "NHD" paged layout, so
the FlashInfer backend takes ``(cache[0], cache[1])`` unchanged. A token at position ``p`` of a
sequence lives in page ``page_table[p // page_size]`` at offset ``p % page_size``.

`BatchLayout` describes one step's batch (query lengths, KV lengths, page tables); a backend's
``plan`` turns it into its own index tensors once per step, and ``forward`` is called per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


@dataclass(slots=True)
class BatchLayout:
    """One step's sequences, in the order their new tokens are concatenated in the batch."""

    query_lens: list[int]  # new tokens of each sequence this step
    kv_lens: list[int]  # tokens in the cache after this step (cached + new)
    page_tables: list[list[int]]
    page_size: int

    @property
    def num_tokens(self) -> int:
        return sum(self.query_lens)

    def slot_indices(self) -> list[int]:
        """Cache slot (page * page_size + offset) of every new token, in batch order."""
        slots: list[int] = []
        ps = self.page_size
        for q_len, kv_len, pages in zip(self.query_lens, self.kv_lens, self.page_tables, strict=True):
            for pos in range(kv_len - q_len, kv_len):
                slots.append(pages[pos // ps] * ps + pos % ps)
        return slots


class AttentionBackend(Protocol):
    def plan(self, layout: BatchLayout) -> None:
        """Prepare index tensors for this step's batch (called once per step, before the layers)."""

    def forward(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Write k, v ([T, Hkv, D]) into the layer's cache, then attend q ([T, Hq, D]) -> [T, Hq, D]."""


@dataclass(slots=True)
class _Group:
    """Sequences attended together with one padded SDPA call."""

    q_index: torch.Tensor  # [B, Qmax] index into the batch's tokens (padding -> 0)
    valid_rows: torch.Tensor  # [num valid queries] rows of the flattened [B * Qmax] output to keep
    page_table: torch.Tensor  # [B * num_pages] flattened (padding -> page 0, masked out)
    num_pages: int
    mask: torch.Tensor  # [B, 1, Qmax, num_pages * page_size] bool, True = attend
    out_index: torch.Tensor  # [num valid queries] token index in the batch


class TorchAttentionBackend:
    """Reference backend: gathers each sequence's pages and calls SDPA (CPU and CUDA).

    Decodes (one new token) and prefills are batched separately so a long prefill chunk never pads
    a batch of decodes to its length. Whole pages are gathered (one contiguous copy per page) and the
    unused tail of the last page is masked.
    """

    def __init__(self, kv_cache: list[torch.Tensor], scale: float):
        self.kv_cache = kv_cache
        self.scale = scale
        self.page_size = kv_cache[0].shape[2]
        self.device = kv_cache[0].device
        self._slots = torch.empty(0, dtype=torch.long)
        self._groups: list[_Group] = []

    def plan(self, layout: BatchLayout) -> None:
        self._slots = torch.tensor(layout.slot_indices(), dtype=torch.long, device=self.device)
        starts, offset = [], 0
        for q_len in layout.query_lens:
            starts.append(offset)
            offset += q_len
        decode = [i for i, q in enumerate(layout.query_lens) if q == 1]
        prefill = [i for i, q in enumerate(layout.query_lens) if q > 1]
        self._groups = [self._group(layout, idx, starts) for idx in (decode, prefill) if idx]

    def _group(self, layout: BatchLayout, seqs: list[int], starts: list[int]) -> _Group:
        ps = self.page_size
        q_max = max(layout.query_lens[i] for i in seqs)
        num_pages = -(-max(layout.kv_lens[i] for i in seqs) // ps)
        q_len = torch.tensor([layout.query_lens[i] for i in seqs])
        kv_len = torch.tensor([layout.kv_lens[i] for i in seqs])
        q_pos = torch.arange(q_max)
        q_valid = q_pos[None, :] < q_len[:, None]
        q_index = torch.where(q_valid, torch.tensor([starts[i] for i in seqs])[:, None] + q_pos, 0)
        tables = torch.tensor([(layout.page_tables[i] + [0] * num_pages)[:num_pages] for i in seqs],
                              dtype=torch.long)
        # absolute position of each query row; a key at position j is visible when j <= that position
        q_abs = (kv_len - q_len)[:, None] + q_pos[None, :]
        mask = torch.arange(num_pages * ps)[None, None, :] <= q_abs[:, :, None]
        mask[:, :, 0] |= ~q_valid  # padded query rows see one key so SDPA never divides by zero
        dev = self.device
        return _Group(q_index.to(dev), q_valid.flatten().nonzero().squeeze(1).to(dev), tables.flatten().to(dev),
                      num_pages, mask.unsqueeze(1).to(dev), q_index[q_valid].to(dev))

    def forward(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k_cache, v_cache = self.kv_cache[layer]
        _, ps, heads, dim = k_cache.shape
        k_cache.view(-1, heads, dim).index_copy_(0, self._slots, k)
        v_cache.view(-1, heads, dim).index_copy_(0, self._slots, v)
        out = torch.empty_like(q)
        for g in self._groups:
            b, q_max = g.q_index.shape
            length = g.num_pages * ps
            qg = q[g.q_index].transpose(1, 2)  # [B, Hq, Qmax, D]
            # index_select over whole pages of a 2-D view: one contiguous copy per page
            kg = k_cache.view(k_cache.shape[0], -1).index_select(0, g.page_table).view(b, length, heads, dim)
            vg = v_cache.view(v_cache.shape[0], -1).index_select(0, g.page_table).view(b, length, heads, dim)
            o = F.scaled_dot_product_attention(qg, kg.transpose(1, 2), vg.transpose(1, 2), attn_mask=g.mask,
                                               scale=self.scale, enable_gqa=qg.shape[1] != heads)
            rows = o.transpose(1, 2).reshape(b * q_max, *q.shape[1:]).index_select(0, g.valid_rows)
            out.index_copy_(0, g.out_index, rows)
        return out
