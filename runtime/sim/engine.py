"""Builds a simulated worker's engine: the real LLMEngine, scheduler and page pool over a SimulatedRunner.

The tokenizer (and so the vocabulary, EOS ids and chat template) comes from `model_path`, normally the
demo model; the context length and the number of KV pages come from the profile's modelled model and
GPU (`--context-length` and `--kv-cache-memory-gb` override them, `num_pages` wins over both). No
weights are read and no KV tensors are allocated: pages are only counted.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from fleetserve.runtime.engine.config import EngineConfig, ModelConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.loader import resolve_model_dir
from fleetserve.runtime.engine.page_pool import PagePool
from fleetserve.runtime.engine.types import EngineError
from fleetserve.runtime.sim.profiles import GIB, SimProfile, get_profile
from fleetserve.runtime.sim.runner import SimulatedRunner

logger = logging.getLogger(__name__)


def plan_sim_pages(profile: SimProfile, config: EngineConfig) -> int:
    if config.num_pages is not None:
        return config.num_pages
    if config.kv_cache_memory_gb is not None:
        pages = int(config.kv_cache_memory_gb * GIB // (profile.model.kv_bytes_per_token * config.page_size))
        if pages < 1:
            raise EngineError(f"--kv-cache-memory-gb {config.kv_cache_memory_gb} holds no page of the simulated model")
        return pages
    return profile.num_pages(config.page_size)


def build_simulated_engine(config: EngineConfig) -> LLMEngine:
    from transformers import AutoTokenizer

    assert config.simulate is not None
    try:
        profile = get_profile(config.simulate)
    except ValueError as exc:
        raise EngineError(str(exc)) from exc
    if config.enable_lora or config.lora_paths:
        raise EngineError("the worker simulator does not simulate LoRA adapters")
    torch.set_num_threads(1)  # the sampler's small tensors: intra-op threads only spin (16+ workers per core)
    model_dir = resolve_model_dir(config.model_path)
    model_config = ModelConfig.from_pretrained(model_dir, "float32", "cpu", config.context_length)
    model_config = dataclasses.replace(model_config,
                                       max_model_len=config.context_length or profile.model.max_model_len)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.eos_token_id is not None and not model_config.eos_token_ids:
        model_config.eos_token_ids.add(tokenizer.eos_token_id)
    excluded = set(model_config.eos_token_ids) | set(tokenizer.all_special_ids)
    runner = SimulatedRunner(profile, model_config.vocab_size, excluded, config.simulate_time_scale)
    num_pages = plan_sim_pages(profile, config)
    pool = PagePool(num_pages, config.page_size, config.enable_prefix_caching)
    logger.warning("SIMULATED worker: profile %s (%s on %s), no model is run; %d KV pages of %d tokens "
                   "(%.1f GiB modelled), steps sleep the modelled time x %g", profile.name, profile.model.name,
                   profile.gpu.name, num_pages, config.page_size,
                   num_pages * config.page_size * profile.model.kv_bytes_per_token / GIB, config.simulate_time_scale)
    return LLMEngine(model_config, config, tokenizer, runner, pool)
