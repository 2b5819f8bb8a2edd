"""An asyncio face for the engine: the step loop runs in its own thread and never blocks the event loop.

Callers talk to the thread through a command queue (add, abort, flush); the thread hands each step's
outputs back to the event loop in one `call_soon_threadsafe` per step, where they are routed to the
per-request slots that `generate()` iterators read. A slot holds at most one undelivered output: when
the consumer has not taken the previous one yet (a busy event loop, a slow client), the new delta is
merged into it, so a lagging stream receives fewer, larger chunks instead of a backlog of one-token
events (vLLM's output collector does the same). `from_config` builds the engine on the step loop's
thread, so one OS thread does all the torch work (torch_thread.py says why that matters).

Faults: what can be pinned on one request stays with it — a request the engine fails to add, or whose
sampling or post-processing raises (LLMEngine.take_failures), ends alone with a RequestFailedError
(500) and the others go on. Anything else — a model step that raises, a command that breaks the
engine's state, the loop itself failing — kills the engine: every request in flight ends with an
EngineDeadError (500), new ones are refused, and `health()` reports it, so /health answers 503 and
Kubernetes restarts the pod. `health()` also reports a step loop that has work but has not finished a
step for `stall_timeout_s`. A step that schedules nothing (nothing can run yet) is followed by a short
wait instead of the next step at once, so the loop never spins a core.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fleetserve.runtime.engine.cache_events import CacheState
from fleetserve.runtime.engine.config import EngineConfig
from fleetserve.runtime.engine.engine import LLMEngine
from fleetserve.runtime.engine.grammar_compiler import grammar_spec
from fleetserve.runtime.engine.lora.adapter import AdapterError
from fleetserve.runtime.engine.outputs import merge_outputs
from fleetserve.runtime.engine.torch_thread import TorchThread
from fleetserve.runtime.engine.types import (
    EngineError,
    EngineHealth,
    EngineStats,
    RequestOutput,
    SamplingParams,
)

logger = logging.getLogger(__name__)

Command = Callable[[LLMEngine], object]
T = TypeVar("T")


def _settle(future: asyncio.Future, result: object, exc: Exception | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


STALL_TIMEOUT_S = 120.0  # work waiting and no step finished for this long: the engine is unhealthy
IDLE_STEP_WAIT_S = 0.02  # after a step that scheduled nothing, wait this long (or for a command)


class EngineDeadError(RuntimeError):
    """The step loop failed; the request cannot finish (the server answers 500)."""


class RequestFailedError(RuntimeError):
    """The engine failed on this request alone; it ended, the others go on (the server answers 500)."""


class _OutputSlot:
    """The undelivered output of one request (newer deltas merge into it) and, after it, an error if any."""

    __slots__ = ("error", "pending", "ready")

    def __init__(self) -> None:
        self.pending: RequestOutput | None = None
        self.error: Exception | None = None
        self.ready = asyncio.Event()

    def put(self, out: RequestOutput) -> None:
        self.pending = out if self.pending is None else merge_outputs(self.pending, out)
        self.ready.set()

    def fail(self, exc: Exception) -> None:
        self.error = exc
        self.ready.set()

    async def get(self) -> RequestOutput:
        """The next (possibly merged) output; raises the error once every output before it was taken."""
        while self.pending is None and self.error is None:
            self.ready.clear()
            await self.ready.wait()
        if self.pending is not None:
            out, self.pending = self.pending, None
            return out
        assert self.error is not None
        raise self.error


class AsyncEngine:
    def __init__(self, engine: LLMEngine, worker: TorchThread | None = None, stall_timeout_s: float = STALL_TIMEOUT_S):
        """`worker`: the thread the engine was built on, which will also step it (default: a new one)."""
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_config = engine.model_config
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._streams: dict[str, _OutputSlot] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker = worker
        self._running = False
        self._stopping = False
        self._dead: str | None = None  # why the engine died
        self._pending_calls: set[asyncio.Future[Any]] = set()  # _call futures, failed if the engine dies
        self.stall_timeout_s = stall_timeout_s
        self._last_progress = time.monotonic()  # when the step loop last finished a step or found no work

    @classmethod
    def from_config(cls, config: EngineConfig, worker: TorchThread | None = None) -> AsyncEngine:
        """Builds the engine on `worker` (default: a new thread), which later runs its step loop; raises what
        building raises."""
        worker = worker or TorchThread("fleetserve-engine")
        try:
            engine = worker.call(lambda: LLMEngine.from_config(config))
        except BaseException:
            worker.stop()
            raise
        return cls(engine, worker)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._worker is None:
            self._worker = TorchThread("fleetserve-engine")
        self._worker.submit(self._run)
        self._worker.stop()  # the thread ends when the step loop returns
        self._running = True

    async def shutdown(self) -> None:
        """Stops the step loop; requests still in flight end with an EngineDeadError."""
        self._stopping = True
        self._wakeup.set()
        if self._worker is not None:
            if not self._running:
                self._worker.stop()  # built but never started
            await asyncio.to_thread(self._worker.join)
        self.engine.grammars.shutdown()
        for stream in self._streams.values():
            stream.fail(EngineDeadError("the server is shutting down"))

    # -- requests ----------------------------------------------------------------------------------

    def check_request(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        self._check_alive()
        self.engine.check_request(prompt_token_ids, params)

    def _check_alive(self) -> None:
        if self._dead is not None:
            raise EngineDeadError(f"the engine is dead: {self._dead}")

    async def check_grammar(self, params: SamplingParams) -> None:
        """Compiles the request's structured-output constraint (cached) on the engine's compile pool,
        without blocking the event loop or the step loop; raises EngineError with xgrammar's reason."""
        spec = grammar_spec(params)
        if spec is not None:
            await asyncio.wrap_future(self.engine.grammars.submit(spec))

    async def generate(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                       lora_name: str | None = None) -> AsyncIterator[RequestOutput]:
        """Yields the request's deltas; the last has ``finished``. Closing early aborts the request."""
        self._check_alive()
        if not self._running or self._stopping:
            raise EngineDeadError("the engine is not running")
        if request_id in self._streams:
            raise EngineError(f"request id {request_id!r} is already in use")
        self.check_request(prompt_token_ids, params)
        stream = _OutputSlot()
        self._streams[request_id] = stream
        finished = False
        self._submit(lambda engine: self._add(engine, request_id, prompt_token_ids, params, lora_name))
        try:
            while not finished:
                try:
                    item = await stream.get()
                except Exception:
                    finished = True  # the engine already dropped it
                    raise
                finished = item.finished
                yield item
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self._submit(lambda engine: engine.abort_request(request_id))

    async def abort(self, request_id: str) -> None:
        self._submit(lambda engine: engine.abort_request(request_id))

    async def flush_cache(self) -> bool:
        return await self._call(lambda engine: engine.reset_prefix_cache())

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def health(self) -> EngineHealth:
        """Alive (the step loop has not died) and stepping (no work, or a step finished recently)."""
        if self._dead is not None:
            return EngineHealth(False, False, f"the engine is dead: {self._dead}")
        if self._running and not self._stopping and not (self._worker is not None and self._worker.is_alive()):
            return EngineHealth(False, False, "the engine thread is gone")
        stalled_s = time.monotonic() - self._last_progress
        if self.engine.has_unfinished_requests() and stalled_s > self.stall_timeout_s:
            return EngineHealth(True, False, f"requests are waiting and no step finished for {stalled_s:.0f} s")
        return EngineHealth(True, True, None)

    # -- LoRA adapters (docs/lora.md) --------------------------------------------------------------

    async def load_lora_adapter(self, name: str, path: str, pinned: bool = False) -> None:
        """Reads the adapter off the step loop (hub download, file I/O), then loads it on the engine thread
        between two steps; raises AdapterError with the reason."""
        manager = self.engine.lora
        if manager is None:
            raise AdapterError("LoRA is not enabled on this server (start it with --enable-lora)")
        files = await asyncio.to_thread(manager.read, path)
        await self._call(lambda engine: engine.add_lora(name, files, pinned))

    async def unload_lora_adapter(self, name: str) -> None:
        """New requests for `name` are refused at once; those in flight finish on it."""
        await self._call(lambda engine: engine.unload_lora(name))

    def loaded_adapters(self) -> list[str]:
        """Names of the adapters loaded now (for /cache_state, /v1/models, metrics)."""
        return self.engine.loaded_adapters()

    def lora_adapters(self) -> dict[str, str]:
        """Loaded adapters: name -> the path (or hub id) each was loaded from."""
        lora = self.engine.lora
        return {} if lora is None else {a.name: a.path for a in list(lora.registry.adapters.values())}

    def find_adapter(self, ref: str) -> str | None:
        """The name of the loaded adapter `ref` names (a name, or a path it was loaded from)."""
        lora = self.engine.lora
        adapter = None if lora is None else lora.find(ref)
        return None if adapter is None else adapter.name

    async def _call(self, fn: Callable[[LLMEngine], T]) -> T:
        """Runs fn on the engine thread between steps and returns (or raises) what it does."""
        assert self._loop is not None, "the engine is not started"
        self._check_alive()
        loop = self._loop
        done: asyncio.Future[T] = loop.create_future()
        self._pending_calls.add(done)
        done.add_done_callback(self._pending_calls.discard)

        def run(engine: LLMEngine) -> None:
            try:
                result = fn(engine)
            except Exception as exc:  # handed to the caller, who decides what it means
                loop.call_soon_threadsafe(_settle, done, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, done, result, None)

        self._submit(run)
        return await done

    def cache_state(self, epoch: str | None, after: int | None) -> CacheState:
        """The prefix cache's block hashes (cache_events.py); read under the log's lock, not the step loop."""
        return self.engine.pool.events.read(epoch, after)

    # -- the engine thread -------------------------------------------------------------------------

    def _submit(self, command: Command) -> None:
        self._commands.put(command)
        self._wakeup.set()

    def _add(self, engine: LLMEngine, request_id: str, prompt: list[int], params: SamplingParams,
             lora_name: str | None) -> None:
        if request_id not in self._streams:
            return  # the caller went away before the engine saw the request
        try:
            engine.add_request(request_id, prompt, params, lora_name)
        except EngineError as exc:
            self._deliver_error(request_id, exc)
        except Exception as exc:  # a fault of this request alone: add_request leaves nothing of it behind
            logger.exception("adding request %s failed", request_id)
            self._deliver_error(request_id, RequestFailedError(f"the engine failed to add the request: {exc!r}"))

    def _run(self) -> None:
        try:
            self._step_loop(self.engine)
        except BaseException as exc:  # a command or the loop itself broke: nothing can be trusted any more
            logger.exception("the engine's step loop failed")
            self._die(f"the step loop failed: {exc!r}")

    def _step_loop(self, engine: LLMEngine) -> None:
        while not self._stopping:
            self._wakeup.clear()
            while not self._commands.empty():
                self._commands.get()(engine)  # commands contain their request's faults; others end the loop
            self._last_progress = time.monotonic()
            if not engine.has_unfinished_requests():
                self._wakeup.wait()
                continue
            try:
                outputs = engine.step()
            except Exception as exc:  # not attributable to one request: the engine's state is suspect
                logger.exception("engine step failed; failing every request in flight")
                self._die(f"an engine step failed: {exc!r}")
                return
            self._last_progress = time.monotonic()
            failures = engine.take_failures()
            for request_id, reason in failures:
                self._deliver_error(request_id, RequestFailedError(reason))
            if outputs:
                self._post(self._route, outputs)
            elif not failures and engine.num_scheduled_last_step == 0:
                self._wakeup.wait(IDLE_STEP_WAIT_S)  # nothing could run: wait for a command, do not spin

    def _die(self, reason: str) -> None:
        """Marks the engine dead; every request in flight fails (on the event loop, which owns them)."""
        self._dead = reason
        self._stopping = True
        self._post(self._fail_everything, reason)

    def _fail_everything(self, reason: str) -> None:
        for stream in self._streams.values():
            stream.fail(EngineDeadError(f"the engine is dead: {reason}"))
        for call in list(self._pending_calls):
            if not call.done():
                call.set_exception(EngineDeadError(f"the engine is dead: {reason}"))

    def _deliver_error(self, request_id: str, exc: Exception) -> None:
        self._post(self._route_error, request_id, exc)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self._stopping = True

    def _route(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is not None:
                stream.put(out)

    def _route_error(self, request_id: str, exc: Exception) -> None:
        stream = self._streams.get(request_id)
        if stream is not None:
            stream.fail(exc)
