"""Reasoning separation (`--reasoning-parser`): split `<think>…</think>` from the answer.

One incremental parser serves both the streaming and the non-streaming path (the latter feeds the
whole text at once), so the two always agree. Rules:

- Output starts in *reasoning* when the format forces it (deepseek-r1, qwen3-thinking: text before
  `</think>` is reasoning even without an opening tag) or when the rendered prompt already ends with
  `<think>` (templates that open the block themselves). Otherwise it starts *undecided*: if the first
  non-whitespace text is `<think>`, reasoning begins; anything else makes the whole output content.
- `</think>` ends reasoning; whitespace right after `<think>`, right before `</think>` and right after
  `</think>` is dropped. Reasoning that never closes (max_tokens reached) stays reasoning.
- Tags split across deltas are held back until they can be decided.
- With reasoning disabled in the chat template (qwen3 `enable_thinking: false`, deepseek-v3 without
  `thinking: true`), no parsing happens and everything is content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

THINK_START = "<think>"
THINK_END = "</think>"


@dataclass(frozen=True, slots=True)
class ReasoningFormat:
    name: str
    force_reasoning: bool  # output is reasoning until </think>, opening tag or not
    template_switch: str | None = None  # chat_template_kwargs key that turns thinking on/off
    switch_default: bool = True


REASONING_FORMATS: dict[str, ReasoningFormat] = {
    "qwen3": ReasoningFormat("qwen3", force_reasoning=False, template_switch="enable_thinking"),
    "qwen3-thinking": ReasoningFormat("qwen3-thinking", force_reasoning=True),
    "deepseek-r1": ReasoningFormat("deepseek-r1", force_reasoning=True),
    "deepseek-v3": ReasoningFormat("deepseek-v3", force_reasoning=False, template_switch="thinking",
                                   switch_default=False),
}


def is_thinking_enabled(fmt: ReasoningFormat, chat_template_kwargs: dict[str, Any] | None) -> bool:
    if fmt.template_switch is None:
        return True
    return bool((chat_template_kwargs or {}).get(fmt.template_switch, fmt.switch_default))


class Split(NamedTuple):
    reasoning: str
    content: str


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ReasoningParser:
    """Feed text deltas; get (reasoning delta, content delta) pairs back."""

    def __init__(self, fmt: ReasoningFormat, prompt_opens_reasoning: bool = False):
        in_reasoning = fmt.force_reasoning or prompt_opens_reasoning
        self.phase: Literal["undecided", "reasoning", "content"] = "reasoning" if in_reasoning else "undecided"
        self.allow_open_tag = in_reasoning  # a forced block may still start with a redundant <think>
        self.strip_leading = in_reasoning
        self.buffer = ""
        self.saw_reasoning = in_reasoning

    def feed(self, text: str) -> Split:
        self.buffer += text
        reasoning: list[str] = []
        content: list[str] = []
        while self.buffer and self._step(reasoning, content):
            pass
        return Split("".join(reasoning), "".join(content))

    def finish(self) -> Split:
        """Flush what was held back at the end of the output."""
        text, self.buffer = self.buffer, ""
        if self.phase == "reasoning":
            return Split(text.strip() if self.strip_leading else text.rstrip(), "")
        if self.phase == "content" and self.strip_leading:
            text = text.lstrip()
        return Split("", text)

    def _step(self, reasoning: list[str], content: list[str]) -> bool:
        """Consume what can be decided; False when the rest must wait for more text."""
        if self.phase == "undecided":
            return self._step_undecided(content)
        if self.strip_leading:
            self.buffer = self.buffer.lstrip()
            if not self.buffer:
                return False
            if self.phase == "reasoning" and self.allow_open_tag:
                if THINK_START.startswith(self.buffer) and self.buffer != THINK_START:
                    return False
                self.allow_open_tag = False
                if self.buffer.startswith(THINK_START):
                    self.buffer = self.buffer[len(THINK_START):]
                    return True
            self.strip_leading = False
        if self.phase == "content":
            content.append(self.buffer)
            self.buffer = ""
            return False
        return self._step_reasoning(reasoning)

    def _step_undecided(self, content: list[str]) -> bool:
        head = self.buffer.lstrip()
        if not head or (THINK_START.startswith(head) and head != THINK_START):
            return False
        if head.startswith(THINK_START):
            self.phase, self.strip_leading, self.saw_reasoning = "reasoning", True, True
            self.buffer = head[len(THINK_START):]
            return True
        self.phase = "content"
        content.append(self.buffer)
        self.buffer = ""
        return False

    def _step_reasoning(self, reasoning: list[str]) -> bool:
        end = self.buffer.find(THINK_END)
        if end >= 0:
            reasoning.append(self.buffer[:end].rstrip())
            self.buffer = self.buffer[end + len(THINK_END):]
            self.phase, self.strip_leading = "content", True
            return True
        held = _partial_tag_suffix(self.buffer, THINK_END)
        ready = self.buffer[: len(self.buffer) - held]
        emit = ready.rstrip()  # trailing whitespace waits: it is dropped if </think> follows
        reasoning.append(emit)
        self.buffer = ready[len(emit):] + self.buffer[len(ready):]
        return False


def split_reasoning(fmt: ReasoningFormat, text: str, prompt_opens_reasoning: bool = False) -> tuple[str | None, str]:
    """Non-streaming: (reasoning_content or None, content) of a whole output."""
    parser = ReasoningParser(fmt, prompt_opens_reasoning)
    first, last = parser.feed(text), parser.finish()
    reasoning = first.reasoning + last.reasoning
    return (reasoning if parser.saw_reasoning and reasoning else None), first.content + last.content
