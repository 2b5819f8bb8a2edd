"""Selecting some rows of a ``[rows, vocab]`` batch for an in-place stage."""

from __future__ import annotations

import torch


def select_rows(selected: list[int], num_rows: int, device: torch.device) -> slice | torch.Tensor:
    """An index for ``batch[index]``: a slice (a view, no copy) when every row is selected."""
    if len(selected) == num_rows:
        return slice(None)
    return torch.tensor(selected, dtype=torch.long, device=device)
