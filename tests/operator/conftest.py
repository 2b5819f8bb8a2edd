"""Fixtures: kmock's emulated Kubernetes API and the real operator (kopf) running against it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import kmock
import kopf
import pytest
from adapter_fakes import FakeRuntime, start_fake_runtime
from aiohttp import web
from operator_helpers import CLUSTER_RESOURCES, RESOURCES, RESYNC_SECONDS, VERBS, WAIT_SECONDS

from fleetserve.operator.config import OperatorConfig
from fleetserve.operator.handlers import build_registry, make_memo
from fleetserve.operator.main import run_options


@pytest.fixture()
def api(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    for key, (kind, subresources) in RESOURCES.items():
        kmock.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=True, verbs=VERBS, subresources=subresources)
    for key, kind in CLUSTER_RESOURCES.items():
        kmock.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=False, verbs=VERBS)
    return kmock


@pytest.fixture()
async def operator(api: kmock.KubernetesEmulator) -> AsyncIterator[kmock.KubernetesEmulator]:
    """The operator's real registry and settings, logged in to kmock instead of a cluster."""
    config = OperatorConfig(resync_seconds=RESYNC_SECONDS, standalone=True, liveness_endpoint=None,
                            runtime_image="registry.test/fleetserve:test")
    url = str(api.url).rstrip("/")
    registry = build_registry(config, login=lambda **_: kopf.ConnectionInfo(server=url))
    settings = kopf.OperatorSettings()  # the startup handler applies the operator's own settings on top
    settings.queueing.exit_timeout = settings.queueing.idle_timeout = 0.1  # fast teardown only
    settings.background.instant_exit_timeout = 0.1
    # kmock never bumps resourceVersion, so kopf would wait this long for its own patches to arrive.
    settings.persistence.consistency_timeout = 0.1
    ready, stop = threading.Event(), threading.Event()
    # Its own thread and event loop: on exit kopf cancels every task of its loop it did not start.
    thread = threading.Thread(target=asyncio.run, daemon=True, args=(kopf.operator(
        registry=registry, settings=settings, memo=make_memo(config), ready_flag=ready, stop_flag=stop,
        **run_options(config),
    ),))
    thread.start()
    assert await asyncio.to_thread(ready.wait, WAIT_SECONDS), "the operator did not start"
    yield api
    stop.set()
    await asyncio.to_thread(thread.join, WAIT_SECONDS)
    assert not thread.is_alive(), "the operator did not stop"


@pytest.fixture()
async def runtimes() -> AsyncIterator:
    """Starts fake runtime pods (adapter_fakes.FakeRuntime) on 127.0.0.1: ``await runtimes(**fields)``."""
    runners: list[web.AppRunner] = []

    async def start(**kwargs) -> FakeRuntime:
        return await start_fake_runtime(runners, FakeRuntime(**kwargs))

    yield start
    for runner in runners:
        await runner.cleanup()
