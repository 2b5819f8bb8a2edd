"""What a router needs from a worker: `GET /routing_info` (static) and `GET /cache_state` (changes).

The contract is in `wire.py` and docs/router.md ("Routing contract"). `/routing_info` carries the
tokenizer, chat template and page size, so a router computes the same prompt token ids as this
server and from them the same chained block hashes as the page pool; `/cache_state` tells which of
those blocks the prefix cache holds now (a snapshot, or the changes after an event number), the
adapters loaded and the queue lengths.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse

from fleetserve.runtime.server.state import ServerState, get_state
from fleetserve.runtime.wire import BLOCK_HASH_SCHEME, hash_hex

logger = logging.getLogger(__name__)


def loaded_adapters(state: ServerState) -> list[str]:
    """The LoRA adapters loaded now (their blocks are hashed in their own namespace)."""
    return sorted(state.engine.lora_adapters())


def tokenizer_json(tokenizer: Any) -> str | None:
    """The tokenizer as `tokenizer.json` text (fast tokenizers only), which `tokenizers` can load."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend.to_str() if backend is not None else None


def adds_bos(tokenizer: Any) -> bool:
    """Whether encoding a completion prompt (with special tokens) puts the BOS token first."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def build_routing_info(state: ServerState) -> dict[str, Any]:
    tokenizer = state.engine.tokenizer
    return {
        "model": state.settings.model_name,
        "page_size": state.engine.stats().page_size,
        "hash_scheme": BLOCK_HASH_SCHEME,
        "max_model_len": state.max_model_len,
        "is_simulated": state.settings.simulation is not None,
        "tokenizer": tokenizer_json(tokenizer),
        "chat_template": state.settings.chat_template or getattr(tokenizer, "chat_template", None),
        "special_tokens": {"bos_token": getattr(tokenizer, "bos_token", None),
                           "eos_token": getattr(tokenizer, "eos_token", None)},
        "add_bos": adds_bos(tokenizer),
    }


async def routing_info(request: Request) -> JSONResponse:
    """Static for the life of the process: built once (the tokenizer JSON is large), then reused."""
    app_state = request.app.state
    info = getattr(app_state, "routing_info", None)
    if info is None:
        info = app_state.routing_info = build_routing_info(get_state(request))
    return JSONResponse(info)


# Digits only: a lax integer would also take "0.0" or "1e3", which no client means as an event number.
EVENT_NUMBER = r"^[0-9]{1,18}$"


async def cache_state(request: Request, epoch: str | None = Query(None, max_length=64),
                      after: str | None = Query(None, pattern=EVENT_NUMBER,
                                                description="a non-negative event number")) -> JSONResponse:
    """The blocks cached now (`snapshot`) or the changes after event `after` of `epoch`."""
    state = get_state(request)
    cache = state.engine.cache_state(epoch, None if after is None else int(after))
    stats = state.engine.stats()
    return JSONResponse({
        "epoch": cache.epoch,
        "seq": cache.seq,
        "snapshot": None if cache.snapshot is None else [hash_hex(h) for h in cache.snapshot],
        "stored": [hash_hex(h) for h in cache.stored],
        "removed": [hash_hex(h) for h in cache.removed],
        "adapters": loaded_adapters(state),
        "num_running": stats.num_running,
        "num_waiting": stats.num_waiting,
        "max_running_requests": state.settings.max_running_requests,  # the batch cap: what runs at once
    })
