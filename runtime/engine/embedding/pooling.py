"""Pooling a flat batch of token states into one vector per sequence, and the vector post-processing
the endpoint applies (normalization, Matryoshka truncation).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fleetserve.runtime.engine.embedding.st_config import PoolingMode


def pool(hidden: torch.Tensor, lengths: list[int], mode: PoolingMode) -> torch.Tensor:
    """hidden [T, H] (sequences concatenated, `lengths` tokens each) -> [B, H] in float32."""
    device = hidden.device
    starts = torch.tensor([0, *lengths[:-1]], device=device).cumsum(0)
    if mode == "cls":
        return hidden[starts].float()
    lens = torch.tensor(lengths, device=device)
    if mode == "lasttoken":
        return hidden[starts + lens - 1].float()
    seq_of_token = torch.repeat_interleave(torch.arange(len(lengths), device=device), lens)
    sums = torch.zeros(len(lengths), hidden.shape[1], dtype=torch.float32, device=device)
    sums.index_add_(0, seq_of_token, hidden.float())
    return sums / lens.unsqueeze(1).float()


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, p=2.0, dim=-1)


def truncate_dimensions(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """OpenAI's `dimensions`: the first N components, L2-normalized again (Matryoshka models)."""
    head = vectors[:, :dimensions].astype(np.float32, copy=True)
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return head / np.maximum(norms, 1e-12)
