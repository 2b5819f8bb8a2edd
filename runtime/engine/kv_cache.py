"""Sizing and allocating the paged KV cache (layout documented in attention.py)."""

from __future__ import annotations

import logging

import torch

from fleetserve.runtime.engine.config import EngineConfig, ModelConfig
from fleetserve.runtime.engine.types import EngineError

logger = logging.getLogger(__name__)

CPU_DEFAULT_BYTES = 2 << 30
CUDA_FREE_FRACTION = 0.85


def page_bytes(cfg: ModelConfig, page_size: int) -> int:
    element = torch.empty((), dtype=cfg.dtype).element_size()
    return cfg.num_layers * 2 * page_size * cfg.num_kv_heads * cfg.head_dim * element


def plan_num_pages(cfg: ModelConfig, engine: EngineConfig, device: torch.device) -> int:
    if engine.num_pages is not None:
        return engine.num_pages
    if engine.kv_cache_memory_gb is not None:
        budget = int(engine.kv_cache_memory_gb * (1 << 30))
    elif device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * CUDA_FREE_FRACTION)
    else:
        budget = CPU_DEFAULT_BYTES
    num_pages = budget // page_bytes(cfg, engine.page_size)
    if num_pages < 1:
        raise EngineError(f"KV cache budget of {budget} bytes holds no page of {engine.page_size} tokens")
    return num_pages


def allocate_kv_cache(cfg: ModelConfig, num_pages: int, page_size: int, device: torch.device) -> list[torch.Tensor]:
    shape = (2, num_pages, page_size, cfg.num_kv_heads, cfg.head_dim)
    logger.info("KV cache: %d pages of %d tokens (%.2f GiB)", num_pages, page_size,
                num_pages * page_bytes(cfg, page_size) / (1 << 30))
    return [torch.zeros(shape, dtype=cfg.dtype, device=device) for _ in range(cfg.num_layers)]
