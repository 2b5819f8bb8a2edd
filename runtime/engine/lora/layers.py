"""The wrapper that adds the LoRA delta of each token's adapter to a base projection.

The base stays what it was (an `nn.Linear` or a oneDNN-prepacked linear, see cpu_linear.py): the
wrapper calls it unchanged, then adds the delta in place. A step without adapter tokens costs one
attribute check per projection.
"""

from __future__ import annotations

import torch
from torch import nn

from fleetserve.runtime.engine.lora.ops import LoRABatch, add_lora, add_lora_packed
from fleetserve.runtime.engine.lora.weights import GroupSlots, SlotWeights


class StepState:
    """The LoRA layout of the step being run, shared by every wrapped projection."""

    __slots__ = ("batch", "scales")

    def __init__(self) -> None:
        self.batch: LoRABatch | None = None
        # packed form (CPU): per projection path, the [tokens, packed rows] scales; a path missing from it
        # has no slot targeting it. None: the segment form.
        self.scales: dict[str, torch.Tensor] | None = None


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Module, group: GroupSlots, layer: int, weights: SlotWeights, step: StepState):
        super().__init__()
        self.base = base
        self.group = group
        self.layer = layer
        self.weights = weights
        self.step = step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        batch = self.step.batch
        if batch is None:
            return y
        g = self.group
        if self.step.scales is not None:
            scales = self.step.scales.get(g.spec.path)
            if scales is None:
                return y
            return add_lora_packed(y, x, g.a_packed[self.layer], g.bt_packed[self.layer], scales)
        return add_lora(y, x, g.a[self.layer], g.bt[self.layer], g.widths, self.weights.scalings, batch)


def wrap_projections(layers: nn.ModuleList, groups: dict[str, GroupSlots], weights: SlotWeights,
                     step: StepState) -> int:
    """Replaces each group's projection in every decoder layer by a LoRALinear; returns how many."""
    count = 0
    for index, layer in enumerate(layers):
        for path, group in groups.items():
            owner_name, attr = path.rsplit(".", 1)
            owner = layer.get_submodule(owner_name)
            setattr(owner, attr, LoRALinear(getattr(owner, attr), group, index, weights, step))
            count += 1
    return count
