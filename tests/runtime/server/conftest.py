"""Fixtures for the server's TestClient tests: the app over `FakeEngine` (a test double)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from server_fake_engine import FakeEngine

from fleetserve.runtime.server.app import build_app
from fleetserve.runtime.server.state import ServerSettings, ServerState

MODEL = "fake-model"


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def make_client(engine: FakeEngine) -> Iterator[Callable[..., TestClient]]:
    """`make_client(**ServerSettings fields)` -> a started TestClient over `engine`."""
    clients: list[TestClient] = []

    def make(**settings) -> TestClient:
        state = ServerState.build(engine, ServerSettings(model_path=MODEL, **settings))
        client = TestClient(build_app(state), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
