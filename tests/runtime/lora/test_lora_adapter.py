"""Reading and checking PEFT adapters, the batched op against a per-token loop, and engine-level refusals."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.lora.adapter import (
    SUPPORTED_TARGETS,
    AdapterError,
    AdapterNotFoundError,
    LoRALimits,
    check_config,
    read_adapter,
)
from fleetserve.runtime.engine.lora.ops import (
    PACKED_MAX_TOKENS,
    add_lora,
    add_lora_packed,
    build_lora_batch,
    packed_scales,
    prefer_packed,
    segment_runs,
)
from fleetserve.runtime.engine.types import SamplingParams

from ..engine.helpers import run_to_completion

ALL = LoRALimits(64, frozenset(SUPPORTED_TARGETS))


def config(**overrides) -> dict:
    return {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], **overrides}


def test_config_gives_rank_scaling_and_targets():
    assert check_config(config(), "x", ALL) == (8, 2.0, frozenset({"q_proj", "v_proj"}))
    assert check_config(config(use_rslora=True), "x", ALL)[1] == pytest.approx(16 / 8**0.5)
    regex = check_config(config(target_modules=r".*\.(q_proj|down_proj)$"), "x", ALL)[2]
    assert regex == frozenset({"q_proj", "down_proj"})
    assert check_config(config(target_modules="all-linear"), "x", ALL)[2] == frozenset(SUPPORTED_TARGETS)
    full_paths = check_config(config(target_modules=["model.layers.0.self_attn.k_proj"]), "x", ALL)[2]
    assert full_paths == frozenset({"k_proj"})


@pytest.mark.parametrize(("overrides", "limits", "reason"), [
    ({"r": 32}, LoRALimits(16, ALL.target_modules), "rank 32, above this server's --max-lora-rank 16"),
    ({}, LoRALimits(64, frozenset({"q_proj"})), "targets v_proj, not enabled on this server"),
    ({"target_modules": ["lm_head"]}, ALL, "targets lm_head; supported"),
    ({"use_dora": True}, ALL, "DoRA"),
    ({"bias": "all"}, ALL, "bias='all'"),
    ({"modules_to_save": ["lm_head"]}, ALL, "modules_to_save"),
    ({"peft_type": "IA3"}, ALL, "only LORA"),
    ({"r": 0}, ALL, "positive integer `r`"),
    ({"target_modules": 3}, ALL, "must be a list"),
])
def test_config_refusals_say_why(overrides, limits, reason):
    with pytest.raises(AdapterError) as info:
        check_config(config(**overrides), "x", limits)
    assert reason in str(info.value)


def test_weights_that_do_not_fit_the_model_are_refused(demo_model, lora_adapters, tmp_path):
    qwen3_adapter = lora_adapters("qwen3")["qv4"]  # qwen3's attention is twice as wide as llama's
    engine = LLMEngine.from_config(EngineConfig(model_path=str(demo_model("llama")), dtype="float32",
                                                device="cpu", num_pages=32, enable_lora=True, max_lora_rank=16))
    with pytest.raises(AdapterError, match="this model needs"):
        engine.load_lora("wrong", str(qwen3_adapter))
    mismatched = tmp_path / "mismatched"
    shutil.copytree(lora_adapters("llama")["qv4"], mismatched)
    cfg = json.loads((mismatched / "adapter_config.json").read_text())
    (mismatched / "adapter_config.json").write_text(json.dumps({**cfg, "target_modules": ["q_proj"]}))
    with pytest.raises(AdapterError, match="v_proj, which its config does not target"):
        engine.load_lora("wrong", str(mismatched))
    assert engine.loaded_adapters() == []
    with pytest.raises(AdapterNotFoundError, match="'wrong' is not loaded"):
        engine.add_request("r", [1, 2, 3], SamplingParams(max_tokens=1), lora_name="wrong")


def test_read_adapter_refuses_missing_files(tmp_path):
    with pytest.raises(AdapterError, match="neither an adapter directory nor a hub id"):
        read_adapter(str(tmp_path / "nowhere"), ALL)
    with pytest.raises(AdapterError, match=r"has no adapter_config\.json"):
        read_adapter(str(tmp_path), ALL)


def test_limits_on_loaded_and_pinned_adapters(demo_model, lora_adapters):
    paths = lora_adapters("llama")
    engine = LLMEngine.from_config(EngineConfig(
        model_path=str(demo_model("llama")), dtype="float32", device="cpu", num_pages=32, enable_lora=True,
        max_lora_rank=16, max_loaded_loras=2, max_loras_per_batch=2))
    engine.load_lora("a", str(paths["qv4"]), pinned=True)
    with pytest.raises(AdapterError, match="at most 1 adapters can be pinned"):
        engine.load_lora("b", str(paths["mlp8"]), pinned=True)
    engine.load_lora("b", str(paths["mlp8"]))
    with pytest.raises(AdapterError, match="--max-loaded-loras 2"):
        engine.load_lora("c", str(paths["all16"]))
    engine.load_lora("b", str(paths["all16"]))  # a reload does not count twice
    assert engine.loaded_adapters() == ["a", "b"]
    engine.unload_lora("b")
    engine.load_lora("c", str(paths["all16"]))
    assert engine.loaded_adapters() == ["a", "c"]
    disabled = LLMEngine.from_config(EngineConfig(model_path=str(demo_model("llama")), device="cpu", num_pages=8))
    with pytest.raises(AdapterError, match="not enabled"):
        disabled.load_lora("a", str(paths["qv4"]))


def test_segments_merge_runs_and_skip_base_tokens():
    assert segment_runs([(3, 0), (2, 0), (4, None), (1, 1), (2, 0)]) == [(0, 5, 0), (9, 10, 1), (10, 12, 0)]
    assert build_lora_batch([(3, None), (1, None)], torch.device("cpu")) is None
    batch = build_lora_batch([(3, 0), (4, None), (1, 1), (2, 0)], torch.device("cpu"))
    assert batch.seg_starts.tolist() == [0, 7, 8] and batch.seg_lens.tolist() == [3, 1, 2]
    assert batch.weight_indices.tolist() == [0, 1, 0]


def test_batched_op_equals_a_per_token_loop():
    gen = torch.Generator().manual_seed(0)
    slots, rows, d_in, d_out = 3, 8, 16, 12
    a = torch.randn(slots, rows, d_in, generator=gen)
    bt = torch.randn(slots, rows, d_out, generator=gen)
    widths, scalings = [4, 0, 8], [0.5, 1.0, 2.0]
    segments = [(2, 0), (3, None), (1, 2), (2, 0), (1, 1), (4, 2)]
    tokens = sum(n for n, _ in segments)
    x = torch.randn(tokens, d_in, generator=gen)
    base = torch.randn(tokens, d_out, generator=gen)
    got = add_lora(base.clone(), x, a, bt, widths, scalings,
                   build_lora_batch(segments, torch.device("cpu")))
    used = [s for s in range(slots) if widths[s]]
    columns, start = [], 0
    for w in widths:
        columns.append((start, start + w))
        start += w
    scales = packed_scales(segment_runs(segments), tokens, columns, scalings, start, torch.float32,
                           torch.device("cpu"))
    packed = add_lora_packed(base.clone(), x, torch.cat([a[s, : widths[s]] for s in used]),
                             torch.cat([bt[s, : widths[s]] for s in used]), scales)
    want, t = base.clone(), 0
    for n, slot in segments:
        for _ in range(n):
            if slot is not None and widths[slot]:
                w = widths[slot]
                want[t] += scalings[slot] * (x[t] @ a[slot, :w].T) @ bt[slot, :w]
            t += 1
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(packed, want)


def test_packed_form_only_for_small_steps_over_several_adapters():
    assert prefer_packed(16, 4)
    assert prefer_packed(PACKED_MAX_TOKENS, 2)
    assert not prefer_packed(16, 1)  # one segment: 2 ops of its own rows beat 3 over every slot
    assert not prefer_packed(PACKED_MAX_TOKENS + 1, 4)  # large steps: the arithmetic decides


def test_each_step_takes_the_form_that_suits_it(demo_model, lora_adapters):
    paths = lora_adapters("llama")
    engine = LLMEngine.from_config(EngineConfig(
        model_path=str(demo_model("llama")), dtype="float32", device="cpu", num_pages=8, enable_lora=True,
        max_lora_rank=16, max_loras_per_batch=2))
    engine.load_lora("a", str(paths["qv4"]))
    engine.load_lora("b", str(paths["all16"]))
    lora = engine.lora
    assert lora is not None and lora.packed
    a, b = lora.find("a"), lora.find("b")
    lora.prepare([(4, a), (1, None), (4, b)])
    assert lora.step.batch is not None and lora.step.scales is not None
    assert set(lora.step.scales) == set(lora.weights.groups)  # all16 targets every projection
    lora.prepare([(8, a), (1, None)])
    assert lora.step.batch is not None and lora.step.scales is None
    lora.prepare([(PACKED_MAX_TOKENS, a), (1, b)])
    assert lora.step.batch is not None and lora.step.scales is None
    lora.prepare([(3, None)])
    assert lora.step.batch is None


def test_prefix_cache_is_per_adapter_and_per_load(demo_model, lora_adapters):
    paths = lora_adapters("llama")
    engine = LLMEngine.from_config(EngineConfig(model_path=str(demo_model("llama")), dtype="float32",
                                                device="cpu", page_size=4, num_pages=64, enable_lora=True,
                                                max_lora_rank=16))
    engine.load_lora("a", str(paths["qv4"]))
    prompt = list(range(10, 30))
    params = SamplingParams(temperature=0.0, max_tokens=2)

    def cached(rid: str, lora: str | None) -> int:
        engine.add_request(rid, prompt, params, lora_name=lora)
        return run_to_completion(engine)[rid].num_cached_tokens

    assert cached("a1", "a") == 0
    assert cached("a2", "a") == 16
    assert cached("base", None) == 0  # the adapter's KV is not the base model's
    assert cached("a3", str(paths["qv4"])) == 16  # named by the path it was loaded from
    engine.load_lora("a", str(paths["mlp8"]))  # reload: its old pages leave the cache
    assert cached("a4", "a") == 0
    engine.unload_lora("a")
    assert all(key.extra is None for key in engine.pool.cache)
