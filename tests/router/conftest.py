"""Fixtures: the demo tokenizer as the workers' tokenizer, fake workers, an in-process router."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))

from fake_worker import FakeWorker, free_port

from fleetserve.runtime.router.app import Router
from fleetserve.runtime.router.config import RouterConfig
from fleetserve.runtime.router.prompts import PromptEncoder

PAGE_SIZE = 4
FAST = RouterConfig(cache_poll_interval_secs=0.05, health_check_interval_secs=0.05, health_failure_threshold=2,
                    max_hold_secs=1.0, retry_after_secs=3)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fleetserve.runtime.demo.tokenizer import write_tokenizer_files

    folder = tmp_path_factory.mktemp("router-tokenizer")
    write_tokenizer_files(folder, "qwen3")
    return folder


@pytest.fixture(scope="session")
def encoder(tokenizer_dir: Path) -> PromptEncoder:
    enc = PromptEncoder.from_directory(tokenizer_dir, PAGE_SIZE)
    enc.model = "fake-model"
    return enc


@pytest.fixture()
async def fake_workers(encoder: PromptEncoder) -> AsyncIterator[Callable[..., Any]]:
    started: list[FakeWorker] = []

    async def start(n: int = 1, **knobs: Any) -> list[FakeWorker]:
        made = [await FakeWorker(encoder=encoder, **knobs).start() for _ in range(n)]
        started.extend(made)
        return made

    yield start
    for worker in started:
        await worker.stop()


class RunningRouter:
    def __init__(self, router: Router, runner: web.AppRunner, port: int):
        self.router, self.runner, self.port = router, runner, port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, n: int, timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.router.workers.routable()) < n or (self.router.sync.encoder is None and n):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(self.router.workers.routable())} of {n} workers ready")
            await asyncio.sleep(0.02)


@pytest.fixture()
async def start_router() -> AsyncIterator[Callable[..., Any]]:
    started: list[RunningRouter] = []

    async def start(urls: list[str], **overrides: Any) -> RunningRouter:
        port = free_port()
        config = replace(FAST, worker_urls=urls, port=port, **overrides)
        router = Router(config)
        await router.start()
        runner = web.AppRunner(router.build_app(), handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        running = RunningRouter(router, runner, port)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.runner.cleanup()
        await running.router.stop()


@pytest.fixture()
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session
