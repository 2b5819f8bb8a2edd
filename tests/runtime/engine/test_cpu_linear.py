"""Prepacked bfloat16 linears give exactly F.linear's numbers, and an engine using them the same tokens."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fleetserve.runtime.engine import cpu_linear
from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.types import SamplingParams

CPU = torch.device("cpu")
needs_packing = pytest.mark.skipif(not cpu_linear.supported(torch.bfloat16, CPU),
                                   reason="this CPU's oneDNN has no bfloat16 kernels")


def test_only_bfloat16_on_cpu_is_packed():
    assert not cpu_linear.supported(torch.float32, CPU)
    assert not cpu_linear.supported(torch.float16, CPU)
    assert not cpu_linear.supported(torch.bfloat16, torch.device("meta"))


@needs_packing
@pytest.mark.parametrize("rows", [1, 5, 64, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_equals_f_linear(rows, bias):
    gen = torch.Generator().manual_seed(rows)
    weight = torch.randn(96, 80, generator=gen).to(torch.bfloat16)
    b = torch.randn(96, generator=gen).to(torch.bfloat16) if bias else None
    x = torch.randn(rows, 80, generator=gen).to(torch.bfloat16)
    assert torch.equal(cpu_linear.PrepackedLinear(weight, b)(x), F.linear(x, weight, b))


@needs_packing
def test_prepack_replaces_every_linear():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 4, bias=False))).to(torch.bfloat16)
    x = torch.randn(3, 8).to(torch.bfloat16)
    expected = model(x)
    assert cpu_linear.prepack_linears(model) == 2
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert torch.equal(model(x), expected)


@needs_packing
@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # untied and tied (+ qkv bias) embeddings
def test_bfloat16_engine_tokens_do_not_change(demo_model, monkeypatch, arch):
    prompts = [[5 + i, 17, 300 + 7 * i, 42, 9] * (1 + i % 3) for i in range(6)]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    outputs = []
    for packed in (True, False):
        if not packed:
            monkeypatch.setattr(cpu_linear, "supported", lambda dtype, device: False)
        engine = LLMEngine.from_config(EngineConfig(model_path=str(demo_model(arch)), dtype="bfloat16", device="cpu",
                                                    num_pages=64))
        assert any(isinstance(m, cpu_linear.PrepackedLinear) for m in engine.runner.model.modules()) == packed
        for i, prompt in enumerate(prompts):
            engine.add_request(str(i), prompt, params)
        tokens = {}
        while engine.has_unfinished_requests():
            for out in engine.step():
                tokens.setdefault(out.request_id, []).extend(out.outputs[0].new_token_ids)
        outputs.append(tokens)
    assert outputs[0] == outputs[1]
