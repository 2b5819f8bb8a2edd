"""The project's encoder and decoder forwards against transformers on the same checkpoints: a ragged
batch of mixed lengths gives each sequence the states transformers gives it alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModel, BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.embedding.attention import RaggedAttention
from fleetserve.runtime.engine.embedding.runner import build_runner
from fleetserve.runtime.engine.loader import iter_safetensors
from fleetserve.runtime.engine.models.bert import BertConfig as OurBertConfig
from fleetserve.runtime.engine.models.bert import load_bert

LENGTHS = [7, 1, 30, 12, 29]
CPU = torch.device("cpu")


def _save(model: torch.nn.Module, directory: Path) -> Path:
    model.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, Path]:
    torch.manual_seed(0)
    common = dict(vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)
    root = tmp_path_factory.mktemp("encoders")
    return {
        "bert": _save(BertModel(BertConfig(max_position_embeddings=64, **common)), root / "bert"),
        "xlm-roberta": _save(XLMRobertaModel(XLMRobertaConfig(max_position_embeddings=66, pad_token_id=1, **common)),
                             root / "xlmr"),
    }


@pytest.mark.parametrize("name", ["bert", "xlm-roberta"])
def test_encoder_hidden_states_match_transformers(encoders: dict[str, Path], name: str) -> None:
    directory = encoders[name]
    cfg = OurBertConfig.from_pretrained(directory, torch.float32)
    assert cfg.max_model_len == 64  # XLM-RoBERTa: 66 positions, numbered from pad_token_id + 1 = 2
    ours = load_bert(cfg, iter_safetensors(directory), CPU)
    reference = AutoModel.from_pretrained(str(directory)).eval()
    gen = torch.Generator().manual_seed(1)
    # token 1 is XLM-R's pad id: keep it out so transformers numbers every position
    seqs = [torch.randint(2, 300, (n,), generator=gen) for n in LENGTHS]
    attention = RaggedAttention(causal=False)
    attention.plan(LENGTHS, CPU)
    with torch.no_grad():
        out = ours(torch.cat(seqs), torch.cat([torch.arange(n) for n in LENGTHS]), attention)
        for seq, got in zip(seqs, out.split(LENGTHS), strict=True):
            want = reference(input_ids=seq.unsqueeze(0)).last_hidden_state[0]
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_decoder_last_token_matches_transformers(demo_model, tmp_path: Path, arch: str) -> None:
    """A bare transformer (as sentence-transformers saves a decoder) served for embeddings: last-token
    pooling and normalization by default, no LM head needed."""
    bare = _save(AutoModel.from_pretrained(str(demo_model(arch))), tmp_path / "bare")
    runner, _ = build_runner(EngineConfig(model_path=str(bare), device="cpu"), CPU)
    assert runner.kind == "decoder" and runner.spec.pooling == "lasttoken" and runner.spec.normalize
    reference = AutoModel.from_pretrained(str(bare)).eval()
    gen = torch.Generator().manual_seed(2)
    seqs = [torch.randint(0, runner.info.vocab_size, (n,), generator=gen) for n in LENGTHS]
    got = torch.from_numpy(runner.embed([s.tolist() for s in seqs]))
    with torch.no_grad():
        want = torch.stack([reference(input_ids=s.unsqueeze(0)).last_hidden_state[0, -1] for s in seqs])
    torch.testing.assert_close(got, torch.nn.functional.normalize(want, dim=-1), rtol=1e-4, atol=1e-5)


def test_a_causal_lm_checkpoint_forced_to_embed_skips_its_lm_head(demo_model) -> None:
    """`--is-embedding` on a *ForCausalLM checkpoint: the LM head is neither built nor loaded."""
    directory = demo_model("qwen2")
    runner, _ = build_runner(EngineConfig(model_path=str(directory), device="cpu"), CPU)
    assert runner.info.architecture == "Qwen2ForCausalLM" and getattr(runner.model, "lm_head", None) is None
    reference = AutoModel.from_pretrained(str(directory)).eval()
    ids = list(range(5, 25))
    with torch.no_grad():
        want = reference(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    got = torch.from_numpy(runner.embed([ids]))[0]
    torch.testing.assert_close(got, torch.nn.functional.normalize(want, dim=-1), rtol=1e-4, atol=1e-5)
