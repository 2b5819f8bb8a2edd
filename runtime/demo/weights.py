"""Deterministic random weights for the demo model, named as in Hugging Face checkpoints.

Each tensor is drawn from its own generator, seeded from (seed, arch, tensor name), so weights do not
depend on the order tensors are created in and archs with identical shapes still differ. Projections have
std 1/sqrt(fan_in), so every sub-layer adds about unit RMS to the residual stream: attention and the MLP
dominate the (small, std 1/sqrt(hidden)) token embedding, which keeps a tied-embedding model from
predicting its own input token and makes KV-cache or RoPE bugs change the output. Norm weights and biases
are perturbed away from their trivial values (a missing norm weight or bias is visible), and the output is
scaled so logits have a standard deviation of about OUTPUT_LOGIT_STD: greedy choices are separated by
margins far above float32 noise.
"""

from __future__ import annotations

import hashlib
import math

import torch

from fleetserve.runtime.demo.spec import TIED_EMBEDDINGS, dims_for

OUTPUT_LOGIT_STD = 8.0
NORM_JITTER = 0.1
# q bias shifts which keys a query prefers; k bias cancels in the softmax; v bias adds the same vector at
# every position, so it stays small (at 0.3 it pushed the tied qwen2 model into repeating one token).
BIAS_STD = {"q_proj": 0.3, "k_proj": 0.3, "v_proj": 0.05}


def parameter_shapes(arch: str, size: str, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, exactly the keys a Hugging Face checkpoint of this arch holds."""
    dims = dims_for(arch, size)
    hidden, q_dim, kv_dim = (
        dims.hidden_size,
        dims.num_heads * dims.head_dim,
        dims.num_kv_heads * dims.head_dim,
    )
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab_size, hidden)}
    for layer in range(dims.num_layers):
        prefix = f"model.layers.{layer}"
        shapes[f"{prefix}.input_layernorm.weight"] = (hidden,)
        shapes[f"{prefix}.self_attn.q_proj.weight"] = (q_dim, hidden)
        shapes[f"{prefix}.self_attn.k_proj.weight"] = (kv_dim, hidden)
        shapes[f"{prefix}.self_attn.v_proj.weight"] = (kv_dim, hidden)
        shapes[f"{prefix}.self_attn.o_proj.weight"] = (hidden, q_dim)
        if arch == "qwen2":
            shapes[f"{prefix}.self_attn.q_proj.bias"] = (q_dim,)
            shapes[f"{prefix}.self_attn.k_proj.bias"] = (kv_dim,)
            shapes[f"{prefix}.self_attn.v_proj.bias"] = (kv_dim,)
        if arch == "qwen3":
            shapes[f"{prefix}.self_attn.q_norm.weight"] = (dims.head_dim,)
            shapes[f"{prefix}.self_attn.k_norm.weight"] = (dims.head_dim,)
        shapes[f"{prefix}.post_attention_layernorm.weight"] = (hidden,)
        shapes[f"{prefix}.mlp.gate_proj.weight"] = (dims.intermediate_size, hidden)
        shapes[f"{prefix}.mlp.up_proj.weight"] = (dims.intermediate_size, hidden)
        shapes[f"{prefix}.mlp.down_proj.weight"] = (hidden, dims.intermediate_size)
    shapes["model.norm.weight"] = (hidden,)
    if not TIED_EMBEDDINGS[arch]:
        shapes["lm_head.weight"] = (vocab_size, hidden)
    return shapes


def _generator(seed: int, arch: str, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}/{arch}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _init_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator, hidden: int) -> torch.Tensor:
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return noise / math.sqrt(hidden)
    if name == "model.norm.weight":
        # Rows of lm_head (or of the tied embedding) have norm ~1, so the final norm sets the logit scale.
        return (1.0 + NORM_JITTER * noise) * OUTPUT_LOGIT_STD
    if name.endswith("norm.weight"):
        return 1.0 + NORM_JITTER * noise
    if name.endswith(".bias"):
        return noise * BIAS_STD[name.split(".")[-2]]
    fan_in = shape[1]
    return noise / math.sqrt(fan_in)


def init_weights(arch: str, size: str, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint, float32, contiguous, deterministic in (arch, size, vocab, seed)."""
    hidden = dims_for(arch, size).hidden_size
    return {
        name: _init_tensor(name, shape, _generator(seed, arch, name), hidden).contiguous()
        for name, shape in parameter_shapes(arch, size, vocab_size).items()
    }


def count_parameters(arch: str, size: str, vocab_size: int) -> int:
    return sum(math.prod(shape) for shape in parameter_shapes(arch, size, vocab_size).values())
