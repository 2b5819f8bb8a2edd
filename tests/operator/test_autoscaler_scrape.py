"""What the autoscaler reads: the runtime's own /metrics text (the max_running_requests gauge
included), pod addressing, and scraping ready pods over loopback."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from fleetserve.operator.autoscaler.scrape import (
    RUNTIME_METRICS,
    RUNTIME_REQUIRED,
    Scraped,
    ScrapeError,
    finished_since,
    metrics_url,
    parse_metrics,
    scrape_pods,
    to_sample,
)
from fleetserve.operator.pods import is_ready
from fleetserve.runtime import wire
from fleetserve.runtime.engine.types import EngineStats
from fleetserve.runtime.server.metrics import ServerMetrics

STATS = EngineStats(
    num_running=3,
    num_waiting=5,
    num_total_pages=100,
    num_used_pages=10,
    page_size=16,
    prefix_cache_queries=0,
    prefix_cache_hits=0,
    num_preemptions=0,
)


def runtime_metrics_text(max_running_requests: int | None) -> str:
    return generate_latest(ServerMetrics("qwen", lambda: STATS, max_running_requests).registry).decode()


def test_the_runtime_exports_its_batch_cap_and_the_autoscaler_reads_it():
    values = parse_metrics(runtime_metrics_text(8), RUNTIME_METRICS)
    assert values == {
        wire.METRIC_NUM_REQUESTS_RUNNING: 3,
        wire.METRIC_NUM_REQUESTS_WAITING: 5,
        wire.METRIC_MAX_RUNNING_REQUESTS: 8,
    }


def test_finished_requests_are_read_from_the_runtimes_counter():
    metrics = ServerMetrics("qwen", lambda: STATS, 8)
    assert wire.METRIC_REQUEST_SUCCESS_TOTAL not in parse_metrics(
        generate_latest(metrics.registry).decode(), RUNTIME_METRICS)  # none finished: no series at all
    metrics.request_success.labels("qwen", "stop").inc(3)
    metrics.request_success.labels("qwen", "length").inc(2)
    values = parse_metrics(generate_latest(metrics.registry).decode(), RUNTIME_METRICS)
    assert values[wire.METRIC_REQUEST_SUCCESS_TOTAL] == 5  # summed over finish reasons


def test_finished_since_the_last_sample_per_pod():
    def read(**totals: float | None) -> list[Scraped]:
        return [Scraped(name, None if total is None else
                        ({} if total < 0 else {wire.METRIC_REQUEST_SUCCESS_TOTAL: total}))
                for name, total in totals.items()]

    assert finished_since({}, read(a=7)) == (None, {"a": 7})  # first sight: unknown
    assert finished_since({"a": 7}, read(a=7)) == (0, {"a": 7})
    assert finished_since({"a": 7, "b": 1}, read(a=9, b=4)) == (5, {"a": 9, "b": 4})
    assert finished_since({"a": 7}, read(a=2)) == (2, {"a": 2})  # restarted: its counter began again
    assert finished_since({"a": 0}, read(a=-1)) == (0, {"a": 0})  # nothing finished yet: no series, 0
    assert finished_since({"a": 3}, read(a=3, b=None)) == (0, {"a": 3})  # b failed: decide sees num_failed
    assert finished_since({"a": 3}, read(a=3, c=0)) == (None, {"a": 3, "c": 0})  # c is new


def test_without_a_cap_there_is_no_gauge_and_the_pod_has_no_cap():
    assert wire.METRIC_MAX_RUNNING_REQUESTS not in runtime_metrics_text(None)
    values = parse_metrics(runtime_metrics_text(None), RUNTIME_METRICS)
    assert wire.METRIC_MAX_RUNNING_REQUESTS not in values


def test_text_that_is_not_prometheus_is_a_scrape_error():
    with pytest.raises(ScrapeError):
        parse_metrics("<html>not found</html>\n", RUNTIME_METRICS)


def pod(
    name: str, ip: str | None = "127.0.0.1", port: int = 30000, ready: bool = True, deleting: bool = False
):
    meta: dict = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {
        "metadata": meta,
        "status": status,
        "spec": {"containers": [{"name": "runtime", "ports": [{"name": "http", "containerPort": port}]}]},
    }


def test_pods_are_addressed_by_ip_and_the_port_named_http():
    assert metrics_url(pod("a")) == "http://127.0.0.1:30000/metrics"
    assert metrics_url(pod("a", ip="fd00::7")) == "http://[fd00::7]:30000/metrics"
    assert metrics_url(pod("a", ip=None)) is None
    assert (
        is_ready(pod("a")) and not is_ready(pod("a", ready=False)) and not is_ready(pod("a", deleting=True))
    )


async def test_ready_pods_are_scraped_and_failures_counted():
    texts = {"/metrics": runtime_metrics_text(4)}

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=texts["/metrics"])

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with_ip = [
            pod("a", port=port),
            pod("b", port=port),
            pod("not-ready", port=port, ready=False),
            pod("no-ip", ip=None),
        ]
        async with aiohttp.ClientSession() as session:
            scraped = await scrape_pods(session, with_ip, RUNTIME_METRICS, RUNTIME_REQUIRED)
            sample = to_sample(scraped, [])
            assert [p.name for p in sample.pods] == ["a", "b"] and sample.num_failed == 1  # no-ip failed
            assert (
                sample.pods[0].running == 3
                and sample.pods[0].waiting == 5
                and sample.pods[0].max_running == 4
            )
            texts["/metrics"] = "# TYPE other gauge\nother 1\n"  # answers, but is not a fleetserve runtime
            scraped = await scrape_pods(session, with_ip[:1], RUNTIME_METRICS, RUNTIME_REQUIRED)
            assert scraped[0].values is None and wire.METRIC_NUM_REQUESTS_RUNNING in scraped[0].error
    finally:
        await runner.cleanup()
