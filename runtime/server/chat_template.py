"""Chat messages -> prompt text -> token ids, with the tokenizer's template or `--chat-template`.

`--chat-template` is a file path or an inline Jinja template. Text content parts are joined with
newlines before rendering (most templates expect string content). A template that refuses the
conversation (`raise_exception(...)`, a Jinja error) is the client's 400, with the template's message.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jinja2

from fleetserve.runtime.server.errors import bad_request
from fleetserve.runtime.server.protocol import ChatCompletionRequest, ChatMessage

logger = logging.getLogger(__name__)


def load_chat_template(value: str | None) -> str | None:
    """The template text of a `--chat-template` value (a file, or inline Jinja)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    if "{{" in value or "{%" in value:
        return value
    raise ValueError(f"--chat-template {value!r} is neither a file nor a Jinja template")


def message_dict(message: ChatMessage) -> dict[str, Any]:
    """What the template sees of one message; `developer` is OpenAI's newer name for `system`."""
    out: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role,
                           "content": message.text()}
    for key in ("name", "tool_calls", "tool_call_id", "reasoning_content"):
        value = getattr(message, key)
        if value is not None:
            out[key] = value
    return out


class ChatRenderer:
    def __init__(self, tokenizer: Any, template: str | None = None):
        self.tokenizer = tokenizer
        self.template = template
        if template is None and not getattr(tokenizer, "chat_template", None):
            logger.warning("the tokenizer has no chat template and --chat-template is not set: "
                           "/v1/chat/completions will answer 400")

    @property
    def has_template(self) -> bool:
        return self.template is not None or bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, request: ChatCompletionRequest) -> str:
        if not self.has_template:
            raise bad_request("this model has no chat template; start the server with --chat-template")
        kwargs = dict(request.chat_template_kwargs or {})
        for reserved in ("conversation", "tokenize", "chat_template", "tools", "return_dict",
                         "add_generation_prompt", "continue_final_message"):
            kwargs.pop(reserved, None)
        kwargs["add_generation_prompt"] = request.add_generation_prompt
        kwargs["continue_final_message"] = request.continue_final_message
        messages = [message_dict(m) for m in request.messages]
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tools=request.tools, chat_template=self.template, tokenize=False, **kwargs
            )
        except jinja2.TemplateError as exc:
            raise bad_request(f"the chat template refused the messages: {exc}", "messages") from exc
        except (TypeError, ValueError) as exc:
            raise bad_request(f"the chat template could not be applied: {exc}", "chat_template_kwargs") from exc
        if not isinstance(text, str):  # some tokenizers return a list for batched input
            raise bad_request("the chat template did not produce a single prompt", "messages")
        return text

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a rendered chat prompt (the template already carries any BOS)."""
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
