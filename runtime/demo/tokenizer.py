"""The demo tokenizer: a byte-level BPE trained on the generated corpus, plus ChatML special tokens."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from fleetserve.runtime.demo.chat_template import chat_template_for
from fleetserve.runtime.demo.corpus import build_corpus

# Size of the trained BPE vocabulary (256 byte tokens + merges); added tokens come after it.
NUM_BPE_TOKENS = 4088
MODEL_MAX_LENGTH = 2048

# Pre-tokenization as in Qwen2-family tokenizers: contractions, letter runs (with one leading non-letter),
# single digits, punctuation runs, newlines, spaces. transformers 5 rebuilds qwen2 tokenizers with exactly
# this split (and NFC), so the demo uses it for every arch and all loaders tokenize identically.
SPLIT_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# (content, special): special tokens are dropped by decode(skip_special_tokens=True), the others kept.
COMMON_ADDED_TOKENS = [
    (ENDOFTEXT, True),
    (IM_START, True),
    (IM_END, True),
    ("<tool_call>", False),
    ("</tool_call>", False),
]
THINKING_ADDED_TOKENS = [("<think>", False), ("</think>", False)]


def added_tokens_for(arch: str) -> list[tuple[str, bool]]:
    return COMMON_ADDED_TOKENS + (THINKING_ADDED_TOKENS if arch == "qwen3" else [])


@functools.lru_cache(maxsize=1)
def _trained_bpe_json() -> str:
    """Train the BPE once per process; returns the serialized tokenizer (without added tokens)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=NUM_BPE_TOKENS,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(build_corpus(), trainer=trainer)
    return tokenizer.to_str()


def build_tokenizer(arch: str) -> Tokenizer:
    """A fresh tokenizer for `arch`: the shared trained BPE plus that arch's added tokens."""
    tokenizer = Tokenizer.from_str(_trained_bpe_json())
    for content, special in added_tokens_for(arch):
        token = AddedToken(
            content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special
        )
        if special:
            tokenizer.add_special_tokens([token])
        else:
            tokenizer.add_tokens([token])
    return tokenizer


def added_token_ids(tokenizer: Tokenizer, arch: str) -> dict[str, int]:
    """Content -> id of every added token of `arch` in `tokenizer` (built by build_tokenizer)."""
    ids = {}
    for content, _ in added_tokens_for(arch):
        token_id = tokenizer.token_to_id(content)
        assert token_id is not None, f"{content} missing from the {arch} tokenizer"
        ids[content] = token_id
    return ids


def _tokenizer_config(arch: str, tokenizer: Tokenizer) -> dict:
    ids = added_token_ids(tokenizer, arch)
    added = {
        str(ids[content]): {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for content, special in added_tokens_for(arch)
    }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": None,
        "eos_token": ENDOFTEXT,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "errors": "replace",
        "added_tokens_decoder": added,
        "additional_special_tokens": [IM_START, IM_END],
        "chat_template": chat_template_for(arch),
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def write_tokenizer_files(directory: Path, arch: str) -> Tokenizer:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json; return the tokenizer."""
    tokenizer = build_tokenizer(arch)
    (directory / "tokenizer.json").write_text(tokenizer.to_str(pretty=True) + "\n", encoding="utf-8")
    _write_json(directory / "tokenizer_config.json", _tokenizer_config(arch, tokenizer))
    _write_json(
        directory / "special_tokens_map.json",
        {"eos_token": ENDOFTEXT, "pad_token": ENDOFTEXT, "additional_special_tokens": [IM_START, IM_END]},
    )
    return tokenizer
