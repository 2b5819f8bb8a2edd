"""Reading the load of runtime pods and routers from their ``/metrics`` (Prometheus text).

Each pod is addressed by its IP (``status.podIP``) and the port of its container named ``http``; only
ready pods that are not being deleted are read. Reads are concurrent but bounded, each with a short
timeout and a size cap, so a slow or hung pod costs one timeout and never stalls the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from fleetserve.operator.autoscaler.decide import PodLoad, Sample
from fleetserve.operator.manifests.pod import PORT_NAME
from fleetserve.operator.pods import is_ready, pod_url
from fleetserve.runtime import wire

logger = logging.getLogger(__name__)

SCRAPE_TIMEOUT_SECONDS = 2.0
MAX_CONCURRENT_SCRAPES = 16
MAX_METRICS_BYTES = 4 * 1024 * 1024  # a runtime's /metrics is a few KiB; more is not a fleetserve server
RUNTIME_REQUIRED = (wire.METRIC_NUM_REQUESTS_RUNNING, wire.METRIC_NUM_REQUESTS_WAITING)
RUNTIME_METRICS = (*RUNTIME_REQUIRED, wire.METRIC_MAX_RUNNING_REQUESTS, wire.METRIC_REQUEST_SUCCESS_TOTAL)
ROUTER_METRICS = (wire.METRIC_ROUTER_HELD_REQUESTS,)
Obj = Mapping[str, Any]


class ScrapeError(Exception):
    pass


def metrics_url(pod: Obj) -> str | None:
    """http://POD_IP:PORT/metrics, PORT being the container port named ``http``; None without either."""
    base = pod_url(pod)
    return None if base is None else base + wire.PATH_METRICS


def parse_metrics(text: str, names: Iterable[str]) -> dict[str, float]:
    """The sum over all series of each wanted metric that the text carries (absent ones are left out)."""
    wanted = set(names)
    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    found[sample.name] = found.get(sample.name, 0.0) + float(sample.value)
    except ValueError as error:
        raise ScrapeError(f"not Prometheus text: {error}") from error
    return found


async def read_metrics(session: aiohttp.ClientSession, url: str, names: Iterable[str]) -> dict[str, float]:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS)) as response:
            if response.status != 200:
                raise ScrapeError(f"{url} answered {response.status}")
            body = await response.content.read(MAX_METRICS_BYTES)
    except (aiohttp.ClientError, TimeoutError) as error:
        raise ScrapeError(f"{url}: {type(error).__name__} {error}".rstrip()) from error
    return parse_metrics(body.decode("utf-8", errors="replace"), names)


class Scraped(NamedTuple):
    name: str
    values: dict[str, float] | None  # None: the read failed
    error: str = ""


async def scrape_pods(
    session: aiohttp.ClientSession, pods: Sequence[Obj], names: Iterable[str], required: Iterable[str]
) -> list[Scraped]:
    """The wanted metrics of every ready pod, read concurrently (at most MAX_CONCURRENT_SCRAPES at once).
    A pod whose text lacks a ``required`` metric counts as failed: it is not the server expected."""
    names, required = tuple(names), tuple(required)
    gate = asyncio.Semaphore(MAX_CONCURRENT_SCRAPES)

    async def one(pod: Obj) -> Scraped:
        name = pod["metadata"]["name"]
        url = metrics_url(pod)
        if url is None:
            return Scraped(name, None, f"pod {name} has no IP or no port named {PORT_NAME}")
        async with gate:
            try:
                values = await read_metrics(session, url, names)
            except ScrapeError as error:
                return Scraped(name, None, str(error))
        missing = [metric for metric in required if metric not in values]
        if missing:
            return Scraped(name, None, f"{url} exports no {', '.join(missing)}")
        return Scraped(name, values)

    return list(await asyncio.gather(*(one(pod) for pod in pods if is_ready(pod))))


def finished_since(previous: Mapping[str, float], runtime: Sequence[Scraped]) -> tuple[float | None, dict[str, float]]:
    """Requests the answering pods finished since ``previous`` (their finished-request counters by pod
    name, from the last sample), and the counters to keep for the next sample.

    None when any answering pod was not read last time (a new pod, or the first sample). A pod that
    has finished nothing has no series of the (labelled) counter: 0. A counter that went down is a
    restarted pod: all it counts is new."""
    counters = {s.name: s.values.get(wire.METRIC_REQUEST_SUCCESS_TOTAL, 0.0) for s in runtime
                if s.values is not None}
    if any(name not in previous for name in counters):
        return None, counters
    return sum(total - previous[name] if total >= previous[name] else total
               for name, total in counters.items()), counters


def to_sample(runtime: Sequence[Scraped], routers: Sequence[Scraped], finished: float | None = None) -> Sample:
    """The decision core's input: loads of the pods that answered, the count of those that did not, the
    requests the answering routers hold, the requests finished since the previous sample."""
    pods = tuple(
        PodLoad(
            s.name,
            s.values.get(wire.METRIC_NUM_REQUESTS_RUNNING, 0.0),
            s.values.get(wire.METRIC_NUM_REQUESTS_WAITING, 0.0),
            s.values.get(wire.METRIC_MAX_RUNNING_REQUESTS),
        )
        for s in runtime
        if s.values is not None
    )
    answered = [s for s in routers if s.values is not None]
    held = sum(s.values.get(wire.METRIC_ROUTER_HELD_REQUESTS, 0.0) for s in answered if s.values is not None)
    return Sample(
        pods, num_failed=sum(s.values is None for s in runtime), held=held, num_routers=len(answered),
        finished=finished,
    )
