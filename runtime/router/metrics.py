"""The router's Prometheus metrics (`fleetserve_router:*`, its own registry); docs/router.md lists them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleetserve.runtime import wire
from fleetserve.runtime.router.workers import Phase, WorkerSet

P = wire.METRIC_ROUTER_PREFIX
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0)


class WorkerCollector(Collector):
    """Worker gauges read from the live worker set at scrape time."""

    def __init__(self, workers: WorkerSet, held: list[int]):
        self.workers = workers
        self.held = held

    def collect(self) -> Iterator[Metric]:
        held = GaugeMetricFamily(wire.METRIC_ROUTER_HELD_REQUESTS, "Requests held while no worker is ready.")
        held.add_metric([], self.held[0])
        yield held
        phases = GaugeMetricFamily(f"{P}workers", "Known workers by phase.", labels=["phase"])
        counts = dict.fromkeys(get_args(Phase), 0)
        for w in self.workers.workers.values():
            counts[w.phase] += 1
        for phase, n in counts.items():
            phases.add_metric([phase], n)
        yield phases
        in_flight = GaugeMetricFamily(f"{P}in_flight_requests", "Requests in flight per worker.", labels=["worker"])
        cached = GaugeMetricFamily(f"{P}worker_cached_blocks", "Blocks the router knows a worker holds.",
                                   labels=["worker", "source"])
        for w in self.workers.workers.values():
            in_flight.add_metric([w.url], w.in_flight)
            cached.add_metric([w.url, "reported"], len(w.cache.reported))
            cached.add_metric([w.url, "predicted"], len(w.cache.predicted))
        yield in_flight
        yield cached


@dataclass
class RouterMetrics:
    workers: WorkerSet
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    held: list[int] = field(default_factory=lambda: [0])  # a cell the proxy updates

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(f"{P}requests", "Requests sent to each worker (retries count again).",
                                ["worker"], registry=r)
        self.decisions = Counter(f"{P}decisions", "Routing decisions by reason.", ["policy", "reason"], registry=r)
        self.cached_tokens = Counter(f"{P}cached_tokens", "Cached prompt tokens of requests whose answer reported "
                                     "them: predicted by the router vs reported by the worker.", ["source"],
                                     registry=r)
        self.prompt_tokens = Counter(f"{P}prompt_tokens", "Prompt tokens reported in answers' usage.", registry=r)
        self.upstream_errors = Counter(f"{P}upstream_errors", "Failed attempts to reach a worker, by kind.",
                                       ["worker", "kind"], registry=r)
        self.retries = Counter(f"{P}retries", "Requests sent again to another worker.", registry=r)
        self.responses = Counter(f"{P}responses", "Answers to clients by HTTP status.", ["status"], registry=r)
        self.rejected = Counter(f"{P}rejected", "Requests answered by the router itself, by reason.",
                                ["reason"], registry=r)
        self.latency = Histogram(f"{P}request_latency_seconds", "From arrival to the end of the answer.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.first_byte = Histogram(f"{P}time_to_first_byte_seconds", "From arrival to the worker's first byte.",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.hold_time = Histogram(f"{P}hold_seconds", "Time requests were held waiting for a worker.",
                                   buckets=LATENCY_BUCKETS, registry=r)
        r.register(WorkerCollector(self.workers, self.held))
