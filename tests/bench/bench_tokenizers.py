"""Small real tokenizers trained at test time (no hub): a byte-level BPE with a Qwen2-style split, and a
sentencepiece-style (Metaspace) BPE as Llama 2 uses. Both wrapped as transformers fast tokenizers."""

from __future__ import annotations

import random

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SPLIT_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SYLLABLES = ["ka", "to", "ri", "ne", "sa", "mu", "lo", "pe", "di", "va", "qu", "zé", "中", "文", "ing", "th"]
PUNCTUATION = [".", ",", "!", "?", ";", " -", " (", ")", '"', "'s"]


def corpus(num_sentences: int = 3000, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(num_sentences):
        words = []
        for _ in range(rng.randint(4, 14)):
            word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))
            words.append(word.capitalize() if rng.random() < 0.1 else word)
            if rng.random() < 0.15:
                words[-1] += rng.choice(PUNCTUATION)
            if rng.random() < 0.05:
                words.append(str(rng.randint(0, 9999)))
        lines.append(" ".join(words) + rng.choice(["\n", " ", "\n\n"]))
    return lines


def wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", additional_special_tokens=SPECIAL_TOKENS[1:]
    )


def byte_level_bpe(vocab_size: int = 1200) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    return wrap(tokenizer)


def metaspace_bpe(vocab_size: int = 800) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", *SPECIAL_TOKENS, *byte_tokens], show_progress=False
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    return wrap(tokenizer)
