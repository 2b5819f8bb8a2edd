"""The tokenizer the benchmark counts tokens with, and the token ids random prompts are drawn from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

import numpy as np

# Decoding a token that holds only part of a multi-byte character yields this replacement character.
REPLACEMENT_CHAR = "\ufffd"


class TokenizerLike(Protocol):
    """The slice of a transformers tokenizer that the benchmark uses."""

    all_special_ids: list[int]

    def __len__(self) -> int: ...

    def __call__(self, text: list[str], add_special_tokens: bool = ...) -> Any: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...

    def batch_decode(
        self, sequences: Sequence[Sequence[int]], skip_special_tokens: bool = ...
    ) -> list[str]: ...

    def get_added_vocab(self) -> dict[str, int]: ...


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> TokenizerLike:
    """A local tokenizer directory or a hub id, through transformers' AutoTokenizer (no model weights)."""
    from transformers import AutoTokenizer  # imported here: slow, and only the CLI needs it

    return cast(TokenizerLike, AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code))


def count_tokens(tokenizer: TokenizerLike, text: str) -> int:
    """Tokens in `text` as a prompt body: without the BOS/EOS a server may add around it."""
    return len(tokenizer.encode(text, add_special_tokens=False))


def sampleable_token_ids(tokenizer: TokenizerLike) -> np.ndarray:
    """Ids that make sensible random text: ordinary vocabulary tokens that decode to visible, whole
    characters and encode back to themselves. Special and added tokens (chat markers, <think>) are out."""
    excluded = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    candidates = [i for i in range(len(tokenizer)) if i not in excluded]
    texts = tokenizer.batch_decode([[i] for i in candidates], skip_special_tokens=False)
    visible = [
        (i, t) for i, t in zip(candidates, texts, strict=True) if t.strip() and REPLACEMENT_CHAR not in t
    ]
    encoded = tokenizer([t for _, t in visible], add_special_tokens=False)["input_ids"]
    kept = [i for (i, _), ids in zip(visible, encoded, strict=True) if list(ids) == [i]]
    if not kept:
        raise ValueError("the tokenizer has no ordinary tokens to build random prompts from")
    return np.asarray(kept, dtype=np.int64)
