"""The autoscaler on the local cluster: the chart's operator scales simulated workers
(`fleetserve serve --simulate l4-qwen-0.5b`) up under a closed-loop load sent through the router,
holds the count while the load lasts, and scales back when it ends. With `replicas.min: 0` the idle
service then scales to zero, and a request held by the router brings a replica back to answer it."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import kmock
import pytest
from cluster import KINDS, eventually
from conftest import CHART_VALUES

NAMESPACE = "scale"
ISVC = "fleetserve.io/v1alpha1/inferenceservices"
DEPLOYMENTS = "apps/v1/deployments"
STARTUP_SECONDS = 300.0  # a simulated worker imports torch: tens of seconds on a loaded 2-core machine
IN_FLIGHT = 12  # C = 2 running + T = 2 waiting per replica: 12 requests need 3 replicas
SERVICE = {
    "apiVersion": "fleetserve.io/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "sim"},
    "spec": {
        "model": {"source": "demo://llama-tiny", "servedName": "sim"},
        # each decode step sleeps 10x the modelled L4 time, so a 64-token answer lasts seconds
        "runtime": {
            "args": ["--simulate", "l4-qwen-0.5b", "--simulate-time-scale", "10"],
            "maxRunningRequests": 2,
        },
        "replicas": {"min": 1, "max": 3},
        "autoscaling": {
            "enabled": True,
            "targetQueueDepth": 2,
            "intervalSeconds": 1,
            "scaleDownStabilizationSeconds": 5,
        },
    },
}


def live(cluster, resource: str, name: str) -> dict:
    return cluster.api.live(resource, NAMESPACE, name) or {}


def desired_history(cluster) -> list[int]:
    """status.desiredReplicas of every stored version of the InferenceService, in order."""
    versions = cluster.api.objects[kmock.resource(ISVC), NAMESPACE, "sim"].history
    found = [((v or {}).get("status") or {}).get("desiredReplicas") for v in versions]
    counts: list[int] = []
    for count in found:
        if count is not None and (not counts or counts[-1] != count):
            counts.append(count)
    return counts


async def closed_loop(url: str, stop: asyncio.Event, done: list[int]) -> None:
    """One client: a completion after the other until ``stop``."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                reply = await client.post(
                    "/v1/completions",
                    json={"model": "sim", "prompt": "Once upon a time", "max_tokens": 64, "ignore_eos": True},
                )
                if reply.status_code == 200:
                    done.append(1)


@pytest.mark.timeout(900)
async def test_a_burst_scales_simulated_workers_up_and_back(cluster):
    await cluster.install_chart(CHART_VALUES)
    await cluster.apply(SERVICE, NAMESPACE)
    await eventually(
        lambda: (
            live(cluster, ISVC, "sim").get("status", {}).get("readyReplicas") == 1
            and cluster.service_url(NAMESPACE, "sim")
        ),
        STARTUP_SECONDS,
        "one ready runtime replica",
    )
    url = cluster.service_url(NAMESPACE, "sim")
    stop, done = asyncio.Event(), []
    clients = [asyncio.create_task(closed_loop(url, stop, done)) for _ in range(IN_FLIGHT)]
    try:
        await eventually(
            lambda: live(cluster, DEPLOYMENTS, "sim-runtime").get("spec", {}).get("replicas") == 3,
            120,
            "the runtime Deployment scaled to 3",
        )
        await eventually(
            lambda: live(cluster, ISVC, "sim").get("status", {}).get("readyReplicas") == 3,
            STARTUP_SECONDS,
            "3 ready runtime replicas",
        )
        await eventually(lambda: len(done) >= 3 * IN_FLIGHT, 120, "answers while 3 replicas serve")
        assert desired_history(cluster) == [1, 3]  # up once, and it held while the load lasted
        scaling = next(
            c for c in live(cluster, ISVC, "sim")["status"]["conditions"] if c["type"] == "ScalingActive"
        )
        assert (scaling["status"], scaling["reason"]) == ("True", "ValidMetrics")
    finally:
        stop.set()
        await asyncio.gather(*clients)
    await eventually(
        lambda: live(cluster, DEPLOYMENTS, "sim-runtime").get("spec", {}).get("replicas") == 1,
        120,
        "the runtime Deployment back to 1",
    )
    await eventually(
        lambda: (
            len(
                [
                    p
                    for p in cluster.kubelet.pods.values()
                    if p.namespace == NAMESPACE and p.name.startswith("sim-runtime")
                ]
            )
            == 1
        ),
        120,
        "one runtime pod left",
    )
    history = desired_history(cluster)  # down as the last requests drain: never up again
    assert history[:2] == [1, 3] and history[-1] == 1 and history[1:] == sorted(history[1:], reverse=True)
    costs = [
        (p.get("metadata", {}).get("annotations") or {}).get("controller.kubernetes.io/pod-deletion-cost")
        for p in cluster.api.live_objects(namespace=NAMESPACE)
        if p["kind"] == "Pod" and p["metadata"]["name"].startswith("sim-runtime")
    ]
    assert costs and all(cost is not None for cost in costs)  # written before the scale-down

    # min 0: the idle service scales to zero, and a request held by the router brings one replica back
    prefix, plural, _ = KINDS["InferenceService"]
    answer = await cluster.request("PATCH", f"{prefix}/namespaces/{NAMESPACE}/{plural}/sim",
                                   {"spec": {"replicas": {"min": 0}}}, "application/merge-patch+json")
    assert answer[0] == 200, answer
    await eventually(lambda: live(cluster, DEPLOYMENTS, "sim-runtime").get("spec", {}).get("replicas") == 0
                     and not runtime_pods(cluster), 120, "scaled to zero, no runtime pod left")
    await eventually(lambda: ready(cluster) == ("True", "ScaledToZero"), 60, "Ready=True ScaledToZero")
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=STARTUP_SECONDS) as client:
        reply = await client.post("/v1/completions", json={"model": "sim", "prompt": "Hello", "max_tokens": 8})
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == 8
    print(f"cold start through the router: {time.monotonic() - start:.1f}s")
    assert desired_history(cluster)[-2:] == [0, 1]
    assert len(runtime_pods(cluster)) == 1
    await eventually(lambda: ready(cluster) == ("True", "Ready"), 60, "Ready=True with the new replica")


def runtime_pods(cluster) -> list:
    return [p for p in cluster.kubelet.pods.values() if p.namespace == NAMESPACE and p.name.startswith("sim-runtime")]


def ready(cluster) -> tuple[str, str] | None:
    found = next((c for c in live(cluster, ISVC, "sim").get("status", {}).get("conditions") or []
                  if c["type"] == "Ready"), None)
    return (found["status"], found["reason"]) if found else None
