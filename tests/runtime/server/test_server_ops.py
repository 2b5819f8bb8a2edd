"""Operational endpoints, metrics and usage reporting (TestClient over FakeEngine, a test double)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from server_fake_engine import FakeEngine

from fleetserve.runtime import wire

BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted({"model_name": "fake-model", **labels}.items())))]


def test_health_models_and_info(client) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/health_generate").status_code == 200
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["fake-model"]
    card = client.get("/v1/models/fake-model").json()
    assert card["max_model_len"] == 512 and card["object"] == "model"
    info = client.get("/get_model_info").json()
    assert info["model_path"] == "fake-model" and info["is_generation"] and info["max_model_len"] == 512
    server = client.get("/get_server_info").json()
    assert server["engine"]["page_size"] == 16 and "max_running_requests" not in server["engine"]
    assert server["served_model_names"] == ["fake-model"]


def test_flush_cache(client, engine: FakeEngine) -> None:
    assert client.post("/flush_cache").json() == {"success": True, "message": "cache flushed"}
    engine.active.add("busy")
    response = client.post("/flush_cache")
    assert response.status_code == 400 and "in flight" in response.json()["message"]


def test_metrics_count_tokens_latencies_and_finish_reasons(client, engine: FakeEngine) -> None:
    engine.num_cached_tokens = 3
    client.post("/v1/chat/completions", json=BODY)
    client.post("/v1/chat/completions", json={**BODY, "max_tokens": 200})
    prompt_len = len(engine.requests[0][1])
    samples = scrape(client)
    assert value(samples, "fleetserve:prompt_tokens_total") == 2 * prompt_len
    assert value(samples, "fleetserve:prompt_tokens_cached_total") == 6
    reply_len = len("Hello there, friend.") + 1  # + EOS
    assert value(samples, "fleetserve:generation_tokens_total") == 4 + reply_len
    assert value(samples, "fleetserve:request_success_total", finished_reason="length") == 1
    assert value(samples, "fleetserve:request_success_total", finished_reason="stop") == 1
    assert value(samples, "fleetserve:time_to_first_token_seconds_count") == 2
    assert value(samples, "fleetserve:e2e_request_latency_seconds_count") == 2
    assert value(samples, "fleetserve:request_queue_time_seconds_count") == 2
    assert value(samples, "fleetserve:inter_token_latency_seconds_count") == 3 + reply_len - 1
    for name in (wire.METRIC_NUM_REQUESTS_RUNNING, wire.METRIC_NUM_REQUESTS_WAITING, wire.METRIC_KV_CACHE_USAGE):
        assert value(samples, name) == 0
    assert value(samples, "fleetserve:prefix_cache_queries_total") == 10
    assert value(samples, "fleetserve:prefix_cache_hits_total") == 4
    assert value(samples, "fleetserve:num_preemptions_total") == 0


def test_each_app_has_its_own_registry(make_client) -> None:
    first, second = make_client(), make_client()
    first.post("/v1/chat/completions", json=BODY)
    assert value(scrape(first), "fleetserve:generation_tokens_total") == 4
    assert value(scrape(second), "fleetserve:generation_tokens_total") == 0  # series exist from the start


def test_cached_tokens_reported_by_flag_or_per_request(make_client, engine: FakeEngine) -> None:
    engine.num_cached_tokens = 5
    plain = make_client()
    assert "prompt_tokens_details" not in plain.post("/v1/chat/completions", json=BODY).json()["usage"]
    asked = plain.post("/v1/chat/completions", json={**BODY, "return_cached_tokens_details": True}).json()
    assert asked["usage"]["prompt_tokens_details"] == {"cached_tokens": 5}
    reporting = make_client(enable_cache_report=True)
    usage = reporting.post("/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 2}).json()["usage"]
    assert usage == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6,
                     "prompt_tokens_details": {"cached_tokens": 10}}


def test_usage_counts_are_exact_with_n(client, engine: FakeEngine) -> None:
    usage = client.post("/v1/chat/completions", json={**BODY, "n": 3}).json()["usage"]
    assert usage["prompt_tokens"] == len(engine.requests[-1][1])
    assert usage["completion_tokens"] == 12 and usage["total_tokens"] == usage["prompt_tokens"] + 12
