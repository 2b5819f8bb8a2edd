"""GPU profiles of the worker simulator: what one engine step would cost on a given GPU and model.

A roofline model, the usual first-order estimate of LLM serving (see docs/simulator.md):

    step time = overhead + max(compute time, memory time)
    compute   = (2 x parameters x batch tokens + attention FLOPs) / (peak dense bf16 FLOP/s x MFU)
    memory    = (weight bytes + KV bytes read) / (HBM bandwidth x MBU)

so a prefill chunk is compute-bound (tokens/s ≈ peak x MFU / 2P) and a decode step is memory-bound
(the weights once per step, plus each sequence's KV cache), growing with batch size and context as
on a real GPU. The KV cache gets the GPU memory the weights and a fixed activation reserve leave.

Hardware figures are the vendors' datasheet numbers; MFU/MBU are assumptions (0.45 / 0.75 are what
well-tuned engines reach on these parts; docs/simulator.md says where they come from). Pure: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class GPU:
    name: str
    memory_gib: float
    dense_bf16_tflops: float  # datasheet, without sparsity
    hbm_tb_per_s: float


@dataclass(frozen=True, slots=True)
class ModelShape:
    name: str
    num_params: float
    num_layers: int
    hidden_size: int  # = num_heads x head_dim for the attention FLOPs
    num_kv_heads: int
    head_dim: int
    max_model_len: int
    bytes_per_param: int = 2  # bf16 weights and KV cache

    @property
    def weight_bytes(self) -> float:
        return self.num_params * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.bytes_per_param


class StepWork(NamedTuple):
    """One sequence's part of a step: `num_new` tokens computed after `num_cached` already in its KV."""

    num_new: int
    num_cached: int


@dataclass(frozen=True, slots=True)
class SimProfile:
    name: str
    gpu: GPU
    model: ModelShape
    mfu: float = 0.45  # model FLOPs utilisation reached by prefill GEMMs
    mbu: float = 0.75  # memory bandwidth utilisation reached by decode
    step_overhead_s: float = 0.0015  # scheduling, kernel launches, sampling: per step, whatever the batch
    memory_utilization: float = 0.9  # of the GPU's memory, what the engine may take (SGLang's mem_fraction)
    activation_reserve_gib: float = 2.0  # of that, kept for activations and CUDA graphs

    def kv_cache_bytes(self) -> float:
        budget = self.gpu.memory_gib * GIB * self.memory_utilization
        return budget - self.model.weight_bytes - self.activation_reserve_gib * GIB

    def num_pages(self, page_size: int) -> int:
        pages = int(self.kv_cache_bytes() // (self.model.kv_bytes_per_token * page_size))
        if pages < 1:
            raise ValueError(f"profile {self.name}: the model's weights leave no GPU memory for a KV cache")
        return pages

    def step_time(self, work: list[StepWork]) -> float:
        """Seconds one engine step over `work` would take on this GPU."""
        if not work:
            return 0.0
        m = self.model
        tokens = sum(w.num_new for w in work)
        # QK^T and PV: 2 matmuls x 2 FLOPs per multiply-add, over every (query, key) pair, causal in the chunk
        attention = sum(4 * m.num_layers * m.hidden_size * w.num_new * (w.num_cached + (w.num_new + 1) / 2)
                        for w in work)
        compute = (2 * m.num_params * tokens + attention) / (self.gpu.dense_bf16_tflops * 1e12 * self.mfu)
        kv_read = sum(w.num_cached + w.num_new for w in work) * m.kv_bytes_per_token
        memory = (m.weight_bytes + kv_read) / (self.gpu.hbm_tb_per_s * 1e12 * self.mbu)
        return self.step_overhead_s + max(compute, memory)

    def describe(self) -> dict:
        """What `/get_server_info` reports about the simulation."""
        return {
            "name": self.name,
            "gpu": self.gpu.name,
            "model": self.model.name,
            "prefill_tokens_per_s": round(self.prefill_tokens_per_s()),
            "decode_step_ms_batch_1": round(self.step_time([StepWork(1, 1024)]) * 1000, 2),
            "decode_step_ms_batch_64": round(self.step_time([StepWork(1, 1024)] * 64) * 1000, 2),
            "kv_cache_gib": round(self.kv_cache_bytes() / GIB, 1),
            "mfu": self.mfu,
            "mbu": self.mbu,
        }

    def prefill_tokens_per_s(self, chunk: int = 2048) -> float:
        return chunk / self.step_time([StepWork(chunk, 0)])


H100 = GPU("NVIDIA H100 SXM 80GB", 80, 989, 3.35)
A100 = GPU("NVIDIA A100 SXM 80GB", 80, 312, 2.039)
L4 = GPU("NVIDIA L4 24GB", 24, 121, 0.300)
LLAMA_8B = ModelShape("Llama-3.1-8B", 8.03e9, num_layers=32, hidden_size=4096, num_kv_heads=8, head_dim=128,
                      max_model_len=131072)
QWEN_05B = ModelShape("Qwen2.5-0.5B", 0.494e9, num_layers=24, hidden_size=896, num_kv_heads=2, head_dim=64,
                      max_model_len=32768)

PROFILES: dict[str, SimProfile] = {
    p.name: p
    for p in (
        SimProfile("h100-llama-8b", H100, LLAMA_8B),
        SimProfile("a100-llama-8b", A100, LLAMA_8B),
        SimProfile("l4-llama-8b", L4, LLAMA_8B, activation_reserve_gib=1.0),
        SimProfile("l4-qwen-0.5b", L4, QWEN_05B, activation_reserve_gib=1.0, mfu=0.3, mbu=0.6),
    )
}


def get_profile(name: str) -> SimProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown simulator profile {name!r}; choose one of {', '.join(PROFILES)}") from None
