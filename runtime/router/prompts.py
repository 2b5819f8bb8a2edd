"""Request body -> routing key: the token ids the worker will compute, in page-aligned blocks.

The tokenizer, chat template and special tokens come from a worker's GET /routing_info or from a
local model directory (`--tokenizer-path`). Chat requests are rendered with the template
(generation prompt, `chat_template_kwargs`) and tokenized without special tokens, as the worker
does; completion prompts are tokenized with them (string prompts) or taken as given (token ids).
A request the router cannot turn into tokens (no tokenizer, a template that refuses it) is still
routed, on a text key or none at all: the worker is the one that answers 400.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from fleetserve.runtime.router.chat_template import TemplateRefused, render_chat
from fleetserve.runtime.router.keys import RequestKey, empty_key, text_key, token_key

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ALIAS = "default"
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def requested_adapter(body: dict[str, Any], served_names: AbstractSet[str],
                      known_adapters: AbstractSet[str] = frozenset()) -> str | None:
    """The LoRA adapter a request asks for, resolved as the worker resolves it (serving_models.py).

    `model: "base:adapter"` wins over `lora_path`; `model: "adapter"` (vLLM lists adapters as models)
    when some worker has that adapter; a `model` equal to a served name or `default` is the base model
    even if it contains a colon. `lora_path` may also be the path an adapter was loaded from: the
    router cannot map that to a name (see `is_adapter_path`).
    """
    model = body.get("model")
    lora_path = body.get("lora_path")
    lora = lora_path if isinstance(lora_path, str) and lora_path else None
    if not isinstance(model, str) or model in served_names or model == DEFAULT_MODEL_ALIAS:
        return lora
    base, sep, suffix = model.rpartition(":")
    if sep and suffix and (base in served_names or base == DEFAULT_MODEL_ALIAS or suffix in known_adapters
                           or not served_names):
        return suffix
    if model in known_adapters:
        return model
    return lora


def is_adapter_path(ref: str) -> bool:
    """A `lora_path` that names a folder, not an adapter: routed without the adapter filter."""
    return "/" in ref


@dataclass(slots=True)
class PromptEncoder:
    tokenizer: Tokenizer
    page_size: int
    chat_template: str | None = None
    special_tokens: dict[str, str | None] | None = None
    add_bos: bool = False
    model: str | None = None

    @classmethod
    def from_routing_info(cls, info: dict[str, Any]) -> PromptEncoder:
        tokenizer = Tokenizer.from_str(info["tokenizer"])
        return cls(tokenizer, int(info["page_size"]), info.get("chat_template"),
                   dict(info.get("special_tokens") or {}), bool(info.get("add_bos", False)), info.get("model"))

    @classmethod
    def from_directory(cls, path: str | Path, page_size: int) -> PromptEncoder:
        """A Hugging Face model folder: tokenizer.json, tokenizer_config.json (and chat_template.jinja)."""
        folder = Path(path)
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        template = config.get("chat_template")
        jinja_path = folder / "chat_template.jinja"
        if template is None and jinja_path.is_file():
            template = jinja_path.read_text(encoding="utf-8")
        if isinstance(template, list):  # named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        special = {name: token_text(config.get(name)) for name in SPECIAL_TOKEN_NAMES}
        return cls(tokenizer, page_size, template, special, bool(config.get("add_bos_token", False)))

    @property
    def bos_id(self) -> int | None:
        bos = (self.special_tokens or {}).get("bos_token")
        return self.tokenizer.token_to_id(bos) if bos else None

    def chat_ids(self, body: dict[str, Any]) -> list[int]:
        if not self.chat_template:
            raise TemplateRefused("no chat template")
        text = render_chat(self.chat_template, body, self.special_tokens or {})
        return self.encode(text, add_special_tokens=False)

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        # encode_batch releases the GIL while the Rust tokenizer works (encode does not)
        return self.tokenizer.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids

    def text_ids(self, text: str) -> list[int]:
        ids = self.encode(text, add_special_tokens=True)
        bos = self.bos_id
        if self.add_bos and bos is not None and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        return ids


def first_prompt(body: dict[str, Any], field: str) -> str | list[int] | None:
    """The first prompt of a completions/embeddings body (the one the key is computed for)."""
    prompt = body.get(field)
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        head = prompt[0]
        if isinstance(head, int) and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        if isinstance(head, str):
            return head
        if isinstance(head, list) and all(isinstance(t, int) for t in head):
            return list(head)
    return None


def chat_text(body: dict[str, Any]) -> str:
    """The conversation as text, for the text fallback key (no template available)."""
    parts = []
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, list):
                content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            parts.append(f"{message.get('role')}\n{content}\n")
    return "".join(parts)


def request_key(kind: str, body: dict[str, Any], encoder: PromptEncoder | None, adapter: str | None) -> RequestKey:
    """The routing key of a chat/completion/embedding body; never raises."""
    try:
        if kind == "chat":
            if encoder is not None and encoder.chat_template:
                return token_key(encoder.chat_ids(body), encoder.page_size, adapter)
            return text_key(chat_text(body), adapter)
        prompt = first_prompt(body, "input" if kind == "embeddings" else "prompt")
        if prompt is None:
            return empty_key(adapter)
        if isinstance(prompt, list):
            page_size = encoder.page_size if encoder is not None else 16
            return token_key(prompt, page_size, adapter)
        if encoder is not None:
            return token_key(encoder.text_ids(prompt), encoder.page_size, adapter)
        return text_key(prompt, adapter)
    except TemplateRefused as exc:
        logger.debug("no routing key: %s", exc)
        return empty_key(adapter)
