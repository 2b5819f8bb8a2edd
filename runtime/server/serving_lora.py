"""Loading and unloading LoRA adapters at run time (SGLang's endpoints; `/v1/...` are vLLM's names).

    POST /load_lora_adapter    {"lora_name": "sql", "lora_path": "/adapters/sql" | "org/sql-lora", "pinned": false}
    POST /unload_lora_adapter  {"lora_name": "sql"}

`--lora-paths-file FILE` names a JSON list of load bodies ({"lora_name", "lora_path", "pinned"}) loaded
at start-up, after the engine and before the server listens, so a readiness probe passes only once
they are in (the operator writes this file from spec.adapters into a ConfigMap). A missing file is an
empty list; an adapter that fails to load is logged and skipped, and the server starts without it.

Loading a name that is loaded replaces it: requests already running finish on the old weights, new
ones get the new weights and never the old weights' prefix cache. Unloading refuses new requests for
the adapter at once and lets those in flight finish. A missing or malformed adapter, a rank above
--max-lora-rank or a target module not enabled is a 400 that says why; the server keeps serving.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from fleetserve.runtime.engine.lora.adapter import AdapterError, AdapterNotFoundError
from fleetserve.runtime.server.errors import APIError, bad_request, not_found
from fleetserve.runtime.server.state import ServerState, get_state
from fleetserve.runtime.wire import PATH_LOAD_LORA, PATH_UNLOAD_LORA

logger = logging.getLogger(__name__)

# SGLang's names first, then vLLM's aliases
LOAD_PATHS = (PATH_LOAD_LORA, f"/v1{PATH_LOAD_LORA}")
UNLOAD_PATHS = (PATH_UNLOAD_LORA, f"/v1{PATH_UNLOAD_LORA}")


class LoadLoRAAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    lora_name: str = Field(min_length=1, description="name requests use (`model: base:NAME` or `lora_path: NAME`)")
    lora_path: str = Field(min_length=1, description="local PEFT adapter directory or Hugging Face hub id")
    pinned: bool = Field(default=False, description="keep it in a device slot for good (SGLang)")


class UnloadLoRAAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    lora_name: str = Field(min_length=1)


class LoRAAdapterResponse(BaseModel):
    success: bool
    error_message: str
    loaded_adapters: dict[str, str] = Field(description="name -> path of every adapter loaded now")


def read_adapters_file(path: str | Path) -> list[LoadLoRAAdapterRequest]:
    """The adapters of a --lora-paths-file; [] when it does not exist. ValueError says what is wrong."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    try:
        entries = TypeAdapter(list[LoadLoRAAdapterRequest]).validate_python(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"--lora-paths-file {path}: not a JSON list of {{\"lora_name\", \"lora_path\"}} "
                         f"objects: {exc}") from exc
    names = [entry.lora_name for entry in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"--lora-paths-file {path}: an adapter name appears twice: {names}")
    return entries


async def load_startup_adapters(state: ServerState, entries: list[LoadLoRAAdapterRequest]) -> None:
    """Loads each adapter in turn; one that fails is logged and skipped (its loader will retry it)."""
    for entry in entries:
        try:
            _check_name(state, entry.lora_name)
            await state.engine.load_lora_adapter(entry.lora_name, entry.lora_path, entry.pinned)
        except (AdapterError, APIError) as exc:
            logger.warning("LoRA adapter %s from --lora-paths-file not loaded: %s", entry.lora_name, exc)


def _check_name(state: ServerState, name: str) -> None:
    if ":" in name or name in state.settings.served_model_names:
        raise bad_request(f"invalid LoRA adapter name {name!r}: it must not contain ':' nor be a served model name",
                          "lora_name")


async def load_lora_adapter(body: LoadLoRAAdapterRequest, request: Request) -> JSONResponse:
    state = get_state(request)
    _check_name(state, body.lora_name)
    try:
        await state.engine.load_lora_adapter(body.lora_name, body.lora_path, body.pinned)
    except AdapterError as exc:
        logger.warning("LoRA adapter %s not loaded: %s", body.lora_name, exc)
        raise bad_request(str(exc), "lora_path") from exc
    return _ok(state)


async def unload_lora_adapter(body: UnloadLoRAAdapterRequest, request: Request) -> JSONResponse:
    state = get_state(request)
    try:
        await state.engine.unload_lora_adapter(body.lora_name)
    except AdapterNotFoundError as exc:
        raise not_found(str(exc), "lora_name") from exc
    except AdapterError as exc:
        raise bad_request(str(exc), "lora_name") from exc
    return _ok(state)


def _ok(state: ServerState) -> JSONResponse:
    return JSONResponse({"success": True, "error_message": "", "loaded_adapters": state.engine.lora_adapters()})
