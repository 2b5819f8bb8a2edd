"""Renders a chat template the way transformers' `apply_chat_template(tokenize=False)` does.

Torch- and transformers-free: a Jinja sandbox with `trim_blocks`/`lstrip_blocks` and loop controls,
a `tojson` filter that keeps non-ASCII text, `raise_exception` and `strftime_now`, the tokenizer's
special tokens as variables, and `continue_final_message` cutting the prompt after the last
message's content. Messages are shaped as the worker shapes them (runtime/server/chat_template.py):
text parts joined by newlines, `developer` read as `system`.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

MESSAGE_KEYS = ("name", "tool_calls", "tool_call_id", "reasoning_content")
RESERVED_KWARGS = ("conversation", "tokenize", "chat_template", "tools", "return_dict",
                   "add_generation_prompt", "continue_final_message")


class TemplateRefused(ValueError):
    """The template raised, or the messages cannot be rendered."""


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def message_text(content: Any) -> str | None:
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content


def shape_message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    out: dict[str, Any] = {"role": "system" if role == "developer" else role,
                           "content": message_text(message.get("content"))}
    for key in MESSAGE_KEYS:
        if message.get(key) is not None:
            out[key] = message[key]
    return out


def _cut_after_final(text: str, final: str) -> str:
    stripped = final.strip()
    if not stripped or stripped not in text:
        raise TemplateRefused("continue_final_message: the final message is not in the rendered prompt")
    at = text.rindex(stripped)
    if text[at : at + len(final.lstrip())] == final.lstrip():
        return text[: at + len(final.lstrip())]
    return text[: at + len(stripped)]


def render_chat(source: str, body: dict[str, Any], special_tokens: dict[str, str | None]) -> str:
    """The prompt text a worker renders for this /v1/chat/completions body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise TemplateRefused("messages must be a non-empty list of objects")
    kwargs = dict(body.get("chat_template_kwargs") or {})
    for reserved in RESERVED_KWARGS:
        kwargs.pop(reserved, None)
    add_generation_prompt = bool(body.get("add_generation_prompt", True))
    continue_final = bool(body.get("continue_final_message", False))
    chat = [shape_message(m) for m in messages]
    variables = {k: v for k, v in special_tokens.items() if v is not None}
    try:
        text = compile_template(source).render(
            messages=chat, tools=body.get("tools"), documents=None,
            add_generation_prompt=add_generation_prompt, **{**variables, **kwargs},
        )
    except (jinja2.TemplateError, TypeError, ValueError) as exc:
        raise TemplateRefused(str(exc)) from exc
    if continue_final:
        text = _cut_after_final(text, chat[-1]["content"] or "")
    return text
