"""Model names: `GET /v1/models`, `GET /v1/models/{id}`, and resolving a request's `model`.

A request names one of the served names (`--served-model-name`, which may list several; the first
is the name reported in responses), says `default` (SGLang's docs and many clients send it), or
leaves `model` out. `name:adapter` and `lora_path` select a LoRA adapter; LoRA serving is not
implemented yet, so any adapter is a 404 "not found".
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from fleetserve.runtime.server.errors import not_found
from fleetserve.runtime.server.state import ServerState, get_state

DEFAULT_MODEL_ALIAS = "default"


def resolve_model(state: ServerState, model: str | None, lora_path: str | None = None) -> str:
    """The served name a request's `model` refers to; 404 for unknown models and adapters."""
    names = state.settings.served_model_names
    adapter = None
    if model is None or model in names or model == DEFAULT_MODEL_ALIAS:
        adapter = lora_path
    else:
        base, sep, suffix = model.rpartition(":")
        if not sep or (base not in names and base != DEFAULT_MODEL_ALIAS) or not suffix:
            raise not_found(f"the model '{model}' does not exist; served: {', '.join(names)}", "model")
        adapter = suffix  # `base:adapter` wins over lora_path
    if adapter:
        raise not_found(f"the LoRA adapter '{adapter}' does not exist (no adapters are loaded)", "model")
    return state.settings.model_name


def model_card(state: ServerState, name: str) -> dict:
    return {
        "id": name,
        "object": "model",
        "created": int(state.started_at),
        "owned_by": "fleetserve",
        "root": state.settings.model_path,
        "parent": None,
        "max_model_len": state.max_model_len,
    }


async def list_models(request: Request) -> JSONResponse:
    state = get_state(request)
    cards = [model_card(state, name) for name in state.settings.served_model_names]
    return JSONResponse({"object": "list", "data": cards})


async def retrieve_model(model_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    if model_id not in state.settings.served_model_names:
        raise not_found(f"the model '{model_id}' does not exist", "model")
    return JSONResponse(model_card(state, model_id))
