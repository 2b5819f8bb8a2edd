"""--max-queued-requests: 503 "queue full" (TestClient over FakeEngine, a test double)."""

from __future__ import annotations

import asyncio

import httpx
from server_fake_engine import FakeEngine

from fleetserve.runtime.engine.types import EngineStats
from fleetserve.runtime.server.admission import Admission
from fleetserve.runtime.server.app import build_app
from fleetserve.runtime.server.state import ServerSettings, ServerState

BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _stats(num_waiting: int) -> EngineStats:
    return EngineStats(0, num_waiting, 8, 0, 16, 0, 0, 0)


def test_queue_full_when_the_engine_reports_max_waiting(make_client, engine: FakeEngine) -> None:
    client = make_client(max_queued_requests=2)
    engine.num_waiting = 2
    response = client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 503
    assert response.json()["code"] == 503 and "queue full" in response.json()["message"]
    engine.num_waiting = 1
    assert client.post("/v1/chat/completions", json=BODY).status_code == 200


def test_admission_counts_in_flight_requests_and_releases_them() -> None:
    admission = Admission(max_running_requests=2, max_queued_requests=1, stats=lambda: _stats(0))
    tickets = [admission.admit() for _ in range(3)]
    assert admission.is_full(1)
    tickets[0].release()
    tickets[0].release()  # idempotent
    assert admission.num_in_flight == 2 and not admission.is_full(1)
    assert admission.is_full(2)  # a completions request with two prompts needs two slots


def test_a_zero_queue_admits_up_to_the_running_slots() -> None:
    admission = Admission(max_running_requests=1, max_queued_requests=0, stats=lambda: _stats(0))
    ticket = admission.admit()
    assert admission.is_full(1)
    ticket.release()
    assert not admission.is_full(1)


def test_unbounded_queue_never_refuses() -> None:
    admission = Admission(max_running_requests=1, max_queued_requests=None, stats=lambda: _stats(10_000))
    assert [admission.admit() for _ in range(100)]


async def test_burst_beyond_running_plus_queued_gets_503_and_slots_come_back() -> None:
    engine = FakeEngine(token_delay_s=0.05)
    settings = ServerSettings(model_path="fake-model", max_running_requests=2, max_queued_requests=1)
    state = ServerState.build(engine, settings)
    transport = httpx.ASGITransport(app=build_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        results = await asyncio.gather(*(client.post("/v1/chat/completions", json=BODY) for _ in range(5)))
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 200, 200, 503, 503]
        assert state.admission.num_in_flight == 0
        assert (await client.post("/v1/chat/completions", json=BODY)).status_code == 200
