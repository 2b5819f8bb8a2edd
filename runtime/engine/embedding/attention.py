"""Attention over a flat batch of whole sequences, with no KV cache (embedding forwards).

The tokens of all sequences are concatenated ([T, heads, head_dim]), as in the generation engine, so
the linear layers never see padding. Only attention pads: sequences sorted by length are cut into
groups whose padding stays small, and each group is one SDPA call over [B, heads, Lmax, head_dim] with
a key mask (and a causal one for decoders). The plan is made once per forward and reused by every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# A group may hold at most this much padding (fraction of its real query-key pairs) before it is cut.
MAX_PADDING_FRACTION = 0.25


@dataclass(slots=True)
class _Group:
    token_index: torch.Tensor  # [B, Lmax] index of each padded slot's token in the batch (padding -> 0)
    valid: torch.Tensor  # [B * Lmax] bool: slots that hold a real token
    out_index: torch.Tensor  # batch index of each real slot, in slot order
    mask: torch.Tensor  # [B, 1, Lmax, Lmax] bool, True = attend
    max_len: int


def plan_groups(lengths: list[int]) -> list[list[int]]:
    """Sequence indices in groups of similar length (longest first); pure, for tests."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups:
            group = groups[-1]
            longest = lengths[group[0]]
            real = sum(lengths[j] ** 2 for j in group) + lengths[i] ** 2
            if longest**2 * (len(group) + 1) <= (1 + MAX_PADDING_FRACTION) * real:
                group.append(i)
                continue
        groups.append([i])
    return groups


class RaggedAttention:
    """Self-attention of each sequence over itself; `plan(lengths)` once, then `forward` per layer."""

    def __init__(self, causal: bool):
        self.causal = causal
        self._groups: list[_Group] = []
        self._num_tokens = 0

    def plan(self, lengths: list[int], device: torch.device) -> None:
        starts = [0]
        for n in lengths:
            starts.append(starts[-1] + n)
        self._num_tokens = starts[-1]
        self._groups = []
        for members in plan_groups(lengths):
            max_len = lengths[members[0]]
            pos = torch.arange(max_len)
            lens = torch.tensor([lengths[i] for i in members])
            is_real = pos.unsqueeze(0) < lens.unsqueeze(1)  # [B, Lmax]
            index = torch.tensor([starts[i] for i in members]).unsqueeze(1) + pos.unsqueeze(0)
            index = torch.where(is_real, index, torch.zeros_like(index))
            mask = is_real.unsqueeze(1).expand(-1, max_len, -1)  # keys that exist
            if self.causal:
                mask = mask & torch.ones(max_len, max_len, dtype=torch.bool).tril()
            valid = is_real.reshape(-1)
            self._groups.append(_Group(
                token_index=index.to(device),
                valid=valid.to(device),
                out_index=index.reshape(-1)[valid].to(device),
                mask=mask.unsqueeze(1).to(device),
                max_len=max_len,
            ))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """q [T, Hq, D], k/v [T, Hkv, D] (Hq a multiple of Hkv) -> [T, Hq, D]."""
        t, num_heads, head_dim = q.shape
        out = q.new_empty(t, num_heads, head_dim)
        gqa = k.shape[1] != num_heads
        for g in self._groups:
            # [B, Lmax, H, D] -> [B, H, Lmax, D]
            qg, kg, vg = (x[g.token_index].transpose(1, 2) for x in (q, k, v))
            o = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=g.mask, scale=scale, enable_gqa=gqa)
            rows = o.transpose(1, 2).reshape(-1, num_heads, head_dim)
            out[g.out_index] = rows[g.valid]
        return out
