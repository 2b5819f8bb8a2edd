"""Attention over the paged KV cache, behind a backend interface.

KV cache layout (shared by every backend): one tensor per layer of shape
``[2, num_pages, page_size, num_kv_heads, head_dim]``; ``cache[0]`` holds K and ``cache[1]`` V, each a
contiguous ``[num_pages, page_size, num_kv_heads, head_dim]`` — FlashInfer's "NHD" paged layout, so
the FlashInfer backend takes ``(cache[0], cache[1])`` unchanged. A token at position ``p`` of a
sequence lives in page ``page_table[p // page_size]`` at offset ``p % page_size``.

`BatchLayout` describes one step's batch (query lengths, KV lengths, page tables); a backend's
``plan`` turns it into its own index tensors once per step, and ``forward`` is called per layer.
Backends: `attention_torch.TorchAttentionBackend` (reference, CPU and CUDA).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


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
