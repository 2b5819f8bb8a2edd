"""Drive a workload against a server: warm-up, arrival times (Poisson or all at once), a concurrency
cap, and a progress bar. Then resolve each result's output token count."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple

import httpx
import numpy as np
from tqdm import tqdm

from fleetserve.runtime.bench.client import EndpointConfig, RequestResult, send_request
from fleetserve.runtime.bench.tokenizer import TokenizerLike, count_tokens
from fleetserve.runtime.bench.workloads import BenchRequest

# Connections kept open when there is no concurrency cap (every request may be in flight at once).
UNCAPPED_CONNECTIONS = 1024
CONNECT_TIMEOUT_S = 30.0


@dataclass(slots=True)
class LoadShape:
    request_rate: float = math.inf  # requests per second, Poisson arrivals; inf sends all at once
    max_concurrency: int | None = None  # requests in flight at most
    request_timeout_s: float = 600.0  # longest wait for any byte of a response, not the whole request
    show_progress: bool = True


class RunOutcome(NamedTuple):
    results: list[RequestResult]
    duration_s: float  # first send to last completion


def arrival_offsets(num_requests: int, request_rate: float, rng: np.random.Generator) -> list[float]:
    """Send times in seconds after the start: exponential gaps (a Poisson process) of mean 1/rate; the
    first request goes at once. All zeros for an infinite rate."""
    if request_rate <= 0:
        raise ValueError(f"request rate must be positive, got {request_rate}")
    if math.isinf(request_rate) or num_requests == 0:
        return [0.0] * num_requests
    gaps = rng.exponential(1.0 / request_rate, size=num_requests - 1)
    return [0.0, *np.cumsum(gaps).tolist()]


def make_client(shape: LoadShape, num_requests: int) -> httpx.AsyncClient:
    connections = shape.max_concurrency or min(num_requests, UNCAPPED_CONNECTIONS) or 1
    return httpx.AsyncClient(
        timeout=httpx.Timeout(shape.request_timeout_s, connect=CONNECT_TIMEOUT_S),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def run_requests(
    config: EndpointConfig, requests: list[BenchRequest], shape: LoadShape, rng: np.random.Generator
) -> RunOutcome:
    offsets = arrival_offsets(len(requests), shape.request_rate, rng)
    limiter = asyncio.Semaphore(shape.max_concurrency) if shape.max_concurrency else None
    progress = tqdm(total=len(requests), file=sys.stderr, disable=not shape.show_progress, unit="req")
    async with make_client(shape, len(requests)) as client:

        async def one(request: BenchRequest) -> RequestResult:
            async with limiter if limiter is not None else contextlib.nullcontext():
                result = await send_request(client, config, request)
            progress.update(1)
            return result

        start = time.perf_counter()
        tasks = []
        for request, offset in zip(requests, offsets, strict=True):
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(request)))
        results = await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    progress.close()
    return RunOutcome(list(results), duration)


async def run_warmup(config: EndpointConfig, requests: list[BenchRequest], shape: LoadShape) -> list[str]:
    """Send the warm-up requests (at the run's concurrency, all at once); returns their errors."""
    quiet = LoadShape(math.inf, shape.max_concurrency, shape.request_timeout_s, show_progress=False)
    outcome = await run_requests(config, requests, quiet, np.random.default_rng())
    return [r.error or "unknown error" for r in outcome.results if not r.is_success]


def resolve_output_tokens(results: list[RequestResult], tokenizer: TokenizerLike) -> None:
    """Output tokens of each successful request: the server's usage figure when it sent one, else the
    generated text re-tokenized."""
    for result in results:
        if not result.is_success:
            continue
        if result.usage_output_tokens is not None:
            result.output_tokens = result.usage_output_tokens
        else:
            result.output_tokens = count_tokens(tokenizer, result.generated_text)
