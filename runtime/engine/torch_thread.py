"""One OS thread for all of an engine's torch work: loading, warm-up and the step loop.

Why: with the OpenMP build of torch, each OS thread that starts a parallel region gets its own libgomp
team of workers. Once a process holds more such workers than it has CPUs, libgomp stops letting idle
workers spin ("throttled" waiting) and every parallel region pays a futex wake-up per worker. On the
2-core test machine a second team made every op of the step loop 1.4–2x slower: an engine built on
the main thread and stepped on another ran decode steps in 32 ms instead of 16 ms (large demo model,
16 sequences). So the engine is built on the thread that will step it, and nothing else in the
server process runs torch ops.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = object()


class TorchThread:
    """A daemon thread that runs the callables handed to it, one at a time, in order."""

    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, who re-raises it
                future.set_exception(exc)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((fn, future))
        return future

    def call(self, fn: Callable[[], T]) -> T:
        """Runs fn on the thread and returns its result (or raises its exception) in the caller."""
        if threading.current_thread() is self._thread:
            return fn()
        return self.submit(fn).result()

    def stop(self) -> None:
        """Ends the thread once the jobs already handed to it are done."""
        self._jobs.put(_STOP)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def name(self) -> str:
        return self._thread.name
