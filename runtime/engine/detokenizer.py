"""Incremental detokenization of one output sequence, with stop strings.

Two stages, each its own class:

``_IncrementalDecoder`` (token ids → stable text), in the vLLM style: it decodes a small window, the
context tokens (those whose text was emitted last time, or the prompt's last few tokens at the
start) plus the new tokens, and emits what the window adds to the context's text. Cost per token is
bounded by the window, not by the output length. Byte-level BPE splits a character such as é, 中
or 🙂 across tokens; until the character completes, the decoded window ends with U+FFFD. That
trailing run of U+FFFD is held back (the text before it is emitted), and the window only moves on
once it decodes cleanly, so the character is emitted whole when its last byte arrives. ``flush``
releases a run that never completed (it is then part of the final text, as in a full decode).
For a byte-level tokenizer the concatenated output equals ``tokenizer.decode(output_ids)``. Two
known differences elsewhere: a SentencePiece byte-fallback decoder replaces a whole invalid byte
run, valid characters before the bad byte included, which a stream cannot foresee (valid text is
unaffected); and a decoder that strips the first token's leading space (Metaspace) keeps it here
when the prompt supplies context, as a completion should (" Paris" after "The capital is").

``_StopMatcher`` (text → released text): finds stop strings, which may span tokens, and holds back
the longest suffix of the text that could still begin one, so a stop string is never emitted, not
even partly. When several stop strings match, the one that completes first in the text wins (on a
tie, the one that starts first): that is what a token-by-token stream would see, so the result
does not depend on how tokens are grouped into ``add_tokens`` calls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

logger = logging.getLogger(__name__)

_REPLACEMENT_CHAR = "\ufffd"
# Prompt tokens decoded as context before the first output token (keeps e.g. a leading space).
_NUM_PROMPT_CONTEXT_TOKENS = 5


class DetokenizerDelta(NamedTuple):
    text: str  # newly released text
    stop_str: str | None  # the stop string that ended the sequence in this call


class IncrementalDetokenizer:
    """Text of one sequence, token by token. ``tokenizer``: a Hugging Face fast tokenizer."""

    def __init__(
        self,
        tokenizer,
        prompt_token_ids: Sequence[int],
        *,
        skip_special_tokens: bool = True,
        stop: Sequence[str] = (),
        include_stop_str_in_output: bool = False,
    ) -> None:
        self._decoder = _IncrementalDecoder(tokenizer, prompt_token_ids, skip_special_tokens)
        self._matcher = _StopMatcher(stop, include_stop_str_in_output)
        self._is_finished = False

    @property
    def output_text(self) -> str:
        """Everything released so far."""
        return self._matcher.released_text

    @property
    def stop_str(self) -> str | None:
        """The stop string that ended the sequence, if one did."""
        return self._matcher.stop_str

    def add_tokens(self, token_ids: Sequence[int]) -> DetokenizerDelta:
        """Feed the tokens sampled this step. After a stop string or ``flush``, tokens are ignored."""
        if self._is_finished:
            return DetokenizerDelta("", None)
        released = self._matcher.feed(self._decoder.add(token_ids))
        if self._matcher.stop_str is not None:
            self._is_finished = True
            return DetokenizerDelta(released, self._matcher.stop_str)
        return DetokenizerDelta(released, None)

    def flush(self) -> str:
        """The sequence ended for another reason (eos, length, abort): release all held-back text."""
        if self._is_finished:
            return ""
        self._is_finished = True
        released = self._matcher.feed(self._decoder.flush())
        if self._matcher.stop_str is not None:
            return released
        return released + self._matcher.release_all()


class _IncrementalDecoder:
    """Token ids → text, decoding only a window of recent tokens per call."""

    def __init__(self, tokenizer, prompt_token_ids: Sequence[int], skip_special_tokens: bool) -> None:
        self._backend = _fast_decoder(tokenizer)
        self._skip_special_tokens = skip_special_tokens
        context = list(prompt_token_ids[-_NUM_PROMPT_CONTEXT_TOKENS:])
        self._context_text: str | None = self._decode(context)
        if self._context_text.endswith(_REPLACEMENT_CHAR):
            # The prompt ends inside a character: its tail cannot serve as a clean context.
            context, self._context_text = [], ""
        self._window = context  # context tokens, then the tokens not yet fully emitted
        self._num_context = len(context)
        self._num_emitted_chars = 0  # of the pending tokens' text (before a held-back U+FFFD run)

    def _decode(self, token_ids: list[int]) -> str:
        return self._backend.decode(token_ids, skip_special_tokens=self._skip_special_tokens)

    def add(self, token_ids: Sequence[int]) -> str:
        if not token_ids:
            return ""
        self._window.extend(token_ids)
        new_text = self._pending_text()
        num_held = len(new_text) - len(new_text.rstrip(_REPLACEMENT_CHAR))
        if num_held == 0:
            return self._advance(new_text)
        stable_end = len(new_text) - num_held
        delta = new_text[self._num_emitted_chars : stable_end]
        self._num_emitted_chars = max(self._num_emitted_chars, stable_end)
        return delta

    def flush(self) -> str:
        if len(self._window) == self._num_context:
            return ""
        return self._advance(self._pending_text())

    def _pending_text(self) -> str:
        """What the pending tokens add to the context's text."""
        if self._context_text is None:
            self._context_text = self._decode(self._window[: self._num_context])
        return self._decode(self._window)[len(self._context_text) :]

    def _advance(self, new_text: str) -> str:
        """Emit the rest of ``new_text``; the pending tokens become the next context."""
        delta = new_text[self._num_emitted_chars :]
        self._window = self._window[self._num_context :]
        self._num_context = len(self._window)
        self._context_text = None
        self._num_emitted_chars = 0
        return delta


def _fast_decoder(tokenizer):
    """The Rust ``tokenizers.Tokenizer`` behind a Hugging Face fast tokenizer when its ``decode`` adds
    nothing to it (no clean-up of tokenization spaces): ten times cheaper per call than the Python
    wrapper. Otherwise the tokenizer itself."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return tokenizer
    return backend


class _StopMatcher:
    """Text in, text out, cut before (or after) the first stop string; never emits a stop string."""

    def __init__(self, stop: Sequence[str], include_stop_str_in_output: bool) -> None:
        self._stops = [s for s in dict.fromkeys(stop) if s]
        self._prefixes_by_last_char = _proper_prefixes_by_last_char(self._stops)
        self._include_stop = include_stop_str_in_output
        self._pending = ""  # received, not released: a suffix that may begin a stop string
        self._released: list[str] = []
        self.stop_str: str | None = None

    @property
    def released_text(self) -> str:
        return "".join(self._released)

    def feed(self, text: str) -> str:
        if self.stop_str is not None or not text:
            return ""
        self._pending += text
        match = self._first_match()
        if match is not None:
            start, self.stop_str = match
            end = start + len(self.stop_str) if self._include_stop else start
            return self._release(end)
        return self._release(len(self._pending) - self._num_partial_chars())

    def release_all(self) -> str:
        return self._release(len(self._pending))

    def _release(self, end: int) -> str:
        released, self._pending = self._pending[:end], self._pending[end:]
        if released:
            self._released.append(released)
        return released

    def _first_match(self) -> tuple[int, str] | None:
        """(start, stop string) of the match that ends first in the pending text (ties: starts first)."""
        best: tuple[int, int, str] | None = None
        for stop in self._stops:
            start = self._pending.find(stop)
            if start >= 0 and (best is None or (start + len(stop), start) < best[:2]):
                best = (start + len(stop), start, stop)
        return None if best is None else (best[1], best[2])

    def _num_partial_chars(self) -> int:
        """Length of the longest suffix of the pending text that is a proper prefix of a stop string."""
        if not self._pending:
            return 0
        for prefix in self._prefixes_by_last_char.get(self._pending[-1], ()):
            if self._pending.endswith(prefix):
                return len(prefix)
        return 0


def _proper_prefixes_by_last_char(stops: Sequence[str]) -> dict[str, list[str]]:
    """Every proper prefix of the stop strings, grouped by its last character, longest first."""
    groups: dict[str, set[str]] = {}
    for stop in stops:
        for length in range(1, len(stop)):
            groups.setdefault(stop[length - 1], set()).add(stop[:length])
    return {char: sorted(prefixes, key=len, reverse=True) for char, prefixes in groups.items()}
