"""The batched LoRA op: every token through its own adapter's A and B, in segments.

A step's tokens are laid out sequence after sequence; a *segment* is a run of tokens that share one
slot. `LoRABatch` carries the segments in the layout SGMV/Punica kernels take (`seg_starts`,
`seg_lens`, `weight_indices`, as vLLM's Punica wrapper passes them), so a CUDA kernel can replace `add_lora` without touching its callers. The torch
reference below groups the segments by slot and does, per slot, one shrink ([n, in] x [in, w]) and one
expand ([n, w] x [w, out]) matmul added into the base output: at most `max_loras_per_batch` pairs per
projection whatever the batch size.

On CPU a second form does the same in three ops per projection whatever the number of adapters
(`add_lora_packed`): the used rows of every slot's A and B are kept packed side by side, every token is
shrunk against all of them, a [tokens, packed rows] matrix holding each token's scaling on its own
slot's rows and zeros elsewhere keeps only its adapter's part, and one expand adds it. On a small
decode batch the op count, not the arithmetic, is the cost (3 ops against 2 per slot and projection).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class LoRABatch(NamedTuple):
    seg_starts: torch.Tensor  # [segments] int32: first token of each segment (base-model tokens are in none)
    seg_lens: torch.Tensor  # [segments] int32: its number of tokens
    weight_indices: torch.Tensor  # [segments] int32: slot of each segment
    slot_rows: list[tuple[int, slice | torch.Tensor]]  # torch path: each slot's tokens (a slice when contiguous)


def build_lora_batch(segments: list[tuple[int, int | None]], device: torch.device) -> LoRABatch | None:
    """`segments`: (number of tokens, slot or None for the base model) per sequence, in batch order.

    Returns None when no token uses an adapter (the projections then skip LoRA entirely).
    """
    runs = segment_runs(segments)
    if not runs:
        return None
    spans: dict[int, list[tuple[int, int]]] = {}
    for start, end, slot in runs:
        spans.setdefault(slot, []).append((start, end))
    slot_rows: list[tuple[int, slice | torch.Tensor]] = []
    for slot, parts in spans.items():
        if len(parts) == 1:
            slot_rows.append((slot, slice(*parts[0])))
        else:
            slot_rows.append((slot, torch.cat([torch.arange(s, e) for s, e in parts]).to(device)))
    return LoRABatch(
        torch.tensor([start for start, _, _ in runs], dtype=torch.int32, device=device),
        torch.tensor([end - start for start, end, _ in runs], dtype=torch.int32, device=device),
        torch.tensor([slot for _, _, slot in runs], dtype=torch.int32, device=device),
        slot_rows,
    )


def segment_runs(segments: list[tuple[int, int | None]]) -> list[tuple[int, int, int]]:
    """Maximal runs of adjacent tokens under one slot, as (start, end, slot); base-model tokens left out."""
    runs: list[tuple[int, int, int]] = []
    offset = 0
    for num_tokens, slot in segments:
        start, offset = offset, offset + num_tokens
        if slot is None or num_tokens == 0:
            continue
        if runs and runs[-1][2] == slot and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], offset, slot)
        else:
            runs.append((start, offset, slot))
    return runs


# Largest step (in tokens) the packed form serves; larger steps take the segment form. Measured with
# benchmarks/lora_op.py (docs/lora.md): below it the op count decides, above it the arithmetic.
PACKED_MAX_TOKENS = 16


def prefer_packed(num_tokens: int, num_runs: int) -> bool:
    """Whether a step of `num_tokens` tokens in `num_runs` adapter segments should take the packed form.

    The packed form costs 3 ops but shrinks and expands every token against every occupied slot; the
    segment form costs 2 ops per segment and only each token's own adapter's rows. One segment: the
    segment form does less in fewer ops. Many tokens: the packed form's extra arithmetic outweighs the
    ops it saves.
    """
    return num_runs > 1 and num_tokens <= PACKED_MAX_TOKENS


def packed_scales(runs: list[tuple[int, int, int]], num_tokens: int, columns: list[tuple[int, int]],
                  scalings: list[float], width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[tokens, width]: each token's scaling on the packed rows of its slot, zero elsewhere (and for base tokens)."""
    scales = torch.zeros(num_tokens, width, dtype=dtype, device=device)
    for start, end, slot in runs:
        first, last = columns[slot]
        if last > first:
            scales[start:end, first:last] = scalings[slot]
    return scales


def add_lora_packed(y: torch.Tensor, x: torch.Tensor, a_packed: torch.Tensor, bt_packed: torch.Tensor,
                    scales: torch.Tensor) -> torch.Tensor:
    """y += ((x A_packed^T) * scales) B_packed^T, in place: the packed form of `add_lora`."""
    return y.addmm_((x @ a_packed.t()).mul_(scales), bt_packed)


def add_lora(y: torch.Tensor, x: torch.Tensor, a: torch.Tensor, bt: torch.Tensor, widths: list[int],
             scalings: list[float], batch: LoRABatch) -> torch.Tensor:
    """y += scaling * (x A^T) B^T for every token, with the A/B of its slot (torch reference, in place).

    a: [slots, rows, in], bt: [slots, rows, out]; a slot uses its first `widths[slot]` rows.
    """
    for slot, rows in batch.slot_rows:
        width = widths[slot]
        if width == 0:  # the adapter does not target this projection
            continue
        shrunk = x[rows] @ a[slot, :width].t()
        if isinstance(rows, slice):
            y[rows].addmm_(shrunk, bt[slot, :width], alpha=scalings[slot])
        else:
            y.index_add_(0, rows, shrunk @ bt[slot, :width], alpha=scalings[slot])
    return y
