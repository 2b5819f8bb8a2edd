"""The server's edges under faults: admission is returned however a stream ends, /health follows the
engine, queue counts are requests (raw ASGI calls over the FakeEngine test double)."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from fleetserve.runtime.engine.types import EngineHealth
from fleetserve.runtime.server.app import build_app
from fleetserve.runtime.server.state import ServerSettings, ServerState
from tests.runtime.server.server_fake_engine import FakeEngine

STREAMS = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 50}),
    ("/v1/completions", {"prompt": ["a", "b"], "stream": True, "max_tokens": 50}),
]


class GoneClient:
    """An ASGI client whose connection is already closed when the response starts: with ASGI spec 2.4,
    uvicorn's send() raises OSError for it, before the body iterator is ever started."""

    def __init__(self, body: dict):
        self.body = json.dumps(body).encode()
        self.sent_body = False

    def scope(self, path: str) -> dict:
        return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
                "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                "root_path": "", "headers": [(b"content-type", b"application/json")],
                "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80)}

    async def receive(self) -> dict:
        if not self.sent_body:
            self.sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        raise OSError("connection reset by peer")


@pytest.mark.parametrize(("path", "body"), STREAMS)
async def test_a_stream_whose_client_left_before_the_first_byte_returns_its_admission(path: str, body: dict):
    """Its ticket used to stay taken: with --max-queued-requests the server then answered 503 forever."""
    engine = FakeEngine()
    state = ServerState.build(engine, ServerSettings(model_path="fake-model", max_running_requests=2,
                                                     max_queued_requests=0))
    app = build_app(state)
    for _ in range(5):  # more than the capacity of 2: every one must get its slot back
        client = GoneClient(body)
        with pytest.raises(Exception) as raised:
            await asyncio.wait_for(app(client.scope(path), client.receive, client.send), 5)
        assert type(raised.value).__name__ in ("ClientDisconnect", "OSError")
        assert state.admission.num_in_flight == 0
    assert not engine.active


def test_health_is_503_with_the_reason_while_the_engine_is_unhealthy():
    engine = FakeEngine()
    with TestClient(build_app(ServerState.build(engine, ServerSettings(model_path="fake-model"))),
                    raise_server_exceptions=False) as client:
        assert client.get("/health").status_code == 200
        engine.health_status = EngineHealth(False, False, "the engine is dead: injected")
        response = client.get("/health")
        assert response.status_code == 503 and "injected" in response.json()["message"]
        engine.health_status = EngineHealth(True, False, "requests are waiting and no step finished for 130 s")
        assert client.get("/health").status_code == 503
        engine.health_status = EngineHealth(True, True, None)
        assert client.get("/health").status_code == 200
