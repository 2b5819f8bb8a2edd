"""Shapes and config.json contents of the demo model, per architecture and size.

Every size uses head_dim 64 (a size FlashInfer supports) and grouped-query attention. The archs differ
where real checkpoints differ: llama has llama3 RoPE scaling, qwen2 has q/k/v biases and tied embeddings,
qwen3 has q/k RMSNorm and an explicit head_dim with num_heads * head_dim != hidden_size, mistral is a
plain llama-like model with sliding_window null. `sliding_window` (qwen2, qwen3, mistral) gives a
sliding-window checkpoint: Mistral-7B-v0.1's layout (every layer slides), or Qwen2's
`use_sliding_window` with the upper half of the layers sliding (`max_window_layers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Arch = Literal["llama", "qwen2", "qwen3", "mistral"]
Size = Literal["tiny", "small", "large"]
ARCHS: tuple[Arch, ...] = ("llama", "qwen2", "qwen3", "mistral")
SIZES: tuple[Size, ...] = ("tiny", "small", "large")

MAX_POSITION_EMBEDDINGS = 2048
ROPE_THETA = 10000.0
LLAMA3_ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 256,
}

HF_CLASSES: dict[str, tuple[str, str]] = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
    "mistral": ("MistralForCausalLM", "mistral"),
}
TIED_EMBEDDINGS: dict[str, bool] = {"llama": False, "qwen2": True, "qwen3": False, "mistral": False}


@dataclass(frozen=True, slots=True)
class Dims:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    head_dim: int = 64


# hidden_size == num_heads * head_dim except for qwen3, whose attention is twice as wide as its hidden.
_DIMS: dict[str, Dims] = {
    "tiny": Dims(hidden_size=256, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=512),
    "small": Dims(hidden_size=384, num_layers=4, num_heads=6, num_kv_heads=2, intermediate_size=1024),
    "large": Dims(hidden_size=768, num_layers=8, num_heads=12, num_kv_heads=4, intermediate_size=2048),
}


def dims_for(arch: str, size: str) -> Dims:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    dims = _DIMS[size]
    if arch == "qwen3":
        return Dims(
            hidden_size=dims.hidden_size,
            num_layers=dims.num_layers,
            num_heads=dims.num_heads * 2,
            num_kv_heads=dims.num_kv_heads,
            intermediate_size=dims.intermediate_size,
        )
    return dims


def build_config(arch: str, size: str, vocab_size: int, token_ids: dict[str, int],
                 sliding_window: int | None = None) -> dict:
    """The config.json dict, in the key layout of the published checkpoints of each family."""
    if sliding_window is not None and arch not in ("qwen2", "qwen3", "mistral"):
        raise ValueError(f"{arch} checkpoints have no sliding window")
    dims = dims_for(arch, size)
    class_name, model_type = HF_CLASSES[arch]
    eos = token_ids["<|endoftext|>"]
    config: dict = {
        "architectures": [class_name],
        "model_type": model_type,
        "vocab_size": vocab_size,
        "hidden_size": dims.hidden_size,
        "intermediate_size": dims.intermediate_size,
        "num_hidden_layers": dims.num_layers,
        "num_attention_heads": dims.num_heads,
        "num_key_value_heads": dims.num_kv_heads,
        "head_dim": dims.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "rms_norm_eps": 1e-06,
        "rope_theta": ROPE_THETA,
        "rope_scaling": dict(LLAMA3_ROPE_SCALING) if arch == "llama" else None,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": TIED_EMBEDDINGS[arch],
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": eos,
        "use_cache": True,
        "torch_dtype": "float32",
    }
    if arch in ("llama", "qwen3"):
        config["attention_bias"] = False
    if arch == "llama":
        config["mlp_bias"] = False
    if arch in ("qwen2", "qwen3"):
        config["use_sliding_window"] = sliding_window is not None
        config["sliding_window"] = sliding_window
        config["max_window_layers"] = dims.num_layers if sliding_window is None else dims.num_layers // 2
    if arch == "mistral":
        config["sliding_window"] = sliding_window
    return config
