"""`build_app(state)`: the one place the FastAPI app is wired (routes, errors, auth, lifespan)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from fleetserve.runtime.server import responses as r
from fleetserve.runtime.server import serving_lora as lora
from fleetserve.runtime.server import serving_ops as ops
from fleetserve.runtime.server import serving_routing as routing
from fleetserve.runtime.server.auth import APIKeyMiddleware
from fleetserve.runtime.server.errors import install_error_handlers
from fleetserve.runtime.server.serving_chat import create_chat_completion
from fleetserve.runtime.server.serving_completions import create_completion
from fleetserve.runtime.server.serving_embeddings import EmbeddingResponse, create_embeddings
from fleetserve.runtime.server.serving_models import list_models, retrieve_model
from fleetserve.runtime.server.shutdown import QuietShutdown
from fleetserve.runtime.server.state import ServerState
from fleetserve.runtime.wire import PATH_CACHE_STATE, PATH_HEALTH, PATH_METRICS, PATH_ROUTING_INFO

logger = logging.getLogger(__name__)

_ERROR_STATUSES = {400: "invalid request", 401: "missing or wrong API key", 404: "unknown model",
                   500: "server fault", 503: "queue full or engine unavailable"}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": r.ErrorResponse, "description": text} for status, text in _ERROR_STATUSES.items()
}
SSE_EVENT = {  # one server-sent event; `data` is a JSON chunk (see responses.py) or `[DONE]`
    "type": "object",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}},
    "required": ["data"],
}
SSE_OK: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
          "description": "JSON, or server-sent events ending with `data: [DONE]` when `stream` is true"}
}
EMPTY_OK: dict[int | str, dict[str, Any]] = {200: {"description": "OK", "content": None}}


def _routes() -> list[tuple[str, str, Callable, Any, dict]]:
    """(method, path, handler, response model, extra documented responses)."""
    return [
        ("POST", "/v1/chat/completions", create_chat_completion, r.ChatCompletionResponse, SSE_OK),
        ("POST", "/v1/completions", create_completion, r.CompletionResponse, SSE_OK),
        ("POST", "/v1/embeddings", create_embeddings, EmbeddingResponse, {}),
        ("GET", "/v1/models", list_models, r.ModelList, {}),
        ("GET", "/v1/models/{model_id:path}", retrieve_model, r.ModelCard, {}),
        ("GET", PATH_HEALTH, ops.health, None, EMPTY_OK),
        ("GET", "/health_generate", ops.health_generate, None, EMPTY_OK),
        ("GET", "/get_model_info", ops.get_model_info, r.ModelInfo, {}),
        ("GET", "/get_server_info", ops.get_server_info, r.ServerInfo, {}),
        ("POST", "/flush_cache", ops.flush_cache, r.FlushCacheResponse, {}),
        *[("POST", path, lora.load_lora_adapter, lora.LoRAAdapterResponse, {}) for path in lora.LOAD_PATHS],
        *[("POST", path, lora.unload_lora_adapter, lora.LoRAAdapterResponse, {}) for path in lora.UNLOAD_PATHS],
        ("GET", PATH_ROUTING_INFO, routing.routing_info, None, {}),
        ("GET", PATH_CACHE_STATE, routing.cache_state, None, {}),
        ("GET", PATH_METRICS, ops.metrics, None,
         {200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}}),
    ]


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document without FastAPI's 422 (validation errors are 400s in the error shape)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                 description=app.description)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    return build


def build_app(state: ServerState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.engine.start()
        if state.settings.lora_paths_file:  # before uvicorn binds its socket: not ready until they are in
            await lora.load_startup_adapters(state, lora.read_adapters_file(state.settings.lora_paths_file))
        try:
            yield
        finally:
            logger.info("shutting down the engine")
            await state.engine.shutdown()

    app = FastAPI(title="fleetserve", version=ops.fleetserve_version(), lifespan=lifespan,
                  description="OpenAI-compatible API of the fleetserve runtime (SGLang's API).")
    app.state.fleetserve = state
    for method, path, handler, model, extra in _routes():
        responses = {**ERRORS, **extra}
        app.add_api_route(path, handler, methods=[method], response_model=model, responses=responses)
    install_error_handlers(app)
    if state.settings.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=state.settings.api_key)
    app.add_middleware(QuietShutdown)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app
