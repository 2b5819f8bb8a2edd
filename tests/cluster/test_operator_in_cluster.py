"""Operator behaviour that needs a cluster: pod failures in conditions, the scale subresource, a
restart over existing children, an immutable field changed under it. No model is loaded: the pods
here fail to pull or to schedule, which is the point."""

from __future__ import annotations

import asyncio
import time

import kmock
import pytest
from cluster import KINDS, eventually
from conftest import CHART_VALUES

NAMESPACE = "ml"
ISVC = "fleetserve.io/v1alpha1/inferenceservices"
DEPLOYMENTS = "apps/v1/deployments"
WAIT = 120.0  # generous: the machine running the suite may be shared and loaded
OPERATOR_AGENTS = ("fleetserve-operator", "kopf/")


def isvc(name: str, runtime: dict) -> dict:
    return {"apiVersion": "fleetserve.io/v1alpha1", "kind": "InferenceService", "metadata": {"name": name},
            "spec": {"model": {"source": "demo://llama-tiny"}, "runtime": runtime}}


def condition(cluster, name: str, type_: str) -> dict:
    live = cluster.api.live(ISVC, NAMESPACE, name) or {}
    return next((c for c in (live.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def scale_path(name: str) -> str:
    prefix, plural, _ = KINDS["InferenceService"]
    return f"{prefix}/namespaces/{NAMESPACE}/{plural}/{name}/scale"


def operator_writes(cluster) -> list[tuple[str, str, str]]:
    return [w for w in cluster.api.write_log if w[2].startswith(OPERATOR_AGENTS)]


@pytest.mark.timeout(600)
async def test_pod_failures_scale_restart_and_immutable_fields(cluster):
    await cluster.install_chart(CHART_VALUES)
    await cluster.apply(isvc("pull", {"image": "registry.invalid/fleetserve-typo:1"}), NAMESPACE)
    await cluster.apply(isvc("gpu", {"resources": {"gpus": 1}}), NAMESPACE)

    # pod-level failures, in the kubelet's and the scheduler's words
    await eventually(lambda: condition(cluster, "pull", "Degraded").get("reason") == "ImagePullBackOff", WAIT,
                     "Degraded=ImagePullBackOff")
    assert condition(cluster, "pull", "Ready")["status"] == "False"
    await eventually(lambda: condition(cluster, "gpu", "Degraded").get("reason") == "Unschedulable", WAIT,
                     "Degraded=Unschedulable")
    assert "Insufficient nvidia.com/gpu" in condition(cluster, "gpu", "Degraded")["message"]

    # the scale subresource works with replicas.count unset, as an HPA or KEDA reads and writes it
    status, scale = await cluster.request("GET", scale_path("pull"))
    assert status == 200 and scale["spec"]["replicas"] == 1
    assert scale["status"]["selector"] == "fleetserve.io/inference-service=pull,fleetserve.io/component=runtime"
    status, scale = await cluster.request("PUT", scale_path("pull"), {"spec": {"replicas": 3}})
    assert status == 200 and scale["spec"]["replicas"] == 3
    await eventually(lambda: (cluster.api.live(DEPLOYMENTS, NAMESPACE, "pull-runtime") or {})
                     .get("spec", {}).get("replicas") == 3, WAIT, "the runtime Deployment scaled to 3")
    await eventually(lambda: (cluster.api.live(ISVC, NAMESPACE, "pull") or {}).get("status", {})
                     .get("replicas") == 3, WAIT, "status.replicas 3")
    status, scale = await cluster.request("GET", scale_path("pull"))
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (3, 3)

    # an operator restart over existing children writes nothing
    await settle(cluster)
    before = len(operator_writes(cluster))
    (old_pod,) = [p for p in cluster.kubelet.pods.values() if p.namespace == "fleetserve-system"]
    await cluster.delete("Pod", old_pod.name, "fleetserve-system")
    new_pod = await eventually(lambda: [p for p in cluster.kubelet.pods.values()
                                        if p.namespace == "fleetserve-system" and p.name != old_pod.name
                                        and resumed(p)], WAIT, "a new operator resumed both services")
    await settle(cluster)
    after = operator_writes(cluster)[before:]
    assert after == [], f"the restarted operator {new_pod[0].name} wrote: {after}"

    # an immutable field changed under the operator (a selector from an older version): recreated
    runtime = cluster.api.live(DEPLOYMENTS, NAMESPACE, "gpu-runtime")
    old_selector = {"app": "older-version"} | {key: None for key in runtime["spec"]["selector"]["matchLabels"]}
    cluster.api.objects[kmock.resource(DEPLOYMENTS), NAMESPACE, "gpu-runtime"].patch(  # behind the API's back
        {"spec": {"selector": {"matchLabels": old_selector}}})
    await cluster.apply(isvc("gpu", {"resources": {"gpus": 1}, "args": ["--skip-server-warmup"]}), NAMESPACE)
    recreated = await eventually(lambda: _recreated(cluster, runtime["metadata"]["uid"]), WAIT,
                                 "the runtime Deployment recreated with the operator's selector")
    assert recreated["spec"]["selector"]["matchLabels"]["fleetserve.io/inference-service"] == "gpu"


def resumed(pod) -> bool:
    log = pod.directory / "container.log"
    return log.exists() and log.read_text().count("Handler 'resume' succeeded") >= 2


def _recreated(cluster, old_uid: str) -> dict | None:
    live = cluster.api.live(DEPLOYMENTS, NAMESPACE, "gpu-runtime")
    return live if live and live["metadata"]["uid"] != old_uid else None


async def settle(cluster, quiet_seconds: float = 3.0, timeout: float = 30.0) -> None:
    """Wait until nobody has written for ``quiet_seconds`` (the kubelet's pod reports included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = len(cluster.api.write_log)
        await asyncio.sleep(quiet_seconds)
        if len(cluster.api.write_log) == count:
            return
    raise AssertionError("the cluster never went quiet")
