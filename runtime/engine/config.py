"""Model and engine configuration.

`ModelConfig` is read from a Hugging Face `config.json` (+ `generation_config.json`); it accepts both
the transformers 4 spelling (`rope_theta`, `rope_scaling`) and the transformers 5 one
(`rope_parameters`). `EngineConfig` holds the serving knobs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fleetserve.runtime.engine.models import DECODER_ARCHITECTURES
from fleetserve.runtime.engine.types import EngineError

# decoders the generation engine serves (the registry also lists encoders, served as embedding models)
SUPPORTED_ARCHITECTURES = DECODER_ARCHITECTURES

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(slots=True)
class EngineConfig:
    model_path: str
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    page_size: int = 16
    # token budget of one step (--chunked-prefill-size); None: no chunking, a step can take a whole
    # context's prompt (SGLang's --chunked-prefill-size -1)
    max_num_batched_tokens: int | None = 2048
    max_running_requests: int = 256  # running sequences (batch slots); lowered to the step budget if above it
    max_prefill_tokens_with_decodes: int | None = None  # prefill tokens in a step that also decodes; None: no cap
    context_length: int | None = None  # overrides the model's max_position_embeddings
    kv_cache_memory_gb: float | None = None  # None: 2 GiB on CPU, 85% of free memory on CUDA
    num_pages: int | None = None  # exact page count (tests); wins over kv_cache_memory_gb
    enable_prefix_caching: bool = True
    attention_backend: str = "auto"  # auto | torch (flashinfer: not implemented yet, refused)
    warm_up: bool = False  # building the engine ends with LLMEngine.warm_up() (the server turns it on)
    # LoRA (docs/lora.md): adapters served only when enable_lora; lora_paths are loaded at start (name -> path)
    enable_lora: bool = False
    lora_paths: dict[str, str] = field(default_factory=dict)
    max_loras_per_batch: int = 8  # device slots: distinct adapters in one step
    max_loaded_loras: int | None = None  # adapters held on the host; None: no limit
    max_lora_rank: int | None = None  # None: the largest rank of lora_paths, else 64
    lora_target_modules: list[str] | None = None  # None: all of q/k/v/o/gate/up/down
    # the worker simulator (runtime/sim, docs/simulator.md): a profile name replaces the model by a timed
    # GPU cost model; model_path then only gives the tokenizer. Steps sleep modelled time x simulate_time_scale.
    simulate: str | None = None
    simulate_time_scale: float = 1.0

    def validate(self) -> None:
        """Raises EngineError for settings no engine can run with (a step that can never schedule a token)."""
        for name in ("max_num_batched_tokens", "max_prefill_tokens_with_decodes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise EngineError(f"{name} must be at least 1 (None: no limit), got {value}")
        if self.max_running_requests < 1:
            raise EngineError(f"max_running_requests must be at least 1, got {self.max_running_requests}")
        if self.page_size < 1:
            raise EngineError(f"page_size must be at least 1, got {self.page_size}")
        if self.attention_backend == "flashinfer":
            raise EngineError("the flashinfer attention backend is not implemented yet; use auto or torch")
        if self.attention_backend not in ("auto", "torch"):
            raise EngineError(f"unknown attention backend {self.attention_backend!r}; choose auto or torch")


@dataclass(slots=True)
class ModelConfig:
    model_path: str
    architecture: str
    family: str  # llama | mistral | qwen2 | qwen3
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_position_embeddings: int
    max_model_len: int
    tie_word_embeddings: bool
    attention_bias: bool
    qk_norm: bool
    dtype: torch.dtype
    eos_token_ids: set[int] = field(default_factory=set)
    # per layer: a token attends the last `w` positions, itself included (transformers' sliding window);
    # None: every earlier position. Empty: no layer slides.
    sliding_windows: list[int | None] = field(default_factory=list)

    @classmethod
    def from_pretrained(cls, model_dir: Path, dtype: str = "auto", device: str = "cpu",
                        context_length: int | None = None) -> ModelConfig:
        raw = json.loads((model_dir / "config.json").read_text())
        arch = (raw.get("architectures") or ["?"])[0]
        if arch not in SUPPORTED_ARCHITECTURES:
            raise EngineError(
                f"unsupported architecture {arch!r}; supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}"
            )
        family = SUPPORTED_ARCHITECTURES[arch]
        heads = raw["num_attention_heads"]
        theta, scaling = _rope(raw)
        max_pos = int(raw.get("max_position_embeddings", 4096))
        return cls(
            model_path=str(model_dir),
            architecture=arch,
            family=family,
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            intermediate_size=raw["intermediate_size"],
            num_layers=raw["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=raw.get("num_key_value_heads") or heads,
            head_dim=raw.get("head_dim") or raw["hidden_size"] // heads,
            rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=max_pos,
            max_model_len=context_length or max_pos,
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=bool(raw.get("attention_bias", family == "qwen2")),
            qk_norm=family == "qwen3",
            dtype=resolve_dtype(dtype, raw, device),
            eos_token_ids=_eos_ids(model_dir, raw),
            sliding_windows=_sliding_windows(raw, family),
        )


def resolve_dtype(dtype: str, raw: dict[str, Any], device: str) -> torch.dtype:
    if dtype != "auto":
        if dtype not in DTYPES:
            raise EngineError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(DTYPES)}")
        return DTYPES[dtype]
    if device.startswith("cpu"):
        return torch.float32
    declared = raw.get("torch_dtype") or raw.get("dtype") or "bfloat16"
    return torch.bfloat16 if declared == "float32" else DTYPES.get(declared, torch.bfloat16)


def _rope(raw: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    params = raw.get("rope_parameters") or {}
    theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
    scaling = raw.get("rope_scaling") or {k: v for k, v in params.items() if k != "rope_theta"}
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type == "default":
        return theta, None
    return theta, {**scaling, "rope_type": rope_type}


def _sliding_windows(raw: dict[str, Any], family: str) -> list[int | None]:
    """Each layer's window, read as transformers does: Mistral slides every layer when `sliding_window` is
    set; Qwen2/Qwen3 only with `use_sliding_window`, and then the layers from `max_window_layers` on (or
    those `layer_types` marks "sliding_attention"). Llama never slides."""
    num_layers = raw["num_hidden_layers"]
    window = raw.get("sliding_window")
    if family == "llama" or not window:
        return []
    if family in ("qwen2", "qwen3") and not raw.get("use_sliding_window", False):
        return []
    types = raw.get("layer_types")
    if types is None:
        first = raw.get("max_window_layers", 0) if family in ("qwen2", "qwen3") else 0
        types = ["sliding_attention" if i >= first else "full_attention" for i in range(num_layers)]
    if len(types) != num_layers:
        raise EngineError(f"layer_types has {len(types)} entries for {num_layers} layers")
    windows: list[int | None] = [int(window) if t == "sliding_attention" else None for t in types]
    return windows if any(w is not None for w in windows) else []


def _eos_ids(model_dir: Path, raw: dict[str, Any]) -> set[int]:
    ids: set[int] = set()
    sources = [raw]
    gen_path = model_dir / "generation_config.json"
    if gen_path.exists():
        sources.append(json.loads(gen_path.read_text()))
    for source in sources:
        value = source.get("eos_token_id")
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(int(v) for v in value)
    return ids
