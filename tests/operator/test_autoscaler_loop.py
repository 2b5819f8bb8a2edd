"""The autoscaler's I/O loop: the real operator (kopf) against kmock, with pods whose status.podIP
points at real HTTP servers on 127.0.0.1 serving fake /metrics text.

kmock runs no controllers: the tests create the pods themselves and assert what the operator sends
(the status, the Deployment's replicas, the pods' annotations).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from operator_helpers import (
    ISVC_PATH,
    ISVC_RESOURCE,
    NAMESPACE,
    PODS,
    add_pod,
    condition,
    eventually,
    inference_service,
    isvc_path,
    live,
    send,
)

from fleetserve.operator.autoscaler.loop import DELETION_COST
from fleetserve.runtime import wire

DEPLOYMENTS = "apps/v1/deployments"
SPEC = {
    "model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct"},
    "runtime": {"maxRunningRequests": 4},
    "replicas": {"min": 1, "max": 3},
    "autoscaling": {
        "enabled": True,
        "targetQueueDepth": 2,
        "intervalSeconds": 1,
        "scaleDownStabilizationSeconds": 0,
    },
}


@dataclass
class FakeMetrics:
    """What one pod's /metrics says; ``status`` other than 200 answers that status with no metrics."""

    text: str
    status: int = 200


def runtime_text(running: int, waiting: int, cap: int | None = 4) -> str:
    lines = [
        f'{wire.METRIC_NUM_REQUESTS_RUNNING}{{model_name="qwen"}} {running}',
        f'{wire.METRIC_NUM_REQUESTS_WAITING}{{model_name="qwen"}} {waiting}',
    ]
    if cap is not None:
        lines.append(f'{wire.METRIC_MAX_RUNNING_REQUESTS}{{model_name="qwen"}} {cap}')
    return "\n".join(f"# TYPE {line.split('{')[0]} gauge\n{line}" for line in lines) + "\n"


def router_text(held: int) -> str:
    return f"# TYPE {wire.METRIC_ROUTER_HELD_REQUESTS} gauge\n{wire.METRIC_ROUTER_HELD_REQUESTS} {held}\n"


@pytest.fixture()
async def metrics_server() -> AsyncIterator:
    """Starts fake /metrics servers on 127.0.0.1; yields a function returning (FakeMetrics, port)."""
    runners = []

    async def start(text: str) -> tuple[FakeMetrics, int]:
        fake = FakeMetrics(text)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(text=fake.text, status=fake.status)

        app = web.Application()
        app.router.add_get(wire.PATH_METRICS, metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return fake, runner.addresses[0][1]

    yield start
    for runner in runners:
        await runner.cleanup()


def status(api) -> dict:
    return (live(api, ISVC_RESOURCE, "qwen") or {}).get("status") or {}


def scaling(api) -> tuple[str, str] | None:
    found = condition(live(api, ISVC_RESOURCE, "qwen"), "ScalingActive")
    return (found["status"], found["reason"]) if found else None


def adapters_ready(api) -> tuple[str, str] | None:
    found = condition(live(api, ISVC_RESOURCE, "qwen"), "AdaptersReady")
    return (found["status"], found["reason"]) if found else None


def runtime_replicas(api) -> int | None:
    deployment = live(api, DEPLOYMENTS, "qwen-runtime")
    return deployment["spec"]["replicas"] if deployment else None


def pod_annotation(api, name: str) -> str | None:
    pod = live(api, "v1/pods", name) or {}
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST)


async def test_a_queue_scales_the_deployment_up_and_a_drain_down_least_loaded_first(operator, metrics_server):
    busy, busy_port = await metrics_server(runtime_text(running=4, waiting=10))
    idle, idle_port = await metrics_server(runtime_text(running=2, waiting=0))
    _, router_port = await metrics_server(router_text(held=0))
    await add_pod(operator, "qwen-runtime-a", busy_port)
    await add_pod(operator, "qwen-runtime-b", idle_port)
    await add_pod(operator, "qwen-router-a", router_port, component="router")
    await send(operator, "POST", ISVC_PATH, inference_service(spec=SPEC))
    # 16 requests need ceil(16 / (4 + 2)) = 3 replicas.
    await eventually(lambda: status(operator).get("desiredReplicas") == 3)
    assert runtime_replicas(operator) == 3  # applied before the status was written
    assert scaling(operator) == ("True", "ValidMetrics")
    assert status(operator)["queueDepth"] == 10
    assert pod_annotation(operator, "qwen-runtime-a") is None  # costs are written before a scale-down only

    busy.text, idle.text = runtime_text(running=3, waiting=0), runtime_text(running=0, waiting=0)
    # 3 requests fit ceil(3 / 4) = 1 replica (no down window in SPEC); the idle pod is the cheaper one.
    await eventually(lambda: runtime_replicas(operator) == 1)
    await eventually(lambda: status(operator)["desiredReplicas"] == 1)  # written after the Deployment
    assert (pod_annotation(operator, "qwen-runtime-a"), pod_annotation(operator, "qwen-runtime-b")) == (
        "3",
        "0",
    )
    assert pod_annotation(operator, "qwen-router-a") is None  # routers are not the Deployment's pods


async def test_failed_scrapes_keep_the_count_and_say_so(operator, metrics_server):
    runtime, runtime_port = await metrics_server(runtime_text(running=4, waiting=8))
    await add_pod(operator, "qwen-runtime-a", runtime_port)
    await send(operator, "POST", ISVC_PATH, inference_service(spec=SPEC))
    await eventually(lambda: status(operator).get("desiredReplicas") == 2)  # 12 / 6
    runtime.status = 500
    await eventually(lambda: scaling(operator) == ("False", "NoMetrics"))
    message = condition(live(operator, ISVC_RESOURCE, "qwen"), "ScalingActive")["message"]
    assert "could not be read" in message and "keeping 2 replicas" in message and "answered 500" in message
    assert status(operator)["desiredReplicas"] == 2 and runtime_replicas(operator) == 2
    runtime.status, runtime.text = 200, runtime_text(running=4, waiting=20)  # back: scaling resumes
    await eventually(lambda: scaling(operator) == ("True", "ValidMetrics"))
    assert runtime_replicas(operator) == 3 and status(operator)["desiredReplicas"] == 3


async def test_held_requests_without_ready_pods_keep_the_count_and_report_no_ready_pods(
    operator, metrics_server
):
    _, router_port = await metrics_server(router_text(held=5))
    await add_pod(operator, "qwen-router-a", router_port, component="router")
    await send(operator, "POST", ISVC_PATH, inference_service(spec=SPEC))
    # The create handler and the autoscaler's daemon run concurrently: either may write first.
    await eventually(lambda: runtime_replicas(operator) == 1)
    await eventually(lambda: scaling(operator) == ("False", "NoReadyPods"))
    assert (
        "routers hold 5 requests"
        in condition(live(operator, ISVC_RESOURCE, "qwen"), "ScalingActive")["message"]
    )
    assert status(operator)["queueDepth"] == 5
    assert runtime_replicas(operator) == 1  # held requests with no pod to measure keep the count
    await eventually(lambda: status(operator).get("desiredReplicas") == 1)  # the create handler's status


async def test_autoscaling_off_says_so_and_leaves_the_count_to_replicas_count(operator, metrics_server):
    _, runtime_port = await metrics_server(runtime_text(running=4, waiting=20))
    await add_pod(operator, "qwen-runtime-a", runtime_port)
    spec = {
        **SPEC,
        "autoscaling": {**SPEC["autoscaling"], "enabled": False},
        "replicas": {"min": 1, "max": 3, "count": 2},
    }
    await send(operator, "POST", ISVC_PATH, inference_service(spec=spec))
    await eventually(lambda: scaling(operator) == ("False", "AutoscalingDisabled"))
    await eventually(lambda: runtime_replicas(operator) == 2)  # replicas.count's
    assert status(operator)["desiredReplicas"] == 2
    assert pod_annotation(operator, "qwen-runtime-a") is None
    change = {"metadata": {"generation": 2}, "spec": {"autoscaling": {"enabled": True}}}
    await send(operator, "PATCH", isvc_path(), change)  # turned on: the autoscaler takes the count over
    await eventually(lambda: scaling(operator) == ("True", "ValidMetrics"))
    await eventually(lambda: status(operator)["desiredReplicas"] == 3)
    assert runtime_replicas(operator) == 3


async def test_an_invalid_spec_stops_scaling_with_a_condition_not_a_crash(operator, metrics_server):
    _, runtime_port = await metrics_server(runtime_text(running=4, waiting=20))
    await add_pod(operator, "qwen-runtime-a", runtime_port)
    spec = {**SPEC, "model": {"source": "s3://bucket/model"}}
    await send(operator, "POST", ISVC_PATH, inference_service(spec=spec))
    await eventually(lambda: scaling(operator) == ("False", "InvalidSpec"))
    assert live(operator, DEPLOYMENTS, "qwen-runtime") is None and "desiredReplicas" not in status(operator)


async def test_an_idle_service_scales_to_zero_and_held_requests_bring_it_back(operator, metrics_server):
    spec = {**SPEC, "replicas": {"min": 0, "max": 3}, "adapters": [{"name": "sql", "source": "hf://org/sql"}]}
    _, runtime_port = await metrics_server(runtime_text(running=0, waiting=0))
    router, router_port = await metrics_server(router_text(held=0))
    await add_pod(operator, "qwen-runtime-a", runtime_port)
    await add_pod(operator, "qwen-router-a", router_port, component="router")
    await send(operator, "POST", ISVC_PATH, inference_service(spec=spec))
    await eventually(lambda: runtime_replicas(operator) == 1)  # a new service starts with one replica
    # idle (nothing in flight, nothing finished since the first sample) and no down window: zero
    await eventually(lambda: runtime_replicas(operator) == 0)
    await eventually(lambda: status(operator)["desiredReplicas"] == 0)  # written after the Deployment
    assert pod_annotation(operator, "qwen-runtime-a") == "0"
    await send(operator, "DELETE", f"{PODS}/qwen-runtime-a")  # what the ReplicaSet does (kmock runs none)
    await eventually(lambda: scaling(operator) == ("True", "ScaledToZero"))
    # the adapter rollout (a round every 10 s): nothing to load until a pod starts, which loads them itself
    await eventually(lambda: adapters_ready(operator) == ("True", "ScaledToZero"), 30)
    # the router's Deployment reports a ready replica: the service is Ready while scaled to zero
    ready = {"status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "observedGeneration": 1}}
    await send(operator, "PATCH", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/qwen-router/status", ready)
    await eventually(lambda: (condition(live(operator, ISVC_RESOURCE, "qwen"), "Ready") or {}).get("reason")
                     == "ScaledToZero")
    assert condition(live(operator, ISVC_RESOURCE, "qwen"), "Ready")["status"] == "True"

    # a long interval: at zero the routers are still read every second (eventually gives up after 10 s)
    slow = {"metadata": {"generation": 2}, "spec": {"autoscaling": {"intervalSeconds": 60}}}
    await send(operator, "PATCH", isvc_path(), slow)
    await asyncio.sleep(1.5)  # a round with the new spec has run
    router.text = router_text(held=13)  # requests arrive: ceil(13 / (4 + 2)) = 3 replicas at once
    await eventually(lambda: runtime_replicas(operator) == 3)
    await eventually(lambda: status(operator)["desiredReplicas"] == 3)
    assert status(operator)["queueDepth"] == 13
    assert "starting 3 replicas" in condition(live(operator, ISVC_RESOURCE, "qwen"), "ScalingActive")["message"]
