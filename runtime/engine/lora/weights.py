"""The device side of the slot pool: per wrapped projection and layer, A and B of every slot, stacked.

For a projection that fuses several PEFT targets (qkv_proj holds q/k/v, gate_up_proj holds gate/up),
each target keeps its own A and its own B: the A's of the targets an adapter has are stacked row-wise
([n*r, in]) and the B's placed block-diagonally in the columns ([n*r, out], transposed), so one shrink
and one expand matmul serve the whole fused projection, and a target the adapter lacks costs nothing.
Only the first `width` rows of a slot are used (width = targets present x the adapter's rank).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fleetserve.runtime.engine.lora.adapter import LoRAAdapter


@dataclass(slots=True)
class GroupSpec:
    """One fused projection of a decoder layer and the PEFT targets it holds, in output order."""

    path: str  # under a decoder layer, e.g. "self_attn.qkv_proj"
    targets: tuple[str, ...]  # every target it fuses, in output order
    in_features: int
    out_sizes: tuple[int, ...]  # of each target
    num_enabled: int  # of its targets, how many adapters may target (--lora-target-modules)

    @property
    def out_features(self) -> int:
        return sum(self.out_sizes)


@dataclass(slots=True)
class GroupSlots:
    """A and B of every slot for one projection in every layer, and each slot's used width."""

    spec: GroupSpec
    a: list[torch.Tensor]  # per layer [slots, n*max_rank, in]
    bt: list[torch.Tensor]  # per layer [slots, n*max_rank, out] (B transposed)
    widths: list[int] = field(default_factory=list)  # per slot
    # the packed form (CPU): every slot's used rows side by side, and each slot's columns in it
    a_packed: list[torch.Tensor] = field(default_factory=list)  # per layer [sum of widths, in]
    bt_packed: list[torch.Tensor] = field(default_factory=list)  # per layer [sum of widths, out]
    columns: list[tuple[int, int]] = field(default_factory=list)  # per slot: (start, end) in the packed rows

    def repack(self) -> None:
        used = [s for s, w in enumerate(self.widths) if w]
        self.a_packed = [torch.cat([a[s, : self.widths[s]] for s in used]) if used else a[:0, 0] for a in self.a]
        self.bt_packed = [torch.cat([b[s, : self.widths[s]] for s in used]) if used else b[:0, 0] for b in self.bt]
        self.columns, start = [], 0
        for width in self.widths:
            self.columns.append((start, start + width))
            start += width

    @property
    def packed_width(self) -> int:
        return sum(self.widths)


class SlotWeights:
    def __init__(self, specs: list[GroupSpec], num_layers: int, num_slots: int, max_rank: int,
                 dtype: torch.dtype, device: torch.device):
        self.num_slots = num_slots
        self.scalings = [0.0] * num_slots
        self.groups: dict[str, GroupSlots] = {}
        for spec in specs:
            rows = spec.num_enabled * max_rank
            self.groups[spec.path] = GroupSlots(
                spec,
                [torch.zeros(num_slots, rows, spec.in_features, dtype=dtype, device=device) for _ in range(num_layers)],
                [torch.zeros(num_slots, rows, spec.out_features, dtype=dtype, device=device) for _ in range(num_layers)],
                [0] * num_slots,
            )

    def clear(self, slot: int) -> None:
        """Marks `slot` empty (its rows are no longer used)."""
        for group in self.groups.values():
            group.widths[slot] = 0

    def write(self, slot: int, adapter: LoRAAdapter) -> None:
        """Copies the adapter's weights into `slot` of every projection."""
        self.scalings[slot] = adapter.scaling
        r = adapter.rank
        for group in self.groups.values():
            spec = group.spec
            present = [i for i, t in enumerate(spec.targets) if t in adapter.target_modules]
            width = len(present) * r
            group.widths[slot] = width
            offsets = [sum(spec.out_sizes[:i]) for i in range(len(spec.out_sizes))]
            for layer, (a_all, bt_all) in enumerate(zip(group.a, group.bt, strict=True)):
                a, bt = a_all[slot], bt_all[slot]
                a[:width].zero_()
                bt[:width].zero_()
                for j, i in enumerate(present):
                    pair = adapter.weights.get((layer, spec.targets[i]))
                    if pair is None:  # a layer the adapter leaves alone (layers_to_transform)
                        continue
                    a[j * r : (j + 1) * r].copy_(pair[0])
                    bt[j * r : (j + 1) * r, offsets[i] : offsets[i] + spec.out_sizes[i]].copy_(pair[1].t())
