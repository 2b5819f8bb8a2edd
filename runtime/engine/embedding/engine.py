"""The embedding engine's asyncio face: requests queue up, the torch thread embeds them in batches.

`embed(inputs)` enqueues a request's token-id lists and awaits their vectors. The engine's thread (the
one that loaded the model: torch_thread.py says why it must be one) loops: take every queued input up
to the token budget (batcher.py), run one forward over all of them, hand each finished request its
vectors on the event loop. While a forward runs new requests queue up, so under concurrency a forward
carries many requests — never one forward per request. A request whose caller went away is dropped
before its forward.

It answers the parts of the server's engine interface that make sense for it (stats, flush) and
refuses generation with an EngineError the server turns into a 400.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fleetserve.runtime.engine.async_engine import STALL_TIMEOUT_S, EngineDeadError
from fleetserve.runtime.engine.cache_events import CacheState
from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.embedding.batcher import take_batch
from fleetserve.runtime.engine.embedding.inputs import resolve_message_format
from fleetserve.runtime.engine.embedding.runner import EmbeddingRunner, build_runner
from fleetserve.runtime.engine.lora.adapter import AdapterError, AdapterNotFoundError
from fleetserve.runtime.engine.torch_thread import TorchThread
from fleetserve.runtime.engine.types import (
    EngineError,
    EngineHealth,
    EngineStats,
    RequestOutput,
    SamplingParams,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_TOKENS = 8192  # when the engine config sets no step budget
# No KV cache and no pages. Routers read the page size from /routing_info to hash prompts into blocks;
# they get a nominal one, and /cache_state never lists a block, so routing falls back to load.
NOMINAL_PAGE_SIZE = 16


@dataclass(slots=True)
class EmbeddingResult:
    vectors: np.ndarray  # [num_inputs, hidden] float32
    queue_time: float  # seconds from arrival to its first forward


@dataclass(slots=True)
class _Job:
    inputs: list[list[int]]
    future: asyncio.Future[EmbeddingResult]
    arrival: float = field(default_factory=time.perf_counter)
    vectors: list[np.ndarray | None] = field(default_factory=list)
    num_done: int = 0
    first_scheduled: float | None = None

    def __post_init__(self) -> None:
        self.vectors = [None] * len(self.inputs)


class AsyncEmbeddingEngine:
    is_embedding = True

    def __init__(self, runner: EmbeddingRunner, tokenizer: Any, worker: TorchThread, max_batch_tokens: int,
                 max_batch_inputs: int):
        self.runner = runner
        self.tokenizer = tokenizer
        self.model_config = runner.info  # architecture, max_model_len, vocab_size, dtype for the server
        self.spec = runner.spec
        self.message_format = resolve_message_format(runner.spec.message_format, tokenizer)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_inputs = max_batch_inputs
        self._worker = worker
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._stopping = False
        # inputs queued = enqueued (written by the event loop) - taken (written by the thread)
        self._num_enqueued = 0
        self._num_taken = 0  # into a forward, or dropped
        self._num_running = 0  # inputs in the forward now
        self.num_forwards = 0
        self._last_progress = time.monotonic()  # the last forward finished (or the loop went idle)
        self._dead: str | None = None
        self._epoch = uuid.uuid4().hex

    @classmethod
    def from_config(cls, config: EngineConfig, worker: TorchThread | None = None) -> AsyncEmbeddingEngine:
        """Loads the model on `worker` (default: a new thread), which later runs the batching loop."""
        worker = worker or TorchThread("fleetserve-embedding")
        try:
            runner, tokenizer = worker.call(lambda: _load(config))
        except BaseException:
            worker.stop()
            raise
        budget = config.max_num_batched_tokens or DEFAULT_MAX_BATCH_TOKENS
        return cls(runner, tokenizer, worker, budget, config.max_running_requests)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._worker.submit(self._run)
        self._worker.stop()  # the thread ends when the loop returns
        self._running = True

    async def shutdown(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if not self._running:
            self._worker.stop()
        await asyncio.to_thread(self._worker.join)

    # -- embeddings --------------------------------------------------------------------------------

    async def embed(self, inputs: list[list[int]]) -> EmbeddingResult:
        """The vectors of `inputs` (token-id lists, already checked by the caller), batched with others."""
        if not self._running or self._stopping:
            raise EngineDeadError("the engine is not running")
        if not inputs:
            raise EngineError("no inputs")
        job = _Job(inputs, asyncio.get_running_loop().create_future())
        self._num_enqueued += len(inputs)
        self._jobs.put(job)
        self._wakeup.set()
        return await job.future

    def stats(self) -> EngineStats:
        return EngineStats(num_running=self._num_running, num_waiting=self._num_enqueued - self._num_taken,
                           num_total_pages=0, num_used_pages=0, page_size=NOMINAL_PAGE_SIZE,
                           prefix_cache_queries=0, prefix_cache_hits=0, num_preemptions=0)

    def health(self) -> EngineHealth:
        """Alive (the loop has not died) and batching (no work, or a forward finished recently)."""
        if self._dead is not None:
            return EngineHealth(False, False, f"the engine is dead: {self._dead}")
        if self._running and not self._stopping and not self._worker.is_alive():
            return EngineHealth(False, False, "the engine thread is gone")
        stalled_s = time.monotonic() - self._last_progress
        if self._num_enqueued > self._num_taken and stalled_s > STALL_TIMEOUT_S:
            return EngineHealth(True, False, f"inputs are waiting and no forward finished for {stalled_s:.0f} s")
        return EngineHealth(True, True, None)

    def lora_adapters(self) -> dict[str, str]:
        return {}  # embedding models serve no LoRA adapters

    def find_adapter(self, ref: str) -> str | None:
        return None

    async def load_lora_adapter(self, name: str, path: str, pinned: bool = False) -> None:
        raise AdapterError("this is an embedding model: it serves no LoRA adapters")

    async def unload_lora_adapter(self, name: str) -> None:
        raise AdapterNotFoundError(f"the LoRA adapter {name!r} is not loaded (embedding models serve none)")

    def cache_state(self, epoch: str | None, after: int | None) -> CacheState:
        return CacheState(self._epoch, 0, [], [], [])  # no prefix cache: always an empty snapshot

    async def flush_cache(self) -> bool:
        return True  # no KV cache to flush

    # -- generation is refused ----------------------------------------------------------------------

    def _refusal(self) -> EngineError:
        return EngineError("this is an embedding model: it does not support chat or completions; "
                           "use /v1/embeddings")

    def check_request(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        raise self._refusal()

    async def check_grammar(self, params: SamplingParams) -> None:
        raise self._refusal()

    async def generate(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                       lora_name: str | None = None) -> AsyncIterator[RequestOutput]:
        raise self._refusal()
        yield  # an async generator, like AsyncEngine.generate

    async def abort(self, request_id: str) -> None:
        return None

    # -- the engine thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop_forever()
        except BaseException as exc:  # a fault outside a forward: nothing can be served any more
            self._dead = repr(exc)
            logger.exception("the embedding loop died")
            raise

    def _loop_forever(self) -> None:
        pending: deque[tuple[_Job, int]] = deque()  # (job, input index), oldest first
        while not self._stopping:
            self._wakeup.clear()
            while not self._jobs.empty():
                job = self._jobs.get()
                pending.extend((job, i) for i in range(len(job.inputs)))
            self._drop_cancelled(pending)
            if not pending:
                self._wakeup.wait()
                self._last_progress = time.monotonic()  # idle time is not a stall
                continue
            lengths = [len(job.inputs[i]) for job, i in pending]
            count = take_batch(lengths, self.max_batch_tokens, self.max_batch_inputs)
            batch = [pending.popleft() for _ in range(count)]
            self._num_taken += count
            self._num_running = count
            try:
                self._forward(batch)
            except Exception as exc:  # a genuine fault: fail these requests, keep serving
                logger.exception("embedding forward failed for %d inputs", count)
                failed = {id(job): job for job, _ in batch}
                for job in failed.values():
                    self._post(_fail, job, EngineDeadError(f"embedding forward failed: {exc!r}"))
                kept = deque(item for item in pending if id(item[0]) not in failed)
                self._num_taken += len(pending) - len(kept)
                pending = kept
            finally:
                self._num_running = 0
                self._last_progress = time.monotonic()
        for job, _ in pending:
            self._post(_fail, job, EngineDeadError("the server is shutting down"))
        while not self._jobs.empty():
            self._post(_fail, self._jobs.get(), EngineDeadError("the server is shutting down"))

    def _drop_cancelled(self, pending: deque[tuple[_Job, int]]) -> None:
        if any(job.future.cancelled() for job, _ in pending):
            kept = [item for item in pending if not item[0].future.cancelled()]
            self._num_taken += len(pending) - len(kept)
            pending.clear()
            pending.extend(kept)

    def _forward(self, batch: list[tuple[_Job, int]]) -> None:
        now = time.perf_counter()
        vectors = self.runner.embed([job.inputs[i] for job, i in batch])
        self.num_forwards += 1
        for row, (job, i) in enumerate(batch):
            if job.first_scheduled is None:
                job.first_scheduled = now
            job.vectors[i] = vectors[row]
            job.num_done += 1
            if job.num_done == len(job.inputs):
                result = EmbeddingResult(np.stack(job.vectors), job.first_scheduled - job.arrival)
                self._post(_succeed, job, result)

    def _post(self, fn: Any, *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self._stopping = True


def _succeed(job: _Job, result: EmbeddingResult) -> None:
    if not job.future.done():
        job.future.set_result(result)


def _fail(job: _Job, exc: Exception) -> None:
    if not job.future.done():
        job.future.set_exception(exc)


def _load(config: EngineConfig) -> tuple[EmbeddingRunner, Any]:
    from transformers import AutoTokenizer

    from fleetserve.runtime.engine.factory import resolve_device

    device = resolve_device(config.device)
    if device.type == "cpu":
        torch.set_grad_enabled(False)
    runner, model_dir = build_runner(config, device)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if config.warm_up:
        runner.embed([[0] * min(16, runner.info.max_model_len)] * 4)
    return runner, tokenizer
