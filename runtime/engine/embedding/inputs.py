"""Texts -> token ids as sentence-transformers prepares them, and truncation of token lists. No torch.

Plain texts are tokenized with the tokenizer's special tokens. For a checkpoint whose Transformer module
takes the "message" modality (st_config.py), each text becomes one user message rendered by the chat
template without a generation prompt, then tokenized without adding special tokens (the template has
them), as `apply_chat_template(tokenize=True)` does.
"""

from __future__ import annotations

from typing import Any, Literal

from fleetserve.runtime.engine.embedding.st_config import MessageFormat

# what sentence-transformers 6 looks for in a chat template to decide that message content is a list of parts
_STRUCTURED_PATTERNS = ("content[0]", ".type", "'type'", '"type"', "item.type", "message.content[")


def resolve_message_format(fmt: MessageFormat | None, tokenizer: Any) -> Literal["structured", "flat"] | None:
    """The format texts are rendered with, or None for plain tokenization."""
    template = getattr(tokenizer, "chat_template", None)
    if fmt is None or not isinstance(template, str) or not template:
        return None
    if fmt != "auto":
        return fmt
    return "structured" if any(p in template for p in _STRUCTURED_PATTERNS) else "flat"


def tokenize_texts(tokenizer: Any, texts: list[str], message_format: str | None,
                   max_length: int | None = None) -> list[list[int]]:
    """Token ids of each text; with `max_length`, cut as the tokenizer truncates (its side, special
    tokens kept for plain texts)."""
    if message_format is None:
        kwargs: dict[str, Any] = {"truncation": True, "max_length": max_length} if max_length is not None else {}
        return [list(ids) for ids in tokenizer(texts, add_special_tokens=True, **kwargs)["input_ids"]]
    rendered = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": t}] if message_format == "structured" else t}],
            tokenize=False, add_generation_prompt=False)
        for t in texts
    ]
    ids = [list(x) for x in tokenizer(rendered, add_special_tokens=False)["input_ids"]]
    side = getattr(tokenizer, "truncation_side", "right")
    return [truncate(x, max_length, side) for x in ids] if max_length is not None else ids


def truncate(ids: list[int], max_length: int, side: str = "right") -> list[int]:
    if len(ids) <= max_length:
        return ids
    return ids[:max_length] if side == "right" else ids[len(ids) - max_length:]
