"""Operational endpoints: health, model and server info, cache flush, metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from importlib import metadata

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fleetserve.runtime.engine.types import EngineError, SamplingParams
from fleetserve.runtime.server.errors import APIError, bad_request
from fleetserve.runtime.server.generation import new_request_id
from fleetserve.runtime.server.state import ServerState, get_state
from fleetserve.runtime.server.streaming import aclose_shielded

logger = logging.getLogger(__name__)

HEALTH_GENERATE_TIMEOUT_S = 20.0


def fleetserve_version() -> str:
    try:
        return metadata.version("fleetserve")
    except metadata.PackageNotFoundError:
        return "unknown"


async def health(request: Request) -> Response:
    """200 while the engine is alive and, when it has work, finishing steps; else 503 with the reason, so
    Kubernetes restarts a pod whose engine died or hangs. /health_generate checks it end to end."""
    check = getattr(get_state(request).engine, "health", None)  # engines without one: healthy while up
    if check is not None:
        status = check()
        if not status.is_healthy:
            logger.error("unhealthy: %s", status.reason)
            raise APIError(503, f"the engine is unhealthy: {status.reason}")
    return Response(status_code=200)


async def _generate_one_token(state: ServerState) -> None:
    if getattr(state.engine, "is_embedding", False):  # an embedding model: one embedding instead
        await state.engine.embed([list(state.engine.tokenizer("ping")["input_ids"]) or [0]])
        return
    prompt = list(state.engine.tokenizer("ping", add_special_tokens=True)["input_ids"]) or [0]
    stream = state.engine.generate(new_request_id("health"), prompt, SamplingParams(max_tokens=1, temperature=0.0))
    try:
        async for output in stream:
            if output.finished:
                return
    finally:
        await aclose_shielded(stream)


async def health_generate(request: Request) -> Response:
    """200 once the engine produced one token (an embedding model: one embedding); 503 if it did not
    within the timeout."""
    state = get_state(request)
    try:
        await asyncio.wait_for(_generate_one_token(state), HEALTH_GENERATE_TIMEOUT_S)
    except (TimeoutError, EngineError) as exc:
        logger.warning("health_generate failed: %r", exc)
        raise APIError(503, f"the engine did not generate a token: {exc!r}") from exc
    return Response(status_code=200)


async def get_model_info(request: Request) -> JSONResponse:
    state = get_state(request)
    config = state.engine.model_config
    return JSONResponse({
        "model_path": state.settings.model_path,
        "tokenizer_path": state.settings.model_path,
        "served_model_name": state.settings.model_name,
        "is_generation": not getattr(state.engine, "is_embedding", False),
        "architecture": getattr(config, "architecture", None),
        "max_model_len": state.max_model_len,
        "vocab_size": state.vocab_size,
        "dtype": str(getattr(config, "dtype", "")).removeprefix("torch."),
        "reasoning_parser": state.settings.reasoning_parser,
    })


async def get_server_info(request: Request) -> JSONResponse:
    state = get_state(request)
    stats = state.engine.stats()
    return JSONResponse({
        "version": fleetserve_version(),
        "served_model_names": state.settings.served_model_names,
        "max_model_len": state.max_model_len,
        "uptime_s": round(time.time() - state.started_at, 3),
        "num_requests_in_flight": state.admission.num_in_flight,
        "engine": {**dataclasses.asdict(stats), "kv_cache_usage": stats.kv_cache_usage},
        "server_args": state.settings.server_args,
        "is_simulated": state.settings.simulation is not None,
        "simulation": state.settings.simulation,
    })


async def flush_cache(request: Request) -> JSONResponse:
    """Drop the prefix cache; refused (400, as in SGLang) while requests are in flight."""
    state = get_state(request)
    if not await state.engine.flush_cache():
        raise bad_request("cache not flushed: requests are in flight; retry when the server is idle")
    return JSONResponse({"success": True, "message": "cache flushed"})


async def metrics(request: Request) -> Response:
    state = get_state(request)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

