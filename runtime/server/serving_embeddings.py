"""`POST /v1/embeddings`: inputs (text or token ids, one or many) -> the embedding engine -> vectors.

Every check that can be a 400 happens before the request is admitted: a generation model refuses the
endpoint, an empty input, a token id outside the vocabulary, an input over the model's maximum length
(unless `truncate_prompt_tokens` asks for truncation), `dimensions` on a model without Matryoshka
support. Text is tokenized as sentence-transformers prepares it (inputs.py: special tokens, the chat
template where the checkpoint asks for it, the tokenizer's truncation side); token-id inputs are used as
given. All inputs of a request go to the engine in one
call, and the engine batches concurrent requests into shared forwards.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any, Literal

import numpy as np
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from fleetserve.runtime.engine.embedding.inputs import tokenize_texts, truncate
from fleetserve.runtime.engine.embedding.pooling import truncate_dimensions
from fleetserve.runtime.server.errors import bad_request
from fleetserve.runtime.server.protocol import EmbeddingRequest
from fleetserve.runtime.server.serving_models import resolve_model
from fleetserve.runtime.server.state import ServerState, get_state
from fleetserve.runtime.server.streaming import (
    CLIENT_CLOSED_REQUEST,
    ClientDisconnected,
    run_unless_disconnected,
)

logger = logging.getLogger(__name__)


class EmbeddingData(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # a base64 string of little-endian float32 with encoding_format=base64


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


def is_embedding_server(state: ServerState) -> bool:
    return bool(getattr(state.engine, "is_embedding", False))


def _inputs(body: EmbeddingRequest) -> list[str | list[int]]:
    value = body.input
    if isinstance(value, str):
        return [value]
    if value and isinstance(value[0], int):
        return [list(value)]
    return list(value)


def _truncation(state: ServerState, body: EmbeddingRequest) -> int | None:
    """The length inputs are cut to, or None (then a longer input is a 400)."""
    k, limit = body.truncate_prompt_tokens, state.max_model_len
    if k is None:
        return None
    if k == -1:
        return limit
    if k > limit:
        raise bad_request(f"truncate_prompt_tokens ({k}) is larger than this model's maximum input length "
                          f"({limit} tokens)", "truncate_prompt_tokens")
    return k


def tokenize_inputs(state: ServerState, body: EmbeddingRequest) -> list[list[int]]:
    """Token ids of every input, checked and (when asked) truncated; raises 400s."""
    inputs = _inputs(body)
    if not inputs:
        raise bad_request("input is empty", "input")
    for index, item in enumerate(inputs):
        if len(item) == 0:
            raise bad_request(f"input[{index}] is empty" if len(inputs) > 1 else "input is empty", "input")
    cut = _truncation(state, body)
    tokenizer, engine = state.engine.tokenizer, state.engine
    texts = [(i, x) for i, x in enumerate(inputs) if isinstance(x, str)]
    ids: list[list[int]] = [[] for _ in inputs]
    if texts:
        encoded = tokenize_texts(tokenizer, [x for _, x in texts], engine.message_format, cut)
        for (i, _), tokens in zip(texts, encoded, strict=True):
            ids[i] = tokens
    vocab, side = state.vocab_size, getattr(tokenizer, "truncation_side", "right")
    for i, x in enumerate(inputs):
        if isinstance(x, str):
            continue
        bad = [t for t in x if t >= vocab]
        if bad:
            raise bad_request(f"input[{i}] has token id {bad[0]} outside the vocabulary (0..{vocab - 1})", "input")
        ids[i] = x if cut is None else truncate(x, cut, side)
    limit = state.max_model_len
    for i, tokens in enumerate(ids):
        if len(tokens) > limit:
            raise bad_request(f"input[{i}] has {len(tokens)} tokens; this model's maximum input length is {limit} "
                              "tokens (set truncate_prompt_tokens to truncate)", "input")
    return ids


def _check_dimensions(state: ServerState, dimensions: int | None) -> None:
    if dimensions is None:
        return
    spec, size = state.engine.spec, state.engine.model_config.hidden_size
    reason = spec.check_dimensions(dimensions, size)
    if reason is not None:
        raise bad_request(reason, "dimensions")


def _encode(vector: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


async def create_embeddings(body: EmbeddingRequest, request: Request) -> Response:
    state = get_state(request)
    if not is_embedding_server(state):
        raise bad_request(f"model '{body.model or state.settings.model_name}' does not support embeddings; "
                          "it is a generation model", "model")
    model = resolve_model(state, body.model)
    _check_dimensions(state, body.dimensions)
    inputs = tokenize_inputs(state, body)
    ticket = state.admission.admit(len(inputs))
    tracker = state.metrics.track()
    finished = False
    try:
        result = await run_unless_disconnected(request, state.engine.embed(inputs))
        finished = True
    except ClientDisconnected:
        logger.info("client went away; dropped its %d embedding inputs", len(inputs))
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    finally:
        ticket.release()
        _record(tracker, inputs, finished, result.queue_time if finished else None)
    vectors = result.vectors
    if body.dimensions is not None:
        vectors = truncate_dimensions(vectors, body.dimensions)
    num_tokens = sum(len(x) for x in inputs)
    return JSONResponse({
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                 for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": num_tokens, "total_tokens": num_tokens},
    })


def _record(tracker: Any, inputs: list[list[int]], finished: bool, queue_time: float | None) -> None:
    """Metrics as for generation: prompt tokens, e2e latency, queue time, one `stop` per input served."""
    b = tracker.b
    b.e2e.observe(time.perf_counter() - tracker.arrival)
    if queue_time is not None:
        b.queue_time.observe(queue_time)
    if finished:
        b.prompt_tokens.inc(sum(len(x) for x in inputs))
    b.metrics.request_success.labels(b.metrics.model_name, "stop" if finished else "abort").inc(
        len(inputs) if finished else 1)
