"""A client that goes away aborts its engine request (raw ASGI calls over FakeEngine, a test double).

The FakeEngine records a request as aborted when its generator is closed before it finished, which
is how the real engine learns of an abort.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from server_fake_engine import FakeEngine

from fleetserve.runtime.server.app import build_app
from fleetserve.runtime.server.state import ServerSettings, ServerState

LONG = {"max_tokens": 400, "ignore_eos": True}


class Client:
    """Drives one ASGI request; `gone` makes receive() report http.disconnect (or send() fail)."""

    def __init__(self, body: dict, spec_version: str = "2.3", leave_after_chunks: int | None = None):
        self.body = json.dumps(body).encode()
        self.spec_version = spec_version
        self.leave_after_chunks = leave_after_chunks
        self.gone = asyncio.Event()
        self.sent_body = False
        self.num_chunks = 0
        self.status: int | None = None

    def scope(self, path: str) -> dict:
        return {"type": "http", "asgi": {"version": "3.0", "spec_version": self.spec_version},
                "http_version": "1.1", "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
                "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json")],
                "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80)}

    async def receive(self) -> dict:
        if not self.sent_body:
            self.sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        if self.gone.is_set() and self.spec_version == "2.4":
            raise OSError("connection reset")
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message.get("body"):
            self.num_chunks += 1
            if self.leave_after_chunks is not None and self.num_chunks >= self.leave_after_chunks:
                self.gone.set()


@pytest.fixture
def setup():
    engine = FakeEngine(token_delay_s=0.01)
    state = ServerState.build(engine, ServerSettings(model_path="fake-model"))
    return engine, state, build_app(state)


def _assert_aborted(engine: FakeEngine, state: ServerState) -> None:
    assert len(engine.requests) == 1
    assert engine.aborted == [engine.requests[0][0]]
    assert not engine.active
    assert state.admission.num_in_flight == 0
    scrape = state.metrics.registry.get_sample_value(
        "fleetserve:request_success_total", {"model_name": "fake-model", "finished_reason": "abort"})
    assert scrape == 1.0


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream": True, **LONG}),
    ("/v1/completions", {"prompt": "hi", "stream": True, **LONG}),
    ("/v1/completions", {"prompt": ["a", "b"], "stream": True, **LONG}),
])
async def test_streaming_client_leaving_aborts(setup, spec_version: str, path: str, body: dict) -> None:
    engine, state, app = setup
    client = Client(body, spec_version, leave_after_chunks=4)
    try:
        await asyncio.wait_for(app(client.scope(path), client.receive, client.send), 5)
    except OSError:
        pass  # the 2.4 path re-raises the transport error as ClientDisconnect
    except Exception as exc:  # starlette's ClientDisconnect
        assert type(exc).__name__ == "ClientDisconnect"
    assert client.status == 200
    if len(body.get("prompt", "")) == 2 and isinstance(body["prompt"], list):
        assert len(engine.requests) == 2 and sorted(engine.aborted) == sorted(r[0] for r in engine.requests)
        assert not engine.active and state.admission.num_in_flight == 0
    else:
        _assert_aborted(engine, state)


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], **LONG}),
    ("/v1/completions", {"prompt": "hi", **LONG}),
])
async def test_non_streaming_client_leaving_aborts(setup, path: str, body: dict) -> None:
    engine, state, app = setup
    client = Client(body)
    task = asyncio.create_task(app(client.scope(path), client.receive, client.send))
    await asyncio.sleep(0.2)
    assert engine.active  # still generating (400 tokens at 10 ms each)
    client.gone.set()
    await asyncio.wait_for(task, 5)
    _assert_aborted(engine, state)


async def test_a_finished_request_is_not_counted_as_aborted(setup) -> None:
    engine, state, app = setup
    client = Client({"prompt": "hi", "max_tokens": 3})
    await asyncio.wait_for(app(client.scope("/v1/completions"), client.receive, client.send), 5)
    assert client.status == 200 and engine.aborted == [] and state.admission.num_in_flight == 0


@pytest.mark.parametrize(("path", "body", "stream"), [
    ("/v1/completions", {"prompt": "hi", "stream": True, **LONG}, True),
    ("/v1/completions", {"prompt": "hi", **LONG}, False),
])
async def test_requests_cut_at_shutdown_get_an_answer_and_abort(setup, path: str, body: dict, stream: bool) -> None:
    """uvicorn cancels requests still running after its graceful-shutdown timeout."""
    engine, state, app = setup
    client = Client(body)
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)
        await client.send(message)

    task = asyncio.create_task(app(client.scope(path), client.receive, send))
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.wait_for(task, 5)  # answered, not raised
    _assert_aborted(engine, state)
    last = sent[-1]
    assert last["type"] == "http.response.body" and not last.get("more_body", False)
    if stream:
        assert client.status == 200 and last["body"].endswith(b"data: [DONE]\n\n")
        assert b'"code":503' in last["body"] and b"shutting down" in last["body"]
    else:
        assert client.status == 503 and json.loads(last["body"])["message"] == "the server is shutting down"
