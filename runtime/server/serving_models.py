"""Model names: `GET /v1/models`, `GET /v1/models/{id}`, and resolving a request's `model`.

A request names one of the served names (`--served-model-name`, which may list several; the first
is the name reported in responses), says `default` (SGLang's docs and many clients send it), or
leaves `model` out. A LoRA adapter is chosen by `model: "name:adapter"` (SGLang), which wins, or
by `lora_path` (an adapter's name, or the path it was loaded from), or by `model: "adapter"` (vLLM
lists adapters as models). An adapter that is not loaded is a 404.
"""

from __future__ import annotations

from typing import NamedTuple

from fastapi import Request
from fastapi.responses import JSONResponse

from fleetserve.runtime.server.errors import not_found
from fleetserve.runtime.server.state import ServerState, get_state

DEFAULT_MODEL_ALIAS = "default"


class ModelTarget(NamedTuple):
    name: str  # reported as `model` in the response
    adapter: str | None  # the loaded adapter's name; None: the base model


def resolve_target(state: ServerState, model: str | None, lora_path: str | None = None) -> ModelTarget:
    """What a request's `model` (and `lora_path`) refer to; 404 for unknown models and adapters."""
    names = state.settings.served_model_names
    if model is None or model in names or model == DEFAULT_MODEL_ALIAS:
        if not lora_path:
            return ModelTarget(state.settings.model_name, None)
        return ModelTarget(state.settings.model_name, _adapter(state, lora_path))
    base, sep, suffix = model.rpartition(":")
    if sep and suffix and (base in names or base == DEFAULT_MODEL_ALIAS):
        return ModelTarget(model, _adapter(state, suffix))  # `base:adapter` wins over lora_path
    if _loaded(state) and state.engine.find_adapter(model) == model:
        return ModelTarget(model, model)
    raise not_found(f"the model '{model}' does not exist; served: {', '.join(names)}", "model")


def resolve_model(state: ServerState, model: str | None, lora_path: str | None = None) -> str:
    """The name a request's `model` refers to (reported in responses); 404 for unknown models and adapters."""
    return resolve_target(state, model, lora_path).name


def _loaded(state: ServerState) -> dict[str, str]:
    lora_adapters = getattr(state.engine, "lora_adapters", None)  # engines without LoRA (embeddings) lack it
    return lora_adapters() if lora_adapters is not None else {}


def _adapter(state: ServerState, ref: str) -> str:
    name = state.engine.find_adapter(ref) if _loaded(state) else None
    if name is None:
        loaded = ", ".join(_loaded(state)) or "none"
        raise not_found(f"the LoRA adapter '{ref}' does not exist: it is not loaded (loaded: {loaded})", "model")
    return name


def model_card(state: ServerState, name: str, root: str | None = None, parent: str | None = None) -> dict:
    """A model's card; a LoRA adapter's has its path as `root` and the base model as `parent` (vLLM's)."""
    return {
        "id": name,
        "object": "model",
        "created": int(state.started_at),
        "owned_by": "fleetserve",
        "root": root or state.settings.model_path,
        "parent": parent,
        "max_model_len": state.max_model_len,
    }


def _cards(state: ServerState) -> dict[str, dict]:
    cards = {name: model_card(state, name) for name in state.settings.served_model_names}
    for adapter, path in _loaded(state).items():
        cards.setdefault(adapter, model_card(state, adapter, path, state.settings.model_name))
    return cards


async def list_models(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": list(_cards(get_state(request)).values())})


async def retrieve_model(model_id: str, request: Request) -> JSONResponse:
    card = _cards(get_state(request)).get(model_id)
    if card is None:
        raise not_found(f"the model '{model_id}' does not exist", "model")
    return JSONResponse(card)
