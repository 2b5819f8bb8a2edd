"""PEFT adapters for the tests, made with PEFT itself (get_peft_model + save_pretrained).

`init_lora_weights=False` leaves both A and B random (nn.Linear's init), so every adapter changes the
output: one that is silently skipped fails the comparisons.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch


class AdapterSpec(NamedTuple):
    name: str
    rank: int
    alpha: float
    targets: tuple[str, ...]
    use_rslora: bool = False
    seed: int = 0


# different ranks, targets (fused slices alone and together) and scalings
SPECS = (
    AdapterSpec("qv4", 4, 8, ("q_proj", "v_proj"), seed=1),
    AdapterSpec("mlp8", 8, 4, ("gate_proj", "down_proj"), seed=2),
    AdapterSpec("all16", 16, 16, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                use_rslora=True, seed=3),
    AdapterSpec("ko2", 2, 6, ("k_proj", "o_proj", "up_proj"), seed=4),
)


def make_adapter(base_dir: Path, out_dir: Path, spec: AdapterSpec, scale: float = 1.0) -> Path:
    """Writes a PEFT adapter for the checkpoint at base_dir; `scale` multiplies its B weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=list(spec.targets),
                        use_rslora=spec.use_rslora, init_lora_weights=False, lora_dropout=0.0)
    torch.manual_seed(spec.seed)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                assert param.abs().sum() > 0
                param.mul_(scale)
    model.save_pretrained(out_dir)
    return out_dir


def peft_model(base_dir: Path, adapters: dict[str, Path]):
    """A PeftModel holding every adapter (switch with set_adapter; base with disable_adapter())."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    names = list(adapters)
    model = PeftModel.from_pretrained(base, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(adapters[name], adapter_name=name)
    return model.eval()


def peft_greedy(model, adapter: str | None, prompt: list[int], max_new_tokens: int) -> list[int]:
    with torch.no_grad():
        ids = torch.tensor([prompt])
        if adapter is None:
            with model.disable_adapter():
                out = model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False)
        else:
            model.set_adapter(adapter)
            out = model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, len(prompt):].tolist()
