"""Engine logprobs (token ids) -> each endpoint's OpenAI format (token strings).

- chat: `logprobs.content = [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]`
- completions: `logprobs = {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}`;
  with `echo` the prompt's tokens come first, the first one with `None` (it has no logprob).

A token's string is its own decoding (a lone byte of a multi-byte character decodes to U+FFFD, as in
vLLM); `bytes` carries the raw UTF-8 of that string. `-inf` is sent as -9999.0 (JSON has no infinity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fleetserve.runtime.engine.types import TokenLogprob

MIN_LOGPROB = -9999.0


def finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else MIN_LOGPROB


class TokenStrings:
    """Token id -> its text, cached (the vocabulary is bounded)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self.cache.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self.cache[token_id] = text
        return text


def chat_logprobs(strings: TokenStrings, logprobs: list[TokenLogprob]) -> list[dict[str, Any]]:
    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = strings(token_id)
        return {"token": text, "logprob": finite(logprob), "bytes": list(text.encode("utf-8"))}

    return [
        {**entry(lp.token_id, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]}
        for lp in logprobs
    ]


@dataclass(slots=True)
class CompletionLogprobs:
    """Accumulates the completions-format logprobs of one choice; `offset` is the running text offset."""

    strings: TokenStrings
    offset: int = 0
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)

    def add(self, token_id: int, logprob: TokenLogprob | None) -> None:
        text = self.strings(token_id)
        self.tokens.append(text)
        self.text_offset.append(self.offset)
        self.offset += len(text)
        if logprob is None:
            self.token_logprobs.append(None)
            self.top_logprobs.append(None)
            return
        self.token_logprobs.append(finite(logprob.logprob))
        self.top_logprobs.append({self.strings(t): finite(v) for t, v in logprob.top})

    def add_prompt(self, token_ids: list[int], logprobs: list[TokenLogprob | None] | None) -> None:
        for i, token_id in enumerate(token_ids):
            self.add(token_id, logprobs[i] if logprobs and i < len(logprobs) else None)

    def add_output(self, logprobs: list[TokenLogprob]) -> None:
        for lp in logprobs:
            self.add(lp.token_id, lp)

    def take(self) -> dict[str, Any]:
        """The entries added since the last take (a streaming delta), then forget them."""
        out = {"tokens": self.tokens, "token_logprobs": self.token_logprobs,
               "top_logprobs": self.top_logprobs, "text_offset": self.text_offset}
        self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset = [], [], [], []
        return out
