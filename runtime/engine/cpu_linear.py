"""bfloat16 linear layers on CPU with weights reordered once into oneDNN's blocked layout.

`F.linear` on a plain bfloat16 weight makes oneDNN reorder the weight on every call; a decode step
is nothing but small-batch GEMMs, so that reorder is a large share of it. Reordering once at load
(the same oneDNN ops torch's inductor uses when it freezes weights) gives identical results and,
measured on the large demo model's shapes with 1–64 rows, 1.5–2.2x faster GEMMs (no change at 2048
rows). float32 stays on `F.linear`: the packed float32 path rounds differently and the float32
engine is the one held token-for-token to transformers.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

BATCH_HINT = 64  # oneDNN picks its blocking for about this many rows; any row count works


class PrepackedLinear(nn.Module):
    """y = x W^T + b with W held in oneDNN's layout (the plain weight is not kept)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), BATCH_HINT)
        self.bias = None if bias is None else bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def supported(dtype: torch.dtype, device: torch.device) -> bool:
    """bfloat16 on a CPU whose oneDNN build has bfloat16 kernels, and the packed path gives F.linear's numbers."""
    if device.type != "cpu" or dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        weight = torch.randn(24, 40, generator=torch.Generator().manual_seed(0)).to(dtype)
        x = torch.randn(3, 40, generator=torch.Generator().manual_seed(1)).to(dtype)
        return torch.equal(PrepackedLinear(weight, None)(x), F.linear(x, weight))
    except (RuntimeError, AttributeError) as exc:  # an op missing or refusing in this torch build
        logger.info("prepacked bfloat16 linears unavailable: %s", exc)
        return False


def prepack_linears(model: nn.Module) -> int:
    """Replaces every nn.Linear of the model by a PrepackedLinear; returns how many were replaced."""
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, PrepackedLinear(child.weight, child.bias))
                count += 1
    return count
