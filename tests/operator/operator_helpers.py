"""Helpers for the operator tests: test objects, kmock lookups, polling."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

import kmock

from fleetserve.operator import names
from fleetserve.runtime import wire

NAMESPACE = "ml"
UID = "4f9a1c2e-0000-4000-8000-000000000001"
RESYNC_SECONDS = 0.5
WAIT_SECONDS = 10.0
ISVC_PATH = f"/apis/{names.API_VERSION}/namespaces/{NAMESPACE}/{names.PLURAL}"
ISVC_RESOURCE = f"{names.API_VERSION}/{names.PLURAL}"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"

RESOURCES = {
    f"{names.API_VERSION}/{names.PLURAL}": ("InferenceService", {"status", "scale"}),
    "apps/v1/deployments": ("Deployment", {"status", "scale"}),
    "v1/services": ("Service", {"status"}),
    "v1/serviceaccounts": ("ServiceAccount", set()),
    "rbac.authorization.k8s.io/v1/roles": ("Role", set()),
    "rbac.authorization.k8s.io/v1/rolebindings": ("RoleBinding", set()),
    "networking.k8s.io/v1/ingresses": ("Ingress", {"status"}),
    "v1/events": ("Event", set()),
    "v1/pods": ("Pod", {"status"}),
    "policy/v1/poddisruptionbudgets": ("PodDisruptionBudget", {"status"}),
}
# kopf's backbone: it waits for these to be discoverable even when it does not need their objects.
CLUSTER_RESOURCES = {
    "v1/namespaces": "Namespace",
    "apiextensions.k8s.io/v1/customresourcedefinitions": "CustomResourceDefinition",
}
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def inference_service(name: str = "qwen", spec: dict[str, Any] | None = None, generation: int = 1) -> dict:
    """An InferenceService as the API server would store it (kmock assigns no uid or generation)."""
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": UID, "generation": generation,
                     "resourceVersion": "1"},
        "spec": copy.deepcopy(spec) if spec is not None else {"model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct"}},
    }


def live(api: kmock.KubernetesEmulator, resource: str, name: str) -> dict | None:
    """The stored object, or None if it does not exist (or was deleted)."""
    key = (kmock.resource(resource), NAMESPACE, name)
    if key not in api.objects or api.objects[key].deleted:
        return None
    return copy.deepcopy(dict(api.objects[key].raw))


async def eventually(check: Callable[[], Any], timeout: float = WAIT_SECONDS) -> Any:
    """Poll until ``check()`` returns something truthy; fail with its last value after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(0.05)


def isvc_path(name: str = "qwen") -> str:
    return f"{ISVC_PATH}/{name}"


def deployment_path(name: str) -> str:
    return f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}"


async def send(api: kmock.KubernetesEmulator, method: str, path: str, body: Any = None) -> Any:
    """One request to the emulated API, as kubectl would send it; returns the decoded reply."""
    async with api.request(method, path, json=body) as response:
        payload = await response.json(content_type=None)
        assert response.status < 400, payload
        return payload


def condition(obj: dict | None, type_: str) -> dict | None:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


def condition_is(api: kmock.KubernetesEmulator, type_: str, status: str, reason: str | None = None) -> bool:
    found = condition(live(api, ISVC_RESOURCE, "qwen"), type_)
    return bool(found and found["status"] == status and (reason is None or found["reason"] == reason))


def ready_status(replicas: int) -> dict[str, Any]:
    """What the Deployment controller reports once every pod passed its readiness probe."""
    return {"status": {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas,
                       "updatedReplicas": replicas, "availableReplicas": replicas}}


def was_recreated(api: kmock.KubernetesEmulator, resource: str, name: str) -> bool:
    """Deleted at some point (kmock keeps a None marker in the history) and exists again now."""
    obj = api.objects[kmock.resource(resource), NAMESPACE, name]
    return any(version is None for version in obj.history) and not obj.deleted


async def add_pod(api: kmock.KubernetesEmulator, name: str, port: int, ready: bool = True,
                  component: str = "runtime") -> None:
    """A pod of the InferenceService "qwen" (kmock runs no kubelet: the test writes its status) whose
    container port ``http`` is ``port`` on 127.0.0.1."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE,
                     "labels": {wire.LABEL_SERVICE: "qwen", wire.LABEL_COMPONENT: component}},
        "spec": {"containers": [{"name": component, "ports": [{"name": "http", "containerPort": port}]}]},
    }
    await send(api, "POST", PODS, pod)
    status = {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    await send(api, "PATCH", f"{PODS}/{name}/status", {"status": status})
