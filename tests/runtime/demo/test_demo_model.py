"""The demo model: loads with transformers, tokenizes losslessly, renders chats, is deterministic, and
makes greedy decoding well separated and varied enough for token-exact comparisons."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from fleetserve.runtime.demo import ARCHS, default_demo_model_dir, write_demo_model
from fleetserve.runtime.demo.cli import main as cli_main
from fleetserve.runtime.demo.tokenizer import _trained_bpe_json
from fleetserve.runtime.demo.weights import count_parameters

CONFIG_CLASSES = {
    "llama": "LlamaConfig",
    "qwen2": "Qwen2Config",
    "qwen3": "Qwen3Config",
    "mistral": "MistralConfig",
}
TIED = {"llama": False, "qwen2": True, "qwen3": False, "mistral": False}
NON_ASCII = [
    "Héllo wörld, déjà vu à l'hôpital",
    "Größe Straße — Łódź, żółw, smörgåsbord",
    "你好世界，今天天气很好。東京の桜",
    "emoji 🚀🔥👩‍💻🇫🇷 and a rare one 🦩",
    'mixed: café 你好 😀 12345 {"k": [1, 2]}\n\tend',
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The CPU is shared; one intra-op thread is faster here than threads spinning against each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def demo_dirs(demo_model) -> dict[str, Path]:
    """The tiny seed-0 checkpoints, from the suite-wide `demo_model` fixture (tests/conftest.py)."""
    return {arch: demo_model(arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def models(demo_dirs: dict[str, Path]) -> dict[str, torch.nn.Module]:
    return {arch: AutoModelForCausalLM.from_pretrained(path).eval() for arch, path in demo_dirs.items()}


@pytest.fixture(scope="session")
def tokenizers_(demo_dirs: dict[str, Path]):
    return {arch: AutoTokenizer.from_pretrained(path) for arch, path in demo_dirs.items()}


def file_hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


# --- loading -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_with_transformers_without_missing_or_unexpected_weights(arch, demo_dirs, tokenizers_):
    loaded: Any = AutoModelForCausalLM.from_pretrained(demo_dirs[arch], output_loading_info=True)
    model, info = loaded
    config = model.config
    assert type(config).__name__ == CONFIG_CLASSES[arch]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.dtype == torch.float32
    assert config.num_key_value_heads < config.num_attention_heads
    assert config.vocab_size == len(tokenizers_[arch])
    assert config.tie_word_embeddings is TIED[arch]
    shares_storage = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert shares_storage is TIED[arch]


def test_arch_specific_features(models):
    qwen2_attn = models["qwen2"].model.layers[0].self_attn
    assert qwen2_attn.q_proj.bias is not None and qwen2_attn.q_proj.bias.abs().mean() > 0.1
    qwen3 = models["qwen3"].config
    assert qwen3.head_dim * qwen3.num_attention_heads != qwen3.hidden_size
    qwen3_attn = models["qwen3"].model.layers[0].self_attn
    assert qwen3_attn.q_norm.weight.shape == (qwen3.head_dim,)
    assert not torch.allclose(qwen3_attn.q_norm.weight, torch.ones(qwen3.head_dim))
    assert models["mistral"].config.sliding_window is None


def test_llama3_rope_scaling_is_applied(models):
    config = models["llama"].config
    assert config.rope_parameters["rope_type"] == "llama3"
    inv_freq = models["llama"].model.rotary_emb.inv_freq
    head_dim = config.head_dim
    default = 1.0 / (
        config.rope_parameters["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim)
    )
    # High frequencies are untouched, the lowest are divided by the factor (8).
    assert torch.allclose(inv_freq[:4], default[:4])
    assert torch.allclose(inv_freq[-4:], default[-4:] / 8.0)


def test_larger_sizes_have_the_documented_parameter_counts(tmp_path):
    assert 7_000_000 < count_parameters("llama", "small", 4093) < 11_000_000
    assert 50_000_000 < count_parameters("llama", "large", 4093) < 70_000_000
    path = write_demo_model(tmp_path / "small", arch="qwen3", size="small")
    model = AutoModelForCausalLM.from_pretrained(path)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(
        "qwen3", "small", model.config.vocab_size
    )


def test_unknown_arch_or_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="arch"):
        write_demo_model(tmp_path / "x", arch="gpt2")
    with pytest.raises(ValueError, match="size"):
        write_demo_model(tmp_path / "x", size="huge")
    assert not (tmp_path / "x").exists()


# --- tokenizer -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_round_trips_non_ascii_and_matches_tokenizer_json(arch, demo_dirs, tokenizers_):
    tokenizer = tokenizers_[arch]
    raw = Tokenizer.from_file(str(demo_dirs[arch] / "tokenizer.json"))
    for text in NON_ASCII:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert ids == raw.encode(text).ids  # transformers 5 rebuilds qwen2 tokenizers; they must agree
    # Some multi-byte characters are split across tokens: a lone token decodes to a replacement char.
    ids = tokenizer.encode(NON_ASCII[3])
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)


def test_tokenizer_is_a_trained_bpe_with_a_few_thousand_tokens(tokenizers_):
    tokenizer = tokenizers_["llama"]
    assert 3000 <= len(tokenizer) <= 4096
    assert len(tokenizer.encode(" the server")) == 2  # common words are single tokens
    assert len(tokenizer.encode("Xylqzv")) > 2  # unseen strings fall back to pieces


def test_bpe_training_is_deterministic_whatever_the_thread_count():
    trained = _trained_bpe_json()
    assert _trained_bpe_json.__wrapped__() == trained
    script = (
        "import hashlib, sys; from fleetserve.runtime.demo.tokenizer import _trained_bpe_json; "
        "sys.stdout.write(hashlib.sha256(_trained_bpe_json().encode()).hexdigest())"
    )
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    digest = subprocess.run(
        [sys.executable, "-P", "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert digest.stdout == hashlib.sha256(trained.encode()).hexdigest()


@pytest.mark.parametrize("arch", ARCHS)
def test_special_tokens_are_single_tokens(arch, tokenizers_):
    tokenizer = tokenizers_[arch]
    specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "</tool_call>"]
    if arch == "qwen3":
        specials += ["<think>", "</think>"]
    for token in specials:
        ids = tokenizer.encode(f"a{token}b")
        assert len(ids) == 3 and ids[1] == tokenizer.convert_tokens_to_ids(token), token
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert ("<think>" in tokenizer.get_vocab()) is (arch == "qwen3")


def test_generation_config_stops_on_im_end_and_endoftext(demo_dirs, tokenizers_):
    generation = json.loads((demo_dirs["qwen2"] / "generation_config.json").read_text())
    tokenizer = tokenizers_["qwen2"]
    assert generation["eos_token_id"] == tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])


# --- chat template ---------------------------------------------------------------------------------------


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Paris?"}],
    },
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "content": "18°C"},
    {"role": "tool", "content": "sunny"},
    {"role": "assistant", "content": "18°C ☀️"},
    {"role": "user", "content": "Thanks"},
]


@pytest.mark.parametrize("arch", ARCHS)
def test_chat_template_renders_all_roles(arch, tokenizers_):
    text = tokenizers_[arch].apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n18°C\n</tool_response>\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n18°C ☀️<|im_end|>\n"
        "<|im_start|>user\nThanks<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without_prompt = tokenizers_[arch].apply_chat_template(CONVERSATION, tokenize=False)
    assert without_prompt.endswith("<|im_start|>user\nThanks<|im_end|>\n")


def test_chat_template_lists_tools_in_the_system_turn(tokenizers_):
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    text = tokenizers_["llama"].apply_chat_template(
        CONVERSATION[:2], tools=[tool], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert json.dumps(tool) in text and text.count("<|im_start|>system") == 1


def test_chat_template_tokenizes_markers_as_single_tokens(tokenizers_):
    tokenizer = tokenizers_["llama"]
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 2
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_end|>")) == 1


def test_chat_template_rejects_unknown_roles(tokenizers_):
    with pytest.raises(Exception, match="unknown role"):
        tokenizers_["llama"].apply_chat_template([{"role": "narrator", "content": "x"}], tokenize=False)


def test_qwen3_thinking_switch(tokenizers_):
    tokenizer, chat = tokenizers_["qwen3"], [{"role": "user", "content": "hi"}]
    default = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    thinking = tokenizer.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True, enable_thinking=True
    )
    no_thinking = tokenizer.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert default == thinking == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert no_thinking == thinking + "<think>\n\n</think>\n\n"
    llama_no_thinking = tokenizers_["llama"].apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert "<think>" not in llama_no_thinking


def test_qwen3_keeps_reasoning_only_after_the_last_user_turn(tokenizers_):
    chat = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>\nold thoughts\n</think>\n\nold answer"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "new answer", "reasoning_content": "new thoughts"},
    ]
    text = tokenizers_["qwen3"].apply_chat_template(chat, tokenize=False)
    assert "old thoughts" not in text and "<|im_start|>assistant\nold answer<|im_end|>" in text
    assert "<|im_start|>assistant\n<think>\nnew thoughts\n</think>\n\nnew answer<|im_end|>" in text


# --- determinism, cache, CLI -------------------------------------------------------------------------------


def test_same_arguments_give_byte_identical_files(tmp_path, demo_dirs):
    again = write_demo_model(tmp_path / "again", arch="qwen3")
    assert file_hashes(again) == file_hashes(demo_dirs["qwen3"])
    other_seed = file_hashes(write_demo_model(tmp_path / "seed1", arch="qwen3", seed=1))
    same = {name for name, digest in other_seed.items() if file_hashes(again)[name] == digest}
    assert same == {n for n in other_seed if n != "model.safetensors"}


def test_archs_with_equal_shapes_get_different_weights(models):
    llama, mistral = models["llama"].model.embed_tokens.weight, models["mistral"].model.embed_tokens.weight
    assert llama.shape == mistral.shape and not torch.equal(llama, mistral)


def test_default_dir_is_written_once_even_when_raced(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETSERVE_CACHE", str(tmp_path))
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(default_demo_model_dir("qwen2"))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] == results[1]
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]  # no scratch directories left
    before = file_hashes(results[0])
    mtime = (results[0] / "model.safetensors").stat().st_mtime_ns
    assert default_demo_model_dir("qwen2") == results[0]
    assert (results[0] / "model.safetensors").stat().st_mtime_ns == mtime and file_hashes(
        results[0]
    ) == before
    assert AutoConfig.from_pretrained(results[0]).model_type == "qwen2"


def test_cli_writes_a_checkpoint(tmp_path, capsys):
    assert cli_main([str(tmp_path / "out"), "--arch", "qwen2", "--seed", "3"]) == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    }
    assert "Qwen2ForCausalLM" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main([str(tmp_path / "bad"), "--arch", "gpt2"])


# --- behaviour of the weights -----------------------------------------------------------------------------

PROMPTS = [
    "The quick brown fox",
    "Héllo 你好 🚀, what is the weather?",
    '{"name": "Alice", "age":',
    "def run(port):",
]


def greedy_margins(model, tokenizer, steps: int) -> tuple[list[float], list[list[int]]]:
    margins, outputs = [], []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(
                ids,
                max_new_tokens=steps,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                eos_token_id=None,
                pad_token_id=tokenizer.pad_token_id,
            )
        for scores in out.scores:
            top = scores[0].topk(2).values
            margins.append(float(top[0] - top[1]))
        outputs.append(out.sequences[0, ids.shape[1] :].tolist())
    return margins, outputs


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_decoding_has_clear_margins_and_varied_output(arch, models, tokenizers_):
    margins, outputs = greedy_margins(models[arch], tokenizers_[arch], steps=40)
    # Measured over 400 steps: medians 1.5-2.1, 76-85% of steps above 0.5 (logit std is about 8).
    assert statistics.median(margins) > 0.8
    assert sum(m > 0.5 for m in margins) / len(margins) > 0.6
    eos_ids = set(tokenizers_[arch].convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]))
    for output in outputs:
        assert len(set(output)) >= 10, tokenizers_[arch].decode(output)
        assert sum(token in eos_ids for token in output) <= 5


@pytest.mark.parametrize("arch", ARCHS)
def test_context_changes_predictions(arch, models, tokenizers_):
    """Attention matters: predicting from the last token alone disagrees with the full context."""
    model = models[arch]
    ids = tokenizers_[arch](" ".join(NON_ASCII), return_tensors="pt").input_ids
    with torch.no_grad():
        full = model(ids).logits[0].argmax(-1)
        alone = model(ids.T).logits[:, 0].argmax(-1)  # each token as its own one-token sequence
    assert (full[1:] != alone[1:]).float().mean() > 0.5
