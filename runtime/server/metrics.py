"""Prometheus metrics of one server (its own CollectorRegistry, never the global one).

Engine state (running/waiting requests, KV cache usage, prefix-cache counters, preemptions) is read
from `engine.stats()` when Prometheus scrapes; per-request figures (tokens, latencies, finish
reasons) are recorded by a `RequestTracker` at the edges of each engine request. Names mirror
vLLM's with the `fleetserve:` prefix; docs/metrics.md lists them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleetserve.runtime.engine.types import EngineStats, RequestOutput
from fleetserve.runtime.server.metrics_lora import lora_metrics
from fleetserve.runtime.wire import (
    METRIC_KV_CACHE_USAGE,
    METRIC_MAX_RUNNING_REQUESTS,
    METRIC_NUM_REQUESTS_RUNNING,
    METRIC_NUM_REQUESTS_WAITING,
    METRIC_PREFIX,
    METRIC_REQUEST_SUCCESS,
)

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)
REQUEST_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)

LABELS = ("model_name",)


class EngineStatsCollector(Collector):
    """Turns an `EngineStats` snapshot into gauges and counters at scrape time."""

    def __init__(self, stats: Callable[[], EngineStats], model_name: str, max_running_requests: int | None = None):
        self.stats = stats
        self.model_name = model_name
        self.max_running_requests = max_running_requests

    def _gauge(self, name: str, doc: str, value: float) -> Metric:
        metric = GaugeMetricFamily(name, doc, labels=LABELS)
        metric.add_metric([self.model_name], value)
        return metric

    def _counter(self, name: str, doc: str, value: float) -> Metric:
        metric = CounterMetricFamily(name, doc, labels=LABELS)
        metric.add_metric([self.model_name], value)
        return metric

    def collect(self) -> Iterator[Metric]:
        s = self.stats()
        yield self._gauge(METRIC_NUM_REQUESTS_RUNNING, "Requests in the running batch.", s.num_running)
        yield self._gauge(METRIC_NUM_REQUESTS_WAITING, "Requests waiting to be scheduled.", s.num_waiting)
        yield self._gauge(METRIC_KV_CACHE_USAGE, "Fraction of KV cache pages held by live requests (0-1).",
                          s.kv_cache_usage)
        if self.max_running_requests is not None:  # the autoscaler's per-replica running capacity
            yield self._gauge(METRIC_MAX_RUNNING_REQUESTS, "Batch cap: most requests running at once "
                              "(--max-running-requests).", self.max_running_requests)
        yield self._counter(f"{METRIC_PREFIX}prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                            s.prefix_cache_queries)
        yield self._counter(f"{METRIC_PREFIX}prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                            s.prefix_cache_hits)
        yield self._counter(f"{METRIC_PREFIX}num_preemptions", "Requests preempted (pages ran out).",
                            s.num_preemptions)
        yield from lora_metrics(s, self.model_name)


class ServerMetrics:
    def __init__(self, model_name: str, stats: Callable[[], EngineStats], max_running_requests: int | None = None):
        self.model_name = model_name
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(EngineStatsCollector(stats, model_name, max_running_requests))
        p, reg = METRIC_PREFIX, self.registry
        self.prompt_tokens = Counter(f"{p}prompt_tokens", "Prompt tokens processed.", LABELS, registry=reg)
        self.generation_tokens = Counter(f"{p}generation_tokens", "Tokens generated.", LABELS, registry=reg)
        self.cached_tokens = Counter(f"{p}prompt_tokens_cached", "Prompt tokens served from the prefix cache.",
                                     LABELS, registry=reg)
        self.request_success = Counter(METRIC_REQUEST_SUCCESS, "Finished requests by finish reason.",
                                       (*LABELS, "finished_reason"), registry=reg)
        self.ttft = Histogram(f"{p}time_to_first_token_seconds", "Time from arrival to the first token.",
                              LABELS, buckets=TTFT_BUCKETS, registry=reg)
        self.itl = Histogram(f"{p}inter_token_latency_seconds", "Time between successive outputs of a request.",
                             LABELS, buckets=ITL_BUCKETS, registry=reg)
        self.e2e = Histogram(f"{p}e2e_request_latency_seconds", "Time from arrival to the last token.",
                             LABELS, buckets=REQUEST_BUCKETS, registry=reg)
        self.queue_time = Histogram(f"{p}request_queue_time_seconds", "Time from arrival to first scheduled.",
                                    LABELS, buckets=REQUEST_BUCKETS, registry=reg)
        self.bound = _Bound(self)

    def track(self) -> RequestTracker:
        return RequestTracker(self)


class _Bound:
    """The metric children of one model name, bound once (labels() per token is slow)."""

    __slots__ = ("cached_tokens", "e2e", "generation_tokens", "itl", "metrics", "prompt_tokens", "queue_time",
                 "ttft")

    def __init__(self, m: ServerMetrics):
        name = m.model_name
        self.metrics = m
        self.prompt_tokens, self.generation_tokens = m.prompt_tokens.labels(name), m.generation_tokens.labels(name)
        self.cached_tokens = m.cached_tokens.labels(name)
        self.ttft, self.itl = m.ttft.labels(name), m.itl.labels(name)
        self.e2e, self.queue_time = m.e2e.labels(name), m.queue_time.labels(name)


class RequestTracker:
    """Latencies and token counts of one engine request, recorded as its outputs arrive."""

    __slots__ = ("arrival", "b", "finish_reasons", "last_output", "num_cached", "num_prompt")

    def __init__(self, metrics: ServerMetrics):
        self.b = metrics.bound
        self.arrival = time.perf_counter()
        self.last_output: float | None = None
        self.num_prompt = 0
        self.num_cached = 0
        self.finish_reasons: list[str] = []

    def observe(self, output: RequestOutput) -> None:
        now = time.perf_counter()
        self.num_prompt, self.num_cached = output.num_prompt_tokens, output.num_cached_tokens
        if output.queue_time is not None:
            self.b.queue_time.observe(output.queue_time)
        num_new = 0
        for o in output.outputs:
            num_new += len(o.new_token_ids)
            if o.finish_reason is not None:
                self.finish_reasons.append(o.finish_reason)
        if num_new:
            (self.b.ttft if self.last_output is None else self.b.itl).observe(
                now - (self.arrival if self.last_output is None else self.last_output))
            self.last_output = now
            self.b.generation_tokens.inc(num_new)

    def finish(self, aborted: bool) -> None:
        """Record the end: one `request_success` per finished sequence, one `abort` if cut short."""
        b = self.b
        b.e2e.observe(time.perf_counter() - self.arrival)
        b.prompt_tokens.inc(self.num_prompt)
        b.cached_tokens.inc(self.num_cached)
        for reason in self.finish_reasons + (["abort"] if aborted else []):
            b.metrics.request_success.labels(b.metrics.model_name, reason).inc()
