"""Wires an engine together from an EngineConfig: checkpoint, model, KV cache, backend, scheduler."""

from __future__ import annotations

import logging

import torch

from fleetserve.runtime.engine import cpu_kernels, cpu_linear
from fleetserve.runtime.engine.attention import AttentionBackend
from fleetserve.runtime.engine.attention_torch import TorchAttentionBackend
from fleetserve.runtime.engine.config import EngineConfig, ModelConfig
from fleetserve.runtime.engine.cpu_malloc import tune_malloc
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.kv_cache import allocate_kv_cache, plan_num_pages
from fleetserve.runtime.engine.loader import load_model, resolve_model_dir
from fleetserve.runtime.engine.lora.adapter import SUPPORTED_TARGETS, AdapterFiles
from fleetserve.runtime.engine.lora.manager import DEFAULT_MAX_RANK, LoRAManager, LoRASettings
from fleetserve.runtime.engine.model_runner import ModelRunner
from fleetserve.runtime.engine.page_pool import PagePool
from fleetserve.runtime.engine.types import EngineError

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError("--device cuda was asked for but CUDA is not available")
    return device


def build_backend(name: str, kv_cache: list[torch.Tensor], cfg: ModelConfig) -> AttentionBackend:
    """The torch backend (CPU and CUDA). FlashInfer is not implemented yet: asking for it is an error, and
    auto picks torch on CUDA too."""
    scale = cfg.head_dim**-0.5
    device = kv_cache[0].device
    if name == "flashinfer":
        raise EngineError("the flashinfer attention backend is not implemented yet; use auto or torch "
                          "(the torch backend runs on CPU and CUDA)")
    if name not in ("auto", "torch"):
        raise EngineError(f"unknown attention backend {name!r}; choose auto or torch")
    return TorchAttentionBackend(kv_cache, scale, cpu_kernels.load() if device.type == "cpu" else None,
                                 cfg.sliding_windows)


def lora_settings(config: EngineConfig, initial: list[AdapterFiles] | None = None) -> LoRASettings:
    """The engine's LoRA settings; an unset max rank is the largest initial adapter's (else 64)."""
    targets = config.lora_target_modules or ["all"]
    max_rank = config.max_lora_rank or max((f.rank for f in initial or []), default=DEFAULT_MAX_RANK)
    return LoRASettings(
        max_loras_per_batch=config.max_loras_per_batch,
        max_loaded_loras=config.max_loaded_loras,
        max_lora_rank=max_rank,
        target_modules=frozenset(SUPPORTED_TARGETS if "all" in targets else targets),
    )


def build_lora(config: EngineConfig, model_config: ModelConfig, model: torch.nn.Module,
               device: torch.device) -> LoRAManager:
    """Wraps the model's projections for LoRA and loads the adapters of `lora_paths`."""
    from fleetserve.runtime.engine.lora.adapter import LoRALimits, read_adapter

    # read the initial adapters first: with no --max-lora-rank, the largest of them sets it
    open_limits = LoRALimits(config.max_lora_rank or 1 << 30, lora_settings(config).target_modules)
    initial = {name: read_adapter(path, open_limits) for name, path in config.lora_paths.items()}
    manager = LoRAManager(model, model_config, lora_settings(config, list(initial.values())), device)
    for name, files in initial.items():
        manager.add(name, files)
    return manager


def build_engine(config: EngineConfig) -> LLMEngine:
    from transformers import AutoTokenizer

    config.validate()  # before anything is loaded
    if config.simulate is not None:  # the worker simulator: its runner in place of the model's
        from fleetserve.runtime.sim.engine import build_simulated_engine

        return build_simulated_engine(config)
    device = resolve_device(config.device)
    model_dir = resolve_model_dir(config.model_path)
    model_config = ModelConfig.from_pretrained(model_dir, config.dtype, device.type, config.context_length)
    if device.type == "cpu":
        torch.set_grad_enabled(False)
        tune_malloc()
    model = load_model(model_config, device)
    if cpu_linear.supported(model_config.dtype, device):
        count = cpu_linear.prepack_linears(model)
        if model.lm_head is None:  # tied: a packed copy for the logits; the embedding keeps the plain weight
            model.lm_head = cpu_linear.PrepackedLinear(model.embed_tokens.weight, None)
        logger.info("prepacked %d bfloat16 linear layers for oneDNN", count)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.eos_token_id is not None and not model_config.eos_token_ids:
        model_config.eos_token_ids.add(tokenizer.eos_token_id)
    num_pages = plan_num_pages(model_config, config, device)
    kv_cache = allocate_kv_cache(model_config, num_pages, config.page_size, device)
    backend = build_backend(config.attention_backend, kv_cache, model_config)
    runner = ModelRunner(model, backend, config.page_size, device)
    if config.enable_lora or config.lora_paths:
        runner.lora = build_lora(config, model_config, model, device)
    pool = PagePool(num_pages, config.page_size, config.enable_prefix_caching)
    logger.info("loaded %s (%s, %s) on %s", model_dir, model_config.architecture, model_config.dtype, device)
    engine = LLMEngine(model_config, config, tokenizer, runner, pool)
    if config.warm_up:
        engine.warm_up()
    return engine
